"""The index's SQLite schema, its version and the migrations between versions.

Owns the DDL only; `store.Index` runs `create_or_migrate` once when it opens
the database, inside one write transaction.

Version 3 (progressive indexing and the archive) adds the `coverage` table
(the spans of time whose call log is in the index, replacing the single
`covered_from`..`covered_to` span of version 2 in `meta`), and per recording
`stored` (its content is in the permanent archive store: kept for ever,
outside `--cache-size`), `lost` (deleted upstream before rcfs had its
content) and `digest` (BLAKE2b of the content as downloaded, checked before
cached bytes are served), with a partial index over the recordings still to
archive.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from rcfs.errors import RcfsError

SCHEMA_VERSION = 3

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    call_id TEXT PRIMARY KEY,
    start_ms INTEGER NOT NULL,
    mod_ms INTEGER NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_start ON records (start_ms, mod_ms);
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id TEXT NOT NULL UNIQUE,
    call_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    direction TEXT NOT NULL,
    from_phone TEXT, from_ext TEXT, from_name TEXT,
    to_phone TEXT, to_ext TEXT, to_name TEXT,
    session_id TEXT NOT NULL,
    telephony_session_id TEXT,
    recording_type TEXT NOT NULL,
    name_content_type TEXT,
    duration INTEGER NOT NULL,
    content_uri TEXT NOT NULL,
    content_type TEXT,
    exact_size INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_at INTEGER,
    kept INTEGER,
    stored INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS recordings_start ON recordings (start_ms);
CREATE INDEX IF NOT EXISTS recordings_call ON recordings (call_id);
CREATE INDEX IF NOT EXISTS recordings_deleted ON recordings (deleted) WHERE deleted=1;
CREATE TABLE IF NOT EXISTS coverage (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL);
"""
# Created after the migrations: they name columns that older versions lack.
_LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS recordings_pending ON recordings (start_ms, id)
    WHERE deleted=0 AND stored=0;
"""


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT the open transaction: one statement at a time.
    return [s for s in script.split(";") if s.strip()]


def create_or_migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema or bring an older one up to date (the caller holds a transaction)."""
    for statement in _statements(_TABLES):
        conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise RcfsError(
            f"index {path} has schema {version}, newer than this rcfs "
            f"({SCHEMA_VERSION}); upgrade rcfs or remove the index"
        )
    if 0 < version < 2:
        conn.execute("ALTER TABLE recordings ADD COLUMN kept INTEGER")
    if 0 < version < 3:
        conn.execute("ALTER TABLE recordings ADD COLUMN stored INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE recordings ADD COLUMN lost INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE recordings ADD COLUMN digest TEXT")
        conn.execute("UPDATE recordings SET stored=1 WHERE deleted=1 AND kept=1")
        _migrate_coverage(conn)
    for statement in _statements(_LATE_INDEXES):
        conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(SCHEMA_VERSION),))


def _migrate_coverage(conn: sqlite3.Connection) -> None:
    """Version 2 kept one covered span as ISO times in meta: make it a coverage row."""
    found = dict(conn.execute(
        "SELECT key, value FROM meta WHERE key IN ('covered_from', 'covered_to')").fetchall())
    conn.execute("DELETE FROM meta WHERE key IN ('covered_from', 'covered_to')")
    try:
        lo = int(datetime.fromisoformat(found["covered_from"]).timestamp() * 1000)
        hi = int(datetime.fromisoformat(found["covered_to"]).timestamp() * 1000)
    except (KeyError, ValueError):
        return  # nothing usable: the indexer reads the window again
    if hi > lo:
        conn.execute("INSERT OR REPLACE INTO coverage (lo, hi) VALUES (?, ?)", (lo, hi))
