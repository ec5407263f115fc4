"""The index's reads: every query the tree, the archive and status.json make.

Owns the SELECT statements and their plans (which index each one seeks or
scans). Each function takes the calling thread's connection (`Index._conn`, in
store.py) and returns values or lists, never a cursor, so every row is read
before the `Index` method that called it returns; writing, transactions and
translating sqlite3 errors are not its business.

Days. Day directories depend on the mount's zone, so the index keeps no
per-day table. Which days, months and years exist is found by skip-scanning
the `start_ms` index: `next_start(t)` is one B-tree seek, and a listing of a
month costs one seek per existing day, whatever the account holds. Measured
with 100,000 recordings over a year (Vfs on top, cold caches): a seek 3 µs,
the root listing 0.5 ms, a year 3 ms, a month 1.1 ms, `stats()` 1 ms; a
per-zone day table would save little and need invalidating.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from rcfs.models import from_epoch_ms

from .rows import REC_COLUMNS as _REC_COLUMNS
from .rows import VISIBLE as _VISIBLE
from .rows import IndexedRecording, StoredRecord
from .rows import indexed as _indexed

# -- recordings and days ------------------------------------------------------


def get_recording(conn: sqlite3.Connection, recording_id: str) -> IndexedRecording | None:
    row = conn.execute(
        f"SELECT {_REC_COLUMNS} FROM recordings WHERE recording_id=?", (recording_id,)
    ).fetchone()
    return None if row is None else _indexed(row)


def recording_by_rowid(conn: sqlite3.Connection, rowid: int) -> IndexedRecording | None:
    row = conn.execute(
        f"SELECT {_REC_COLUMNS} FROM recordings WHERE id=?", (rowid,)).fetchone()
    return None if row is None else _indexed(row)


def recordings_between(
    conn: sqlite3.Connection, start_ms: int, end_ms: int, include_deleted: bool
) -> list[IndexedRecording]:
    rows = conn.execute(
        f"SELECT {_REC_COLUMNS} FROM recordings WHERE start_ms >= ? AND start_ms < ? "
        f"AND {_VISIBLE[include_deleted]} ORDER BY start_ms, id",
        (start_ms, end_ms),
    ).fetchall()
    return [_indexed(row) for row in rows]


def next_start(conn: sqlite3.Connection, at_or_after_ms: int, include_deleted: bool) -> int | None:
    row = conn.execute(
        "SELECT start_ms FROM recordings WHERE start_ms >= ? "
        f"AND {_VISIBLE[include_deleted]} ORDER BY start_ms LIMIT 1",
        (at_or_after_ms,),
    ).fetchone()
    return None if row is None else int(row[0])


def prev_start(conn: sqlite3.Connection, before_ms: int, include_deleted: bool) -> int | None:
    row = conn.execute(
        "SELECT start_ms FROM recordings WHERE start_ms < ? "
        f"AND {_VISIBLE[include_deleted]} ORDER BY start_ms DESC LIMIT 1",
        (before_ms,),
    ).fetchone()
    return None if row is None else int(row[0])


def start_range(conn: sqlite3.Connection) -> tuple[int, int] | None:
    # Two statements: SQLite answers a lone MIN or MAX with one index seek,
    # but MIN and MAX together with a scan (5 ms at 100k recordings).
    first = conn.execute("SELECT MIN(start_ms) FROM recordings").fetchone()[0]
    last = conn.execute("SELECT MAX(start_ms) FROM recordings").fetchone()[0]
    return None if first is None else (int(first), int(last))


# -- call-log records ---------------------------------------------------------


def records_between(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> list[StoredRecord]:
    rows = conn.execute(
        "SELECT call_id, start_ms, mod_ms, raw FROM records "
        "WHERE start_ms >= ? AND start_ms < ? ORDER BY start_ms, call_id",
        (start_ms, end_ms),
    ).fetchall()
    return [StoredRecord(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def records_for_call_ids(conn: sqlite3.Connection, call_ids: Iterable[str]) -> dict[str, StoredRecord]:
    out: dict[str, StoredRecord] = {}
    for cid in set(call_ids):
        r = conn.execute(
            "SELECT call_id, start_ms, mod_ms, raw FROM records WHERE call_id=?", (cid,)
        ).fetchone()
        if r is not None:
            out[cid] = StoredRecord(r[0], r[1], r[2], json.loads(r[3]))
    return out


def max_mod_between(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> int | None:
    row = conn.execute(
        "SELECT MAX(mod_ms) FROM records WHERE start_ms >= ? AND start_ms < ?",
        (start_ms, end_ms),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# -- deletions and the archive ------------------------------------------------


def undecided_deleted(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT recording_id FROM recordings INDEXED BY recordings_deleted "
        "WHERE deleted=1 AND kept IS NULL")]


def kept_deleted(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT recording_id FROM recordings INDEXED BY recordings_deleted "
        "WHERE deleted=1 AND kept=1")]


def oldest_pending(
    conn: sqlite3.Connection, limit: int, after: tuple[int, int] | None
) -> list[IndexedRecording]:
    lo, rowid = after if after is not None else (-(2**62), -1)
    rows = conn.execute(
        f"SELECT {_REC_COLUMNS} FROM recordings INDEXED BY recordings_pending "
        "WHERE deleted=0 AND stored=0 AND (start_ms > ? OR (start_ms = ? AND id > ?)) "
        "ORDER BY start_ms, id LIMIT ?", (lo, lo, rowid, limit)).fetchall()
    return [_indexed(row) for row in rows]


def pending_starts(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT start_ms FROM recordings INDEXED BY recordings_pending "
        "WHERE deleted=0 AND stored=0 ORDER BY start_ms, id")]


def archive_counts(conn: sqlite3.Connection) -> dict[str, int]:
    pending = conn.execute(
        "SELECT COUNT(*) FROM recordings INDEXED BY recordings_pending "
        "WHERE deleted=0 AND stored=0").fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM recordings WHERE deleted=0").fetchone()[0]
    lost, kept = conn.execute(
        "SELECT COALESCE(SUM(lost), 0), COALESCE(SUM(stored), 0) FROM recordings "
        "INDEXED BY recordings_deleted WHERE deleted=1").fetchone()
    return {"pending": pending, "stored": total - pending + kept, "lost": lost}


# -- meta and the account's recording format ----------------------------------


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def max_rowid(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(id) FROM recordings").fetchone()
    return int(row[0] or 0)


def newest_recording_ids(conn: sqlite3.Connection, limit: int) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT recording_id FROM recordings WHERE deleted=0 ORDER BY start_ms DESC LIMIT ?",
        (limit,))]


# -- status -------------------------------------------------------------------


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    records = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
    deleted, kept = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(kept=1), 0) FROM recordings "
        "INDEXED BY recordings_deleted WHERE deleted=1"
    ).fetchone()
    bounds = start_range(conn)
    return {
        "records": records,
        "recordings": total - deleted,
        "deleted": deleted,
        "deleted_kept": kept,
        "oldest": from_epoch_ms(bounds[0]).isoformat() if bounds else None,
        "newest": from_epoch_ms(bounds[1]).isoformat() if bounds else None,
        "last_sync": get_meta(conn, "last_sync"),
    }
