"""The index's coverage (pure intervals and their persistence), its archive flags
(`stored`, `lost`) and queries, and the migration from schema 2."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rcfs.index import SCHEMA_VERSION, Coverage, Index

from .rcfs_records import make_record

spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=12)


def _points(spans: list[tuple[int, int]]) -> set[int]:
    return {t for a, b in spans for t in range(a, b)}


@given(spans, st.integers(0, 200), st.integers(0, 200))
def test_coverage_is_the_union_of_its_spans(added: list[tuple[int, int]], lo: int, hi: int) -> None:
    cov = Coverage()
    for a, b in added:
        cov = cov.add(a, b)
    want = _points(added)
    assert _points(cov.spans()) == want
    spans_ = cov.spans()
    assert all(b > a for a, b in spans_) and all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(spans_))
    assert cov.covers(lo, hi) == (set(range(lo, hi)) <= want)
    gaps = cov.gaps(lo, hi)
    assert _points(gaps) == set(range(lo, hi)) - want
    assert cov.covered_ms(lo, hi) == len(set(range(lo, hi)) & want)
    removed = cov.remove(lo, hi)
    assert _points(removed.spans()) == want - set(range(lo, hi))


def test_coverage_basics() -> None:
    cov = Coverage([(10, 20), (20, 30), (40, 50)])
    assert cov.spans() == [(10, 30), (40, 50)] and cov.top() == 50 and cov.bottom() == 10
    assert cov.gaps(0, 60) == [(0, 10), (30, 40), (50, 60)]
    assert cov.covers(12, 30) and not cov.covers(12, 31) and cov.covers(5, 5)
    assert not Coverage() and Coverage().top() is None


def test_coverage_persists_with_the_page_that_completes_it(tmp_path: Path) -> None:
    idx = Index(tmp_path / "i.sqlite")
    try:
        idx.upsert_records([make_record("C1")], cover=(100, 200))
        idx.add_coverage(300, 400)
        idx.add_coverage(200, 300)
        idx.remove_coverage(350, 360)
        assert idx.coverage.spans() == [(100, 350), (360, 400)]
    finally:
        idx.close()
    idx = Index(tmp_path / "i.sqlite")
    try:
        assert idx.coverage.spans() == [(100, 350), (360, 400)]
    finally:
        idx.close()


def test_a_failed_page_leaves_coverage_unchanged(index: Index) -> None:
    index.add_coverage(0, 10)

    class Boom(dict):  # type: ignore[type-arg]
        def get(self, *a: object, **k: object) -> object:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        index.upsert_records([Boom()], cover=(10, 20))
    assert index.coverage.spans() == [(0, 10)]


def _three(index: Index) -> None:
    index.upsert_records([
        make_record("C1", "2026-11-01T10:00:00Z", recording_id="R1"),
        make_record("C2", "2026-11-02T10:00:00Z", recording_id="R2"),
        make_record("C3", "2026-11-03T10:00:00Z", recording_id="R3"),
    ])


def test_pending_is_oldest_first_and_stored_leaves_it(index: Index) -> None:
    _three(index)
    assert [r.recording_id for r in index.oldest_pending(10)] == ["R1", "R2", "R3"]
    index.set_stored(["R1"])
    assert [r.recording_id for r in index.oldest_pending(10)] == ["R2", "R3"]
    first = index.oldest_pending(1)[0]
    assert [r.recording_id for r in index.oldest_pending(10, after=(first.start_ms, first.rowid))] == ["R3"]
    assert index.archive_counts() == {"pending": 2, "stored": 1, "lost": 0}
    assert len(index.pending_starts()) == 2
    assert index.get_recording("R1").stored  # type: ignore[union-attr]


def test_deleted_recordings_are_not_pending_and_lost_is_counted(index: Index) -> None:
    _three(index)
    index.set_stored(["R2"])
    index.mark_deleted(["R1", "R2"])
    assert [r.recording_id for r in index.oldest_pending(10)] == ["R3"]
    index.set_kept(["R2"], True)
    index.set_kept(["R1"], False, lost=True)
    assert index.archive_counts() == {"pending": 1, "stored": 1, "lost": 1}
    # A recording seen again upstream is not lost any more.
    index.upsert_records([make_record("C1", "2026-11-01T10:00:00Z", recording_id="R1")])
    assert index.archive_counts()["lost"] == 0
    # Pruning kept content is not a loss either.
    index.set_kept(["R2"], False)
    assert index.archive_counts() == {"pending": 2, "stored": 0, "lost": 0}


def test_reconcile_stored_follows_the_store(index: Index) -> None:
    _three(index)
    index.set_stored(["R1", "R2"])
    assert index.reconcile_stored(["R2", "R3", "unknown"]) == 2
    assert [r.recording_id for r in index.oldest_pending(10)] == ["R1"]
    assert index.reconcile_stored(["R2", "R3"]) == 0


def test_schema_2_index_is_migrated_with_its_coverage(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    idx = Index(path)
    idx.upsert_records([make_record("C1", recording_id="R1")])
    idx.mark_deleted(["R1"])
    idx.set_kept(["R1"], True)
    idx.close()
    with sqlite3.connect(path) as conn:  # make it look like a version-2 index
        conn.execute("DROP INDEX recordings_pending")
        conn.execute("ALTER TABLE recordings DROP COLUMN stored")
        conn.execute("ALTER TABLE recordings DROP COLUMN lost")
        conn.execute("ALTER TABLE recordings DROP COLUMN digest")
        conn.execute("DROP TABLE coverage")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        conn.execute("INSERT INTO meta VALUES ('covered_from', '2026-11-01T00:00:00+00:00')")
        conn.execute("INSERT INTO meta VALUES ('covered_to', '2026-11-02T00:00:00+00:00')")
    idx = Index(path)
    try:
        assert idx.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert idx.coverage.spans() == [(1_793_491_200_000, 1_793_577_600_000)]
        assert idx.get_meta("covered_from") is None
        assert idx.get_recording("R1").stored  # type: ignore[union-attr]  # kept = in the archive
    finally:
        idx.close()
