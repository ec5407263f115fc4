"""The content manager: recordings' bytes, fetched once, cached on disk.

Design
======

What it owns. The bytes of recordings: the single download of each one, the
partial file it writes, the diskcache that keeps complete files across mounts,
and the open descriptors that reads are served from. It knows nothing of
FUSE, inodes or names (`fuse_ops` calls it with recording ids) and nothing of
HTTP (it consumes `ContentSource.stream_content`, whose errors are already
rcfs.errors domain errors). It must not import pyfuse3 or httpx.

Single flight (S3QL's in-flight map). `_inflight` maps a recording id to its
one `Download`. `open`, `read` and `prefetch` join the download in flight or
start one as a task in the long-lived nursery handed to `create` (never a
nursery of their own), then wait on it. A download's progress is one
`trio.Event` replaced on every change (a chunk, the size, the end, an error);
waiters re-check their condition when it fires, so a reader at offset N
wakes on the chunk that brings byte N, not at the end of the file. A download
outlives its readers: the Heavy request is paid for, and the next `rsync`
will want the bytes. Only `aclose` (or the nursery's end) cancels it.

Open waits for the size, not the data. DESIGN.md wants `fstat` after `open`
to show the exact size. The size comes with the response headers
(Content-Length of a 200, the total of a 206's Content-Range), so `open`
waits for those only; without either, the size is known when the body ends,
and `open` waits for that rather than report a wrong size.

Partial files and resume. The body is appended at `received` into
`partial/<session>/<id>.<n>.part`, opened once; readers `pread` the bytes
below `received` from the same descriptor while it grows. A failure in the
middle of a body (TemporaryFailure) resumes with `start=received`, a Range
request, under a bounded back-off with jitter that restarts its count after
each attempt that brought new bytes. A 200 where a 206 was asked for resets
`received` to 0 (so no reader is pointed at the range being truncated) and
truncates. The known size is checked against every response and against the
final length; a mismatch fails the download and nothing is cached.

Commit. When the last byte is in, the file is fsynced and moved (renamed)
into diskcache, whose row is committed after the file is in place
(`store.py`), all in a worker thread. The inode does not change, so readers
keep their descriptor: there is no switch-over moment. After a crash an entry
is complete or absent, and stale partial files go when the next manager
starts. Eviction is LRU against `size_limit` (`Store._evict_to_limit`); an
evicted file stays readable through descriptors already open. Group commit:
downloads that finish while a commit runs queue up, and the next one commits
them all in one thread hop (still one row, one transaction per recording).
The key set (`is_cached`) and the volume are kept from what commits report
(the evicted keys): one full scan at `create`, none per commit.

Idle descriptors. After the last release of a complete file its descriptor
is parked in an LRU (`_idle`, `idle.py`), so opening it again
(`cat` after `file`, a player's re-open, a warm re-read) never leaves the trio
thread: no lookup, no thread hop. An entry leaves it, closed, when the LRU
overflows, when the recording is evicted from the cache, archived or pruned,
so `is_cached` stays true and an evicted file's blocks are freed. Recency for
LRU eviction is recorded per open (`_touched`, wall time) and written in
batches: by the next commit just before it evicts, by a background task
`_TOUCH_DELAY` seconds after an open, and at `aclose`; a lookup no longer
writes diskcache on every open.

Reads. A complete file is served by `os.pread` on a descriptor kept open per
recording (refcounted by open/release), inline on the trio thread: STYLE.md's
measured exception (a pread of page-cached data is ~2x faster than a thread
hop). Reads of a growing file pread bytes that just arrived and are in the
page cache, so the same reasoning holds. Everything else that touches the
disk (diskcache, file creation, fsync, truncation, unlink) goes through
`trio.to_thread.run_sync`. Appending a chunk is inline too, by measurement
(see `Download._append`).

Archive. A recording deleted upstream is moved out of the LRU-evicted
cache by `archive` (see `store.py`) and served from there; `prune_archive`
is the only way it goes. A download answered 404 reports the recording to
`on_gone`, so the caller can mark it deleted.

Integrity. Each commit hashes the file (BLAKE2b-512, `integrity.py`) and
reports the size as final with its digest (`on_exact_size(..., final=True)`);
sizes from response headers are reported as provisional, and a download
that fails leaves them unconfirmed (the tree forgets them). The first open
of a cached entry in a mount checks it before serving a byte: a file that
still matches its seal for the digest the index holds (`ContentRef.digest`;
seals.py) is opened inline at once (`_open_sealed`); any other is read and
hashed in a thread and compared with that digest (`_lookup_checked`): a damaged
entry is moved to `damaged/` (`Store.quarantine`), reported (`on_damaged`),
and fetched again, or, gone upstream, answered with `Damaged` (EIO).
`verify.py` does the same for every entry (`rcfs verify`). Who still wants a
download (`_wanting`: opens, prefetches, the archive; `_handles`: open
files) decides whether a failed one is resumed, and whether one too big for
the disk is streamed through to readers (download.py's essay).

Errors. A download's error is stored on it and raised in every reader that
waits for bytes it does not have: NotFound, AuthError, TemporaryFailure as
the client raised them, CacheFull for ENOSPC. While a resumable download is
retrying, readers keep waiting; the retry policy bounds that wait. A reader
whose download failed keeps getting that error; a new `open` starts a new
download. Each failure is logged once, by the download, with its cause.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from rcfs.api import Urgency
from rcfs.errors import CacheFull, Damaged, NotFound, TemporaryFailure

from .download import Download, DownloadStats, SharedFd, State
from .idle import IdleFds
from .integrity import max_plausible_size
from .seals import trust_key
from .store import Committed, Found, Store, ToCommit
from .types import BACKGROUND, INTERACTIVE, ContentRef, ContentSource, OpenInfo, SizeReport
from .verify import verify_all

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 10.0  # seconds aclose waits for cancelled downloads to clean up
_TOUCH_DELAY = 5.0  # seconds: recency of opens reaches diskcache within this


@dataclass
class _Handle:
    """The open state of one recording, shared by all its open file handles."""

    ref: ContentRef
    refs: int = 0
    fd: SharedFd | None = None  # the file being read: partial or complete
    download: Download | None = None  # None once the file is complete
    size: int = 0

    def attach_complete(self, fd: SharedFd, size: int) -> None:
        self._drop_fd()
        self.fd, self.size, self.download = fd, size, None

    def attach_download(self, download: Download) -> None:
        if self.download is download:
            return
        assert download.total is not None
        self._drop_fd()
        if download.transient:  # streamed through memory: no file
            self.size, self.download = download.total, download
            return
        assert download.fd is not None
        self.fd, self.size, self.download = download.fd.acquire(), download.total, download

    def complete(self) -> bool:
        d = self.download
        if d is not None and d.state is State.DONE and not d.transient:
            self.download = None  # same inode: the partial file is now the cache file
        return self.fd is not None and self.download is None

    def close(self) -> None:
        self._drop_fd()
        self.download = None

    def _drop_fd(self) -> None:
        if self.fd is not None:
            self.fd.release()
            self.fd = None


class ContentManager:
    """Downloads and caches recordings' content; see the module docstring."""

    def __init__(
        self,
        store: Store,
        client: ContentSource,
        nursery: trio.Nursery,
        on_exact_size: SizeReport,
        size_limit: int,
        on_gone: Callable[[str], None] | None = None,
        *,
        permanent: bool = False,
        on_stored: Callable[[list[str]], None] | None = None,
        on_finished: Callable[[str], None] | None = None,
        on_damaged: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._nursery = nursery
        self._on_exact_size = on_exact_size
        self._size_limit = size_limit
        self._on_gone = on_gone
        self._permanent = permanent
        self._on_stored = on_stored
        self._on_finished = on_finished
        self._on_damaged = on_damaged
        self._verified: set[str] = set()  # entries whose digest was checked in this mount
        self._sealed: dict[str, tuple[str, int]] = {}  # id -> (path, trust key): seals.py
        # The FUSE layer's count of a recording's open files, and of those whose
        # reader still runs (Operations.readers); None: every open counts.
        self.fuse_readers: Callable[[str], tuple[int, int]] | None = None
        self._unrepaired: set[str] = set()  # damaged, taken out, not fetched again yet
        self.damaged = 0
        self.repaired = 0
        self.last_verify: dict[str, Any] | None = None
        self._archived: dict[str, int] = {}  # id -> size, in the permanent archive store
        self._archived_bytes = 0
        self._inflight: dict[str, Download] = {}
        self._wanting: dict[str, int] = {}  # opens, prefetches and the archive waiting for one
        self._opening: dict[str, int] = {}  # of those, opens (readers)
        self._handles: dict[str, _Handle] = {}
        self._keys: set[str] = set()  # cached in the LRU cache (not the archive)
        self._volume = 0  # bytes, as counted against size_limit
        self._idle = IdleFds()
        self._touched: dict[str, float] = {}  # id -> time.time() of its last open
        self._touch_wanted = trio.Event()
        self._touch_scope = trio.CancelScope()
        self._to_commit: list[_Commit] = []
        self._downloads = DownloadStats()
        self._commit_lock = trio.Lock()
        self._hits = 0
        self._misses = 0
        self._closed = False

    @classmethod
    async def create(
        cls,
        *,
        cache_dir: Path,
        size_limit: int,
        client: ContentSource,
        nursery: trio.Nursery,
        on_exact_size: SizeReport,
        on_gone: Callable[[str], None] | None = None,
        permanent: bool = False,
        on_stored: Callable[[list[str]], None] | None = None,
        on_finished: Callable[[str], None] | None = None,
        on_damaged: Callable[[str, str], None] | None = None,
        min_free: int | float | None = None,
    ) -> ContentManager:
        """Open (creating, 0700) the cache under `cache_dir`; remove stale partial files.

        `on_gone(recording_id)` is called when a download is answered 404;
        `on_stored(ids)` when recordings enter the permanent archive store;
        `on_finished(recording_id)` when a download ends, however it ends;
        `on_damaged(recording_id, message)` when cached bytes fail their digest.
        `min_free` (bytes, or a float share of the disk; default 5%) is kept free
        on the cache's disk by evicting early from the LRU cache.
        With `permanent` (archive mode) every download is committed to the
        archive store, never to the LRU cache.
        """
        store = await trio.to_thread.run_sync(Store, Path(cache_dir), size_limit, min_free)
        try:
            cache_stats = await trio.to_thread.run_sync(store.scan)
            archived = await trio.to_thread.run_sync(store.archived)
            sealed = await trio.to_thread.run_sync(store.sealed, cache_stats.keys | set(archived))
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close)
            raise
        self = cls(store, client, nursery, on_exact_size, size_limit, on_gone,
                   permanent=permanent, on_stored=on_stored, on_finished=on_finished,
                   on_damaged=on_damaged)
        self._keys = set(cache_stats.keys)
        self._volume = cache_stats.volume
        self._archived = archived
        self._sealed = sealed
        self._archived_bytes = sum(archived.values())
        nursery.start_soon(self._write_touches, name="content cache recency")
        return self

    # -- the FUSE adapter's calls --------------------------------------------

    async def open(self, ref: ContentRef, priority: int = INTERACTIVE) -> OpenInfo:
        """Open for reading; `size` is exact on return (see the module docstring).
        A download it starts or joins goes at `priority` (a reader: interactive)."""
        self._check_open()
        rid = ref.recording_id
        handle = self._handles.get(rid)
        if handle is not None and handle.complete():
            return self._opened(handle, ref, hit=True)
        if self.is_cached(rid) and rid not in self._inflight:
            idle = self._idle.unpark(rid)
            if idle is not None:  # no lookup, no thread hop
                handle = self._handle(ref)
                handle.attach_complete(*idle)
                self._touch(rid)
                return self._opened(handle, ref, hit=True)
            sealed = self._open_sealed(ref)
            if sealed is not None:  # unchanged since its digest was taken: no read, no hop
                handle = self._handle(ref)
                handle.attach_complete(*sealed)
                self._touch(rid)
                return self._opened(handle, ref, hit=True)
            found = await self._lookup_checked(ref)
            if found is not None:
                handle = self._handle(ref)
                if handle.complete():  # another open won the race
                    os.close(found.fd)
                else:
                    handle.attach_complete(SharedFd(found.fd), found.size)
                self._touch(rid)
                # A digest taken now for an entry cached before digests were kept.
                learned = found.digest if ref.digest is None else None
                return self._opened(handle, ref, hit=True, digest=learned)
            self._forget(rid)
            self._unarchive(rid)
        download = self._join(ref, priority)
        with self._want(rid), self._want(rid, self._opening):
            await download.wait_size()
        handle = self._handle(ref)
        if not handle.complete():
            handle.attach_download(download)
        return self._opened(handle, ref, hit=False)

    async def read(self, recording_id: str, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) clamped to EOF, as soon as they have arrived."""
        handle = self._handles.get(recording_id)
        if handle is None or (handle.fd is None and handle.download is None):
            raise RuntimeError(f"read of recording {recording_id} that is not open")
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        if handle.complete():
            # Inline pread of a complete, open file: STYLE.md's measured exception.
            assert handle.fd is not None
            return os.pread(handle.fd.fd, size, offset)
        end = min(offset + size, handle.size)
        if offset >= end:
            return b""
        download = handle.download
        assert download is not None
        if download.transient:
            await download.wait_bytes(end)
            return download.transient_read(offset, end)
        assert handle.fd is not None
        fd = handle.fd.acquire()  # a concurrent open may swap the handle's fd
        try:
            await download.wait_bytes(end)
            # Bytes below `received` just arrived: a page-cache pread, inline.
            return os.pread(fd.fd, end - offset, offset)
        finally:
            fd.release()

    def release(self, recording_id: str) -> None:
        """A reader closed; the last one closes the descriptor (not the download)."""
        handle = self._handles.get(recording_id)
        if handle is None:
            log.warning("release of recording %s that is not open", recording_id)
            return
        handle.refs -= 1
        if handle.refs <= 0:
            del self._handles[recording_id]
            if handle.complete() and handle.fd is not None and self.is_cached(recording_id):
                self._idle.park(recording_id, handle.fd, handle.size)
                handle.fd = None  # the reference now belongs to the idle LRU
            handle.close()

    def is_cached(self, recording_id: str) -> bool:
        """Whether the complete content is cached or archived (as of the last commit)."""
        return recording_id in self._keys or recording_id in self._archived

    def is_archived(self, recording_id: str) -> bool:
        """Whether the content is in the permanent archive store (never evicted)."""
        return recording_id in self._archived

    def archived_ids(self) -> list[str]:
        return list(self._archived)

    def in_flight(self, recording_id: str) -> bool:
        """Whether a download of this recording is running (or queued for a slot)."""
        return recording_id in self._inflight

    async def archive(self, recording_ids: list[str]) -> tuple[set[str], set[str]]:
        """Move these recordings' cached content out of LRU eviction, in one worker
        thread serialised with commits. Returns (kept: cached or already archived,
        failed: a disk error, logged; try again later). The rest were not cached."""
        self._check_open()

        def move() -> tuple[dict[str, int], set[str], int]:
            kept, failed = {}, set()
            for rid in recording_ids:
                try:
                    size = self._store.archive(rid)
                except OSError as exc:
                    log.warning("cannot archive recording %s: %s", rid, exc)
                    failed.add(rid)
                    continue
                if size is not None:
                    kept[rid] = size
            return kept, failed, self._store.volume()

        async with self._commit_lock:
            kept, failed, volume = await trio.to_thread.run_sync(move)
            for rid in kept:
                self._forget(rid)  # out of the LRU cache (an idle fd is closed)
            self._add_archived(kept)
            self._volume = volume
        return set(kept), failed

    async def prune_archive(self, recording_ids: list[str]) -> tuple[int, int]:
        """Delete archived content for good; (count, bytes) removed."""
        self._check_open()
        count, size = await trio.to_thread.run_sync(self._store.prune, recording_ids)
        for rid in recording_ids:
            self._sealed.pop(rid, None)
            if self._unarchive(rid):
                self._idle.drop(rid)  # a pruned file's blocks are freed on close
        return count, size

    async def prefetch(self, ref: ContentRef, priority: int = BACKGROUND) -> int:
        """Download into the cache without a reader; returns when cached, with the
        bytes it downloaded (0 if it was cached already).

        Raises the download's error. Not counted as a cache hit or miss.
        """
        self._check_open()
        rid = ref.recording_id
        if self.is_cached(rid) and rid not in self._inflight:
            return 0
        download = self._join(ref, priority)
        with self._want(rid):
            await download.wait_done()
        if download.transient:  # a reader's download, streamed through: nothing was kept
            raise CacheFull(f"recording {rid} was streamed through, not cached: the cache disk "
                            "has no room for it")
        return download.total or 0

    def snapshot(self) -> dict[str, Any]:
        states = [d.state for d in self._inflight.values()]
        return {
            "cache": {
                "bytes": self._volume,
                "limit": self._size_limit,
                "min_free": self._store.min_free,
                "entries": len(self._keys),
                "hits": self._hits,
                "misses": self._misses,
                "archived": len(self._archived),
                "archived_bytes": self._archived_bytes,
                "verified": len(self._verified),
                "damaged": self.damaged,
                "repaired": self.repaired,
                "last_verify": self.last_verify,
            },
            "downloads": {
                "active": sum(s in (State.ACTIVE, State.COMMITTING) for s in states),
                "queued": sum(s is State.QUEUED for s in states),
                "done": self._downloads.done,
                "failed": self._downloads.failed,
                "bytes": self._downloads.bytes,
            },
        }

    async def aclose(self) -> None:
        """Cancel downloads (their partial files are removed), close the cache."""
        if self._closed:
            return
        self._closed = True
        self._touch_scope.cancel()
        with trio.CancelScope(shield=True):
            downloads = list(self._inflight.values())
            for download in downloads:
                download.cancel_scope.cancel()
            with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                for download in downloads:
                    await download.finished.wait()
            if scope.cancelled_caught:
                log.warning("downloads did not finish cleaning up in %ss", _CLOSE_TIMEOUT)
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()
            self._idle.close_all()
            if self._touched:
                touched, self._touched = self._touched, {}
                try:
                    await trio.to_thread.run_sync(self._store.touch, touched)
                except Exception as exc:  # recency only: never fail the unmount
                    log.warning("cannot record recent opens in the content cache: %s", exc)
            await trio.to_thread.run_sync(self._store.close)

    # -- internals -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TemporaryFailure("the content cache is closed")

    def _wanted(self, rid: str) -> bool:
        """Whether anyone still waits for this recording: an open (of a reader still
        running, as `fuse_readers` tells), a prefetch or the archive."""
        if self._wanting.get(rid, 0) > 0:
            return True
        handle = self._handles.get(rid)
        if handle is None:
            return False
        if self.fuse_readers is None:
            return True
        held, alive = self.fuse_readers(rid)
        return handle.refs > held or alive > 0  # the web player's streams, or a live reader

    @contextlib.contextmanager
    def _want(self, rid: str, counts: dict[str, int] | None = None) -> Iterator[None]:
        """Someone waits for this recording's download (not yet through a handle)."""
        counts = self._wanting if counts is None else counts
        counts[rid] = counts.get(rid, 0) + 1
        try:
            yield
        finally:
            counts[rid] -= 1
            if not counts[rid]:
                del counts[rid]

    def _handle(self, ref: ContentRef) -> _Handle:
        handle = self._handles.get(ref.recording_id)
        if handle is None:
            handle = self._handles[ref.recording_id] = _Handle(ref)
        return handle

    def _opened(
        self, handle: _Handle, ref: ContentRef, *, hit: bool, digest: str | None = None
    ) -> OpenInfo:
        handle.refs += 1
        if hit:
            self._hits += 1
            if ref.size_hint != handle.size or digest is not None:  # downloads report their own
                self._report(ref.recording_id, handle.size, final=True, digest=digest)
        else:
            self._misses += 1
        return OpenInfo(size=handle.size, complete=handle.complete())

    def _report_size(self, recording_id: str, size: int) -> None:
        """A download's response headers named the size: provisional until it completes."""
        self._report(recording_id, size)

    def _report(self, recording_id: str, size: int, *, final: bool = False,
                digest: str | None = None, content_type: str | None = None) -> None:
        try:
            self._on_exact_size(recording_id, size, final=final, digest=digest,
                                content_type=content_type)
        except Exception:
            log.exception("on_exact_size callback failed for recording %s", recording_id)

    # -- integrity -------------------------------------------------------------

    async def _lookup_checked(self, ref: ContentRef) -> Found | None:
        """The cached entry, its digest checked against the index's at its first
        open in this mount; None if absent, or damaged and fetchable again.
        Raises Damaged if it is damaged and gone upstream."""
        rid = ref.recording_id
        check = rid not in self._verified
        found = await trio.to_thread.run_sync(
            functools.partial(self._store.lookup, rid, digest=check, expect=ref.digest))
        if found is None or found.digest is None:
            return found
        if found.sealed is not None:
            self._sealed[rid] = found.sealed
        if ref.digest is not None and found.digest != ref.digest:
            os.close(found.fd)
            await self._take_out_damaged(ref, found.digest)
            return None
        self._verified.add(rid)
        if ref.digest is None:  # cached before digests were kept: this one is the first
            log.debug("recording %s: no digest on record; taking %s", rid, found.digest[:16])
        return found

    def _open_sealed(self, ref: ContentRef) -> tuple[SharedFd, int] | None:
        """The entry opened, if its file still matches its seal for the digest the
        index holds (seals.py); None to look it up and hash it in a thread instead.

        Inline on the trio thread, by measurement: an open and an fstat of a
        cache file took ~4 us here, a thread hop 60 to 300 us (the latter on a
        busy machine); and this runs once per recording per mount (later opens
        find the idle descriptor)."""
        rid = ref.recording_id
        entry = self._sealed.get(rid)
        if entry is None or ref.digest is None:
            return None
        path, key = entry
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            del self._sealed[rid]
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or trust_key(st, ref.digest) != key:
            os.close(fd)
            del self._sealed[rid]  # changed at rest, or moved: hashed in full next
            return None
        self._verified.add(rid)
        return SharedFd(fd), st.st_size

    async def _take_out_damaged(self, ref: ContentRef, got: str, *, raise_if_gone: bool = True) -> str:
        """Quarantine a damaged entry; raises Damaged (if asked) when it cannot be fetched again."""
        rid = ref.recording_id
        self._sealed.pop(rid, None)
        where = await trio.to_thread.run_sync(self._store.quarantine, rid)
        self._forget(rid)
        self._unarchive(rid)
        self._verified.discard(rid)
        self._unrepaired.add(rid)
        self.damaged += 1
        message = (f"recording {rid}: cached bytes do not match the digest taken when it was "
                   f"downloaded (blake2b {got[:16]}..., expected {str(ref.digest)[:16]}...); "
                   f"moved aside to {where or 'nowhere (the file was gone)'}"
                   + ("; it was deleted upstream and cannot be fetched again" if ref.gone
                      else "; fetching it again"))
        if self._on_damaged is not None:
            _call2(self._on_damaged, rid, message)
        else:
            log.error("%s", message)
        if ref.gone and raise_if_gone:
            raise Damaged(message)
        return message

    async def verify(
        self, refs: Callable[[str], ContentRef | None], *, repair: bool = False
    ) -> dict[str, Any]:
        """Check every cached and archived entry against its digest (`rcfs verify`):
        see `verify.verify_all`."""
        self._check_open()
        report = await verify_all(self, refs, repair=repair)
        self.last_verify = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "repair": repair,
                            **{k: (len(v) if isinstance(v, list) else v) for k, v in report.items()}}
        return report

    def _join(self, ref: ContentRef, priority: int) -> Download:
        """The download in flight for `ref`, or a new one started in the nursery."""
        download = self._inflight.get(ref.recording_id)
        if download is not None and download.state is not State.FAILED:
            # A reader joining the archive's download: its request, if still
            # waiting for a rate-limit slot, moves up to the reader's priority.
            download.urgency.raise_to(priority)
            return download  # a failed one is still cleaning up: start afresh
        rid = ref.recording_id
        download = Download(
            rid,
            ref.content_uri,
            Urgency(priority),
            self._store.partial_path(rid),
            max_size=max_plausible_size(ref.duration),
            wanted=lambda: self._wanted(rid),
            read_by=lambda: rid in self._handles or self._opening.get(rid, 0) > 0,
        )
        self._inflight[ref.recording_id] = download
        self._nursery.start_soon(self._run, download, name=f"download {ref.recording_id}")
        return download

    async def _run(self, download: Download) -> None:
        try:
            await download.run(
                self._client, self._store, self._downloads, self._report_size, self._commit,
                free_space=self._store.free_bytes, make_room=self._make_room,
            )
        finally:
            if self._inflight.get(download.recording_id) is download:
                del self._inflight[download.recording_id]
        if download.transient and download.state is State.DONE and download.total is not None:
            # Streamed through, not kept: still, every byte its size promised arrived.
            self._report(download.recording_id, download.total, final=True,
                         content_type=download.content_type)
        if isinstance(download.error, NotFound) and self._on_gone is not None:
            _call(self._on_gone, download.recording_id)
        if self._on_finished is not None:
            _call(self._on_finished, download.recording_id)

    # -- commits ---------------------------------------------------------------

    async def _commit(self, download: Download) -> None:
        """Commit a verified download, batched with any that finish meanwhile.

        Whoever takes the lock commits every queued download in one thread hop
        (a combining lock); the others find theirs done when they get it. The
        batch holds its own reference to each descriptor, so a download
        cancelled while its batch runs cannot close the fd under the worker.
        Raises this download's commit error.
        """
        assert download.fd is not None and download.total is not None
        item = _Commit(download.recording_id, download.fd.acquire(), download.path, download.total,
                       download.content_type)
        self._to_commit.append(item)
        try:
            async with self._commit_lock:
                if not item.done:
                    await self._commit_batch()
        finally:
            if item in self._to_commit:  # cancelled before any batch took it
                self._to_commit.remove(item)
                item.fd.release()
        if item.error is not None:
            raise item.error

    async def _commit_batch(self) -> None:
        """Commit every queued download; the caller holds `_commit_lock`."""
        batch, self._to_commit = self._to_commit, []
        touched, self._touched = self._touched, {}
        started = False

        def work() -> Committed:
            nonlocal started
            started = True
            return self._store.commit(
                [ToCommit(i.recording_id, i.fd.fd, i.path, i.size) for i in batch], touched,
                permanent=self._permanent,
            )

        try:
            result = await trio.to_thread.run_sync(work)
        except BaseException as exc:
            if not started:  # cancelled before the thread ran: nothing happened
                self._to_commit[:0] = batch
                self._touched = {**touched, **self._touched}
                raise
            result = Committed(volume=self._volume)
            result.errors = {i.recording_id: _as_exception(exc) for i in batch}
            if not isinstance(exc, Exception):
                raise  # an Exception is each download's error: logged by it
        finally:
            if started:
                self._committed(batch, result)

    def _committed(self, batch: list[_Commit], result: Committed) -> None:
        """Apply a commit's result (no checkpoint: runs to the end)."""
        stored: dict[str, int] = {}
        for item in batch:
            item.done = True
            item.error = result.errors.get(item.recording_id)
            if item.error is None:
                if self._permanent:
                    stored[item.recording_id] = item.size
                else:
                    self._keys.add(item.recording_id)
                self._verified.add(item.recording_id)
                self._unrepaired.discard(item.recording_id)
                # The size is final only now: every byte it promised is on disk.
                self._report(item.recording_id, item.size, final=True,
                             digest=result.digests.get(item.recording_id),
                             content_type=item.content_type)
            item.fd.release()
        self._add_archived(stored)
        self._sealed.update((rid, v) for rid, v in result.sealed.items() if rid not in result.errors)
        for rid in result.evicted:
            self._forget(rid)
        self._volume = result.volume

    def _add_archived(self, sizes: dict[str, int]) -> None:
        new = [rid for rid in sizes if rid not in self._archived]
        for rid, size in sizes.items():
            self._archived_bytes += size - self._archived.get(rid, 0)
            self._archived[rid] = size
        if new and self._on_stored is not None:
            _call(self._on_stored, new)

    def _unarchive(self, rid: str) -> bool:
        size = self._archived.pop(rid, None)
        if size is None:
            return False
        self._archived_bytes -= size
        return True

    async def _make_room(self, need: int) -> None:
        """Before a download of `need` bytes: evict from the LRU cache so the disk keeps
        `--cache-min-free` free with it (serialised with commits, like every eviction)."""
        if self._store.free_bytes() >= self._store.min_free + need:  # one statvfs: the usual case
            return
        async with self._commit_lock:
            result = await trio.to_thread.run_sync(self._store.make_room, need)
            for rid in result.evicted:
                self._forget(rid)
            self._volume = result.volume

    # -- idle descriptors and recency -------------------------------------------

    @property
    def idle_limit(self) -> int:
        return self._idle.limit

    @idle_limit.setter
    def idle_limit(self, value: int) -> None:
        self._idle.limit = value

    def _forget(self, rid: str) -> None:
        """The recording left the LRU cache (evicted, archived, or found gone)."""
        self._keys.discard(rid)
        self._sealed.pop(rid, None)
        self._touched.pop(rid, None)
        if rid not in self._archived:
            self._idle.drop(rid)

    def _touch(self, rid: str) -> None:
        if rid not in self._keys:
            return  # archived: not in LRU eviction
        # Wall time, not trio.current_time(): compared with diskcache's own
        # access times (time.time()) and kept across mounts.
        self._touched[rid] = time.time()
        self._touch_wanted.set()

    async def _write_touches(self) -> None:
        """Background task: write recent opens' recency within `_TOUCH_DELAY` s."""
        with self._touch_scope:
            while True:
                await self._touch_wanted.wait()
                await trio.sleep(_TOUCH_DELAY)
                self._touch_wanted = trio.Event()
                async with self._commit_lock:  # exact LRU order against eviction
                    touched, self._touched = self._touched, {}
                    if not touched:
                        continue
                    try:
                        await trio.to_thread.run_sync(self._store.touch, touched)
                    except Exception as exc:
                        log.warning("cannot record recent opens in the content cache: %s", exc)


def _call2(callback: Callable[[Any, Any], None], a: Any, b: Any) -> None:
    try:
        callback(a, b)
    except Exception:
        log.exception("content callback %s failed for %r", getattr(callback, "__name__", "?"), a)


def _call(callback: Callable[[Any], None], arg: Any) -> None:
    """A callback's failure is logged, never raised into the download or commit."""
    try:
        callback(arg)
    except Exception:
        log.exception("content callback %s failed for %r", getattr(callback, "__name__", "?"), arg)


@dataclass(eq=False)
class _Commit:
    """A download waiting for (or in) a group commit."""

    recording_id: str
    fd: SharedFd  # the batch's own reference
    path: str
    size: int
    content_type: str | None = None
    done: bool = False
    error: Exception | None = None


def _as_exception(exc: BaseException) -> Exception:
    if isinstance(exc, Exception):
        return exc
    return TemporaryFailure(f"content cache commit interrupted: {exc!r}")
