"""A damaged index costs a re-index, never the mount (rcfs/index/check.py).

At open: a zeroed page in the middle, a truncated file, a text file and an
orphaned -wal are each found by `check`, moved aside with their companions
and replaced by an empty index; a healthy index is left byte for byte as it
was. Later: an index read that meets damage, or a write that meets a full
disk, raises one domain error that fuse_ops answers with EIO, reported once.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from rcfs.errors import RcfsError
from rcfs.fuse_ops import errno_for
from rcfs.index import Index, IndexDamaged, StateDiskFull
from rcfs.index.check import check, move_aside

from .rcfs_records import make_record

DAY_MS = 86_400_000
NOV_1 = 1793491200000  # 2026-11-01T00:00:00Z
PAGE = 4096


def build(path: Path, calls: int = 2000) -> None:
    """An index of `calls` recorded calls over 28 days, closed cleanly (no -wal left)."""
    idx = Index(path)
    try:
        idx.upsert_records(
            make_record(f"C{i}", f"2026-11-{1 + i % 28:02d}T09:{i % 60:02d}:15.123Z",
                        recording_id=str(10**9 + i))
            for i in range(calls))
    finally:
        idx.close()
    assert not Path(f"{path}-wal").exists()


def zero_page(path: Path, page: int) -> None:
    with open(path, "r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(b"\0" * PAGE)


def middle_page(path: Path) -> int:
    """The leaf of the call-log records nearest the middle of the file: a day's
    listing reads it (the exact middle page may be an index no listing uses)."""
    middle = path.stat().st_size // PAGE // 2
    conn = sqlite3.connect(path)
    try:
        leaves = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name='records' AND pagetype='leaf'")]
    except sqlite3.OperationalError:  # SQLite built without dbstat
        return middle
    finally:
        conn.close()
    return min(leaves, key=lambda n: abs(n - middle))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in directory.iterdir()}


def read_every_day(idx: Index) -> list[Exception]:
    """Query every day of the index as a listing would, from a fresh connection."""
    failures: list[Exception] = []

    def work() -> None:
        for day in range(28):
            lo = NOV_1 + day * DAY_MS
            try:
                idx.recordings_between(lo, lo + DAY_MS)
                idx.records_between(lo, lo + DAY_MS)
            except Exception as exc:
                failures.append(exc)

    t = threading.Thread(target=work)  # its own connection: no page cached from before
    t.start()
    t.join(60)
    return failures


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "index.sqlite"
    build(path)
    return path


def assert_rebuilt(path: Path, damaged_sha: str, reason: str) -> None:
    """open_checked moved the damaged file aside, said so once, and gave an empty index."""
    said: list[str] = []
    idx = Index.open_checked(path, on_error=said.append)
    try:
        assert idx.stats()["recordings"] == 0
        idx.upsert_records([make_record("N1", recording_id="9")])
        assert idx.stats()["recordings"] == 1
    finally:
        idx.close()
    asides = sorted(path.parent.glob("index.sqlite.damaged-*"))
    assert [a.name for a in asides if not a.name.endswith(("-wal", "-shm"))] == [asides[0].name]
    aside = asides[0]
    assert aside.name.startswith("index.sqlite.damaged-2") and aside.name.endswith("Z")
    assert sha(aside) == damaged_sha, "the damaged file is kept as it was"
    assert len(said) == 1 and "\n" not in said[0], said
    assert str(path) in said[0] and str(aside) in said[0] and reason in said[0], said
    assert check(path) is None


def test_a_zeroed_page_in_the_middle_is_found_and_moved_aside(built: Path) -> None:
    assert built.stat().st_size // PAGE > 500
    zero_page(built, middle_page(built))
    damaged = sha(built)
    # What the issue saw: without the check, the index opens and one day fails later.
    idx = Index(built)
    try:
        failures = read_every_day(idx)
    finally:
        idx.close()
    assert 0 < len(failures) < 28, failures
    assert check(built) == "damage seen while it was mounted: database disk image is malformed"
    assert_rebuilt(built, damaged, "malformed")


@pytest.mark.parametrize("where", ["records", "exact middle"])
def test_quick_check_finds_the_zeroed_page_by_itself(built: Path, where: str) -> None:
    page = middle_page(built) if where == "records" else built.stat().st_size // PAGE // 2
    zero_page(built, page)
    reason = check(built)
    assert reason is not None and "\n" not in reason
    assert "malformed" in reason or f"Page {page}" in reason, reason
    assert_rebuilt(built, sha(built), reason)


def test_a_truncated_file_is_found_and_moved_aside(built: Path) -> None:
    with open(built, "r+b") as f:
        f.truncate(built.stat().st_size // 2)
    assert check(built) == "database disk image is malformed"
    assert_rebuilt(built, sha(built), "malformed")


def test_a_text_file_is_found_and_moved_aside_with_its_companions(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_text("this is not a database\n" * 200)
    Path(f"{path}-wal").write_bytes(b"junk wal")
    Path(f"{path}-shm").write_bytes(b"junk shm")
    with pytest.raises(IndexDamaged, match="not a database"):  # what a plain open says
        Index(path)
    assert check(path) == "file is not a database"
    text = sha(path)
    assert_rebuilt(path, text, "file is not a database")
    aside = next(p for p in tmp_path.glob("index.sqlite.damaged-*") if p.name.endswith("Z"))
    assert Path(f"{aside}-wal").read_bytes() == b"junk wal"
    assert Path(f"{aside}-shm").exists()  # SQLite rewrites a -shm as it opens: derived data


def test_an_orphaned_wal_is_moved_aside_not_replayed(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    Path(f"{path}-wal").write_bytes(b"a -wal whose database is gone")
    assert check(path) == "its -wal without the database"
    idx = Index.open_checked(path)
    idx.close()
    assert [p.name for p in tmp_path.glob("*-wal")] and not Path(f"{path}-wal").exists()


def test_a_healthy_index_is_left_untouched(built: Path) -> None:
    before = listing(built.parent)
    said: list[str] = []
    assert check(built) is None
    idx = Index.open_checked(built, on_error=said.append)
    try:
        assert idx.stats()["recordings"] == 2000
        assert read_every_day(idx) == []
    finally:
        idx.close()
    assert said == []
    assert listing(built.parent) == before


def test_an_absent_index_is_created(tmp_path: Path) -> None:
    idx = Index.open_checked(tmp_path / "index.sqlite")
    idx.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.sqlite"]


def test_damage_met_while_mounted_is_one_domain_error_reported_once(built: Path) -> None:
    said: list[str] = []
    idx = Index(built, on_error=said.append)  # opened before the damage: no check
    try:
        zero_page(built, middle_page(built))
        failures = read_every_day(idx) + read_every_day(idx)
        assert failures, "the damaged page should be met"
        for exc in failures:
            assert isinstance(exc, IndexDamaged), repr(exc)
            assert errno_for(exc) == errno.EIO
            assert getattr(exc, "_rcfs_recorded", False)  # fuse_ops records it no more
        assert len(said) == 1, said
        assert said[0] == (f"the index {built} is damaged (database disk image is malformed); "
                           "remount to rebuild it from the call log")
        assert idx.stats()["recordings"] == 2000  # the rest still answers
    finally:
        idx.close()
    # The next mount rebuilds it, whatever quick_check would say.
    assert check(built) == "damage seen while it was mounted: database disk image is malformed"


def test_a_full_disk_is_one_domain_error_and_the_next_write_works(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    said: list[str] = []
    idx = Index(path, on_error=said.append)
    try:
        conn: Any = idx._conn()  # this thread's connection: a disk that holds no more pages
        conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0] + 2}")
        records = [make_record(f"C{i}", recording_id=str(i)) for i in range(300)]
        for _ in range(2):
            with pytest.raises(StateDiskFull) as exc:
                idx.upsert_records(records)
            assert str(exc.value) == f"the state disk is full ({path})"
            assert isinstance(exc.value, RcfsError) and errno_for(exc.value) == errno.EIO
        assert said == [f"the state disk is full ({path})"]
        assert idx.stats()["records"] == 0  # nothing half-written
        conn.execute("PRAGMA max_page_count=1073741823")  # room again
        assert len(idx.upsert_records(records).added_recordings) == 300
    finally:
        idx.close()


def test_move_aside_never_overwrites_an_earlier_copy(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 11, 23, 9, 30, 15, tzinfo=UTC)
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"first")
    first = move_aside(path, when)
    path.write_bytes(b"second")
    second = move_aside(path, when)
    assert first.name == "index.sqlite.damaged-20261123T093015Z"
    assert second.name == "index.sqlite.damaged-20261123T093015Z.2"
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")


def test_an_unreadable_index_is_an_error_not_damage(tmp_path: Path) -> None:
    """Only damage moves a file aside: a file SQLite cannot open is left alone."""
    path = tmp_path / "index.sqlite"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(RcfsError, match=str(path)):
        Index.open_checked(path)
    assert path.is_dir() and not list(tmp_path.glob("*.damaged-*"))
    with pytest.raises(sqlite3.Error):  # the plain sqlite3 error, for comparison
        sqlite3.connect(path).execute("PRAGMA quick_check")
