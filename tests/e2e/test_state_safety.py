"""The state directory on its bad days, through real mounts.

- A damaged index (a zeroed page in the middle, or not a database at all) is
  moved aside, kept, reported in one line, and rebuilt from the call log: the
  tree serves the same files as before the damage.
- A second `rcfs mount` of the same account on the same state directory, or of
  any account on the same cache directory, ends with one line and exit status
  1 while the first mount keeps working; the lock dies with the daemon
  (`kill -9`).
- A full state disk (a tmpfs filled up after mounting) makes `rcfs refresh`
  exit 1 with one line, counted in status.json, and the next refresh after
  space comes back works.

Every mount is unmounted and reaped in `finally` (conftest.py's `mounted`,
`_reap_daemon` for a daemonized one); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import FAST, EmulatorProc, is_mounted, mounted, rcfs_env, require_fuse, run_emulator, wait_for
from .faultkit import rec_id, recordings, verify_files

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]

PAGE = 4096


def _account_dir(emu: EmulatorProc) -> str:
    return "".join(c for c in emu.info["account_id"] if c.isalnum() or c in "-.") or "account"


def index_path(emu: EmulatorProc, home: Path) -> Path:
    return home / "state" / "rcfs" / "accounts" / _account_dir(emu) / "index.sqlite"


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in recordings(root))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quick_check(path: Path) -> str:
    try:
        conn = sqlite3.connect(path)
        try:
            return str(conn.execute("PRAGMA quick_check").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)


def damage(path: Path, how: str) -> None:
    if how == "not-a-database":
        path.write_text("this is not an index\n" * 1000)
        return
    pages = path.stat().st_size // PAGE
    assert pages >= 8, pages
    with open(path, "r+b") as f:  # a zeroed page in the middle, as a bad disk or copy leaves it
        f.seek((pages // 2) * PAGE)
        f.write(b"\0" * PAGE)
    assert quick_check(path) != "ok", "the damage should be real"


@pytest.mark.parametrize("how", ["zeroed-page", "not-a-database"])
def test_a_damaged_index_is_moved_aside_and_rebuilt(
    emulator: EmulatorProc, tmp_path: Path, how: str
) -> None:
    require_fuse()
    with mounted(emulator, tmp_path) as m:
        before = tree(m.path)
        assert len(before) >= 40
        verify_files(emulator, recordings(m.path)[:3])  # in the content cache, which outlives the index
    path = index_path(emulator, tmp_path)
    assert path.exists() and not Path(f"{path}-wal").exists()
    damage(path, how)
    damaged = sha(path)

    with mounted(emulator, tmp_path, name="mnt2") as m2:
        assert tree(m2.path) == before, "the rebuilt tree must serve the same files"
        files = recordings(m2.path)
        verify_files(emulator, files[:3] + files[-2:])
        asides = [p for p in path.parent.glob("index.sqlite.damaged-*") if p.name.endswith("Z")]
        assert len(asides) == 1, sorted(p.name for p in path.parent.iterdir())
        assert sha(asides[0]) == damaged, "the damaged file is kept for the user, as it was"
        lines = [ln for ln in m2.log_text().splitlines() if str(asides[0]) in ln]
        assert len(lines) == 1 and "was damaged" in lines[0] and str(path) in lines[0], lines
        st = m2.status()
        assert st["index"]["recordings"] == len(before)
        causes = [e["cause"] for e in st["errors"]]
        assert len(causes) == 1 and str(asides[0]) in causes[0], causes
        assert "rebuilding it from the call log" in causes[0]
    assert quick_check(path) == "ok"


def _record_leaves(path: Path) -> list[int]:
    """Checkpoint the live index (its pages all in the main file), then list the
    leaf pages of its call-log records: what a day's listing (calls.json) reads."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name='records' AND pagetype='leaf'")]
    except sqlite3.OperationalError as exc:  # SQLite built without dbstat
        pytest.skip(f"cannot find the records' pages: {exc}")
    finally:
        conn.close()


def test_damage_met_while_mounted_is_eio_recorded_once_and_rebuilt_at_remount(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    require_fuse()
    starts = sorted({r["startTime"][:10] for r in
                     emulator.admin.get("/recordings").json()["recordings"]})
    days = [Path(*d.split("-")) for d in starts[-3:]]  # listed only after the damage
    with mounted(emulator, tmp_path) as m:
        path = index_path(emulator, tmp_path)
        leaves = _record_leaves(path)
        assert leaves
        with open(path, "r+b") as f:  # the disk under the index goes bad while mounted
            for page in leaves:
                f.seek((page - 1) * PAGE)
                f.write(b"\0" * PAGE)
        for _ in range(2):
            for day in days:
                with pytest.raises(OSError) as exc:
                    os.listdir(m.path / day)
                assert exc.value.errno == errno.EIO, exc.value
        assert m.proc is not None and m.proc.poll() is None, "the mount must survive"
        assert os.listdir(m.path), "what does not need the damaged pages still answers"
        causes = [e["cause"] for e in m.status()["errors"]]
        assert causes == [f"the index {path} is damaged (database disk image is malformed); "
                          "remount to rebuild it from the call log"], causes
        logged = [ln for ln in m.log_text().splitlines()
                  if "is damaged" in ln and " DEBUG " not in ln]
        assert len(logged) == 1, logged
        assert "Traceback" not in m.log_text()
    with mounted(emulator, tmp_path, name="mnt2") as m2:
        for day in days:
            assert "calls.json" in os.listdir(m2.path / day)
            assert json.loads((m2.path / day / "calls.json").read_bytes())
        causes = [e["cause"] for e in m2.status()["errors"]]
        assert len(causes) == 1 and "damage seen while it was mounted" in causes[0], causes
        assert [p for p in path.parent.glob("index.sqlite.damaged-*") if p.name.endswith("Z")]


def _daemon_mount(env: dict[str, str], mp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    mp.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "rcfs", "mount", str(mp), "--tz", "UTC", "--since", "40d",
         "--log-file", f"{mp}.log", *args],
        env=env, capture_output=True, text=True, timeout=120)


