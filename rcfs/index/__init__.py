"""The persistent SQLite index of the call log (design: `rcfs.index.store`).

Modules: `store` (the `Index`: connections, writes, queries), `schema` (DDL,
version, migrations), `rows` (the row types), `coverage` (which spans of time
are indexed). This module re-exports the public names.
"""

from __future__ import annotations

from .coverage import Coverage
from .rows import ESTIMATE_BYTES_PER_SECOND, IndexedRecording, StoredRecord, UpsertResult
from .schema import SCHEMA_VERSION
from .store import Index

__all__ = [
    "ESTIMATE_BYTES_PER_SECOND",
    "SCHEMA_VERSION",
    "Coverage",
    "Index",
    "IndexedRecording",
    "StoredRecord",
    "UpsertResult",
]
