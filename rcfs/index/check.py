"""The index's health: the check when a mount opens it, moving a damaged file
aside, and SQLite's errors turned into domain errors.

Why. The index is a cache of the API: everything in it but the exact sizes
and archive flags (which the mount learns again) can be read again from the
call log. A damaged file must therefore cost a re-index, never the mount: before
a mount uses its index, `check` runs `PRAGMA quick_check` (every b-tree page,
cell and free-list page; not whether each index agrees with its table, which
`integrity_check` adds at 2.5x the cost), and a damaged file (or one that is not
a database at all) is moved aside by `move_aside`, kept for the user as
`index.sqlite.damaged-<UTC time>` with its `-wal`/`-shm`, and a new, empty
index is created, which the mount fills from the call log as at a first mount.
Only damage (SQLITE_CORRUPT, SQLITE_NOTADB, or problems quick_check lists)
moves a file aside: an I/O error, a full disk or a permission problem is
reported and the file left alone, since a second try may well succeed.

Cost. quick_check reads every page. Measured on an index of 101,116
recordings (99,080 call-log records, 253 MB) on a 2-vCPU VM: 0.24 s with the
file in the page cache; 5.0 s with it evicted (posix_fadvise DONTNEED),
because SQLite visits the pages in tree order, 4 KiB at a time, and the
kernel's readahead does not help random reads. Reading the file sequentially
first (`_warm`: 0.06 s cached) brings `check` to 0.85-1.0 s evicted and
0.24 s cached. SQLite's mmap was about as fast, but would turn an I/O error
of a failing disk into SIGBUS.

Later. Damage found while mounted (a page first read long after the check)
raises `IndexDamaged` from the query (the request answers EIO, see
`store.Index`) and leaves a marker, `index.sqlite.rebuild`, so the next mount
moves the file aside even if quick_check finds nothing (an index that
disagrees with its table). `failure` turns any `sqlite3.DatabaseError` into
one of the errors below, whose messages name the file.

Must not: import trio or pyfuse3; know what the tables hold (store.py,
writes.py, queries.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from rcfs.errors import RcfsError

log = logging.getLogger(__name__)

# SQLite's primary result codes (sqlite3.h).
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
_DAMAGE = (SQLITE_CORRUPT, SQLITE_NOTADB)
_COMPANIONS = ("-wal", "-shm", "-journal")
MARKER_SUFFIX = ".rebuild"
_WARM_CHUNK = 1 << 20


class IndexFailure(RcfsError):
    """An index read or write failed; the message names the file and the cause."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class IndexDamaged(IndexFailure):
    """The index file is damaged, or not a database: rebuilt at the next mount."""


class StateDiskFull(IndexFailure):
    """The disk of the state directory is full: nothing was written."""


def failure(exc: sqlite3.Error, path: str | os.PathLike[str]) -> IndexFailure:
    """The domain error for an sqlite3 error on the index at `path`."""
    reason = str(exc) or type(exc).__name__
    code = _primary_code(exc)
    if code in _DAMAGE:
        return IndexDamaged(f"the index {path} is damaged ({reason}); remount to rebuild it "
                            "from the call log", reason)
    if code == SQLITE_FULL:
        return StateDiskFull(f"the state disk is full ({path})", reason)
    return IndexFailure(f"the index {path} failed: {reason}", reason)


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+: the extended code
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc)  # an error raised by the sqlite3 module itself carries no code
    if "malformed" in text:
        return SQLITE_CORRUPT
    if "not a database" in text:
        return SQLITE_NOTADB
    if "disk is full" in text:
        return SQLITE_FULL
    return None


def check(path: Path) -> str | None:
    """Why the index at `path` is damaged, in one line; None if it is sound or absent.

    Raises `IndexFailure` when the file cannot be checked for another reason
    (I/O error, permissions): that is no proof of damage. Blocks for up to a
    second or so on a large index: call it from a worker thread.
    """
    marker = _marker(path)
    if not path.exists():
        marker.unlink(missing_ok=True)
        orphans = [s for s in _COMPANIONS if Path(f"{path}{s}").exists() and s != "-shm"]
        # SQLite would replay a stale -wal (or roll back a -journal) into a new database.
        return f"its {' and '.join(orphans)} without the database" if orphans else None
    with contextlib.suppress(OSError):
        noted = marker.read_text(errors="replace").strip()
        return f"damage seen while it was mounted: {noted or 'unknown'}"
    _warm(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        found = failure(exc, path)
        if isinstance(found, IndexDamaged):
            return found.reason
        raise found from exc
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return " ".join(problems[0].split()) + more


def _warm(path: Path) -> None:
    """Read the file sequentially, so quick_check finds its pages cached (see above)."""
    buf = bytearray(_WARM_CHUNK)
    with contextlib.suppress(OSError), open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def move_aside(path: Path, now: datetime | None = None) -> Path:
    """Rename the index and its -wal/-shm/-journal to `<name>.damaged-<UTC time>[-wal...]`.

    The companions go first: a -wal left beside a new, empty index would be
    replayed into it. Returns the new path of the main file.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while any(Path(f"{aside}{s}").exists() for s in ("", *_COMPANIONS)):
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}.{n}")
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    with contextlib.suppress(FileNotFoundError):  # only orphaned companions (see `check`)
        os.replace(path, aside)
    _marker(path).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return aside


def mark_damaged(path: Path, reason: str) -> None:
    """Note damage seen while mounted, so the next mount rebuilds the index (best effort)."""
    marker = _marker(path)
    if marker.exists():
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(reason + "\n")
    except OSError as exc:
        log.debug("cannot leave the rebuild marker %s: %s", marker, exc.strerror)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)
