"""`rcfs umount` signals only the rcfs daemon serving the mount, and touches nothing else.

The pid it signals comes from rcfs's own record in the state directory
(`rcfs/registry.py`), checked against the live process, never from
`MOUNTPOINT/.rcfs/status.json`, which anyone who can write to a file system
that is not rcfs can plant. Each test starts its own processes and mounts
and ends and unmounts them by PID and path in `finally`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rcfs import registry
from rcfs.emulator.testing import client_env

from .conftest import FAST, Mount, is_mounted, mounted, require_fuse, run_emulator, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(240)]


@contextlib.contextmanager
def started(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A bystander process, ended and reaped by PID whatever happens."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(path)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield path
    finally:
        if is_mounted(path):
            subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30)
        if is_mounted(path):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)


def rcfs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcfs", *args], env=env, capture_output=True,
                          text=True, timeout=90, stdin=subprocess.DEVNULL)


def record_of(m: Mount) -> Path:
    return registry.record_path(Path(m.env["XDG_STATE_HOME"]) / "rcfs", os.path.realpath(m.path))


def forge(m: Mount, pid: int) -> None:
    """Rewrite the mount's record to name `pid`: everything right but what the process is."""
    rec = record_of(m)
    record = json.loads(rec.read_bytes())
    info = registry.proc_info(pid)
    assert info is not None
    record.update(pid=pid, start_ticks=info.start_ticks)
    rec.write_text(json.dumps(record))


@pytest.mark.parametrize("planted", [True, False], ids=["planted-status", "bare"])
def test_umount_refuses_a_tmpfs_and_signals_nothing(tmp_path: Path, planted: bool) -> None:
    """A tmpfs holding a `.rcfs/status.json` another user wrote, naming a live process:
    one line, exit status 1, the process lives, the tmpfs stays mounted and intact."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with tmpfs(tmp_path / "shm") as shm, started("sleep", "300") as bystander:
        status = shm / ".rcfs" / "status.json"
        if planted:
            status.parent.mkdir()
            status.write_text(json.dumps({"pid": bystander.pid, "mountpoint": str(shm),
                                          "control": str(shm / "sock")}))
            for p in (status.parent, status):
                os.chown(p, 65534, 65534)  # nobody's
        before = {p: p.read_bytes() for p in shm.rglob("*") if p.is_file()}
        r = rcfs(env, "umount", str(shm))
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert r.stderr.splitlines() == [f"rcfs: {shm} is not an rcfs mount (tmpfs)"], r.stderr
        assert r.stdout == ""
        assert bystander.poll() is None, "umount signalled the pid named in a planted file"
        assert is_mounted(shm), "umount unmounted a file system that is not rcfs"
        assert {p: p.read_bytes() for p in shm.rglob("*") if p.is_file()} == before


def test_other_commands_refuse_a_planted_status_and_its_socket(tmp_path: Path) -> None:
    """`rcfs status`/`refresh`/`verify` on a tmpfs with a planted status.json naming a
    control socket: refused with one line; nothing connects to the planted socket."""
    import socket as socketlib

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with tmpfs(tmp_path / "shm") as shm:
        sock_path = shm / "sock"
        listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(1)
        listener.setblocking(False)
        try:
            status = shm / ".rcfs" / "status.json"
            status.parent.mkdir()
            status.write_text(json.dumps({"pid": 1, "control": str(sock_path)}))
            for cmd in (["status"], ["refresh"], ["verify"], ["prefetch"]):
                r = rcfs(env, *cmd, str(shm))
                assert r.returncode == 1, (cmd, r.stdout, r.stderr)
                assert r.stderr.splitlines()[-1] == f"rcfs: {shm} is not an rcfs mount (tmpfs)"
            with pytest.raises(BlockingIOError):
                listener.accept()  # no client ever connected
        finally:
            listener.close()


def test_umount_stops_the_recorded_daemon(tmp_path: Path) -> None:
    """A live mount: its daemon recorded itself (0600, in a 0700 directory), umount
    SIGTERMs exactly that daemon, which unmounts cleanly, exits 0 and removes the record."""
    require_fuse()
    with (run_emulator("--seed", "31", "--calls", "10", "--days", "5", "--rate-limits", FAST) as emu,
          mounted(emu, tmp_path) as m):
        assert m.proc is not None
        rec = record_of(m)
        assert rec.is_file(), "the daemon did not record itself"
        assert stat.S_IMODE(rec.stat().st_mode) == 0o600
        assert stat.S_IMODE(rec.parent.stat().st_mode) == 0o700
        record = json.loads(rec.read_bytes())
        assert record["pid"] == m.proc.pid and record["mountpoint"] == os.path.realpath(m.path)
        r = m.rcfs("umount", str(m.path))
        assert r.stdout.strip() == f"unmounted {m.path}", r.stdout
        assert m.proc.wait(30) == 0
        assert not is_mounted(m.path)
        assert "received SIGTERM: unmounting" in m.log_text()
        assert not rec.exists(), "the record outlived its mount"


@pytest.mark.parametrize("stale", ["dead-pid", "pid-reused"])
def test_umount_clears_a_dead_mount_and_signals_no_stale_pid(tmp_path: Path, stale: str) -> None:
    """kill -9 leaves a dead mount and a stale record. umount detaches the mount and removes
    the record; if the record's pid now belongs to another program, that program lives."""
    require_fuse()
    with (run_emulator("--seed", "32", "--calls", "10", "--days", "5", "--rate-limits", FAST) as emu,
          mounted(emu, tmp_path) as m, started("sleep", "300") as bystander):
        assert m.proc is not None
        rec = record_of(m)
        assert rec.is_file(), "the daemon did not record itself"
        m.proc.kill()
        m.proc.wait(10)
        with pytest.raises(OSError) as exc:
            os.listdir(m.path)
        assert exc.value.errno == errno.ENOTCONN
        assert rec.is_file()  # kill -9: nothing removed it
        if stale == "pid-reused":
            forge(m, bystander.pid)
        r = m.rcfs("umount", str(m.path))
        assert r.stdout.startswith(f"unmounted {m.path} (detached: "), r.stdout
        assert not is_mounted(m.path)
        assert bystander.poll() is None, "umount signalled a stale record's pid"
        assert not rec.exists(), "the stale record was left behind"


