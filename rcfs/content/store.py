"""The on-disk side of the content cache: directories, crash recovery, diskcache.

The layout of `cache_dir`, its session directories in `partial/` and the
files of `archive/` are layout.py's; `Store` composes them with diskcache.

Digests. `commit` reads each verified download back (from the page cache, in
the worker thread) and returns its BLAKE2b-512 (`integrity.py`); the manager
keeps it in the index, and `lookup(..., digest=True)` computes it again so
the first open of an entry in a mount can be checked before any byte of it
is served, unless the file still matches the seal (seals.py) that `commit`
or an earlier good check left.

A download is written to a `.part` file, verified, fsynced and then *moved*
into diskcache by `AdoptingDisk.store` (a rename, not a copy: no second copy
of a large file, no doubled disk use, and readers holding the partial file's
descriptor keep reading the same inode, which is now the cache file). The row
that makes it visible is committed only after the rename, so after a crash an
entry is complete or absent; stale session directories (lock not held) are
removed when the next manager starts (layout.py's "Sessions"). The size is
also stored as the entry's tag and checked against the file on every lookup,
so a file truncated behind diskcache's back is dropped, never served.

Archive. rcfs is an archive first: a recording deleted upstream must not be
lost to LRU eviction. In archive mode (`rcfs mount --archive`) every download
is committed straight into `archive/` (`commit(..., permanent=True)`), so
nothing archived is ever evicted or counted against `size_limit`. `archive`
moves a cached file out of diskcache into `archive/` (hard link to
`<id>.tmp`, rename to `<id>`, fsync the directory, then delete the diskcache
entry), so at every instant the bytes are in the cache, the archive or
both; a crash leaves at worst a `.tmp` (removed at the next start) or an
entry in both places (the next `archive` call finishes the move). Only
`prune` removes archived files (`rcfs cache prune --deleted`).

Bookkeeping without scans. `scan` reads every key once, when the manager
starts; after that the manager keeps the key set itself from what `commit`
(the evicted keys and the volume) and `archive` report, because a scan per
commit cost 7 % of the daemon's time with 2,000 cached files and grew with the
cache. Lookups read the row without writing: diskcache's `get` under the LRU
policy writes `access_time` in a transaction on every hit, so the manager
batches those updates and hands them to `commit`, which applies them just
before it evicts, or to `touch` (bookkeeping.py's "Recency").

Everything here is synchronous and may block on the disk: the manager calls
it through `trio.to_thread.run_sync`, never on the trio thread. diskcache's
Cache is thread-safe (one SQLite connection per thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import diskcache

from .integrity import fd_digest
from .layout import (
    ARCHIVE_SUBDIR,
    CACHE_SUBDIR,
    DAMAGED_SUBDIR,
    PARTIAL_FLAGS,
    PARTIAL_SUBDIR,
    Adopt,
    AdoptingDisk,
    ArchiveDir,
    Session,
    private_dir,
    remove_stale_sessions,
)
from .seals import Seals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheStats:
    volume: int  # bytes, as diskcache counts them against size_limit
    entries: int
    keys: frozenset[str]


@dataclass(frozen=True)
class ToCommit:
    """A verified download: `fd` is open on the partial file at `path`."""

    recording_id: str
    fd: int
    path: str
    size: int


@dataclass
class Committed:
    """What one `commit` did: the manager's key set follows from it."""

    volume: int  # after culling
    evicted: list[str] = field(default_factory=list)  # in eviction order
    errors: dict[str, Exception] = field(default_factory=dict)  # not committed
    digests: dict[str, str] = field(default_factory=dict)  # of those committed
    sealed: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (path, trust key)


@dataclass(frozen=True)
class Found:
    """A complete cached or archived file, opened: `digest` if it was asked for."""

    fd: int
    size: int
    digest: str | None
    archived: bool
    sealed: tuple[str, int] | None = None  # (path, trust key) when checked and sealed now


