"""Prefetch: download a date range of recordings into the cache in the background.

Owns: the prefetch queue (`rcfs prefetch`), its workers and its progress
counters (status.json's "prefetch" block). Every download goes through
`ContentManager.prefetch` at `Priority.BACKGROUND`, so the rate limiter
serves interactive reads first and the Heavy budget is never exceeded; a
recording already cached or queued is skipped, and one a reader is already
downloading is joined, not fetched twice. Afterwards every file of the range
is served from the cache, so a following `rsync` makes no content requests.

Must not: import pyfuse3 or httpx, or retry (the client and the download do).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

import trio

from rcfs.content import BACKGROUND, ContentManager, ContentRef
from rcfs.errors import RcfsError
from rcfs.index import Index
from rcfs.models import epoch_ms

log = logging.getLogger(__name__)

# Downloads in flight at once: enough to keep the Heavy budget busy while one
# waits for its response headers; the rate limiter does the pacing.
WORKERS = 4


class Prefetcher:
    """A queue of recordings to cache, worked by `WORKERS` background tasks."""

    def __init__(self, index: Index, content: ContentManager, *, workers: int = WORKERS) -> None:
        self._index = index
        self._content = content
        self._workers = workers
        self._send, self._receive = trio.open_memory_channel[ContentRef](math.inf)
        self._pending: set[str] = set()
        self._active = 0
        self.total = 0
        self.done = 0
        self.failed = 0
        self.bytes = 0

    async def queue(self, since: datetime | None, until: datetime | None) -> int:
        """Queue the uncached recordings that started in [since, until); returns how many."""
        lo = epoch_ms(since) if since is not None else 0
        hi = epoch_ms(until) if until is not None else 2**62
        found = await trio.to_thread.run_sync(
            lambda: self._index.recordings_between(lo, hi, include_deleted=False)
        )
        count = 0
        for ir in found:
            rid = ir.recording_id
            if rid in self._pending or self._content.is_cached(rid):
                continue
            self._pending.add(rid)
            self._send.send_nowait(ContentRef.of(ir))
            count += 1
        self.total += count
        log.info("prefetch: %d recordings queued (%d already cached or queued)", count, len(found) - count)
        return count

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "bytes": self.bytes,
            "queued": len(self._pending) - self._active,
            "active": self._active,
            "running": bool(self._pending),
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        async for ref in self._receive:
            self._active += 1
            try:
                size = await self._content.prefetch(ref, BACKGROUND)
            except RcfsError as exc:
                self.failed += 1
                log.info("prefetch of recording %s failed: %s", ref.recording_id, exc)
            else:
                self.done += 1
                self.bytes += size
            finally:
                self._active -= 1
                self._pending.discard(ref.recording_id)
