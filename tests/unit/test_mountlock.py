"""One mount per state and per cache directory (rcfs/mountlock.py), without FUSE.

flock(2) locks belong to an open file description, so two holders in one
process conflict as two daemons would; a holder killed with SIGKILL is
played by a child process. "/" stands for a holder's mountpoint that is
mounted (it always is), "/mnt/a" for one that is not (a daemon starting or
leaving).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rcfs.errors import ConfigError
from rcfs.mountlock import LOCK_NAME, MountBusy, take

pytestmark = pytest.mark.timeout(60)


def dirs(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp_path / name).mkdir()
        out.append(tmp_path / name)
    return out


def test_a_second_mount_of_the_state_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    state, cache_a, cache_b = dirs(tmp_path, "state", "cache-a", "cache-b")
    with take(state, cache_a, account="1234", mountpoint=Path("/")):
        t0 = time.monotonic()
        with pytest.raises(MountBusy) as exc:
            take(state, cache_b, account="1234", mountpoint=Path("/mnt/b"))
        assert time.monotonic() - t0 < 1, "a holder serving its mount is refused at once"
        message = str(exc.value)
        assert "\n" not in message and isinstance(exc.value, ConfigError)
        assert message.startswith(f"account 1234 is already mounted at / (pid {os.getpid()}) "
                                  f"with the state directory {state}; unmount it first")
        assert "--redis" in message and "its own state and cache directory" in message
    # Released with the first mount: the second may go now.
    with take(state, cache_b, account="1234", mountpoint=Path("/mnt/b")):
        assert '"/mnt/b"' in (state / LOCK_NAME).read_text()


def test_a_second_mount_of_the_cache_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    state_a, state_b, cache = dirs(tmp_path, "state-a", "state-b", "cache")
    with take(state_a, cache, account="1234", mountpoint=Path("/")):
        with pytest.raises(MountBusy) as exc:
            take(state_b, cache, account="1234", mountpoint=Path("/mnt/b"))
        message = str(exc.value)
        assert "\n" not in message
        assert message.startswith(f"the cache directory {cache} is already used by another rcfs "
                                  f"mount at / (pid {os.getpid()}); give each mount its own "
                                  "--cache-dir")
        assert "--redis" in message
        # The refused mount let go of the state directory it had locked first.
        with take(state_b, tmp_path, account="1234", mountpoint=Path("/mnt/c")):
            pass


def test_a_holder_that_is_not_serving_is_waited_for_then_refused(tmp_path: Path) -> None:
    state, cache = dirs(tmp_path, "state", "cache")
    first = take(state, cache, account="1234", mountpoint=Path("/mnt/a"))
    try:
        t0 = time.monotonic()
        with pytest.raises(MountBusy, match=r"already mounted at /mnt/a "):
            take(state, cache, account="1234", mountpoint=Path("/mnt/b"), grace=0.5)
        assert 0.4 < time.monotonic() - t0 < 5
        # A daemon that has just unmounted lets go within the grace: the next mount goes.
        threading.Timer(0.3, first.close).start()
        with take(state, cache, account="1234", mountpoint=Path("/mnt/b"), grace=10):
            pass
    finally:
        first.close()


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    state, cache = dirs(tmp_path, "state", "cache")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pathlib import Path
            from rcfs.mountlock import take
            with take(Path({str(state)!r}), Path({str(cache)!r}), account="1234",
                      mountpoint=Path("/")):
                print("locked", flush=True)
                time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(MountBusy, match=f"pid {holder.pid}"):
            take(state, cache, account="1234", mountpoint=Path("/mnt/b"))
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        t0 = time.monotonic()
        with take(state, cache, account="1234", mountpoint=Path("/mnt/b")):
            assert time.monotonic() - t0 < 1
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)


def test_a_holder_file_with_garbage_still_refuses(tmp_path: Path) -> None:
    state, cache = dirs(tmp_path, "state", "cache")
    with take(state, cache, account="1234", mountpoint=Path("/")):
        (state / LOCK_NAME).write_text("{not json\n")
        with pytest.raises(MountBusy, match=r"^account 1234 is already mounted with the state"):
            take(state, cache, account="1234", mountpoint=Path("/mnt/b"), grace=0)