def _reap_daemon(env: dict[str, str], mp: Path) -> None:
    """Stop a daemonized mount that should never have started (the old code's outcome)."""
    if not is_mounted(mp):
        return
    pid = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = int(json.loads((mp / ".rcfs" / "status.json").read_bytes())["pid"])
    subprocess.run([sys.executable, "-m", "rcfs", "umount", str(mp)], env=env,
                   capture_output=True, timeout=60, check=False)
    if is_mounted(mp):
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False, capture_output=True)
    if pid is not None:
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 20, "the daemon to exit")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def _refused_in_one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rcfs: "), r.stderr
    assert "--redis" in lines[0] and "its own state and cache directory" in lines[0], lines[0]
    return lines[0]


def test_a_second_mount_of_the_same_state_dir_is_refused(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    require_fuse()
    second = tmp_path / "second"
    with mounted(emulator, tmp_path) as m:
        try:
            files = recordings(m.path)
            emulator.reset_stats()
            r = _daemon_mount(m.env, second)
            line = _refused_in_one_line(r)
            assert m.proc is not None
            assert (f"account {emulator.info['account_id']} is already mounted at {m.path} "
                    f"(pid {m.proc.pid})") in line, line
            assert not is_mounted(second)
            # Refused before it touched the index or read the call log.
            reqs = emulator.stats()["requests"]
            assert not any(op in reqs for op in ("readCompanyCallLog", "syncAccountCallLog")), reqs
            # The first mount is unharmed.
            verify_files(emulator, files[:2])
            assert m.rcfs("refresh", str(m.path), timeout=120).returncode == 0
            assert m.status()["errors"] == []
        finally:
            _reap_daemon(m.env, second)
        # The lock dies with its daemon: kill -9, and the next mount goes ahead.
        assert m.proc is not None
        m.proc.kill()
        m.proc.wait(10)
        assert m.rcfs("umount", str(m.path), timeout=60).returncode == 0
    with mounted(emulator, tmp_path, name="third") as m3:
        assert tree(m3.path) == [str(f.relative_to(m.path)) for f in files]


def test_a_second_mount_sharing_the_cache_dir_is_refused(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    require_fuse()
    cache = tmp_path / "shared-cache"
    other = tmp_path / "other"
    other.mkdir()
    second, third = tmp_path / "second", tmp_path / "third"
    env = rcfs_env(emulator, other)  # its own state directory
    with mounted(emulator, tmp_path, "--cache-dir", str(cache)) as m:
        try:
            r = _daemon_mount(env, second, "--cache-dir", str(cache))
            line = _refused_in_one_line(r)
            assert m.proc is not None
            assert (f"the cache directory {cache} is already used by another rcfs mount at "
                    f"{m.path} (pid {m.proc.pid})") in line, line
            assert not is_mounted(second)
            assert not index_path(emulator, other).exists(), "refused before opening the index"
            verify_files(emulator, recordings(m.path)[:2])
            assert m.status()["errors"] == []
            # `rcfs umount` returns once the mount is gone, its daemon exits a moment
            # later: a mount right after waits for it instead of failing.
            assert m.rcfs("umount", str(m.path), timeout=60).returncode == 0
            r = _daemon_mount(env, third, "--cache-dir", str(cache))
            assert r.returncode == 0, r.stderr
            verify_files(emulator, recordings(third)[:2])
        finally:
            _reap_daemon(env, second)
            _reap_daemon(env, third)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full, to the last page."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, PAGE):
            block = b"\xa5" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def test_a_full_state_disk_fails_refresh_in_one_line(tmp_path: Path) -> None:
    require_fuse()
    with run_emulator("--seed", "21", "--calls", "40", "--days", "5", "--rate-limits", FAST) as emu, \
            small_tmpfs(tmp_path / "state", "16m"), mounted(emu, tmp_path) as m:
        path = index_path(emu, tmp_path)
        assert path.exists()
        before = tree(m.path)
        filler = fill(tmp_path / "state")
        # More new calls than the index's journal has room for.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        added = emu.admin.post("/calls", json={"count": 1500, "startTime": start.isoformat(),
                                               "recorded": True})
        added.raise_for_status()
        new_ids = {str(rec["recording"]["id"]) for rec in added.json()["records"]}

        r = m.rcfs("refresh", str(m.path), timeout=120, check=False)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert r.stderr.strip() == f"rcfs: refresh failed: the state disk is full ({path})", r.stderr
        st = m.status()
        assert st["refresh"]["failures"] == 1, st["refresh"]
        causes = [e["cause"] for e in st["errors"]]
        assert f"refresh failed: the state disk is full ({path})" in causes, causes
        assert not any("internal error" in c for c in causes), causes
        # The mount goes on serving what it had.
        assert tree(m.path) == before
        verify_files(emu, recordings(m.path)[:2])

        filler.unlink()  # room again: the next refresh does what the failed one could not
        r = m.rcfs("refresh", str(m.path), timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: new_ids <= {rec_id(p) for p in recordings(m.path)}, 30,
                 "the new recordings to appear")
        assert m.status()["refresh"]["failures"] == 1
