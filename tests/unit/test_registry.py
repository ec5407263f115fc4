"""rcfs/registry.py without mounting: which process a record may name, and which it may not.

Each forged record below differs from the accepted one in one thing only, so
each check is shown to matter. The processes are `sleep`s this test starts
(one under the name `rcfs`, as `exec -a` sets it) and ends by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcfs import registry

pytestmark = pytest.mark.timeout(60)

MP = "/srv/calls"
ENTRY = registry.MountEntry(mount_id=77, dev="0:4242", mountpoint=MP, fstype="fuse.rcfs", source="rcfs")


@contextlib.contextmanager
def process(*argv: str) -> Iterator[int]:
    """Run `argv`, wait until /proc shows its final name (after any exec), yield its pid."""
    name = "rcfs" if argv[-1].startswith("exec -a rcfs") else argv[0]
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)
    try:
        for _ in range(500):
            info = registry.proc_info(proc.pid)
            if info is not None and info.argv[:1] == (name,):
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.01)
        else:
            raise AssertionError(f"{argv} did not start")
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def rcfs_named(*prefix: str) -> list[str]:
    return [*prefix, "bash", "-c", "exec -a rcfs sleep 300"]


def write_record(state: Path, **fields: Any) -> Path:
    path = registry.record_path(state, MP)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))
    path.chmod(0o600)
    return path


def good_record(pid: int) -> dict[str, Any]:
    info = registry.proc_info(pid)
    assert info is not None
    return {"pid": pid, "uid": os.getuid(), "start_ticks": info.start_ticks,
            "mountpoint": MP, "dev": ENTRY.dev}


def test_a_true_record_names_its_process(tmp_path: Path) -> None:
    with process(*rcfs_named()) as pid:
        write_record(tmp_path, **good_record(pid))
        daemon, why = registry.serving_daemon(tmp_path, MP, ENTRY)
        assert daemon is not None and daemon.pid == pid and why == f"daemon pid {pid}"
        daemon.terminate()
        assert daemon.pidfd is None  # closed
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert registry.proc_info(pid) is None  # a zombie: the SIGTERM reached it


@pytest.mark.parametrize("change, why", [
    ({"start_ticks": -1}, "is now another process"),
    ({"dev": "0:1"}, "a record of an earlier mount"),
    ({"mountpoint": "/elsewhere"}, "a record of another mountpoint"),
    ({"uid": 12345}, "belongs to another user"),
    ({"pid": "1234"}, "a malformed record"),
    ({"pid": 1}, "a malformed record"),
])
def test_a_record_wrong_in_one_field_names_nothing(tmp_path: Path, change: dict[str, Any],
                                                   why: str) -> None:
    with process(*rcfs_named()) as pid:
        write_record(tmp_path, **(good_record(pid) | change))
        found, reason = registry.serving_daemon(tmp_path, MP, ENTRY)
        assert found is None and why in reason, reason


def test_a_pid_reused_by_another_program_is_not_rcfs(tmp_path: Path) -> None:
    with process("sleep", "300") as pid:  # right pid, start time, uid: only the program differs
        write_record(tmp_path, **good_record(pid))
        assert registry.serving_daemon(tmp_path, MP, ENTRY) == (None, f"pid {pid} is not rcfs")


def test_a_dead_pid_is_gone(tmp_path: Path) -> None:
    with process(*rcfs_named()) as pid:
        record = good_record(pid)
    write_record(tmp_path, **record)
    assert registry.serving_daemon(tmp_path, MP, ENTRY) == (None, f"its daemon (pid {pid}) is gone")


def test_another_users_process_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a process as nobody")
    with process(*rcfs_named("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")) as pid:
        write_record(tmp_path, **good_record(pid))
        found, reason = registry.serving_daemon(tmp_path, MP, ENTRY)
        assert found is None and "belongs to another user" in reason, reason


@pytest.mark.parametrize("how", ["symlink", "foreign", "not json", "absent"])
def test_a_record_file_that_is_not_ours_is_not_read(tmp_path: Path, how: str) -> None:
    with process(*rcfs_named()) as pid:
        path = write_record(tmp_path, **good_record(pid))
        if how == "symlink":
            real = path.with_name("elsewhere.json")
            path.rename(real)
            path.symlink_to(real)
        elif how == "foreign":
            if os.geteuid() != 0:
                pytest.skip("chown needs root")
            os.chown(path, 65534, 65534)
        elif how == "not json":
            path.write_text("{")
        else:
            path.unlink()
        assert registry.serving_daemon(tmp_path, MP, ENTRY)[0] is None


def test_register_writes_a_private_record_and_unregister_removes_only_its_own(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = registry.register(tmp_path / "state", MP)
    finally:
        os.umask(old)
    assert path is not None and path == registry.record_path(tmp_path / "state", MP)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    record = json.loads(path.read_bytes())
    me = registry.proc_info(os.getpid())
    assert me is not None
    assert record["pid"] == os.getpid() and record["start_ticks"] == me.start_ticks
    assert record["mountpoint"] == MP and record["uid"] == os.getuid()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    # A later daemon's record at the same mountpoint is not ours to remove.
    path.write_text(json.dumps(record | {"pid": os.getpid() + 1}))
    registry.unregister(path)
    assert path.exists()
    path.write_text(json.dumps(record))
    registry.unregister(path)
    assert not path.exists()
    registry.unregister(None)


def test_mount_at_reads_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / /srv rw - ext4 /dev/sda1 rw\n"
        "90 22 0:50 / /srv/my\\040calls rw,nosuid shared:1 - fuse.rcfs rcfs rw,user_id=0\n"
        "not a mountinfo line\n"
        "91 22 0:51 / /srv/shm rw - fuse.rcfs rcfs rw\n"
        "92 91 0:52 / /srv/shm rw - tmpfs tmpfs rw\n"
    )
    got = registry.mount_at("/srv/my calls", str(info))
    assert got == registry.MountEntry(90, "0:50", "/srv/my calls", "fuse.rcfs", "rcfs")
    top = registry.mount_at("/srv/shm", str(info))  # the mount on top is what the path shows
    assert top is not None and top.fstype == "tmpfs"
    assert registry.mount_at("/srv/none", str(info)) is None
    assert registry.mount_at("/", str(tmp_path / "missing")) is None


@pytest.mark.parametrize("argv, ok", [
    (("/usr/bin/python3", "/venv/bin/rcfs", "mount", "/mnt"), True),
    (("/usr/bin/python3", "-m", "rcfs", "mount", "/mnt", "--foreground"), True),
    (("rcfs",), True),
    (("sleep", "300"), False),
    (("/usr/bin/python3", "-m", "rcfsx"), False),
    (("/usr/bin/python3", "/tmp/evil.py", "x", "rcfs"), False),
    ((), False),
])
def test_looks_like_rcfs(argv: tuple[str, ...], ok: bool) -> None:
    assert registry.looks_like_rcfs(argv) is ok
