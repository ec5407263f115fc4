"""Never serve wrong bytes, never believe a lying server (issue: integrity), end to end.

Real mounts against the emulator subprocess; damage is done to the cache files
on disk, behind rcfs's back, as a failing disk or a stray process would.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import FAST, EmulatorProc, Mount, mounted, run_emulator, wait_for
from .faultkit import read_file, rec_id, recordings

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]


def cache_dir_of(m: Mount) -> Path:
    return next((Path(m.env["XDG_CACHE_HOME"]) / "rcfs").iterdir())


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, name).decode()


def b2sum(data: bytes) -> str:
    import hashlib

    return hashlib.blake2b(data).hexdigest()


def damage(path: Path) -> None:
    """4 KiB of zeros in the middle: same size, same mtime."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        f.write(b"\0" * 4096)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def cache_file_of(m: Mount, recording_id: str) -> Path:
    """The file that holds a recording in the content cache or archive."""
    from .faultkit import cache_entries

    return cache_entries(cache_dir_of(m))[recording_id]


def cached(m: Mount, files: list[Path]) -> None:
    """Read them through the mount and wait until their digests are recorded."""
    for f in files:
        read_file(f)
    wait_for(lambda: all(_has_digest(f) for f in files), 30, "digests")


def _has_digest(f: Path) -> bool:
    try:
        return bool(xattr(f, "user.rc.blake2b"))
    except OSError:
        return False


@pytest.fixture(scope="module")
def emu() -> EmulatorProc:
    with run_emulator("--seed", "17", "--calls", "80", "--days", "20", "--rate-limits", FAST) as e:
        yield e  # type: ignore[misc]


def test_digest_xattr_is_b2sum_of_the_content(emu: EmulatorProc, tmp_path: Path) -> None:
    with mounted(emu, tmp_path) as m:
        f = recordings(m.path)[0]
        cached(m, [f])
        assert xattr(f, "user.rc.blake2b") == b2sum(emu.content(rec_id(f)))
        out = subprocess.run(["b2sum", str(f)], capture_output=True, text=True, timeout=30, check=True)
        assert out.stdout.split()[0] == xattr(f, "user.rc.blake2b")


def test_damaged_cache_entries_are_fetched_again_not_served(emu: EmulatorProc, tmp_path: Path) -> None:
    with mounted(emu, tmp_path) as m:
        files = recordings(m.path)[:3]
        cached(m, files)
    state = tmp_path  # the same XDG dirs for the remount
    with mounted(emu, state, name="mnt2") as m:
        for f in files[:2]:
            damage(cache_file_of(m, rec_id(f)))
        before = emu.content_requests()
        files2 = [m.path / f.relative_to(tmp_path / "mnt") for f in files]
        for f in files2:
            assert read_file(f) == emu.content(rec_id(f))
        assert emu.content_requests() - before == 2  # the two damaged ones, fetched again
        errors = " ".join(e["cause"] for e in m.status()["errors"])
        assert errors.count("do not match the digest") == 2
        assert m.status()["cache"]["damaged"] == 2
        damaged = list((cache_dir_of(m) / "damaged").iterdir())
        assert len(damaged) == 2  # kept aside for inspection
        assert "do not match" in m.log_text()


def test_verify_finds_damage_and_repair_fetches_it_again(emu: EmulatorProc, tmp_path: Path) -> None:
    with mounted(emu, tmp_path) as m:
        files = recordings(m.path)[3:6]
        cached(m, files)
        for f in files[:2]:
            damage(cache_file_of(m, rec_id(f)))
        r = m.rcfs("verify", str(m.path), check=False)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "3 recordings: 1 intact, 2 damaged" in r.stdout
        for f in files[:2]:
            assert f"recording {rec_id(f)}" in r.stdout
        r = m.rcfs("verify", str(m.path), "--repair", check=False)
        assert r.returncode == 0 and "2 repaired" in r.stdout, r.stdout + r.stderr
        r = m.rcfs("verify", str(m.path))
        assert "3 intact, 0 damaged" in r.stdout
        for f in files:  # the repaired entries hold the right bytes
            assert cache_file_of(m, rec_id(f)).read_bytes() == emu.content(rec_id(f))
        assert m.status()["cache"]["last_verify"]["damaged"] == 0


