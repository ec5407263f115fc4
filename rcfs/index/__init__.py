"""The persistent SQLite index of the call log (design: `rcfs.index.store`).

Modules: `store` (the `Index`: connections, transactions, error reporting,
the coverage it holds, and the methods every caller uses), `writes` (every
statement that changes rows: what a call-log record does to the index, the
deleted and archive flags, exact sizes, meta), `queries` (every read, and how
days are found), `check` (the check at open, damaged files moved aside, sqlite3
errors as domain errors), `schema` (DDL, version, migrations), `rows` (the row
types), `coverage` (which spans of time are indexed). This module re-exports
the public names.
"""

from __future__ import annotations

from .check import IndexDamaged, IndexFailure, StateDiskFull
from .coverage import Coverage
from .rows import ESTIMATE_BYTES_PER_SECOND, IndexedRecording, StoredRecord, UpsertResult
from .schema import SCHEMA_VERSION
from .store import Index

__all__ = [
    "ESTIMATE_BYTES_PER_SECOND",
    "SCHEMA_VERSION",
    "Coverage",
    "Index",
    "IndexDamaged",
    "IndexFailure",
    "IndexedRecording",
    "StateDiskFull",
    "StoredRecord",
    "UpsertResult",
]
