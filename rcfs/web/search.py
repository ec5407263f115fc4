"""The read-only index queries the web player needs that `Index` does not offer.

Owns `search` (recordings by phone number, extension number or name) and
`count_between` (how many recordings a day directory holds, for the date
tree), SELECT statements only. Which recordings count as visible is the
index's rule (`rows.VISIBLE`), the same the tree lists.

Connections. `count_between` is one range count over the `start_ms` index
(a few microseconds per day): it runs inline on the trio thread, like a
listing, on the index's connection for that thread (`Index._conn()`),
which it leaves as it found it (no transaction, no pragma). `search` scans
the recordings table (tens of milliseconds at 100,000 recordings), so
callers run it in a worker thread; there it opens its own connection to the
index file, read-only (`mode=ro`: SQLite itself refuses any write), and
closes it when done. Not `Index._conn()`: that keeps one connection per
thread until the index closes, and trio's worker threads come and go (an
idle one ends after seconds), so every later search would leave a
connection, and its file descriptors, behind.

Matching. The query is matched as a name (case-insensitive for ASCII
letters, SQLite's LIKE; any substring), and, when it looks like a number
(digits and `+ ( ) - . /` or spaces), as a number: its digits against the
digits of either party's phone number, and against either extension number
(any substring, so `555` finds `+16505550123` and `(415) 555-0177`).
Wildcards in the query match themselves. Results are newest first and
bounded by `limit`.

Must not: import trio, httpx or pyfuse3; write to the index.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rcfs.errors import RcfsError
from rcfs.index import Index, IndexedRecording
from rcfs.index.rows import REC_COLUMNS, VISIBLE, indexed

MAX_QUERY = 100  # characters of a query that are used
DEFAULT_LIMIT = 200

_NUMBERISH = re.compile(r"[0-9+()\-./\s]+")
_NON_DIGITS = re.compile(r"[^0-9]")


def _digits_of(column: str) -> str:
    """SQL for the digits of a phone number column (the separators people and APIs use)."""
    expr = column
    for ch in ("+", "-", " ", "(", ")", ".", "/"):
        expr = f"REPLACE({expr}, '{ch}', '')"
    return expr


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class SearchResult:
    query: str
    recordings: list[IndexedRecording]  # newest first
    truncated: bool  # more matched than `limit`


def search(index: Index, query: str, *, keep_deleted: bool = True,
           limit: int = DEFAULT_LIMIT) -> SearchResult:
    """Recordings whose parties match `query` (see the module docstring).

    Raises RcfsError if the index cannot be read. Blocking: call from a worker thread.
    """
    q = query.strip()[:MAX_QUERY]
    if not q:
        return SearchResult(q, [], False)
    clauses = ["from_name LIKE :name ESCAPE '\\'", "to_name LIKE :name ESCAPE '\\'"]
    params: dict[str, object] = {"name": _like(q), "limit": limit + 1}
    digits = _NON_DIGITS.sub("", q)
    if digits and _NUMBERISH.fullmatch(q):
        params["digits"] = _like(digits)
        clauses += [f"{_digits_of('from_phone')} LIKE :digits ESCAPE '\\'",
                    f"{_digits_of('to_phone')} LIKE :digits ESCAPE '\\'",
                    "from_ext LIKE :digits ESCAPE '\\'",
                    "to_ext LIKE :digits ESCAPE '\\'"]
    sql = (f"SELECT {REC_COLUMNS} FROM recordings WHERE {VISIBLE[keep_deleted]} "
           f"AND ({' OR '.join(clauses)}) ORDER BY start_ms DESC, id DESC LIMIT :limit")
    try:
        # Read-only, and closed at once (see the module docstring).
        conn = sqlite3.connect(f"{Path(index._path).resolve().as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RcfsError(f"search failed: the index cannot be read ({exc})") from None
    found = [indexed(row) for row in rows[:limit]]
    return SearchResult(q, found, len(rows) > limit)


def count_between(index: Index, lo_ms: int, hi_ms: int, *, keep_deleted: bool = True) -> int:
    """How many visible recordings started in [lo_ms, hi_ms) (one index range count)."""
    try:
        # Read-only: a SELECT on the index's connection for this thread.
        row = index._conn().execute(
            f"SELECT COUNT(*) FROM recordings WHERE start_ms >= ? AND start_ms < ? "
            f"AND {VISIBLE[keep_deleted]}", (lo_ms, hi_ms)).fetchone()
    except sqlite3.Error as exc:
        raise RcfsError(f"the index cannot be read ({exc})") from None
    return int(row[0])