def _same_content(a: os.stat_result, b: os.stat_result) -> bool:
    """The same file with the same size and mtime (a rename changes only the ctime)."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


class Store:
    """Owns cache_dir for one ContentManager. Construct it in a worker thread."""

    def __init__(self, cache_dir: Path, size_limit: int, min_free: int | float | None = None) -> None:
        private_dir(cache_dir)
        partial_root = private_dir(cache_dir / PARTIAL_SUBDIR)
        remove_stale_sessions(partial_root)
        self._archive = ArchiveDir(cache_dir / ARCHIVE_SUBDIR)
        self.archive_dir = self._archive.path
        self.cache_dir = cache_dir
        self._session = Session(partial_root)
        self.size_limit = size_limit
        try:
            self.cache = self._open_cache()
        except BaseException:
            self._session.close()
            raise
        self._recreate_lock = threading.Lock()
        self.seals = Seals(cache_dir)
        # Bytes to keep free on the cache's disk: a size, or a share of the disk (a float).
        if min_free is None:
            min_free = 0.05
        self.min_free = self._disk_share(min_free) if isinstance(min_free, float) else min_free
        self.make_spares()

    def _open_cache(self) -> diskcache.Cache:
        return diskcache.Cache(
            str(private_dir(self.cache_dir / CACHE_SUBDIR)),
            size_limit=self.size_limit,
            eviction_policy="least-recently-used",
            disk=AdoptingDisk,
            cull_limit=0,  # see _evict_to_limit
        )

    def recreate_if_removed(self) -> bool:
        """If the cache directory was removed under the mount, make it again (empty):
        directories, this session's lock and a new diskcache. True if it did."""
        with self._recreate_lock:
            if self.session_dir.is_dir() and (self.cache_dir / CACHE_SUBDIR / "cache.db").exists():
                return False
            log.warning("the content cache directory %s was removed while mounted: recreated "
                        "(what was cached there is gone and will be downloaded again)", self.cache_dir)
            private_dir(self.session_dir)
            private_dir(self.archive_dir)
            self._session.relock()
            old, self.cache = self.cache, self._open_cache()
            with contextlib.suppress(Exception):
                old.close()
            self.seals.reopen()
            return True

    # -- partial files -------------------------------------------------------

    @property
    def session_dir(self) -> Path:
        return self._session.dir

    def partial_path(self, recording_id: str) -> str:
        """A fresh path: a failed download's cleanup never meets its successor."""
        return self._session.partial_path(recording_id)

    def take_spare(self, path: str) -> int | None:
        """A spare partial file renamed to `path` (trio thread; layout.py, "Spare files")."""
        return self._session.take_spare(path)

    def make_spares(self) -> None:
        """Top up the spare partial files; a failure only means downloads create their own."""
        try:
            self._session.make_spares()
        except OSError as exc:
            log.debug("cannot make spare partial files: %s", exc)

    def create_partial(self, path: str) -> int:
        try:
            return os.open(path, PARTIAL_FLAGS, 0o600)
        except FileNotFoundError:
            if not self.recreate_if_removed():
                raise
            return os.open(path, PARTIAL_FLAGS, 0o600)

    @staticmethod
    def discard_partial(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    # -- the cache -----------------------------------------------------------

    def commit(
        self, downloads: Sequence[ToCommit], touched: Mapping[str, float] | None = None,
        *, permanent: bool = False,
    ) -> Committed:
        """Make verified downloads visible, then cull to the size limit.

        Each recording is committed on its own (its file fsynced and renamed,
        then its row in its own transaction), so one failure leaves the others
        committed and a crash leaves every entry complete or absent; a batch
        only shares this thread hop and the culling. `touched` (id -> access
        time) is applied first, so eviction sees every recent open.

        `permanent` (archive mode): the files are renamed into `archive/`
        instead (fsynced first, the directory once per batch), where nothing
        evicts them and `size_limit` does not count them.
        """
        if touched:
            self.touch(touched)
        result = Committed(volume=0)
        to_seal: dict[str, tuple[str, os.stat_result, str]] = {}
        for item in downloads:
            try:
                before = os.fstat(item.fd)  # before the hash: a write after it shows
                digest = fd_digest(item.fd)  # the bytes as written, read back from the page cache
                path = self._commit_permanent(item) if permanent else self._commit_one(item)
                result.digests[item.recording_id] = digest
                # Sealed as it is after the rename (which changes only its ctime), if
                # nothing else changed since the hash.
                after = os.fstat(item.fd)
                if path is not None and _same_content(before, after):
                    to_seal[item.recording_id] = (path, after, digest)
            except Exception as exc:
                result.errors[item.recording_id] = exc
        if permanent and len(result.errors) < len(downloads):
            try:
                self._archive.sync()
            except OSError as exc:  # not durable: report every item of the batch
                result.errors.update({i.recording_id: exc for i in downloads})
        result.sealed = self.seals.put({k: v for k, v in to_seal.items() if k not in result.errors})
        result.evicted = self._evict_to_limit()
        self.seals.drop(result.evicted)
        result.volume = self.cache.volume()
        self.make_spares()  # for the next downloads, while this thread is here anyway
        return result

    def _commit_permanent(self, item: ToCommit) -> str:
        st = os.fstat(item.fd)
        if st.st_size != item.size:
            raise ValueError(f"partial file has {st.st_size} bytes, expected {item.size}")
        os.fsync(item.fd)
        dest = self._archive.file(item.recording_id)
        os.rename(item.path, dest)
        return dest

    def _commit_one(self, item: ToCommit) -> str | None:
        st = os.fstat(item.fd)
        if st.st_size != item.size:  # the caller verified; this guards the guard
            raise ValueError(f"partial file has {st.st_size} bytes, expected {item.size}")
        os.fsync(item.fd)  # data durable before the row that points at it
        self.cache.set(item.recording_id, Adopt(item.path, item.size), tag=item.size, retry=True)
        row = self.cache._sql("SELECT filename FROM Cache WHERE key = ? AND raw = 1",
                              (item.recording_id,)).fetchone()
        return os.path.join(self.cache.directory, row[0]) if row and row[0] else None

    def sealed(self, ids: frozenset[str] | set[str]) -> dict[str, tuple[str, int]]:
        """id -> (path, trust key) of the entries among `ids` that carry a seal (seals.py)."""
        return self.seals.load(ids)

    def touch(self, touched: Mapping[str, float]) -> None:
        """Record opens (id -> time.time()) as diskcache's LRU access times.

        What `Cache.get` does on every hit under this eviction policy, batched:
        one transaction for many opens. Keys gone since are skipped.
        """
        with self.cache.transact(retry=True):
            for rid, when in touched.items():
                self.cache._sql(
                    "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1"
                    " AND access_time < ?",
                    (when, rid, when),
                )

    def _evict_to_limit(self, need: int = 0) -> list[str]:
        """Evict least-recently-used entries, one at a time, until under the limit and
        until the disk has `min_free` bytes free, plus `need` for a download about to
        start (`--cache-min-free`: a full disk fails reads only when nothing is left
        to evict; the archive is never evicted).

        diskcache culls in batches of `cull_limit` (10) rows: ten recordings
        thrown out to make room for one. Its table and `access_time` column
        (updated by every `get` under this eviction policy, and by `touch`)
        are stable since diskcache 4; `lookup` and `touch` read and write them
        directly too. Returns the evicted keys.
        """
        evicted: list[str] = []
        while self.cache.volume() > self.size_limit or self.free_bytes() < self.min_free + need:
            row = self.cache._sql(
                "SELECT key FROM Cache ORDER BY access_time LIMIT 1"
            ).fetchone()
            if row is None:
                break
            log.debug("evicting recording %s from the content cache", row[0])
            self.cache.delete(row[0], retry=True)
            evicted.append(row[0])
        if evicted and self.free_bytes() < self.min_free + need:
            log.info("the cache disk is short of space even after evicting %d recordings", len(evicted))
        return evicted

    def make_room(self, need: int) -> Committed:
        """Evict for a download of `need` bytes about to start (see `_evict_to_limit`),
        unless it could not fit even with the whole LRU cache gone (it is streamed
        through then: evicting would only lose what is cached)."""
        result = Committed(volume=0)
        if self.free_bytes() + self.cache.volume() >= need + self.min_free:
            result.evicted = self._evict_to_limit(need)
            self.seals.drop(result.evicted)
        result.volume = self.cache.volume()
        return result

    def _disk_share(self, share: float) -> int:
        st = os.statvfs(self.cache_dir)
        return int(st.f_blocks * st.f_frsize * share)

    def lookup(self, recording_id: str, *, digest: bool = False,
               expect: str | None = None) -> Found | None:
        """A complete cached or archived file, opened (and its digest computed, if
        asked: a full read); None if absent. A digest computed that is `expect`
        (or any, when nothing is expected) seals the file (seals.py).

        Read-only: unlike diskcache's `get` (a write transaction, ~7x slower)
        it does not mark the entry as recently used; the caller does, through
        `touch` or `commit`. A file whose size is not its tag is dropped.
        """
        found = self._open_entry(recording_id)
        if found is None:
            return None
        fd, size, archived, path = found
        try:
            if not digest:
                return Found(fd, size, None, archived)
            st = os.fstat(fd)  # before the hash: a write during or after it breaks the seal
            got = fd_digest(fd)
            sealed = None
            if expect is None or got == expect:
                sealed = self.seals.put({recording_id: (path, st, got)}).get(recording_id)
            return Found(fd, size, got, archived, sealed)
        except BaseException:
            os.close(fd)
            raise

    def quarantine(self, recording_id: str) -> str | None:
        """Take a damaged entry out of service: its file moves to `damaged/` (kept
        for the user to inspect) and its cache row goes. Returns where it went."""
        self.seals.drop([recording_id])
        dest_dir = private_dir(self.cache_dir / DAMAGED_SUBDIR)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = dest_dir / f"{Path(self._archive.file(recording_id)).name}.{stamp}.{uuid.uuid4().hex[:6]}"
        src = self._archive.file(recording_id)
        if os.path.exists(src):
            os.rename(src, dest)
            self._archive.sync()
            return str(dest)
        row = self.cache._sql(
            "SELECT filename FROM Cache WHERE key = ? AND raw = 1", (recording_id,)).fetchone()
        moved = None
        if row is not None and row[0] is not None:
            with contextlib.suppress(FileNotFoundError):
                os.link(os.path.join(self.cache.directory, row[0]), dest)
                moved = str(dest)
        self.cache.delete(recording_id, retry=True)
        return moved

    def keys(self) -> tuple[list[str], list[str]]:
        """(LRU-cached ids, archived ids): what `rcfs verify` checks."""
        cached = [k for k in self.cache.iterkeys() if isinstance(k, str)]
        return cached, list(self.archived())

    def _open_entry(self, recording_id: str) -> tuple[int, int, bool, str] | None:
        """(fd, size, archived, path) of a complete cached or archived file; None if absent."""
        archived = self._archive.file(recording_id)
        try:
            fd = os.open(archived, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        else:
            return fd, os.fstat(fd).st_size, True, archived
        row = self.cache._sql(
            "SELECT filename, tag FROM Cache WHERE key = ? AND raw = 1", (recording_id,)
        ).fetchone()
        if row is None:
            return None
        filename, tag = row
        if filename is None:  # a small value stored inline: not ours
            self.cache.delete(recording_id, retry=True)
            return None
        path = os.path.join(self.cache.directory, filename)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # evicted since the SELECT, or removed behind our back
            # Drop the row if it still names that file, so nothing (rcfs verify, a
            # backup reading the cache) counts it as an entry until it is fetched again.
            self.cache._sql("DELETE FROM Cache WHERE key = ? AND raw = 1 AND filename = ?",
                            (recording_id, filename))
            self.seals.drop([recording_id])
            return None
        size = os.fstat(fd).st_size
        if not isinstance(tag, int) or size != tag:
            log.warning(
                "cached recording %s has %d bytes, expected %s: dropped", recording_id, size, tag
            )
            os.close(fd)
            self.cache.delete(recording_id, retry=True)
            return None
        return fd, size, False, path

    # -- the archive ---------------------------------------------------------

    def archive(self, recording_id: str) -> int | None:
        """Move a cached recording into the archive; its size, or None if not cached.

        Callers serialise this with commits (whose culling could evict the file
        mid-move). Idempotent: an entry already archived is finished and reported.
        """
        dest = self._archive.file(recording_id)
        if os.path.exists(dest):
            self.cache.delete(recording_id, retry=True)  # finish an interrupted move
            return os.stat(dest).st_size
        found = self.cache.get(recording_id, default=None, read=True, tag=True, retry=True)
        if found is None or found[0] is None:
            return None
        handle, tag = found
        if not hasattr(handle, "fileno"):
            return None
        with handle:
            src = handle.name
            size = os.fstat(handle.fileno()).st_size
        if not isinstance(tag, int) or size != tag:
            log.warning("cached recording %s has %d bytes, expected %s: not archived",
                        recording_id, size, tag)
            return None
        if not self._archive.link_in(recording_id, src):
            return None
        self.cache.delete(recording_id, retry=True)
        self.seals.drop([recording_id])  # a new path and ctime: the next first open hashes it
        log.info("recording %s deleted upstream: archived (%d bytes)", recording_id, size)
        return size

    def archived(self) -> dict[str, int]:
        """Archived recordings: id -> size."""
        return self._archive.sizes()

    def prune(self, recording_ids: list[str]) -> tuple[int, int]:
        """Remove archived recordings; (count, bytes) removed."""
        count = size = 0
        for rid in recording_ids:
            path = self._archive.file(rid)
            try:
                n = os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
            count, size = count + 1, size + n
            self.seals.drop([rid])
        if count:
            self._archive.sync()
        return count, size

    def scan(self) -> CacheStats:
        """Every key: once, when the manager starts (it keeps the set from then on)."""
        keys = frozenset(k for k in self.cache.iterkeys() if isinstance(k, str))
        return CacheStats(volume=self.cache.volume(), entries=len(keys), keys=keys)

    def free_bytes(self) -> int:
        """Free space on the cache's file system, for this user."""
        st = os.statvfs(self.cache_dir)
        return st.f_bavail * st.f_frsize

    def volume(self) -> int:
        return int(self.cache.volume())

    def close(self) -> None:
        self.cache.close()
        self.seals.close()
        self._session.close()
