from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rcfs.errors import RcfsError
from rcfs.index import SCHEMA_VERSION, Index
from rcfs.naming import file_name

from .rcfs_records import make_record, recording_block

UTC_ZONE = ZoneInfo("UTC")
T0 = 1795426215123  # 2026-11-23T09:30:15.123Z


def test_upsert_adds_and_is_idempotent(index: Index) -> None:
    records = [make_record("C1"), make_record("C2", "2026-11-23T10:00:00Z", recording_id="R2")]
    first = index.upsert_records(records)
    assert first.added_recordings == ("4082461004", "R2")
    assert first.changed_starts_ms == {T0, 1795428000000}
    assert first.bad_records == ()
    again = index.upsert_records(records)
    assert again.added_recordings == () and again.changed_starts_ms == frozenset()
    stats = index.stats()
    assert (stats["records"], stats["recordings"]) == (2, 2)
    assert stats["oldest"] == "2026-11-23T09:30:15.123000+00:00"


def test_bad_records_are_skipped_and_reported(index: Index) -> None:
    bad = make_record("C9")
    del bad["startTime"]
    result = index.upsert_records([bad, make_record("C1")])
    assert result.added_recordings == ("4082461004",)
    assert len(result.bad_records) == 1 and "C9" in result.bad_records[0]


def test_recordless_records_are_not_stored(index: Index) -> None:
    result = index.upsert_records([make_record("C1", recording_id=None)])
    assert result.changed_starts_ms == frozenset()
    assert index.stats()["records"] == 0


def test_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    idx = Index(path)
    idx.upsert_records([make_record("C1")])
    idx.set_exact_size("4082461004", 12345, "audio/mpeg")
    idx.set_meta("sync_token", "tok")
    rowid = idx.get_recording("4082461004").rowid  # type: ignore[union-attr]
    idx.close()
    idx = Index(path)
    try:
        ir = idx.get_recording("4082461004")
        assert ir is not None and ir.rowid == rowid
        assert ir.exact_size == 12345 and ir.size == 12345 and ir.size_exact
        assert ir.content_type == "audio/mpeg"
        assert idx.get_meta("sync_token") == "tok"
        assert idx.get_meta("schema_version") == str(SCHEMA_VERSION)
    finally:
        idx.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    Index(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(RcfsError, match="schema 99"):
        Index(path)


def test_name_and_day_frozen_when_record_changes(index: Index) -> None:
    index.upsert_records([make_record("C1", duration=95)])
    before = index.get_recording("4082461004")
    assert before is not None
    changed = make_record(
        "C1", "2026-11-24T01:00:00Z", duration=120, direction="Outbound",
        frm={"phoneNumber": "+19999999999"}, lastModifiedTime="2026-11-24T02:00:00Z")
    changed["recording"]["contentUri"] = "https://media.example.test/new"
    result = index.upsert_records([changed])
    assert result.added_recordings == ()
    assert result.changed_starts_ms == {T0}  # the frozen start, not the new one
    after = index.get_recording("4082461004")
    assert after is not None and after.rowid == before.rowid
    assert file_name(after.recording, UTC_ZONE) == file_name(before.recording, UTC_ZONE)
    assert after.start_ms == T0
    # Mutable fields follow the latest record.
    assert after.recording.duration == 120 and after.size == 120 * 4000
    assert after.content_uri == "https://media.example.test/new"
    [stored] = index.records_between(T0, T0 + 1)
    assert stored.raw["duration"] == 120 and stored.mod_ms == 1795485600000


def test_new_leg_recording_lands_in_the_frozen_day(index: Index) -> None:
    index.upsert_records([make_record("C1")])
    later = make_record("C1", "2026-11-25T00:00:00Z", legs=[
        {"startTime": "2026-11-25T00:00:00Z", "legType": "Transfer",
         "recording": recording_block("R-leg")}])
    index.upsert_records([later])
    leg = index.get_recording("R-leg")
    assert leg is not None and leg.start_ms == T0


def test_deleted_flag(index: Index) -> None:
    index.upsert_records([make_record("C1"), make_record("C2", recording_id="R2")])
    assert index.mark_deleted(["R2", "nope"], when_ms=5) == {T0}
    assert index.mark_deleted(["R2"]) == set()  # already flagged
    r2 = index.get_recording("R2")
    assert r2 is not None and r2.deleted and r2.deleted_at_ms == 5
    assert [r.recording_id for r in index.recordings_between(0, 2**62, include_deleted=False)] == [
        "4082461004"]
    # ISync's deleted stub flags the call's recordings.
    result = index.upsert_records([{"id": "C1", "deleted": True}])
    assert result.changed_starts_ms == {T0}
    assert index.get_recording("4082461004").deleted  # type: ignore[union-attr]
    # Seen again in the call log: back to live.
    index.upsert_records([make_record("C2", recording_id="R2")])
    assert not index.get_recording("R2").deleted  # type: ignore[union-attr]
    assert index.stats()["deleted"] == 1


def test_range_queries_and_seeks(index: Index) -> None:
    index.upsert_records([
        make_record(f"C{n}", f"2026-11-{20 + n}T12:00:00Z", recording_id=f"R{n}")
        for n in range(5)])
    day = 86_400_000
    first = index.next_start(0)
    assert first is not None
    assert index.start_range() == (first, first + 4 * day)
    assert index.next_start(first + 1) == first + day
    assert index.prev_start(first + day) == first
    assert index.next_start(first + 5 * day) is None
    got = index.recordings_between(first + day, first + 3 * day)
    assert [r.recording_id for r in got] == ["R1", "R2"]
    assert index.max_mod_between(first, first + day) == first
    assert index.max_mod_between(0, 1) is None
    assert set(index.records_for_call_ids(["C1", "C9"])) == {"C1"}
    by_row = index.recording_by_rowid(got[0].rowid)
    assert by_row is not None and by_row.recording_id == "R1"
    assert index.recording_by_rowid(999) is None


def test_set_exact_size_reports_change(index: Index) -> None:
    index.upsert_records([make_record("C1")])
    assert index.set_exact_size("4082461004", 10)
    assert not index.set_exact_size("4082461004", 10)
    assert not index.set_exact_size("missing", 10)


def test_writes_from_threads_reads_inline(index: Index) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for n in range(20):
                index.upsert_records([make_record(f"C{k}-{n}", recording_id=f"R{k}-{n}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        index.stats()  # reads on this thread while others write
    for t in threads:
        t.join()
    assert errors == []
    assert index.stats()["recordings"] == 80


def test_set_exact_sizes_in_one_batch(index: Index) -> None:
    index.upsert_records([make_record("C1", recording_id="R1"),
                          make_record("C2", recording_id="R2")])
    index.set_exact_size("R2", 20, "audio/wav")
    changed = index.set_exact_sizes({"R1": (10, "audio/mpeg"), "R2": (20, None), "nope": (1, None)})
    assert changed == {"R1"}
    r1, r2 = index.get_recording("R1"), index.get_recording("R2")
    assert r1 is not None and (r1.exact_size, r1.content_type) == (10, "audio/mpeg")
    assert r2 is not None and (r2.exact_size, r2.content_type) == (20, "audio/wav")