def test_umount_detaches_a_live_mount_whose_record_names_another_process(tmp_path: Path) -> None:
    """A record naming a live process that is not rcfs (the right pid and start time for
    that process, the right uid, mountpoint and device): it is not signalled, and the mount
    is detached all the same; its daemon then ends on its own."""
    require_fuse()
    with (run_emulator("--seed", "33", "--calls", "10", "--days", "5", "--rate-limits", FAST) as emu,
          mounted(emu, tmp_path) as m, started("sleep", "300") as bystander):
        assert m.proc is not None
        forge(m, bystander.pid)
        r = m.rcfs("umount", str(m.path))
        assert f"(detached: pid {bystander.pid} is not rcfs)" in r.stdout, r.stdout
        assert not is_mounted(m.path)
        assert bystander.poll() is None, "umount signalled a process that is not rcfs"
        wait_for(lambda: m.proc is not None and m.proc.poll() is not None, 30,
                 "the daemon to end once its mount is gone")
        assert "received SIGTERM" not in m.log_text()


def test_the_record_goes_with_a_clean_exit_on_sigint(tmp_path: Path) -> None:
    """Ctrl-C in the foreground: a clean unmount, exit status 0, and the record removed."""
    require_fuse()
    with (run_emulator("--seed", "34", "--calls", "5", "--days", "5", "--rate-limits", FAST) as emu,
          mounted(emu, tmp_path) as m):
        assert m.proc is not None
        rec = record_of(m)
        assert rec.is_file()
        m.proc.send_signal(signal.SIGINT)
        assert m.proc.wait(30) == 0
        assert not is_mounted(m.path) and not rec.exists()


def test_daemonized_mount_with_the_default_log_is_stopped_through_its_record(tmp_path: Path) -> None:
    """`rcfs mount` without --foreground or --log-file: the daemon logs to the state
    directory (created 0700, the log 0600), records itself, and umount SIGTERMs it."""
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    pid = None
    with run_emulator("--seed", "35", "--calls", "5", "--days", "5", "--rate-limits", FAST) as emu:
        env = client_env(emu.info, tmp_path)
        try:
            r = rcfs(env, "mount", str(mp), "--since", "10d")
            assert r.returncode == 0, r.stderr
            pid = json.loads((mp / ".rcfs" / "status.json").read_bytes())["pid"]  # our own mount
            rec = registry.record_path(tmp_path / "state" / "rcfs", os.path.realpath(mp))
            assert rec.is_file() and json.loads(rec.read_bytes())["pid"] == pid
            log = tmp_path / "state" / "rcfs" / "mount.log"
            assert stat.S_IMODE(log.stat().st_mode) == 0o600
            assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
            r = rcfs(env, "umount", str(mp))
            assert r.returncode == 0 and r.stdout.strip() == f"unmounted {mp}", (r.stdout, r.stderr)
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the daemon to exit")
            assert "received SIGTERM: unmounting" in log.read_text()
            assert not is_mounted(mp) and not rec.exists()
        finally:
            if pid is not None and os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if is_mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False, capture_output=True)
