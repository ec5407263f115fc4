"""Which uncached opens are a file manager's previews (rcfs.previews), on a fake clock."""

from __future__ import annotations

from rcfs.previews import ALLOWANCE, HEAD_BYTES, HEAD_OPENS, PreviewGuard

MB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def head_reads(guard: PreviewGuard, pid: int, day: int, n: int, *, start_fh: int = 0,
               read: int = 4096, size: int = MB) -> list[str]:
    verdicts = []
    for i in range(n):
        verdict = guard.decide(pid, day)
        verdicts.append(verdict)
        if verdict == "refuse":
            continue
        fh = start_fh + i
        guard.opened(pid, day, fh, size)
        guard.read(fh, read)
        guard.released(fh)
    return verdicts


def test_heads_of_many_files_make_a_scanner() -> None:
    clock = Clock()
    guard = PreviewGuard(clock=clock, comm=lambda pid: "python3")
    verdicts = head_reads(guard, 7, 1, 500)
    assert verdicts[:HEAD_OPENS] == ["interactive"] * HEAD_OPENS
    assert verdicts[HEAD_OPENS:HEAD_OPENS + ALLOWANCE] == ["background"] * ALLOWANCE
    assert set(verdicts[HEAD_OPENS + ALLOWANCE:]) == {"refuse"}
    assert verdicts.count("refuse") == 500 - HEAD_OPENS - ALLOWANCE
    clock.t += 61  # a minute later: one more at background priority
    assert guard.decide(7, 1) == "background" and guard.decide(7, 1) == "refuse"
    assert guard.snapshot()["scanners"] == 1


def test_whole_reads_are_never_previews() -> None:
    guard = PreviewGuard(clock=Clock(), comm=lambda pid: "cp")
    assert set(head_reads(guard, 8, 1, 50, read=MB)) == {"interactive"}  # cp, rsync, players
    small = PreviewGuard(clock=Clock(), comm=lambda pid: "cat")
    # Files no longer than the head are read whole: not a head read either.
    assert set(head_reads(small, 8, 1, 50, read=HEAD_BYTES, size=HEAD_BYTES)) == {"interactive"}


def test_other_processes_and_days_are_not_affected() -> None:
    guard = PreviewGuard(clock=Clock(), comm=lambda pid: "python3")
    head_reads(guard, 7, 1, 20)
    assert guard.decide(9, 1) == "interactive"  # another process
    assert guard.decide(7, 2) == "refuse"  # the same scanner elsewhere: still one (allowance spent)


def test_known_thumbnailers_are_scanners_at_once() -> None:
    guard = PreviewGuard(clock=Clock(), comm=lambda pid: "tumblerd")
    assert head_reads(guard, 5, 1, 3) == ["background"] * ALLOWANCE + ["refuse"] * (3 - ALLOWANCE)


def test_history_expires() -> None:
    clock = Clock()
    guard = PreviewGuard(clock=clock, comm=lambda pid: "python3")
    head_reads(guard, 7, 1, HEAD_OPENS - 1)
    clock.t += 120  # the earlier heads are forgotten
    assert head_reads(guard, 7, 1, HEAD_OPENS - 1, start_fh=100) == ["interactive"] * (HEAD_OPENS - 1)


def test_running_since_tells_the_opener_from_a_later_process_with_its_pid() -> None:
    """A reader counts while it runs; a process started after the open (a reused pid)
    or one that has exited does not."""
    import os
    import subprocess
    import time

    from rcfs.previews import boot_ticks, running_since

    assert running_since(os.getpid(), boot_ticks())
    before = boot_ticks()
    time.sleep(0.05)
    later = subprocess.Popen(["sleep", "5"])
    try:
        assert not running_since(later.pid, before - 5)  # started after "the open"
        assert running_since(later.pid, boot_ticks())
    finally:
        later.kill()
        later.wait(10)
    assert not running_since(later.pid, boot_ticks())