def test_a_damaged_recording_deleted_upstream_answers_eio(tmp_path: Path) -> None:
    with run_emulator("--seed", "18", "--calls", "40", "--days", "10", "--rate-limits", FAST) as emu:
        with mounted(emu, tmp_path) as m:
            f = recordings(m.path)[0]
            good = emu.content(rec_id(f))
            cached(m, [f])
            emu.admin.delete(f"/recordings/{rec_id(f)}").raise_for_status()
            m.rcfs("refresh", str(m.path))
            wait_for(lambda: m.status()["index"]["deleted_kept"] == 1, 30, "the archive")
        with mounted(emu, tmp_path, name="mnt2") as m:
            f2 = m.path / f.relative_to(tmp_path / "mnt")
            damage(cache_file_of(m, rec_id(f)))
            with pytest.raises(OSError) as err:
                read_file(f2)
            assert err.value.errno == errno.EIO
            assert "cannot be fetched again" in " ".join(e["cause"] for e in m.status()["errors"])
            assert xattr(f2, "user.rc.blake2b") == b2sum(good)  # what a backup can check


def test_a_lying_content_length_is_refused_and_not_kept(tmp_path: Path) -> None:
    with run_emulator("--seed", "19", "--calls", "20", "--days", "10", "--rate-limits", FAST,
                      "--faults", "lie_length=1000000000000") as emu:
        with mounted(emu, tmp_path) as m:
            f = recordings(m.path)[0]
            with pytest.raises(OSError) as err:
                read_file(f)
            assert err.value.errno == errno.EIO
            assert "refused" in " ".join(e["cause"] for e in m.status()["errors"])
            wait_for(lambda: f.stat().st_size < 10**9, 10, "the size to be forgotten")
            assert xattr(f, "user.rc.size_exact") == "0"
        with mounted(emu, tmp_path, name="mnt2") as m:
            f2 = m.path / f.relative_to(tmp_path / "mnt")
            assert f2.stat().st_size < 10**9  # not kept across mounts either
            emu.admin.put("/faults", json={}).raise_for_status()
            assert read_file(f2) == emu.content(rec_id(f2))


@pytest.mark.parametrize("fault", ["trickle=1", "stall_after=1000"])
def test_a_trickling_or_stalling_host_ends_in_eio_and_stops(
    tmp_path: Path, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host at 1 byte a second, or one that stops after 1,000 bytes: the reader gets
    EIO in bounded time, and once nobody waits no more requests are made."""
    monkeypatch.setenv("RCFS_STALL_SECONDS", "2")  # the mount inherits it (30 s by default)
    with run_emulator("--seed", "20", "--calls", "20", "--days", "10", "--rate-limits", FAST,
                      "--faults", fault) as emu, mounted(emu, tmp_path) as m:
        f = recordings(m.path)[0]
        t0 = time.monotonic()
        with pytest.raises(OSError) as err:
            read_file(f)
        took = time.monotonic() - t0
        assert err.value.errno == errno.EIO
        print(f"{fault}: EIO after {took:.1f} s, {emu.content_requests()} requests")
        assert took < 90
        # A reader that goes away: its download ends instead of retrying for ever.
        g = recordings(m.path)[1]
        reader = subprocess.Popen([sys.executable, "-c", f"open({str(g)!r}, 'rb').read()"])
        try:
            wait_for(lambda: m.status()["downloads"]["active"] + m.status()["downloads"]["queued"] > 0,
                     30, "the download")
            time.sleep(1)
        finally:
            reader.send_signal(signal.SIGKILL)
            reader.wait(10)
        # The kernel answers for the killed reader's pending read only once the daemon
        # does: the download must end at its next failed attempt, not its last (~22 s).
        wait_for(lambda: m.status()["downloads"]["active"] + m.status()["downloads"]["queued"] == 0,
                 12, "the abandoned download to end")
        requests = emu.content_requests()
        time.sleep(6)
        assert emu.content_requests() == requests, m.log_text()[-6000:]  # nothing more after it ended


def test_the_cache_directory_removed_under_a_mount_is_recreated(emu: EmulatorProc, tmp_path: Path) -> None:
    with mounted(emu, tmp_path) as m:
        files = recordings(m.path)[6:9]
        cached(m, files[:1])
        shutil.rmtree(cache_dir_of(m))
        for f in files[1:]:  # new downloads work: the directories come back
            assert read_file(f) == emu.content(rec_id(f))
        assert "recreated" in m.log_text()

