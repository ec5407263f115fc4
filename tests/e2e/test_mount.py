"""The mount end to end: real FUSE, real tools, the emulator behind it."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import (
    FAST,
    EmulatorProc,
    Mount,
    is_mounted,
    mounted,
    rcfs_env,
    require_fuse,
    run_emulator,
    wait_for,
)

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]


def recordings(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".mp3", ".wav"))


def rec_id(path: Path) -> str:
    return path.stem.rsplit("_", 1)[1]


@pytest.fixture(scope="module")
def mount(emulator: EmulatorProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with mounted(emulator, tmp_path_factory.mktemp("m")) as m:
        yield m


def test_tree_shape_and_names(mount: Mount) -> None:
    years = os.listdir(mount.path)
    assert years and all(y.isdigit() and len(y) == 4 for y in years), years
    assert ".rcfs" not in years
    files = recordings(mount.path)
    assert len(files) > 20
    for f in files:
        rel = f.relative_to(mount.path).parts
        assert len(rel) == 4 and rel[1].isdigit() and rel[2].isdigit()
        parts = f.stem.split("_")
        assert len(parts) == 6 and parts[1] in ("in", "out") and parts[3] == "to", f.name
        st = f.stat()
        assert st.st_mode & 0o777 == 0o444
        assert f.name.isascii() and len(f.name.encode()) <= 200
    d = files[0].parent
    assert os.stat(d).st_mode & 0o777 == 0o555
    day_json = json.loads((d / "calls.json").read_bytes())
    paths = {r["rcfsPath"] for r in (day_json if isinstance(day_json, list) else day_json["records"])}
    assert str(files[0].relative_to(mount.path)) in paths


def test_status_json_hidden_but_readable(mount: Mount) -> None:
    st = mount.status()
    for key in ("account", "index", "cache", "rate_limits", "requests", "downloads", "errors"):
        assert key in st, key
    assert st["index"]["recordings"] == len(recordings(mount.path))
    out = mount.rcfs("status", str(mount.path)).stdout
    assert "recordings" in out and "rate limits" in out


def test_cat_matches_emulator_and_size_becomes_exact(mount: Mount, emulator: EmulatorProc) -> None:
    f = recordings(mount.path)[3]
    estimated = f.stat().st_size
    fd = os.open(f, os.O_RDONLY)
    try:
        exact = os.fstat(fd).st_size
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
    expected = emulator.content(rec_id(f))
    assert exact == len(expected), (estimated, exact, len(expected))
    assert data == expected
    assert f.stat().st_size == len(expected)
    assert subprocess.run(["cmp", "-", str(f)], input=expected, timeout=60).returncode == 0


def test_ffprobe_through_mount(mount: Mount) -> None:
    f = recordings(mount.path)[5]
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(f)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    duration = float(json.loads(out)["format"]["duration"])
    expected = float(subprocess.run(["getfattr", "--only-values", "-n", "user.rc.duration", str(f)],
                                    capture_output=True, text=True, timeout=30, check=True).stdout)
    assert abs(duration - expected) <= 1.0


def test_xattrs(mount: Mount) -> None:
    f = recordings(mount.path)[0]
    out = subprocess.run(["getfattr", "-d", str(f)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    for name in ("call_id", "session_id", "telephony_session_id", "recording_id", "recording_type",
                 "direction", "from", "from_name", "to", "to_name", "start_time", "duration",
                 "content_type", "size_exact"):
        assert f"user.rc.{name}=" in out, name
    assert os.getxattr(f, "user.rc.recording_id").decode() == rec_id(f)
    with pytest.raises(OSError) as exc:
        os.getxattr(f, "user.other")
    assert exc.value.errno == errno.ENODATA
    # Other namespaces are "not supported", so `ls -l` stops asking after one file.
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as exc:
            os.getxattr(f, name)
        assert exc.value.errno == errno.EOPNOTSUPP, name


def test_read_only(mount: Mount) -> None:
    f = recordings(mount.path)[0]
    for action in (lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
                   lambda: os.open(f.parent / "new", os.O_WRONLY | os.O_CREAT),
                   lambda: os.mkdir(f.parent / "d"), lambda: os.unlink(f),
                   lambda: os.rename(f, f.parent / "x"), lambda: os.chmod(f, 0o644)):
        with pytest.raises(OSError) as exc:
            action()
        assert exc.value.errno == errno.EROFS
    r = subprocess.run(["touch", str(f)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Read-only" in r.stderr


def test_two_readers_one_download(mount: Mount, emulator: EmulatorProc) -> None:
    f = recordings(mount.path)[-1]
    before = emulator.content_requests()
    procs = [subprocess.Popen(["cat", str(f)], stdout=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert outs[0] == outs[1] == emulator.content(rec_id(f))
    assert emulator.content_requests() - before == 1


def test_rsync_twice(mount: Mount, emulator: EmulatorProc, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    subprocess.run(["rsync", "-a", f"{mount.path}/", f"{dest}/"], check=True, timeout=240)
    files = recordings(mount.path)
    for f in files:
        copy = dest / f.relative_to(mount.path)
        assert copy.read_bytes() == emulator.content(rec_id(f)), f
        assert int(copy.stat().st_mtime) == int(f.stat().st_mtime)
    assert not (dest / ".rcfs").exists()
    before = emulator.content_requests()
    out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{mount.path}/", f"{dest}/"],
                         check=True, timeout=240, capture_output=True, text=True).stdout
    assert out.strip() == ""
    assert emulator.content_requests() == before


def test_day_with_2000_recordings(tmp_path: Path) -> None:
    require_fuse()
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=8, minute=0, second=0, microsecond=0)
    with run_emulator("--seed", "3", "--calls", "10", "--days", "10", "--rate-limits", FAST) as emu:
        added = emu.admin.post("/calls", json={"count": 2000, "startTime": day.isoformat(),
                                               "recorded": True, "duration": 40}).json()["records"]
        assert len(added) == 2000
        with mounted(emu, tmp_path) as m:
            d = m.path / day.strftime("%Y/%m/%d")
            t0 = time.perf_counter()
            out = subprocess.run(["ls", "-l", str(d)], capture_output=True, text=True,
                                 timeout=120, check=True).stdout
            elapsed = time.perf_counter() - t0
            names = [line.split()[-1] for line in out.splitlines()[1:]]
            mp3 = [n for n in names if n.endswith(".mp3")]
            assert len(mp3) >= 2000 and len(set(mp3)) == len(mp3)
            assert os.listdir(d) == os.listdir(d)  # stable under repetition
            print(f"ls -l of {len(names)} entries: {elapsed:.3f} s")


def test_unmount_with_blocked_reader(tmp_path: Path) -> None:
    require_fuse()
    with (
        run_emulator("--seed", "5", "--calls", "20", "--days", "10", "--rate-limits", FAST) as emu,
        mounted(emu, tmp_path) as m,
    ):
        f = recordings(m.path)[0]
        emu.admin.put("/faults", json={"latency": "60s"}).raise_for_status()
        reader = subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert reader.poll() is None, "the reader should be blocked on the slow download"
        t0 = time.monotonic()
        m.rcfs("umount", str(m.path), timeout=60)
        assert not is_mounted(m.path)
        reader.wait(30)
        assert reader.returncode != 0
        assert time.monotonic() - t0 < 30
        assert m.proc is not None
        m.proc.wait(30)


def test_daemonized_mount_and_umount(emulator: EmulatorProc, tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = rcfs_env(emulator, tmp_path)
    try:
        r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(mp), "--since", "40d"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mp)
        pid = json.loads((mp / ".rcfs" / "status.json").read_bytes())["pid"]
        busy = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(mp)],
                              env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode != 0 and "busy" in busy.stderr and "Traceback" not in busy.stderr
        r = subprocess.run([sys.executable, "-m", "rcfs", "umount", str(mp)],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 20, "daemon exit")
    finally:
        if is_mounted(mp):
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)


def test_mount_errors_are_one_line(emulator: EmulatorProc, tmp_path: Path) -> None:
    env = rcfs_env(emulator, tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(full)], "not empty"),
        ([str(tmp_path), "--tz", "Mars/Base"], "time zone"),
        ([str(tmp_path), "--cache-size", "lots"], "size"),
    ]
    for args, needle in cases:
        r = subprocess.run([sys.executable, "-m", "rcfs", "mount", *args], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    bad = dict(env, RC_USER_JWT="rcfs-emulator-jwt.not-valid")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(empty), "--since", "2d"],
                       env=bad, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "rcfs-emulator-jwt" not in r.stderr
    assert not is_mounted(empty)


def test_size_learned_without_open_is_exact_on_open(tmp_path: Path) -> None:
    """The kernel was shown an estimate; a prefetch learns the exact size; open must not read short."""
    require_fuse()
    with (
        run_emulator("--seed", "11", "--calls", "30", "--days", "10", "--rate-limits", FAST) as emu,
        mounted(emu, tmp_path) as m,
    ):
        files = recordings(m.path)
        for f in files:
            f.stat()  # the kernel now caches estimated sizes (for 60 s)
        m.rcfs("prefetch", str(m.path), "--wait", timeout=120)
        for f in files:
            expected = emu.content(rec_id(f))
            with open(f, "rb") as fh:
                assert os.fstat(fh.fileno()).st_size == len(expected), f
                assert fh.read() == expected, f


def read_ahead_kb(mp: Path) -> int:
    from rcfs.registry import mount_at

    entry = mount_at(str(mp))
    assert entry is not None and entry.fstype == "fuse.rcfs", entry
    return int(Path(f"/sys/class/bdi/{entry.dev}/read_ahead_kb").read_text())


@pytest.mark.parametrize(("option", "expected_kb"), [((), 1024), (("--read-ahead", "256K"), 256),
                                                     (("--read-ahead", "0"), 128)])
def test_read_ahead_of_the_mount(emulator: EmulatorProc, tmp_path: Path,
                                 option: tuple[str, ...], expected_kb: int) -> None:
    """The kernel reads 1 MiB ahead on the mount by default (one FUSE read where its own
    128 KiB makes eight), --read-ahead sets it, 0 leaves the kernel's; bytes stay exact."""
    if expected_kb != 128 and os.geteuid() != 0:
        pytest.skip("setting a mount's read-ahead (/sys/class/bdi) needs root")
    with mounted(emulator, tmp_path, *option) as m:
        try:
            wait_for(lambda: read_ahead_kb(m.path) == expected_kb, 10, f"read_ahead_kb {expected_kb}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it is {read_ahead_kb(m.path)}:\n{m.log_text()[-2000:]}") from None
        biggest = max(recordings(m.path), key=lambda p: p.stat().st_size)
        with open(biggest, "rb") as f:
            assert f.read() == emulator.content(rec_id(biggest))


def test_double_ctrl_c_unmounts_cleanly(tmp_path: Path) -> None:
    """A second SIGINT during the unmount is absorbed: exit 0, no traceback, nothing mounted."""
    require_fuse()
    with (
        run_emulator("--seed", "12", "--calls", "20", "--days", "10", "--rate-limits", FAST) as emu,
        mounted(emu, tmp_path) as m,
    ):
        assert m.proc is not None and m.proc.stderr is not None
        m.proc.send_signal(signal.SIGINT)
        time.sleep(0.01)  # the same signal twice at once would be one
        m.proc.send_signal(signal.SIGINT)
        assert m.proc.wait(30) == 0
        err = m.proc.stderr.read().decode(errors="replace")
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        wait_for(lambda: not is_mounted(m.path), 10, "the unmount")
