"""The content manager: recordings' bytes, fetched once, cached on disk.

Design
======

What it owns. The bytes of recordings: the single download of each one, the
partial file it writes, the diskcache that keeps complete files across mounts,
and the open descriptors that reads are served from. It knows nothing of
FUSE, inodes or names (`fuse_ops` calls it with recording ids) and nothing of
HTTP (it consumes `ContentSource.stream_content`, whose errors are already
rcfs.errors domain errors). It must not import pyfuse3 or httpx. Two
concerns are parts of their own, composed into it: its book of what is
cached (`CacheBook`, bookkeeping.py: commits, evictions, archive moves,
recency) and the check of cached bytes against their digests (`Verifier`,
verify.py).

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
evicted file stays readable through descriptors already open. Downloads that
finish while a commit runs share the next one, and the key set (`is_cached`)
and the volume are kept from what commits report, not scanned (group commit:
bookkeeping.py).

Idle descriptors and reads. The descriptor of a released complete file is
parked (`idle.py`), so opening it again never leaves the trio thread; recency
for LRU eviction is written in batches (bookkeeping.py's "Recency"). Reads
are `os.pread` inline on the trio thread, by measurement (handle.py's
"Reads"), and so are appending a chunk (`Download._append`) and taking a
spare partial file (layout.py's "Spare files"); everything else that touches
the disk (diskcache, fsync, truncation, unlink) goes through a worker thread.

Archive. A recording deleted upstream is moved out of the LRU-evicted
cache by `archive` (see `store.py`) and served from there; `prune_archive`
is the only way it goes. A download answered 404 reports the recording to
`on_gone`, so the caller can mark it deleted.

Integrity. Each commit hashes the file (BLAKE2b-512, `integrity.py`) and
reports the size as final with its digest (`on_exact_size(..., final=True)`);
sizes from response headers are reported as provisional, and a download
that fails leaves them unconfirmed (the tree forgets them). The first open
of a cached entry in a mount checks it against its seal or its digest
before serving a byte; a damaged entry is taken out of service and fetched
again, or, gone upstream, answered with `Damaged` (EIO); `rcfs verify` does
the same for every entry (verify.py's essay). Who still wants a
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
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from rcfs.api import Urgency
from rcfs.errors import CacheFull, NotFound, TemporaryFailure

from .bookkeeping import CacheBook
from .download import Download, DownloadStats, SharedFd, State
from .handle import Handle
from .idle import IdleFds
from .integrity import max_plausible_size
from .store import Store
from .types import BACKGROUND, INTERACTIVE, ContentRef, ContentSource, OpenInfo, SizeReport, call_back
from .verify import Verifier, verify_all

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 10.0  # seconds aclose waits for cancelled downloads to clean up
_COMMIT_GRACE = 5.0  # seconds aclose gives complete downloads to commit (not fetched again)


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
        self._on_finished = on_finished
        # The FUSE layer's count of a recording's open files, and of those whose
        # reader still runs (Operations.readers); None: every open counts.
        self.fuse_readers: Callable[[str], tuple[int, int]] | None = None
        self.last_verify: dict[str, Any] | None = None
        self._inflight: dict[str, Download] = {}
        self._wanting: dict[str, int] = {}  # opens, prefetches and the archive waiting for one
        self._opening: dict[str, int] = {}  # of those, opens (readers)
        self._handles: dict[str, Handle] = {}
        self._idle = IdleFds()
        self._book = CacheBook(store, self._idle, permanent=permanent,
                               on_committed=self._committed, on_stored=on_stored)
        self._verifier = Verifier(store, self._book, on_damaged)
        self._downloads = DownloadStats()
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
        self._book.load(cache_stats, archived, sealed)
        nursery.start_soon(self._book.write_touches, name="content cache recency")
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
                self._book.touch(rid)
                return self._opened(handle, ref, hit=True)
            sealed = self._verifier.open_sealed(ref)
            if sealed is not None:  # unchanged since its digest was taken: no read, no hop
                handle = self._handle(ref)
                handle.attach_complete(*sealed)
                self._book.touch(rid)
                return self._opened(handle, ref, hit=True)
            found = await self._verifier.lookup_checked(ref)
            if found is not None:
                handle = self._handle(ref)
                if handle.complete():  # another open won the race
                    os.close(found.fd)
                else:
                    handle.attach_complete(SharedFd(found.fd), found.size)
                self._book.touch(rid)
                # A digest taken now for an entry cached before digests were kept.
                learned = found.digest if ref.digest is None else None
                return self._opened(handle, ref, hit=True, digest=learned)
            self._book.forget(rid)
            self._book.unarchive(rid)
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
        return await handle.read(offset, size)

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
        return self._book.is_cached(recording_id)

    def is_archived(self, recording_id: str) -> bool:
        """Whether the content is in the permanent archive store (never evicted)."""
        return recording_id in self._book.archived

    def archived_ids(self) -> list[str]:
        return list(self._book.archived)

    def in_flight(self, recording_id: str) -> bool:
        """Whether a download of this recording is running (or queued for a slot)."""
        return recording_id in self._inflight

    async def archive(self, recording_ids: list[str]) -> tuple[set[str], set[str]]:
        """Move these recordings' cached content out of LRU eviction, in one worker
        thread serialised with commits. Returns (kept: cached or already archived,
        failed: a disk error, logged; try again later). The rest were not cached."""
        self._check_open()
        return await self._book.archive(recording_ids)

    async def prune_archive(self, recording_ids: list[str]) -> tuple[int, int]:
        """Delete archived content for good; (count, bytes) removed."""
        self._check_open()
        return await self._book.prune(recording_ids)

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

    def snapshot(self) -> dict[str, Any]:
        states = [d.state for d in self._inflight.values()]
        book = self._book
        return {
            "cache": {
                "bytes": book.volume,
                "limit": self._size_limit,
                "min_free": self._store.min_free,
                "entries": len(book.keys),
                "hits": self._hits,
                "misses": self._misses,
                "archived": len(book.archived),
                "archived_bytes": book.archived_bytes,
                "verified": len(self._verifier.verified),
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
        """Cancel downloads (their partial files are removed; those complete and
        committing commit first, within `_COMMIT_GRACE`), close the cache."""
        if self._closed:
            return
        self._closed = True
        self._book.stop_touches()
        with trio.CancelScope(shield=True):
            downloads = list(self._inflight.values())
            commit_by = trio.current_time() + _COMMIT_GRACE
            for download in downloads:
                download.cancel_scope.cancel()  # one that is committing still commits (download.py)
                download.commit_scope.deadline = commit_by
            with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                for download in downloads:
                    await download.finished.wait()
            if scope.cancelled_caught:
                log.warning("downloads did not finish cleaning up in %ss", _CLOSE_TIMEOUT)
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()
            self._idle.close_all()
            await self._book.flush_touches()
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

    def _handle(self, ref: ContentRef) -> Handle:
        handle = self._handles.get(ref.recording_id)
        if handle is None:
            handle = self._handles[ref.recording_id] = Handle(ref)
        return handle

    def _opened(
        self, handle: Handle, ref: ContentRef, *, hit: bool, digest: str | None = None
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

    def _committed(self, rid: str, size: int, digest: str | None, content_type: str | None) -> None:
        """The book committed `rid`: its digest was taken, its size is final."""
        self._verifier.committed(rid)
        # The size is final only now: every byte it promised is on disk.
        self._report(rid, size, final=True, digest=digest, content_type=content_type)

    # -- single flight -------------------------------------------------------

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
                self._client, self._store, self._downloads, self._report_size, self._book.commit,
                free_space=self._store.free_bytes, make_room=self._book.make_room,
            )
        finally:
            if self._inflight.get(download.recording_id) is download:
                del self._inflight[download.recording_id]
        if download.transient and download.state is State.DONE and download.total is not None:
            # Streamed through, not kept: still, every byte its size promised arrived.
            self._report(download.recording_id, download.total, final=True,
                         content_type=download.content_type)
        if isinstance(download.error, NotFound) and self._on_gone is not None:
            call_back(self._on_gone, download.recording_id)
        if self._on_finished is not None:
            call_back(self._on_finished, download.recording_id)

    # -- counters and knobs ------------------------------------------------------

    @property
    def idle_limit(self) -> int:
        return self._idle.limit

    @idle_limit.setter
    def idle_limit(self, value: int) -> None:
        self._idle.limit = value

    @property
    def damaged(self) -> int:
        """Entries found damaged in this mount (`Verifier`)."""
        return self._verifier.damaged

    @property
    def repaired(self) -> int:
        """Damaged entries fetched again by `verify(repair=True)`."""
        return self._verifier.repaired
