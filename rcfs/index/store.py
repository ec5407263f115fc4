"""The persistent SQLite index of the call log: what the tree is built from.

Owns: the database (connections, one writer at a time, which call is one
transaction), the coverage of the call log it holds (`Coverage`, per span of
time, persisted with the records of each page in one transaction, so an
interrupted first mount resumes where it stopped), and `Index`, the API through
which the tree and the archive read and change it, including each recording's
archive state (`stored`, `lost`). The statements are elsewhere: every write
(and what a call-log record does to the rows) in `writes.py`, every query in
`queries.py` (with how days are found without a per-day table), the schema and
its migrations in `schema.py`, the row types in `rows.py`. Times are integer
milliseconds since the epoch (UTC) throughout; `start_ms` of a record and of
its recordings is frozen at the first sighting, and so are a recording's
naming fields, so a file name never changes and never moves to another day.
The row id of a recording (`IndexedRecording.rowid`, an AUTOINCREMENT key
that VACUUM cannot renumber) is the stable part of its inode number.

Must not: name files (naming.py), know the mount's time zone, do HTTP or
import pyfuse3.

Threads. One connection per thread (`threading.local`), WAL journal: reads run
inline on the trio thread and see the last committed state while a worker
thread writes; writes are serialised by one lock and each batch is one
transaction. A write on the trio thread waits for a running batch (~10 ms per
1,000 records), so prefer `trio.to_thread.run_sync` for writes.

Errors. A mount opens its index with `Index.open_checked` (check.py: a damaged
file is moved aside and the index rebuilt from the call log). Later, any
sqlite3 error leaves a public method as an `IndexFailure` (`IndexDamaged`,
`StateDiskFull`) naming the file, reported once per cause to `on_error`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rcfs.errors import BadResponse, RcfsError

from . import queries, writes
from .check import IndexDamaged, IndexFailure, check, failure, mark_damaged, move_aside
from .coverage import Coverage
from .rows import IndexedRecording, StoredRecord, UpsertResult
from .schema import create_or_migrate

META_CONTENT_TYPE = "content_type"  # the account's recording format (readCallRecording)
META_CONTENT_TYPE_CHECKED = "content_type_checked"  # when it was learned (ISO 8601)

log = logging.getLogger(__name__)

# A failure of the same cause (other than damage) is reported again only after this long.
REPORT_EVERY_S = 300.0

_C = TypeVar("_C", bound=type)


def _domain_errors(cls: _C) -> _C:
    """Wrap every public method so that an sqlite3 error leaves it as an `IndexFailure`.

    A damaged page, a full disk or a failing disk can surface in any query, long
    after the mount checked the file (check.py): callers see one domain error
    (fuse_ops answers EIO, the refresh and the backfill record it and go on),
    never an sqlite3 exception that ends a task. Methods return lists, not
    cursors, so every row is read inside the wrapper.
    """
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(fn):
            continue

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def wrapper(self: Index, *args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(self, *args, **kwargs)
                except sqlite3.ProgrammingError:  # a bug (or a closed index), not the file
                    raise
                except sqlite3.DatabaseError as exc:
                    raise self._failed(exc) from exc

            return wrapper

        setattr(cls, name, wrap(fn))
    return cls


@_domain_errors
class Index:
    """The SQLite index at `path` (created if absent).

    `on_error` receives the one-line cause of a failed read or write (the
    mount's error log), once per cause (see `_failed`). Use `open_checked` to
    open a mount's index.
    """

    def __init__(self, path: Path | str, *, on_error: Callable[[str], None] | None = None) -> None:
        self._path = str(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._coverage = Coverage()
        self._pending_coverage: Coverage | None = None
        self._on_error = on_error
        self._reported: dict[str, float] = {}
        self._report_lock = threading.Lock()
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            with self._write():
                create_or_migrate(conn, self._path)
                self._coverage = Coverage(conn.execute("SELECT lo, hi FROM coverage").fetchall())
                content_type = queries.get_meta(conn, META_CONTENT_TYPE)
            # The account's recording format (a company setting): what a new
            # recording's name and size estimate assume until it is downloaded.
            self.default_content_type: str | None = content_type
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.ProgrammingError):
                raise failure(exc, self._path) from exc
            raise

    @classmethod
    def open_checked(
        cls, path: Path | str, *, on_error: Callable[[str], None] | None = None
    ) -> Index:
        """Open a mount's index after checking it (check.py); a damaged file is
        moved aside, the move reported in one line, and a new, empty index made.

        Takes up to about a second on a large index: call it from a worker thread.
        """
        path = Path(path)
        reason = check(path)
        if reason is None:
            try:
                return cls(path, on_error=on_error)
            except IndexDamaged as exc:  # damage quick_check does not see
                reason = exc.reason
        try:
            aside = move_aside(path)
        except OSError as exc:
            raise IndexFailure(f"the index {path} is damaged ({reason}) and cannot be moved "
                               f"aside: {exc.strerror}") from exc
        message = (f"the index {path} was damaged ({reason}): moved it to {aside}; "
                   "rebuilding it from the call log")
        if on_error is not None:
            on_error(message)
        else:
            log.warning("%s", message)
        return cls(path, on_error=on_error)

    def _failed(self, exc: sqlite3.DatabaseError) -> IndexFailure:
        """The domain error for `exc`, reported once per cause (see `on_error`): damage
        once for good (it lasts until a remount), a full disk again if it recurs later."""
        found = failure(exc, self._path)
        damaged = isinstance(found, IndexDamaged)
        if damaged:
            mark_damaged(Path(self._path), found.reason)
        now = time.monotonic()
        key = str(found)
        with self._report_lock:
            last = self._reported.get(key)
            due = last is None or (not damaged and now - last >= REPORT_EVERY_S)
            if due:
                self._reported[key] = now
        if due and self._on_error is not None:
            self._on_error(key)
        elif due:
            log.warning("%s", key)
        else:
            log.debug("again: %s", key)
        # Reported here, once: fuse_ops must not record it again for every request.
        found._rcfs_recorded = True  # type: ignore[attr-defined]
        return found

    # -- connections ----------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RcfsError("index is closed")
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection; the index is unusable afterwards."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this thread's connection, one writer at a time;
        a coverage `_cover` persisted in it is published when it commits."""
        conn = self._conn()
        with self._write_lock:
            self._pending_coverage = None
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk, an I/O error): a
                # second ROLLBACK would raise and hide the cause; a failed COMMIT
                # leaves the transaction open, and every later BEGIN would fail.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            if self._pending_coverage is not None:
                self._coverage = self._pending_coverage

    # -- the call log ---------------------------------------------------------

    def upsert_records(
        self, records: Iterable[dict[str, Any]], *, cover: tuple[int, int] | None = None
    ) -> UpsertResult:
        """Store one page of call-log records in one transaction (what a record
        does to the index: `writes.upsert_record`).

        `cover` (epoch ms, [lo, hi)) is added to the coverage in the same
        transaction: the page completes the call log of that span.

        Malformed records are skipped and reported in `bad_records`, one line each.
        """
        added: list[str] = []
        changed: set[int] = set()
        bad: list[str] = []
        with self._write() as conn:
            for record in records:
                try:
                    writes.upsert_record(conn, record, added, changed,
                                         default_content_type=self.default_content_type)
                except BadResponse as exc:
                    bad.append(str(exc))
            if cover is not None:
                self._cover(conn, self._coverage.add(*cover))
        return UpsertResult(tuple(added), frozenset(changed), tuple(bad))

    # -- coverage -------------------------------------------------------------

    @property
    def coverage(self) -> Coverage:
        """The spans whose call log is in the index (an immutable snapshot)."""
        return self._coverage

    def add_coverage(self, lo: int, hi: int) -> None:
        with self._write() as conn:
            self._cover(conn, self._coverage.add(lo, hi))

    def remove_coverage(self, lo: int, hi: int) -> None:
        """Forget that [lo, hi) is indexed: it is read again (a remount's overlap)."""
        with self._write() as conn:
            self._cover(conn, self._coverage.remove(lo, hi))

    def _cover(self, conn: sqlite3.Connection, new: Coverage) -> None:
        """Persist `new` (the caller holds the write lock, so read-modify-write is safe)."""
        if new == self._coverage:
            return
        conn.execute("DELETE FROM coverage")
        conn.executemany("INSERT INTO coverage (lo, hi) VALUES (?, ?)", new.spans())
        # Published when the transaction commits (a rollback raises past this).
        self._pending_coverage = new

    # -- deletions ------------------------------------------------------------

    def mark_deleted(self, recording_ids: Iterable[str], when_ms: int | None = None) -> set[int]:
        """Flag recordings gone upstream; returns the starts of those newly flagged."""
        with self._write() as conn:
            return writes.mark_deleted(conn, list(recording_ids), when_ms)

    def undecided_deleted(self) -> list[str]:
        """Recordings deleted upstream whose content is not yet kept or given up."""
        return queries.undecided_deleted(self._conn())

    def kept_deleted(self) -> list[str]:
        """Recordings deleted upstream whose content is archived (kept)."""
        return queries.kept_deleted(self._conn())

    def set_kept(self, recording_ids: Iterable[str], kept: bool, *, lost: bool = False) -> set[int]:
        """Record whether deleted recordings' content is kept (in the archive store);
        `lost`: not kept because rcfs never had it. Returns the starts changed."""
        with self._write() as conn:
            return writes.set_kept(conn, recording_ids, kept, lost)

    # -- the archive ----------------------------------------------------------

    def set_stored(self, recording_ids: Iterable[str], stored: bool = True) -> None:
        """Record that recordings' content is (or is no longer) in the archive store."""
        with self._write() as conn:
            writes.set_stored(conn, recording_ids, stored)

    def reconcile_stored(self, recording_ids: Iterable[str]) -> int:
        """Make `stored` say exactly which recordings the archive store holds (at
        start: the store is the truth, the flags its cache). Returns rows changed."""
        with self._write() as conn:
            return writes.reconcile_stored(conn, recording_ids)

    def oldest_pending(self, limit: int, *, after: tuple[int, int] | None = None) -> list[IndexedRecording]:
        """Recordings that exist upstream but are not in the archive store, oldest
        first (by start, then row id), after `after` = (start_ms, rowid) if given."""
        return queries.oldest_pending(self._conn(), limit, after)

    def pending_starts(self) -> list[int]:
        """Start times of every recording still to archive, oldest first (for at_risk)."""
        return queries.pending_starts(self._conn())

    def archive_counts(self) -> dict[str, int]:
        """pending (exist upstream, not stored), stored (in the archive store, deleted or
        not), lost (deleted upstream before rcfs had them)."""
        return queries.archive_counts(self._conn())

    # -- exact sizes ----------------------------------------------------------

    def set_exact_size(
        self, recording_id: str, size: int, content_type: str | None = None, digest: str | None = None
    ) -> bool:
        """Persist the exact size (and the served content type, and the content's
        digest once downloaded whole); True if it changed."""
        return bool(self.set_exact_sizes({recording_id: (size, content_type, digest)}))

    def set_exact_sizes(self, sizes: Mapping[str, tuple[Any, ...]]) -> set[str]:
        """`set_exact_size` for many recordings in one transaction (recording id ->
        (size, content type or None[, digest or None])); returns the ids whose row changed."""
        with self._write() as conn:
            return writes.set_exact_sizes(conn, sizes)

    # -- meta -----------------------------------------------------------------

    def set_meta(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                writes.delete_meta(conn, key)
            else:
                writes.put_meta(conn, key, value)

    def get_meta(self, key: str) -> str | None:
        return queries.get_meta(self._conn(), key)

    # -- the account's recording format ---------------------------------------

    def max_rowid(self) -> int:
        return queries.max_rowid(self._conn())

    def newest_recording_ids(self, limit: int) -> list[str]:
        return queries.newest_recording_ids(self._conn(), limit)

    def set_account_format(self, content_type: str, checked: str, *, name_from_rowid: int) -> int:
        """Record the account's recording format; recordings indexed since `name_from_rowid`
        (in this mount, before any of their names was shown) take it for their names.
        Returns how many were renamed so."""
        with self._write() as conn:
            writes.put_meta(conn, META_CONTENT_TYPE, content_type)
            writes.put_meta(conn, META_CONTENT_TYPE_CHECKED, checked)
            renamed = writes.name_with_format(conn, content_type, name_from_rowid)
        self.default_content_type = content_type
        return renamed

    # -- reads ----------------------------------------------------------------

    def get_recording(self, recording_id: str) -> IndexedRecording | None:
        return queries.get_recording(self._conn(), recording_id)

    def recording_by_rowid(self, rowid: int) -> IndexedRecording | None:
        return queries.recording_by_rowid(self._conn(), rowid)

    def recordings_between(
        self, start_ms: int, end_ms: int, *, include_deleted: bool = True
    ) -> list[IndexedRecording]:
        """Recordings with start in [start_ms, end_ms), by start then row id."""
        return queries.recordings_between(self._conn(), start_ms, end_ms, include_deleted)

    def next_start(self, at_or_after_ms: int, *, include_deleted: bool = True) -> int | None:
        """The first recording start at or after the given time (one index seek)."""
        return queries.next_start(self._conn(), at_or_after_ms, include_deleted)

    def prev_start(self, before_ms: int, *, include_deleted: bool = True) -> int | None:
        """The last recording start before the given time (one index seek)."""
        return queries.prev_start(self._conn(), before_ms, include_deleted)

    def start_range(self) -> tuple[int, int] | None:
        """(oldest, newest) recording start, or None when empty."""
        return queries.start_range(self._conn())

    def records_between(self, start_ms: int, end_ms: int) -> list[StoredRecord]:
        """Call-log records with (frozen) start in [start_ms, end_ms), by start then id."""
        return queries.records_between(self._conn(), start_ms, end_ms)

    def records_for_call_ids(self, call_ids: Iterable[str]) -> dict[str, StoredRecord]:
        return queries.records_for_call_ids(self._conn(), call_ids)

    def max_mod_between(self, start_ms: int, end_ms: int) -> int | None:
        """Newest of start and lastModifiedTime over records in the range (covering index)."""
        return queries.max_mod_between(self._conn(), start_ms, end_ms)

    def stats(self) -> dict[str, Any]:
        """Counts and bounds for status.json: records, recordings (those that exist
        upstream), deleted (gone upstream), deleted_kept (of those, archived),
        oldest, newest, last_sync."""
        return queries.stats(self._conn())
