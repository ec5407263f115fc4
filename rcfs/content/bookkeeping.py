"""The content manager's book of what is cached, and every change to it.

Owns `CacheBook`: the key set of the LRU cache, its volume, the archived
recordings and their sizes, the seals loaded for them (seals.py), the
recency of opens not yet written, and the lock that serialises every change
to the cache's contents (commits, evictions, archive moves, recency writes).
The manager reads the book and asks it for changes; the store (`store.py`)
does them, in worker threads. Must not import httpx or pyfuse3.

Group commit. Downloads that finish while a commit runs queue up, and the
next one commits them all in one thread hop (still one row, one transaction
per recording). Whoever takes the lock commits every queued download (a
combining lock); the others find theirs done when they get it. The key set
(the manager's `is_cached`) and the volume are kept from what commits report
(the evicted keys): one full scan at `ContentManager.create`, none per
commit. Eviction is LRU against `size_limit` (`Store._evict_to_limit`).

Recency. A lookup no longer writes diskcache on every open: recency for LRU
eviction is recorded per open (`touched`, wall time) and written in batches:
by the next commit just before it evicts, by a background task
`_TOUCH_DELAY` seconds after an open (`write_touches`), and at the manager's
`aclose` (`flush_touches`).

Forgetting. A recording that leaves the LRU cache (evicted, archived, found
gone or damaged) leaves the key set, its seal and its pending recency; its
idle descriptor (`idle.py`) is closed unless the archive still holds it, so
an evicted file's blocks are freed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from rcfs.errors import TemporaryFailure

from .download import Download, SharedFd
from .idle import IdleFds
from .store import CacheStats, Committed, Store, ToCommit
from .types import call_back

log = logging.getLogger(__name__)

_TOUCH_DELAY = 5.0  # seconds: recency of opens reaches diskcache within this


class CacheBook:
    """What is cached, as of the last change; see the module docstring."""

    def __init__(
        self,
        store: Store,
        idle: IdleFds,
        *,
        permanent: bool,
        on_committed: Callable[[str, int, str | None, str | None], None],
        on_stored: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._store = store
        self._idle = idle
        self._permanent = permanent
        self._on_committed = on_committed  # (id, size, digest, content type), once on disk
        self._on_stored = on_stored
        self.keys: set[str] = set()  # cached in the LRU cache (not the archive)
        self.volume = 0  # bytes, as counted against size_limit
        self.archived: dict[str, int] = {}  # id -> size, in the permanent archive store
        self.archived_bytes = 0
        self.sealed: dict[str, tuple[str, int]] = {}  # id -> (path, trust key): seals.py
        self.touched: dict[str, float] = {}  # id -> time.time() of its last open
        self._touch_wanted = trio.Event()
        self._touch_scope = trio.CancelScope()
        self.queue: list[_Commit] = []  # downloads waiting for a commit
        self.lock = trio.Lock()  # commits, evictions, archive moves, recency writes

    def load(self, stats: CacheStats, archived: dict[str, int],
             sealed: dict[str, tuple[str, int]]) -> None:
        """What the store holds when the manager starts (its one full scan)."""
        self.keys, self.volume = set(stats.keys), stats.volume
        self.archived, self.archived_bytes = archived, sum(archived.values())
        self.sealed = sealed

    def is_cached(self, rid: str) -> bool:
        return rid in self.keys or rid in self.archived

    # -- commits ---------------------------------------------------------------

    async def commit(self, download: Download) -> None:
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
        self.queue.append(item)
        try:
            async with self.lock:
                if not item.done:
                    await self._commit_batch()
        finally:
            if item in self.queue:  # cancelled before any batch took it
                self.queue.remove(item)
                item.fd.release()
        if item.error is not None:
            raise item.error

    async def _commit_batch(self) -> None:
        """Commit every queued download; the caller holds `lock`."""
        batch, self.queue = self.queue, []
        touched, self.touched = self.touched, {}
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
                self.queue[:0] = batch
                self.touched = {**touched, **self.touched}
                raise
            result = Committed(volume=self.volume)
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
                    self.keys.add(item.recording_id)
                self._on_committed(item.recording_id, item.size,
                                   result.digests.get(item.recording_id), item.content_type)
            item.fd.release()
        self._add_archived(stored)
        self.sealed.update((rid, v) for rid, v in result.sealed.items() if rid not in result.errors)
        for rid in result.evicted:
            self.forget(rid)
        self.volume = result.volume

    async def make_room(self, need: int) -> None:
        """Before a download of `need` bytes: evict from the LRU cache so the disk keeps
        `--cache-min-free` free with it (serialised with commits, like every eviction)."""
        if self._store.free_bytes() >= self._store.min_free + need:  # one statvfs: the usual case
            return
        async with self.lock:
            result = await trio.to_thread.run_sync(self._store.make_room, need)
            for rid in result.evicted:
                self.forget(rid)
            self.volume = result.volume

    # -- the archive -----------------------------------------------------------

    async def archive(self, recording_ids: list[str]) -> tuple[set[str], set[str]]:
        """Move cached recordings into the archive store: see `ContentManager.archive`."""

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

        async with self.lock:
            kept, failed, volume = await trio.to_thread.run_sync(move)
            for rid in kept:
                self.forget(rid)  # out of the LRU cache (an idle fd is closed)
            self._add_archived(kept)
            self.volume = volume
        return set(kept), failed

    async def prune(self, recording_ids: list[str]) -> tuple[int, int]:
        """Delete archived content for good; (count, bytes) removed."""
        count, size = await trio.to_thread.run_sync(self._store.prune, recording_ids)
        for rid in recording_ids:
            self.sealed.pop(rid, None)
            if self.unarchive(rid):
                self._idle.drop(rid)  # a pruned file's blocks are freed on close
        return count, size

    def _add_archived(self, sizes: dict[str, int]) -> None:
        new = [rid for rid in sizes if rid not in self.archived]
        for rid, size in sizes.items():
            self.archived_bytes += size - self.archived.get(rid, 0)
            self.archived[rid] = size
        if new and self._on_stored is not None:
            call_back(self._on_stored, new)

    def unarchive(self, rid: str) -> bool:
        """The recording left the archive store (pruned, or found gone or damaged)."""
        size = self.archived.pop(rid, None)
        if size is None:
            return False
        self.archived_bytes -= size
        return True

    def forget(self, rid: str) -> None:
        """The recording left the LRU cache (evicted, archived, or found gone)."""
        self.keys.discard(rid)
        self.sealed.pop(rid, None)
        self.touched.pop(rid, None)
        if rid not in self.archived:
            self._idle.drop(rid)

    # -- recency ---------------------------------------------------------------

    def touch(self, rid: str) -> None:
        """An open of `rid`: its recency reaches diskcache within `_TOUCH_DELAY` s."""
        if rid not in self.keys:
            return  # archived: not in LRU eviction
        # Wall time, not trio.current_time(): compared with diskcache's own
        # access times (time.time()) and kept across mounts.
        self.touched[rid] = time.time()
        self._touch_wanted.set()

    async def write_touches(self) -> None:
        """Background task: write recent opens' recency within `_TOUCH_DELAY` s."""
        with self._touch_scope:
            while True:
                await self._touch_wanted.wait()
                await trio.sleep(_TOUCH_DELAY)
                self._touch_wanted = trio.Event()
                async with self.lock:  # exact LRU order against eviction
                    touched, self.touched = self.touched, {}
                    if not touched:
                        continue
                    try:
                        await trio.to_thread.run_sync(self._store.touch, touched)
                    except Exception as exc:
                        log.warning("cannot record recent opens in the content cache: %s", exc)

    def stop_touches(self) -> None:
        """End `write_touches` (what is pending waits for `flush_touches`)."""
        self._touch_scope.cancel()

    async def flush_touches(self) -> None:
        """Write what recency is pending (at the manager's close)."""
        if self.touched:
            touched, self.touched = self.touched, {}
            try:
                await trio.to_thread.run_sync(self._store.touch, touched)
            except Exception as exc:  # recency only: never fail the unmount
                log.warning("cannot record recent opens in the content cache: %s", exc)


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
