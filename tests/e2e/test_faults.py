"""Faults against real mounts: nothing lost, nothing hangs.

Each test mounts the emulator with the fault it is about (`--faults`, `PUT
/__emulator/faults|auth|rate-limits`), drives real tools through the mount,
and ends with the same audit: every file read back, and every entry of the
content cache, equals the emulator's bytes (`faultkit`). Every wait is
bounded; every process and mount started here is ended by PID in `finally`.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from .conftest import FAST, EmulatorProc, is_mounted, mounted, require_fuse, run_emulator, wait_for
from .faultkit import (
    background,
    cache_entries,
    partial_files,
    read_file,
    rec_id,
    recordings,
    settled,
    status_when,
    verify_cache,
    verify_files,
)

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]


def emulator(seed: int, calls: int, *extra: str) -> AbstractContextManager[EmulatorProc]:
    return run_emulator("--seed", str(seed), "--calls", str(calls), "--days", "10",
                        "--rate-limits", FAST, *extra)


def faults(emu: EmulatorProc, **settings: object) -> None:
    emu.admin.put("/faults", json=settings).raise_for_status()


@pytest.mark.slow
def test_rsync_through_a_flaky_platform(tmp_path: Path) -> None:
    """5% 5xx, 5% connections reset mid-body, 200 ms latency on every request."""
    require_fuse()
    spec = "5xx=0.05,reset=0.05,latency=200ms"
    with emulator(11, 50, "--faults", spec) as emu, mounted(emu, tmp_path) as m:
        dest = tmp_path / "backup"
        subprocess.run(["rsync", "-a", f"{m.path}/", f"{dest}/"], check=True, timeout=240,
                       capture_output=True)
        files = recordings(m.path)
        assert len(files) >= 25
        for f in files:
            copy = dest / f.relative_to(m.path)
            assert copy.read_bytes() == emu.content(rec_id(f)), f
        settled(m)
        assert verify_cache(emu, tmp_path / "cache" / "rcfs" / _account(emu)) == len(files)
        log = m.log_text()
        # The faults did happen (or this test proves nothing) and were survived.
        assert "resuming" in log or "interrupted" in log, "no reset was injected"
        assert "HTTP 503" in log, "no 5xx was injected"
        assert m.status()["errors"] == []


def _account(emu: EmulatorProc) -> str:
    return "".join(c for c in emu.info["account_id"] if c.isalnum() or c in "-.") or "account"


@pytest.mark.slow
def test_short_tokens_then_revoked_credentials(tmp_path: Path) -> None:
    """Tokens live 2 s during a paced read-through; then credentials are revoked and restored."""
    require_fuse()
    with emulator(12, 60, "--faults", "token_ttl=2s,latency=100ms") as emu, mounted(emu, tmp_path) as m:
        files = recordings(m.path)
        first, rest = files[: len(files) // 2], files[len(files) // 2 :]
        t0 = time.monotonic()
        for f in first:  # a backup that takes its time: tokens expire under it
            verify_files(emu, [f])
            time.sleep(0.4)
        assert time.monotonic() - t0 > 4, "the read-through should outlive two tokens"
        st = m.status()
        assert st["auth"]["refreshes"] + st["auth"]["logins"] >= 3, st["auth"]
        assert st["errors"] == []

        emu.admin.put("/auth", json={"jwt_valid": False, "revoke_tokens": True}).raise_for_status()
        t0 = time.monotonic()
        with pytest.raises(PermissionError) as exc:
            read_file(rest[0])
        assert exc.value.errno == errno.EACCES
        assert time.monotonic() - t0 < 30, "refused credentials must fail fast"
        with pytest.raises(PermissionError):  # and keep failing, fast, without a new login burst
            read_file(rest[1])
        verify_files(emu, first[:3])  # cached recordings stay readable
        causes = " ".join(e["cause"] for e in m.status()["errors"])
        assert "refused the JWT" in causes and "OAU-" in causes, causes
        assert "refused the JWT" in m.rcfs("status", str(m.path)).stdout

        emu.admin.put("/auth", json={"jwt_valid": True}).raise_for_status()
        deadline = time.monotonic() + 60
        while True:
            try:
                read_file(rest[0])
                break
            except PermissionError:
                assert time.monotonic() < deadline, "reads did not recover after credentials came back"
                time.sleep(1)
        verify_files(emu, rest)
        settled(m)
        assert verify_cache(emu, tmp_path / "cache" / "rcfs" / _account(emu)) == len(files)


@pytest.mark.slow
def test_heavy_limit_cut_during_rsync(tmp_path: Path) -> None:
    """The Heavy budget drops from 300/s to 4/s mid-backup: slower, never failing, few 429s."""
    require_fuse()
    with emulator(13, 50, "--faults", "latency=50ms") as emu, mounted(emu, tmp_path) as m:
        emu.reset_stats()
        dest = tmp_path / "backup"
        with background(["rsync", "-a", f"{m.path}/", f"{dest}/"], stderr=subprocess.PIPE) as rsync:
            wait_for(lambda: len(recordings(dest)) >= 5 if dest.exists() else False, 60, "rsync to start")
            emu.admin.put("/rate-limits", json={"heavy": "4/1s"}).raise_for_status()
            t_cut = time.monotonic()
            _, err = rsync.communicate(timeout=200)
            assert rsync.returncode == 0, err
        elapsed = time.monotonic() - t_cut
        files = recordings(m.path)
        for f in files:
            assert (dest / f.relative_to(m.path)).read_bytes() == emu.content(rec_id(f)), f
        stats = emu.stats()
        heavy = stats["groups"]["Heavy"]
        copied_after = heavy["requests"] - 5
        assert elapsed >= copied_after / 4 * 0.6, (elapsed, heavy)  # it did slow down
        assert heavy["throttled"] <= 3, heavy  # rare
        st = m.status()
        assert st["rate_limits"]["Heavy"]["limit"] == 4
        assert st["requests"]["Heavy"]["throttled_429"] == heavy["throttled"]
        assert st["errors"] == []


@pytest.mark.slow
def test_kill_9_during_downloads(tmp_path: Path) -> None:
    """SIGKILL with downloads half-done: umount clears the dead mount, the cache holds only
    complete entries, and the next mount serves everything."""
    require_fuse()
    cache = tmp_path / "content"
    with emulator(14, 30) as emu:
        with mounted(emu, tmp_path, "--cache-dir", str(cache)) as m:
            files = recordings(m.path)
            verify_files(emu, files[:4])
            # Their commits (hash, fsync, row) follow the last byte in a worker thread;
            # an fsync on a busy disk can take seconds.
            wait_for(lambda: m.status()["cache"]["entries"] >= 4, 60, "the four commits")
            # Downloads that break mid-body and wait before resuming: partial files with bytes.
            faults(emu, reset=0.9, latency="2s")
            outs = [tmp_path / f"out{i}" for i in range(8)]
            readers = [subprocess.Popen(["cat", str(f)], stdout=out.open("wb"),
                                        stderr=subprocess.DEVNULL)
                       for f, out in zip(files[4:12], outs, strict=True)]
            try:
                wait_for(lambda: any(p.stat().st_size > 0 for p in partial_files(cache)), 30,
                         "partial downloads with bytes")
                assert m.proc is not None
                m.proc.kill()
                m.proc.wait(10)
                failed = 0
                for r, f, out in zip(readers, files[4:12], outs, strict=True):
                    r.wait(30)  # ENOTCONN, not a hang
                    if r.returncode == 0:  # finished before the kill: then it is whole
                        assert out.read_bytes() == emu.content(rec_id(f)), f
                    else:
                        failed += 1
                assert failed > 0, "the kill should have caught some readers mid-download"
            finally:
                for r in readers:
                    if r.poll() is None:
                        r.kill()
                        r.wait(10)
            assert is_mounted(m.path)
            with pytest.raises(OSError) as exc:
                os.listdir(m.path)
            assert exc.value.errno == errno.ENOTCONN
            assert partial_files(cache), "the crash should leave partial files behind"
            complete = verify_cache(emu, cache)
            assert complete >= 4
            out = m.rcfs("umount", str(m.path), timeout=60)
            assert out.returncode == 0 and not is_mounted(m.path)
        faults(emu)
        with mounted(emu, tmp_path, "--cache-dir", str(cache), name="mnt2") as m2:
            files2 = recordings(m2.path)
            assert [f.name for f in files2] == [f.name for f in files]
            assert not partial_files(cache), "stale partial files must go at the next start"
            before = emu.content_requests()
            verify_files(emu, files2)
            settled(m2)
            assert emu.content_requests() - before == len(files2) - complete  # cache re-used
        assert verify_cache(emu, cache) == len(files)


@pytest.mark.slow
def test_cache_disk_full(tmp_path: Path) -> None:
    """The cache lives on a 1 MiB tmpfs: reads return the right bytes (cached, streamed
    through when bigger than the free space, or ENOSPC when the disk filled up under a
    download that fitted), and say why."""
    require_fuse()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(small)],
                   check=True, timeout=30)
    try:
        cache = small / "content"
        with emulator(15, 30) as emu, mounted(emu, tmp_path, "--cache-dir", str(cache),
                                                  "--cache-min-free", "0") as m:
            ok, full = [], []
            for f in recordings(m.path):
                try:
                    assert read_file(f) == emu.content(rec_id(f)), f
                    ok.append(f)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, (f, exc)
                    full.append(f)
            assert ok, (len(ok), len(full))
            streamed = m.log_text().count("streaming it through without caching")
            assert streamed >= 1  # bigger than the free space: read anyway, not cached
            causes = [e["cause"] for e in m.status()["errors"]]
            if full:
                assert "disk is full" in m.log_text()
                assert any("disk is full" in c for c in causes)
            for f in full:  # each failure recorded once, however many reads waited on it
                assert sum(c.endswith(f"recording {rec_id(f)}") for c in causes) <= 1, causes
            settled(m)
            assert verify_cache(emu, cache) >= 1
            assert verify_cache(emu, cache) < len(ok)  # the streamed ones were not kept
            assert not partial_files(cache), "failed downloads must leave no partial file"
            # A cached file removed behind rcfs's back: noticed, fetched again, never a stub.
            kept = set(cache_entries(cache))
            victim, victim_file = next(iter(cache_entries(cache).items()))
            victim_file.unlink()
            # Room again: the files that failed or were streamed through now read
            # correctly, and the streamed ones are cached this time.
            subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True, timeout=30)
            again = [f for f in ok if rec_id(f) not in kept] + full
            verify_files(emu, again + [f for f in ok if rec_id(f) == victim])
            settled(m)
            assert {rec_id(f) for f in again} <= set(cache_entries(cache))
            verify_cache(emu, cache)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly_and_abandons_downloads(tmp_path: Path, signum: int) -> None:
    require_fuse()
    cache = tmp_path / "content"
    with emulator(16, 20) as emu, mounted(emu, tmp_path, "--cache-dir", str(cache)) as m:
        files = recordings(m.path)
        verify_files(emu, files[:2])
        faults(emu, latency="60s")
        with background(["cat", str(files[5])], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) as reader:
            wait_for(lambda: bool(partial_files(cache)), 20, "the download to start")
            assert reader.poll() is None
            assert m.proc is not None
            t0 = time.monotonic()
            m.proc.send_signal(signum)
            assert m.proc.wait(30) == 0
            assert time.monotonic() - t0 < 20
            reader.wait(30)
            assert reader.returncode != 0
        assert not is_mounted(m.path)
        assert f"received {signal.Signals(signum).name}: unmounting" in m.log_text()
        assert not partial_files(cache)
        assert set(cache_entries(cache)) == {rec_id(f) for f in files[:2]}
        verify_cache(emu, cache)


@pytest.mark.slow
def test_reader_killed_while_blocked_leaks_nothing(tmp_path: Path) -> None:
    require_fuse()
    cache = tmp_path / "content"
    with emulator(17, 10) as emu, mounted(emu, tmp_path, "--cache-dir", str(cache)) as m:
        files = recordings(m.path)
        faults(emu, latency="4s")
        reader = subprocess.Popen(["cat", str(files[0])], stdout=subprocess.DEVNULL)
        try:
            time.sleep(1)
            assert reader.poll() is None, "the reader should be blocked on the slow download"
            t0 = time.monotonic()
            reader.kill()
            reader.wait(10)
            assert time.monotonic() - t0 < 5, "a killed reader must not wait for the download"
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait(10)
        # The download outlives its reader, finishes, and leaves no task or handle behind.
        status_when(m, lambda st: st["downloads"]["active"] == 0 and st["downloads"]["queued"] == 0
                    and st["cache"]["entries"] == 1, 30, "the download to finish")
        faults(emu)
        verify_files(emu, files)
        st = settled(m)
        assert st["errors"] == []
        assert verify_cache(emu, cache) == len(files)


def test_unmount_with_blocked_reader_leaves_no_partial(tmp_path: Path) -> None:
    """`rcfs umount` while a read waits on a slow download: bounded, and no partial kept."""
    require_fuse()
    cache = tmp_path / "content"
    with emulator(18, 8) as emu, mounted(emu, tmp_path, "--cache-dir", str(cache)) as m:
        f = recordings(m.path)[0]
        faults(emu, latency="60s")
        with background(["cat", str(f)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as reader:
            wait_for(lambda: bool(partial_files(cache)), 20, "the download to start")
            t0 = time.monotonic()
            m.rcfs("umount", str(m.path), timeout=60)
            reader.wait(30)
            assert m.proc is not None
            assert m.proc.wait(30) == 0
            assert time.monotonic() - t0 < 30
        assert not is_mounted(m.path) and not partial_files(cache)
        assert cache_entries(cache) == {}
