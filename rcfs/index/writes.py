"""The index's writes: every statement that changes its rows.

Owns what a call-log record does to the `records` and `recordings` tables
(`upsert_record`: new recordings, frozen starts and naming fields, legs lost
upstream, `deleted: true` records), the deleted and archive flags, the exact
sizes and the `meta` rows. Each function takes the connection of a write
transaction the caller holds (`Index._write`, in store.py): none begins or
commits a transaction, takes a lock or translates an sqlite3 error; that, and
which call is one transaction, is the `Index`'s. The coverage table is written
by the `Index` too, since it publishes the new `Coverage` when the transaction
commits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rcfs.errors import BadResponse
from rcfs.models import epoch_ms, parse_time, record_call_id
from rcfs.models import recordings_from_record as _recordings_from_record

log = logging.getLogger(__name__)

# -- the call log -------------------------------------------------------------


def upsert_record(
    conn: sqlite3.Connection,
    record: dict[str, Any],
    added: list[str],
    changed: set[int],
    *,
    default_content_type: str | None,
) -> None:
    """Store one call-log record: the recording ids it adds go to `added`, the
    frozen start of every record or recording it adds or changes to `changed`; a
    malformed record raises `BadResponse`.

    New recordings are added with the naming fields of this sighting (with
    `default_content_type`, the account's format, when the record names none);
    known ones get their content URI and duration updated and lose any deleted
    flag. Records carrying no recording are stored only if already known
    (they may have lost a leg). `deleted: true` records (ISync) mark their
    call's recordings deleted.
    """
    if isinstance(record, dict) and record.get("deleted") is True:
        call_id = record_call_id(record)
        if call_id is None:
            raise BadResponse("deleted call-log record without an id")
        ids = [r[0] for r in conn.execute(
            "SELECT recording_id FROM recordings WHERE call_id=? AND deleted=0", (call_id,))]
        changed.update(mark_deleted(conn, ids, record.get("lastModifiedTime")))
        return
    recs = _recordings_from_record(record)
    call_id = str(record["id"])
    start_ms = recs[0].start_ms if recs else _start_ms(record)
    mod_ms = start_ms
    if record.get("lastModifiedTime") is not None:
        try:
            mod_ms = max(start_ms, epoch_ms(parse_time(record["lastModifiedTime"], "")))
        except BadResponse:
            log.debug("record %s: ignoring unparsable lastModifiedTime", call_id)
    raw = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    row = conn.execute(
        "SELECT start_ms, raw FROM records WHERE call_id=?", (call_id,)).fetchone()
    # A known call whose record no longer carries one of its recordings: that
    # recording was deleted upstream (the API drops the block). The stored
    # record keeps the last version that carried it, so calls.json still
    # describes the archived file.
    lost = [] if row is None else [
        r[0] for r in conn.execute(
            "SELECT recording_id FROM recordings WHERE call_id=? AND deleted=0", (call_id,))
        if r[0] not in {rec.recording_id for rec in recs}]
    if lost:
        changed.update(mark_deleted(conn, lost, record.get("lastModifiedTime")))
    if row is None:
        if not recs:
            return
        conn.execute(
            "INSERT INTO records (call_id, start_ms, mod_ms, raw) VALUES (?, ?, ?, ?)",
            (call_id, start_ms, mod_ms, raw),
        )
        changed.add(start_ms)
    else:
        start_ms = row[0]
        if row[1] != raw and not lost:
            conn.execute(
                "UPDATE records SET raw=?, mod_ms=MAX(?, start_ms) WHERE call_id=?",
                (raw, mod_ms, call_id),
            )
            changed.add(start_ms)
    for rec in recs:
        old = conn.execute(
            "SELECT start_ms, content_uri, duration, deleted FROM recordings "
            "WHERE recording_id=?", (rec.recording_id,)).fetchone()
        if old is None:
            conn.execute(
                "INSERT INTO recordings (recording_id, call_id, start_ms, direction, "
                "from_phone, from_ext, from_name, to_phone, to_ext, to_name, session_id, "
                "telephony_session_id, recording_type, name_content_type, duration, "
                "content_uri, content_type) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.recording_id, call_id, start_ms, rec.direction,
                 rec.from_party.phone_number, rec.from_party.extension_number,
                 rec.from_party.name, rec.to_party.phone_number,
                 rec.to_party.extension_number, rec.to_party.name, rec.session_id,
                 rec.telephony_session_id, rec.recording_type,
                 rec.content_type or default_content_type,
                 rec.duration, rec.content_uri, rec.content_type),
            )
            added.append(rec.recording_id)
            changed.add(start_ms)
        elif (old[1], old[2], old[3]) != (rec.content_uri, rec.duration, 0):
            conn.execute(
                "UPDATE recordings SET content_uri=?, duration=?, deleted=0, deleted_at=NULL, "
                "kept=NULL, lost=0 WHERE recording_id=?",
                (rec.content_uri, rec.duration, rec.recording_id))
            changed.add(old[0])


def _start_ms(record: dict[str, Any]) -> int:
    where = f"call-log record {record.get('id')} startTime"
    return epoch_ms(parse_time(record.get("startTime"), where))


# -- deletions ----------------------------------------------------------------


def mark_deleted(conn: sqlite3.Connection, ids: list[str], when: object) -> set[int]:
    """Flag recordings gone upstream at `when` (epoch ms, an ISO 8601 time, or
    unknown); returns the starts of those newly flagged."""
    when_ms: int | None = when if isinstance(when, int) else None
    if isinstance(when, str):
        try:
            when_ms = epoch_ms(parse_time(when, ""))
        except BadResponse:
            when_ms = None
    starts: set[int] = set()
    for rid in ids:
        row = conn.execute(
            "UPDATE recordings SET deleted=1, deleted_at=?, kept=NULL "
            "WHERE recording_id=? AND deleted=0 RETURNING start_ms, call_id",
            (when_ms, rid)).fetchone()
        if row is not None:
            starts.add(row[0])
            # calls.json of the day changes (its "rcfsDeleted" marks): move
            # its mtime so rsync copies it again.
            conn.execute(
                "UPDATE records SET mod_ms=MAX(mod_ms, ?) WHERE call_id=?",
                (when_ms if when_ms is not None else int(time.time() * 1000), row[1]))
    return starts


def set_kept(conn: sqlite3.Connection, recording_ids: Iterable[str], kept: bool, lost: bool) -> set[int]:
    starts: set[int] = set()
    for rid in recording_ids:
        row = conn.execute(
            "UPDATE recordings SET kept=?, stored=?, lost=? WHERE recording_id=? "
            "AND deleted=1 AND (kept IS NOT ? OR lost IS NOT ?) RETURNING start_ms",
            (int(kept), int(kept), int(lost and not kept), rid, int(kept),
             int(lost and not kept))).fetchone()
        if row is not None:
            starts.add(row[0])
    return starts


# -- the archive --------------------------------------------------------------


def set_stored(conn: sqlite3.Connection, recording_ids: Iterable[str], stored: bool) -> None:
    conn.executemany("UPDATE recordings SET stored=? WHERE recording_id=? AND stored IS NOT ?",
                     [(int(stored), rid, int(stored)) for rid in recording_ids])


def reconcile_stored(conn: sqlite3.Connection, recording_ids: Iterable[str]) -> int:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS have (rid TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM have")
    conn.executemany("INSERT OR IGNORE INTO have (rid) VALUES (?)",
                     ((rid,) for rid in recording_ids))
    on = conn.execute(
        "UPDATE recordings SET stored=1 WHERE stored=0 "
        "AND recording_id IN (SELECT rid FROM have)").rowcount
    off = conn.execute(
        "UPDATE recordings SET stored=0 WHERE stored=1 "
        "AND recording_id NOT IN (SELECT rid FROM have)").rowcount
    conn.execute("DELETE FROM have")
    return on + off


# -- exact sizes --------------------------------------------------------------


def set_exact_sizes(conn: sqlite3.Connection, sizes: Mapping[str, tuple[Any, ...]]) -> set[str]:
    changed: set[str] = set()
    for recording_id, learned in sizes.items():
        size, content_type = learned[0], learned[1]
        digest = learned[2] if len(learned) > 2 else None
        row = conn.execute(
            "UPDATE recordings SET exact_size=?, content_type=COALESCE(?, content_type), "
            "digest=COALESCE(?, digest) "
            "WHERE recording_id=? AND (exact_size IS NOT ? OR content_type IS NOT "
            "COALESCE(?, content_type) OR digest IS NOT COALESCE(?, digest)) RETURNING id",
            (size, content_type, digest, recording_id, size, content_type, digest),
        ).fetchone()
        if row is not None:
            changed.add(recording_id)
    return changed


# -- meta and the account's recording format ----------------------------------


def put_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))


def delete_meta(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM meta WHERE key=?", (key,))


def name_with_format(conn: sqlite3.Connection, content_type: str, from_rowid: int) -> int:
    """Give the recordings indexed since `from_rowid` that were named without a
    format `content_type` for their names; returns how many."""
    return int(conn.execute(
        "UPDATE recordings SET name_content_type=? WHERE id >= ? AND name_content_type IS NULL",
        (content_type, from_rowid)).rowcount)
