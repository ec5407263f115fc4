"""Keeping the tree fresh: refreshes, deletions upstream, kernel invalidation.

Owns: when the index is refreshed (every poll interval, on SIGUSR1, on a
control request; one at a time), what happens to recordings that disappear
upstream, and telling the kernel what changed. It sits beside `mount/lifecycle.py`,
which builds it and runs its tasks in the mount's nursery.

Refresh. `indexer.refresh` reads the recent window and syncs (background
priority, a bounded number of Heavy requests); the days it changed are
forgotten by the `Vfs` and invalidated in the kernel from a worker thread
(`fuse_ops.invalidate_kernel`), so `ls` shows new calls at once. Names
already shown never change: the index freezes them at the first sighting.

Deletions. A recording is marked deleted in the index by the indexer (an
ISync `deleted` record, or a record that lost its recording block) or here
(a 404 on its content, reported by the content manager's `on_gone`). Marked
recordings are then *settled*: with `--keep-deleted`, those whose content is
cached are moved into the content archive (out of LRU eviction) and flagged
kept, so they stay listed, readable and marked; the rest are flagged not
kept and leave the listing (their dentries are invalidated); those of them
rcfs never had the content of are flagged `lost` (status.json's
`archive.lost`). A recording whose download is running is settled when the
download ends (`download_finished`), so one fetched just before its deletion
is kept, not lost. Settling is idempotent and also runs at start, so a crash
between marking and archiving only delays it: an undecided recording stays
listed meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import trio

from rcfs.api import RingCentralClient
from rcfs.content import ContentManager
from rcfs.errors import RcfsError
from rcfs.fuse_ops import invalidate_kernel
from rcfs.index import Index
from rcfs.indexer import refresh
from rcfs.status import ErrorLog
from rcfs.vfs import Vfs

log = logging.getLogger(__name__)


class Freshness:
    """Serialised refreshes and deletion handling for one mount."""

    def __init__(
        self,
        *,
        client: RingCentralClient,
        index: Index,
        vfs: Vfs,
        content: ContentManager,
        errors: ErrorLog,
        keep_deleted: bool,
        poll_interval: float,
        clock: Callable[[], float] = time.time,
        on_new_recordings: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._index = index
        self._vfs = vfs
        self._content = content
        self._errors = errors
        self._keep = keep_deleted
        self._interval = poll_interval
        self._clock = clock
        self._lock = trio.Lock()
        self._wake = trio.Event()
        self._gone: set[str] = set()
        self._gone_event = trio.Event()
        self._deferred: set[str] = set()  # deleted, settled once their download ends
        self._on_new = on_new_recordings
        self._refreshes = 0
        self._failures = 0
        self._last: dict[str, Any] | None = None
        self._next_poll: float | None = None

    # -- requests ----------------------------------------------------------------

    def request(self) -> None:
        """Ask the poller for a refresh now (SIGUSR1); several coalesce into one."""
        self._wake.set()

    def gone(self, recording_id: str) -> None:
        """The content of a recording answered 404: it is deleted upstream."""
        self._gone.add(recording_id)
        self._gone_event.set()

    def download_finished(self, recording_id: str) -> None:
        """A download ended: settle the recording if it was deleted meanwhile."""
        if recording_id in self._deferred:
            self._deferred.discard(recording_id)
            self._gone_event.set()

    async def refresh(self) -> dict[str, Any]:
        """Refresh now (after any refresh in progress); returns what changed.

        Whatever fails (the API, the index, a full state disk, a bug) counts in
        `failures`, goes to the error log and is raised as one RcfsError,
        "refresh failed: <cause>", the line `rcfs refresh` prints.
        """
        async with self._lock:
            try:
                return await self._refresh()
            except RcfsError as exc:
                raise self._failed(str(exc)) from exc
            except Exception as exc:  # a bug: never the end of the mount, nor a bare repr
                log.exception("refresh failed unexpectedly")
                raise self._failed(f"internal error: {exc!r} (the log has the traceback)") from exc

    async def _refresh(self) -> dict[str, Any]:
        started = self._clock()
        result = await refresh(self._client, self._index)
        if result.new_recordings:
            self._on_new()
        deleted, kept, starts, removed = await self._settle()
        changed = set(result.changed_days) | starts
        await invalidate_kernel(self._vfs.invalidate(changed), removed)
        self._refreshes += 1
        self._last = {
            "time": _iso(self._clock()),
            "seconds": round(self._clock() - started, 3),
            "records_read": result.records_read,
            "new_recordings": result.new_recordings,
            "deleted": deleted,
            "deleted_kept": kept,
            "changed_days": sorted({self._vfs.day_name(s) for s in changed}),
        }
        log.info(
            "refresh: %d new recordings, %d deleted upstream (%d kept), %d days changed",
            result.new_recordings,
            deleted,
            kept,
            len(self._last["changed_days"]),
        )
        return dict(self._last)

    def _failed(self, cause: str) -> RcfsError:
        self._failures += 1
        message = f"refresh failed: {cause}"
        self._errors.record(message)
        return RcfsError(message)

    async def prune_deleted(self) -> dict[str, Any]:
        """Drop the archived content of recordings deleted upstream (`rcfs cache prune --deleted`)."""
        async with self._lock:
            ids = await trio.to_thread.run_sync(self._index.kept_deleted)
            count, size = await self._content.prune_archive(ids)
            starts = await trio.to_thread.run_sync(self._index.set_kept, ids, False)
            removed = self._entries(ids)
            await invalidate_kernel(self._vfs.invalidate(starts), removed)
            log.info("pruned %d deleted recordings (%d bytes) from the archive", count, size)
            return {"removed": count, "bytes": size}

    def snapshot(self) -> dict[str, Any]:
        return {
            "poll_interval": self._interval,
            "refreshes": self._refreshes,
            "failures": self._failures,
            "running": self._lock.locked(),
            "next_poll": _iso(self._next_poll) if self._next_poll else None,
            "last": self._last,
        }

    # -- tasks ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Settle what a previous run left undecided, then poll until cancelled."""
        async with self._lock:
            try:
                _, _, starts, removed = await self._settle()
                await invalidate_kernel(self._vfs.invalidate(starts), removed)
            except RcfsError as exc:  # e.g. the index: the next refresh settles what is left
                self._errors.record(f"settling recordings deleted upstream failed: {exc}")
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_gone)
            while True:
                self._next_poll = self._clock() + self._interval
                with trio.move_on_after(self._interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                # A failure is counted and in the error log (`refresh` never raises
                # anything else); the next poll tries again.
                with contextlib.suppress(RcfsError):
                    await self.refresh()

    async def _watch_gone(self) -> None:
        while True:
            await self._gone_event.wait()
            self._gone_event = trio.Event()
            ids, self._gone = sorted(self._gone), set()
            try:
                async with self._lock:
                    marked = await trio.to_thread.run_sync(self._index.mark_deleted, ids)
                    _, _, starts, removed = await self._settle()
                    await invalidate_kernel(self._vfs.invalidate(marked | starts), removed)
            except Exception as exc:  # the next refresh settles what is left
                log.exception("marking recordings deleted failed")
                self._errors.record(f"marking {len(ids)} recordings deleted failed: {exc!r}")
                continue
            if ids:
                log.info("%d recordings answered 404: marked deleted upstream", len(ids))

    # -- internals -----------------------------------------------------------------

    async def _settle(self) -> tuple[int, int, set[int], list[tuple[int, str]]]:
        """Archive or drop recordings newly deleted upstream (see the module docstring).

        Returns (deleted, kept, changed starts, dentries to invalidate).
        """
        undecided = await trio.to_thread.run_sync(self._index.undecided_deleted)
        ids = [rid for rid in undecided if not self._content.in_flight(rid)]
        self._deferred.update(rid for rid in undecided if rid not in ids)
        if not ids:
            return 0, 0, set(), []
        kept, failed = await self._content.archive(ids) if self._keep else (set(), set())
        # A failed move stays undecided (and listed) until the next refresh retries it.
        dropped = [rid for rid in ids if rid not in kept and rid not in failed]
        lost = [rid for rid in dropped if not self._content.is_cached(rid)]
        if lost:
            log.warning("%d recordings were deleted upstream before rcfs had their content: %s",
                        len(lost), " ".join(lost[:20]) + (" ..." if len(lost) > 20 else ""))

        def write() -> set[int]:
            gone = set(lost)
            return (self._index.set_kept(kept, True)
                    | self._index.set_kept([r for r in dropped if r not in gone], False)
                    | self._index.set_kept(lost, False, lost=True))

        starts = await trio.to_thread.run_sync(write)
        return len(ids), len(kept), starts, self._entries(dropped)

    def _entries(self, recording_ids: list[str]) -> list[tuple[int, str]]:
        out = []
        for rid in recording_ids:
            ir = self._index.get_recording(rid)
            if ir is not None:
                out.append(self._vfs.entry_of(ir))
        return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
