"""The persistent SQLite index of the call log: what the tree is built from.

Owns: the database (connections, one writer at a time), the coverage of the
call log it holds (`Coverage`, per span of time, persisted with the records
of each page in one transaction, so an interrupted first mount resumes where
it stopped), each recording's archive state (`stored`, `lost`), and every
query the tree and the archive need; the schema and its migrations are in
`schema.py`, the row types in `rows.py`. Times are integer milliseconds since the epoch
(UTC) throughout; `start_ms` of a record and of its recordings is frozen at
the first sighting, and so are a recording's naming fields, so a file name
never changes and never moves to another day. The row id of a recording
(`IndexedRecording.rowid`, an AUTOINCREMENT key that VACUUM cannot renumber)
is the stable part of its inode number.

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

Days. Day directories depend on the mount's zone, so the index keeps no
per-day table. Which days, months and years exist is found by skip-scanning
the `start_ms` index: `next_start(t)` is one B-tree seek, and a listing of a
month costs one seek per existing day, whatever the account holds. Measured
with 100,000 recordings over a year (Vfs on top, cold caches): a seek 3 µs,
the root listing 0.5 ms, a year 3 ms, a month 1.1 ms, `stats()` 1 ms; a
per-zone day table would save little and need invalidating.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rcfs.errors import BadResponse, RcfsError
from rcfs.models import epoch_ms, from_epoch_ms, parse_time, record_call_id
from rcfs.models import recordings_from_record as _recordings_from_record

from .check import IndexDamaged, IndexFailure, check, failure, mark_damaged, move_aside
from .coverage import Coverage
from .rows import REC_COLUMNS as _REC_COLUMNS
from .rows import VISIBLE as _VISIBLE
from .rows import IndexedRecording, StoredRecord, UpsertResult
from .rows import indexed as _indexed
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
                row = conn.execute("SELECT value FROM meta WHERE key=?", (META_CONTENT_TYPE,)).fetchone()
            # The account's recording format (a company setting): what a new
            # recording's name and size estimate assume until it is downloaded.
            self.default_content_type: str | None = None if row is None else str(row[0])
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

    # -- connections -------------------------------------------------------

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

    # -- writes ------------------------------------------------------------

    def upsert_records(
        self, records: Iterable[dict[str, Any]], *, cover: tuple[int, int] | None = None
    ) -> UpsertResult:
        """Store one page of call-log records in one transaction.

        `cover` (epoch ms, [lo, hi)) is added to the coverage in the same
        transaction: the page completes the call log of that span.

        New recordings are added with the naming fields of this sighting; known
        ones get their content URI and duration updated and lose any deleted
        flag. Records carrying no recording are stored only if already known
        (they may have lost a leg). `deleted: true` records (ISync) mark their
        call's recordings deleted. Malformed records are skipped and reported
        in `bad_records`, one line each.
        """
        added: list[str] = []
        changed: set[int] = set()
        bad: list[str] = []
        with self._write() as conn:
            for record in records:
                try:
                    self._upsert_one(conn, record, added, changed)
                except BadResponse as exc:
                    bad.append(str(exc))
            if cover is not None:
                self._cover(conn, self._coverage.add(*cover))
        return UpsertResult(tuple(added), frozenset(changed), tuple(bad))

    # -- coverage ----------------------------------------------------------

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

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
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

    def _upsert_one(
        self, conn: sqlite3.Connection, record: dict[str, Any], added: list[str], changed: set[int]
    ) -> None:
        if isinstance(record, dict) and record.get("deleted") is True:
            call_id = record_call_id(record)
            if call_id is None:
                raise BadResponse("deleted call-log record without an id")
            ids = [r[0] for r in conn.execute(
                "SELECT recording_id FROM recordings WHERE call_id=? AND deleted=0", (call_id,))]
            changed.update(self._mark_deleted(conn, ids, record.get("lastModifiedTime")))
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
            changed.update(self._mark_deleted(conn, lost, record.get("lastModifiedTime")))
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
                     rec.content_type or self.default_content_type,
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

    def mark_deleted(self, recording_ids: Iterable[str], when_ms: int | None = None) -> set[int]:
        """Flag recordings gone upstream; returns the starts of those newly flagged."""
        with self._write() as conn:
            return self._mark_deleted(conn, list(recording_ids), when_ms)

    @staticmethod
    def _mark_deleted(conn: sqlite3.Connection, ids: list[str], when: object) -> set[int]:
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

    def undecided_deleted(self) -> list[str]:
        """Recordings deleted upstream whose content is not yet kept or given up."""
        return [r[0] for r in self._conn().execute(
            "SELECT recording_id FROM recordings INDEXED BY recordings_deleted "
            "WHERE deleted=1 AND kept IS NULL")]

    def kept_deleted(self) -> list[str]:
        """Recordings deleted upstream whose content is archived (kept)."""
        return [r[0] for r in self._conn().execute(
            "SELECT recording_id FROM recordings INDEXED BY recordings_deleted "
            "WHERE deleted=1 AND kept=1")]

    def set_kept(self, recording_ids: Iterable[str], kept: bool, *, lost: bool = False) -> set[int]:
        """Record whether deleted recordings' content is kept (in the archive store);
        `lost`: not kept because rcfs never had it. Returns the starts changed."""
        starts: set[int] = set()
        with self._write() as conn:
            for rid in recording_ids:
                row = conn.execute(
                    "UPDATE recordings SET kept=?, stored=?, lost=? WHERE recording_id=? "
                    "AND deleted=1 AND (kept IS NOT ? OR lost IS NOT ?) RETURNING start_ms",
                    (int(kept), int(kept), int(lost and not kept), rid, int(kept),
                     int(lost and not kept))).fetchone()
                if row is not None:
                    starts.add(row[0])
        return starts

    # -- the archive ---------------------------------------------------------

    def set_stored(self, recording_ids: Iterable[str], stored: bool = True) -> None:
        """Record that recordings' content is (or is no longer) in the archive store."""
        with self._write() as conn:
            conn.executemany("UPDATE recordings SET stored=? WHERE recording_id=? AND stored IS NOT ?",
                             [(int(stored), rid, int(stored)) for rid in recording_ids])

    def reconcile_stored(self, recording_ids: Iterable[str]) -> int:
        """Make `stored` say exactly which recordings the archive store holds (at
        start: the store is the truth, the flags its cache). Returns rows changed."""
        with self._write() as conn:
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

    def oldest_pending(self, limit: int, *, after: tuple[int, int] | None = None) -> list[IndexedRecording]:
        """Recordings that exist upstream but are not in the archive store, oldest
        first (by start, then row id), after `after` = (start_ms, rowid) if given."""
        lo, rowid = after if after is not None else (-(2**62), -1)
        rows = self._conn().execute(
            f"SELECT {_REC_COLUMNS} FROM recordings INDEXED BY recordings_pending "
            "WHERE deleted=0 AND stored=0 AND (start_ms > ? OR (start_ms = ? AND id > ?)) "
            "ORDER BY start_ms, id LIMIT ?", (lo, lo, rowid, limit)).fetchall()
        return [_indexed(row) for row in rows]

    def pending_starts(self) -> list[int]:
        """Start times of every recording still to archive, oldest first (for at_risk)."""
        return [r[0] for r in self._conn().execute(
            "SELECT start_ms FROM recordings INDEXED BY recordings_pending "
            "WHERE deleted=0 AND stored=0 ORDER BY start_ms, id")]

    def archive_counts(self) -> dict[str, int]:
        """pending (exist upstream, not stored), stored (in the archive store, deleted or
        not), stored_bytes (their exact sizes), lost (deleted upstream before rcfs had them)."""
        conn = self._conn()
        pending = conn.execute(
            "SELECT COUNT(*) FROM recordings INDEXED BY recordings_pending "
            "WHERE deleted=0 AND stored=0").fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM recordings WHERE deleted=0").fetchone()[0]
        lost, kept = conn.execute(
            "SELECT COALESCE(SUM(lost), 0), COALESCE(SUM(stored), 0) FROM recordings "
            "INDEXED BY recordings_deleted WHERE deleted=1").fetchone()
        return {"pending": pending, "stored": total - pending + kept, "lost": lost}

    def set_exact_size(
        self, recording_id: str, size: int, content_type: str | None = None, digest: str | None = None
    ) -> bool:
        """Persist the exact size (and the served content type, and the content's
        digest once downloaded whole); True if it changed."""
        return bool(self.set_exact_sizes({recording_id: (size, content_type, digest)}))

    def set_exact_sizes(self, sizes: Mapping[str, tuple[Any, ...]]) -> set[str]:
        """`set_exact_size` for many recordings in one transaction (recording id ->
        (size, content type or None[, digest or None])); returns the ids whose row changed."""
        changed: set[str] = set()
        with self._write() as conn:
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

    def set_meta(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._put_meta(conn, key, value)

    @staticmethod
    def _put_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # -- reads -------------------------------------------------------------

    # -- the account's recording format ---------------------------------------

    def max_rowid(self) -> int:
        row = self._conn().execute("SELECT MAX(id) FROM recordings").fetchone()
        return int(row[0] or 0)

    def newest_recording_ids(self, limit: int) -> list[str]:
        return [r[0] for r in self._conn().execute(
            "SELECT recording_id FROM recordings WHERE deleted=0 ORDER BY start_ms DESC LIMIT ?",
            (limit,))]

    def set_account_format(self, content_type: str, checked: str, *, name_from_rowid: int) -> int:
        """Record the account's recording format; recordings indexed since `name_from_rowid`
        (in this mount, before any of their names was shown) take it for their names.
        Returns how many were renamed so."""
        with self._write() as conn:
            self._put_meta(conn, META_CONTENT_TYPE, content_type)
            self._put_meta(conn, META_CONTENT_TYPE_CHECKED, checked)
            renamed = conn.execute(
                "UPDATE recordings SET name_content_type=? WHERE id >= ? AND name_content_type IS NULL",
                (content_type, name_from_rowid)).rowcount
        self.default_content_type = content_type
        return int(renamed)

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def get_recording(self, recording_id: str) -> IndexedRecording | None:
        row = self._conn().execute(
            f"SELECT {_REC_COLUMNS} FROM recordings WHERE recording_id=?", (recording_id,)
        ).fetchone()
        return None if row is None else _indexed(row)

    def recording_by_rowid(self, rowid: int) -> IndexedRecording | None:
        row = self._conn().execute(
            f"SELECT {_REC_COLUMNS} FROM recordings WHERE id=?", (rowid,)).fetchone()
        return None if row is None else _indexed(row)

    def recordings_between(
        self, start_ms: int, end_ms: int, *, include_deleted: bool = True
    ) -> list[IndexedRecording]:
        """Recordings with start in [start_ms, end_ms), by start then row id."""
        rows = self._conn().execute(
            f"SELECT {_REC_COLUMNS} FROM recordings WHERE start_ms >= ? AND start_ms < ? "
            f"AND {_VISIBLE[include_deleted]} ORDER BY start_ms, id",
            (start_ms, end_ms),
        ).fetchall()
        return [_indexed(row) for row in rows]

    def next_start(self, at_or_after_ms: int, *, include_deleted: bool = True) -> int | None:
        """The first recording start at or after the given time (one index seek)."""
        row = self._conn().execute(
            "SELECT start_ms FROM recordings WHERE start_ms >= ? "
            f"AND {_VISIBLE[include_deleted]} ORDER BY start_ms LIMIT 1",
            (at_or_after_ms,),
        ).fetchone()
        return None if row is None else int(row[0])

    def prev_start(self, before_ms: int, *, include_deleted: bool = True) -> int | None:
        """The last recording start before the given time (one index seek)."""
        row = self._conn().execute(
            "SELECT start_ms FROM recordings WHERE start_ms < ? "
            f"AND {_VISIBLE[include_deleted]} ORDER BY start_ms DESC LIMIT 1",
            (before_ms,),
        ).fetchone()
        return None if row is None else int(row[0])

    def start_range(self) -> tuple[int, int] | None:
        """(oldest, newest) recording start, or None when empty."""
        # Two statements: SQLite answers a lone MIN or MAX with one index seek,
        # but MIN and MAX together with a scan (5 ms at 100k recordings).
        conn = self._conn()
        first = conn.execute("SELECT MIN(start_ms) FROM recordings").fetchone()[0]
        last = conn.execute("SELECT MAX(start_ms) FROM recordings").fetchone()[0]
        return None if first is None else (int(first), int(last))

    def records_between(self, start_ms: int, end_ms: int) -> list[StoredRecord]:
        """Call-log records with (frozen) start in [start_ms, end_ms), by start then id."""
        rows = self._conn().execute(
            "SELECT call_id, start_ms, mod_ms, raw FROM records "
            "WHERE start_ms >= ? AND start_ms < ? ORDER BY start_ms, call_id",
            (start_ms, end_ms),
        ).fetchall()
        return [StoredRecord(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def records_for_call_ids(self, call_ids: Iterable[str]) -> dict[str, StoredRecord]:
        conn = self._conn()
        out: dict[str, StoredRecord] = {}
        for cid in set(call_ids):
            r = conn.execute(
                "SELECT call_id, start_ms, mod_ms, raw FROM records WHERE call_id=?", (cid,)
            ).fetchone()
            if r is not None:
                out[cid] = StoredRecord(r[0], r[1], r[2], json.loads(r[3]))
        return out

    def max_mod_between(self, start_ms: int, end_ms: int) -> int | None:
        """Newest of start and lastModifiedTime over records in the range (covering index)."""
        row = self._conn().execute(
            "SELECT MAX(mod_ms) FROM records WHERE start_ms >= ? AND start_ms < ?",
            (start_ms, end_ms),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def stats(self) -> dict[str, Any]:
        """Counts and bounds for status.json: records, recordings (those that exist
        upstream), deleted (gone upstream), deleted_kept (of those, archived),
        oldest, newest, last_sync."""
        conn = self._conn()
        records = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
        deleted, kept = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(kept=1), 0) FROM recordings "
            "INDEXED BY recordings_deleted WHERE deleted=1"
        ).fetchone()
        bounds = self.start_range()
        return {
            "records": records,
            "recordings": total - deleted,
            "deleted": deleted,
            "deleted_kept": kept,
            "oldest": from_epoch_ms(bounds[0]).isoformat() if bounds else None,
            "newest": from_epoch_ms(bounds[1]).isoformat() if bounds else None,
            "last_sync": self.get_meta("last_sync"),
        }


def _start_ms(record: dict[str, Any]) -> int:
    where = f"call-log record {record.get('id')} startTime"
    return epoch_ms(parse_time(record.get("startTime"), where))

