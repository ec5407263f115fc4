"""Archive mode: download every indexed recording, oldest first, before it is deleted.

Owns: the archive's workers (`rcfs mount --archive`), the order they take
recordings in, the index's `stored` flags (which recordings' content is in
the permanent archive store), and the figures of status.json's `archive`
block: whether retention is winning.

Order. RingCentral deletes the oldest recordings first (after `--retention`
days, default 90, or beyond the newest 100,000), so each worker takes the
oldest recording that exists upstream, is not in the archive store, and is
not being fetched or waiting out a back-off: one seek on the index's
`recordings_pending` partial index, whatever the account holds. New
recordings (from the backfill or a refresh) wake idle workers. Downloads go
through `ContentManager.prefetch` at BULK priority, so every reader,
listing, refresh and index page goes first (the limiter still gives BULK a
share while background work waits); a reader who opens a recording the
archive is fetching raises that download to interactive priority. In
archive mode the content manager commits every download to the archive
store, never to the LRU cache; a recording found in the LRU cache (from an
earlier mount) is moved over without a request.

Figures. `pending` (exist upstream, not archived), `done` and `bytes` (in
the archive store, deleted upstream or not), `rate_per_min` (downloads by
the archive over the last `RATE_WINDOW` seconds, measured), `eta_s`,
`oldest_pending_start`, `at_risk` (pending recordings that, taken oldest
first at the measured rate, would be reached after their start plus the
retention: deleted first) and `lost` (deleted upstream before rcfs had their
content; `Freshness` flags them). They are recomputed from the index every
`FIGURES_SECONDS` in a worker thread (at_risk walks the pending starts once),
logged every `LOG_SECONDS`, and logged as a warning when at_risk turns
positive. A disk that fills up pauses the archive with an error in status;
nothing half-written is ever committed (content/store.py).

Must not: import pyfuse3 or httpx.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from rcfs.content import BULK, ContentManager, ContentRef
from rcfs.errors import CacheFull, NotFound, RcfsError
from rcfs.index import Index, IndexedRecording
from rcfs.models import from_epoch_ms
from rcfs.status import ErrorLog
from rcfs.units import count, fmt_bytes, fmt_duration

log = logging.getLogger(__name__)

WORKERS = 4
RATE_WINDOW = 600.0  # seconds of completed downloads behind rate_per_min
FIGURES_SECONDS = 2.0
AT_RISK_SECONDS = 15.0  # at_risk walks every pending start: recomputed less often
AT_RISK_CHANGED_SECONDS = 4.0  # ... but sooner once the pending count has changed
LOG_SECONDS = 3600.0
DISK_FULL_PAUSE = 60.0
RETRY_DELAYS = (60.0, 300.0, 1800.0, 3600.0)  # a recording whose download failed, in turn
IDLE_CHECK = 60.0  # an idle worker looks again this often, woken or not
DAY_MS = 86_400_000


class Archiver:
    """The archive workers and figures of one mount (workers only with `enabled`)."""

    def __init__(
        self,
        index: Index,
        content: ContentManager,
        errors: ErrorLog,
        *,
        enabled: bool,
        retention_days: float = 90.0,
        budget_per_min: Callable[[], float] = lambda: 10.0,
        workers: int = WORKERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = index
        self._content = content
        self._errors = errors
        self.enabled = enabled
        self.retention_days = retention_days
        self._budget_per_min = budget_per_min
        self._workers = workers
        self._clock = clock
        self._inflight: set[str] = set()
        self._retry: dict[str, tuple[float, int]] = {}  # id -> (trio time to retry at, failures)
        self._to_flag: set[str] = set()  # archived, `stored` not yet written
        self._to_unflag: set[str] = set()  # no longer archived, not yet written
        self._flag_wanted = trio.Event()
        self._wake = trio.Event()
        self._figures_now = trio.Event()
        self._finished: collections.deque[float] = collections.deque()  # trio times
        self._started = trio.current_time()
        self.downloaded = 0
        self.failed = 0
        self.error: str | None = None
        self._figures: dict[str, Any] = {}
        self._risk_due = -float("inf")  # trio time when at_risk is next recomputed
        self._risk_at = -float("inf")  # trio time it was last computed
        self._risk_pending = -1  # the pending count it was computed for
        self._warned_at_risk = False

    # -- events from the rest of the mount ------------------------------------------

    def notify(self) -> None:
        """New recordings were indexed, or something changed: idle workers look again."""
        self._wake.set()

    def stored(self, recording_ids: list[str]) -> None:
        """The content manager moved these into the archive store (flags written in a batch)."""
        self._to_flag.update(recording_ids)
        self._to_unflag.difference_update(recording_ids)
        self._flag_wanted.set()

    def unstored(self, recording_ids: list[str]) -> None:
        """These left the archive store (damaged content taken out of service)."""
        self._to_unflag.update(recording_ids)
        self._to_flag.difference_update(recording_ids)
        self._flag_wanted.set()
        self.notify()

    # -- tasks ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile the index's flags with the store, then archive (if enabled) and
        keep the figures current until cancelled."""
        ids = self._content.archived_ids()
        changed = await trio.to_thread.run_sync(self._index.reconcile_stored, ids)
        if changed:
            log.info("archive: %d recordings' stored flags corrected from the archive store", changed)
        await self._update_figures()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flag_stored)
            nursery.start_soon(self._keep_figures)
            if self.enabled:
                for _ in range(self._workers):
                    nursery.start_soon(self._worker)
                log.info("archive: %s", self.summary())
            task_status.started()

    async def _worker(self) -> None:
        while True:
            try:
                ir = await self._next()
            except RcfsError as exc:  # the index failed (status has it): try again later
                log.warning("archive: cannot read what to archive next: %s", exc)
                await trio.sleep(DISK_FULL_PAUSE)
                continue
            rid = ir.recording_id
            self._inflight.add(rid)
            try:
                await self._archive_one(ir)
            except NotFound:
                # Deleted upstream before we got it: the content manager reported
                # the 404 and Freshness flags it lost (and not pending) shortly;
                # until then it must not be asked for again.
                self.failed += 1
                self._retry[rid] = (trio.current_time() + RETRY_DELAYS[-1], 1)
            except CacheFull as exc:
                self._fail_disk(exc)
                await trio.sleep(DISK_FULL_PAUSE)
            except RcfsError as exc:
                self.failed += 1
                _, failures = self._retry.get(rid, (0.0, 0))
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                self._retry[rid] = (trio.current_time() + delay, failures + 1)
                log.info("archive: recording %s failed (%s); trying again in %.0f s", rid, exc, delay)
            else:
                self._retry.pop(rid, None)
                if self.error is not None and self.error.startswith("disk full"):
                    log.info("archive: the disk has room again; archiving resumed")
                    self.error = None
            finally:
                self._inflight.discard(rid)

    async def _archive_one(self, ir: IndexedRecording) -> None:
        rid = ir.recording_id
        if self._content.is_archived(rid):
            self.stored([rid])
            return
        if self._content.is_cached(rid):  # in the LRU cache: move it over, no request
            kept, failed = await self._content.archive([rid])
            if rid in kept:
                return  # the manager reports it through `stored`
            if failed:
                raise RcfsError(f"cannot move recording {rid} into the archive store (see the log)")
            # It left the LRU cache meanwhile: download it.
        ref = ContentRef.of(ir)
        await self._content.prefetch(ref, BULK)
        self.downloaded += 1
        self._finished.append(trio.current_time())

    async def _next(self) -> IndexedRecording:
        """The oldest recording to archive now; waits while there is none."""
        while True:
            now = trio.current_time()
            skip = len(self._inflight) + len(self._retry) + len(self._to_flag)
            candidates = await trio.to_thread.run_sync(self._index.oldest_pending, skip + 8)
            for ir in candidates:
                rid = ir.recording_id
                if rid in self._inflight or rid in self._to_flag:
                    continue
                retry = self._retry.get(rid)
                if retry is not None and retry[0] > now:
                    continue
                if self._content.is_archived(rid):
                    self.stored([rid])  # the flag was lost (a crash): no request needed
                    continue
                return ir
            waits = [at for at, _ in self._retry.values() if at > now]
            with trio.move_on_at(min([now + IDLE_CHECK, *waits])):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _flag_stored(self) -> None:
        while True:
            await self._flag_wanted.wait()
            self._flag_wanted = trio.Event()
            batch, self._to_flag = self._to_flag, set()
            gone, self._to_unflag = self._to_unflag, set()

            def write(batch: set[str] = batch, gone: set[str] = gone) -> None:
                self._index.set_stored(batch, True)
                self._index.set_stored(gone, False)

            try:
                await trio.to_thread.run_sync(write)
            except Exception as exc:  # kept: written with the next batch
                self._to_flag |= batch
                self._to_unflag |= gone
                log.warning("archive: cannot record %d archived recordings in the index: %s",
                            len(batch), exc)
                await trio.sleep(5)
                self._flag_wanted.set()
            self._figures_now.set()

    async def _keep_figures(self) -> None:
        next_log = trio.current_time() + LOG_SECONDS
        while True:
            with trio.move_on_after(FIGURES_SECONDS):
                await self._figures_now.wait()
            self._figures_now = trio.Event()
            try:
                await self._update_figures()
            except Exception:  # status must go on; the next round tries again
                log.exception("archive: computing the status figures failed")
                continue
            at_risk = self._figures.get("at_risk") or 0
            if at_risk and not self._warned_at_risk:
                log.warning("archive: %d recordings will be deleted upstream before the archive "
                            "reaches them at this rate: %s", at_risk, self.summary())
            self._warned_at_risk = bool(at_risk)
            if trio.current_time() >= next_log:
                next_log = trio.current_time() + LOG_SECONDS
                log.info("archive: %s", self.summary())

    async def _update_figures(self) -> None:
        rate = self._rate_per_min()
        estimate = rate if rate else (self._budget_per_min() if self.enabled else 0.0)
        horizon_ms = int(self.retention_days * DAY_MS)
        now_ms = int(self._clock() * 1000)
        now = trio.current_time()
        due = now >= self._risk_due
        soon = now >= self._risk_at + AT_RISK_CHANGED_SECONDS
        last_pending = self._risk_pending
        at_risk = self._figures.get("at_risk")
        computed = False

        def compute() -> dict[str, Any]:
            nonlocal computed
            counts = self._index.archive_counts()
            oldest = self._index.oldest_pending(1)
            risk = at_risk
            # The index grows in the background: a new day's recordings count at once.
            if self.enabled and (due or (soon and counts["pending"] > last_pending)):
                computed = True
                risk = _at_risk(self._index.pending_starts(), now_ms, horizon_ms,
                                estimate / 60_000 if estimate else 0.0)
            return {**counts, "at_risk": risk if counts["pending"] else 0,
                    "oldest": oldest[0].start_ms if oldest else None}

        self._figures = await trio.to_thread.run_sync(compute)
        if computed:
            self._risk_at = trio.current_time()
            self._risk_due = self._risk_at + AT_RISK_SECONDS
            self._risk_pending = int(self._figures.get("pending", 0))

    # -- status ----------------------------------------------------------------------

    def _rate_per_min(self) -> float:
        now = trio.current_time()
        while self._finished and self._finished[0] < now - RATE_WINDOW:
            self._finished.popleft()
        if len(self._finished) < 2:
            return 0.0
        span = max(now - self._finished[0], min(RATE_WINDOW, now - self._started), 1.0)
        return round(len(self._finished) * 60.0 / span, 2)

    def snapshot(self) -> dict[str, Any]:
        f = self._figures
        pending = int(f.get("pending", 0))
        rate = self._rate_per_min() if self.enabled else 0.0
        oldest = f.get("oldest")
        return {
            "enabled": self.enabled,
            "pending": pending,
            "done": int(f.get("stored", 0)),
            "bytes": self._content.snapshot()["cache"]["archived_bytes"],
            "rate_per_min": rate,
            "eta_s": round(pending * 60.0 / rate) if rate and pending else (0 if not pending else None),
            "oldest_pending_start": _iso(oldest) if oldest is not None else None,
            "at_risk": f.get("at_risk") if self.enabled else None,
            "lost": int(f.get("lost", 0)),
            "retention_days": self.retention_days,
            "downloaded": self.downloaded,
            "failed": self.failed,
            "active": len(self._inflight),
            "error": self.error,
        }

    def summary(self) -> str:
        """One line: the figures as `rcfs status` and the hourly log line show them."""
        return summary_line(self.snapshot())

    def _fail_disk(self, exc: CacheFull) -> None:
        message = f"disk full: archiving paused ({exc})"
        if self.error != message:
            self._errors.record(f"archive: {message}")
        self.error = message


def _at_risk(starts: list[int], now_ms: int, horizon_ms: int, per_ms: float) -> int:
    """How many pending recordings (starts, oldest first) would be reached only after
    they are deleted (start + horizon), taken in order at `per_ms` a millisecond."""
    if not starts:
        return 0
    if per_ms <= 0:
        return len(starts)
    count = 0
    for k, start in enumerate(starts):
        if now_ms + (k + 1) / per_ms > start + horizon_ms:
            count += 1
    return count


def summary_line(a: dict[str, Any]) -> str:
    """`archive` of status.json as one readable line."""
    if not a.get("enabled"):
        return (f"off (rcfs mount --archive): {count(a.get('pending', 0), 'recording')} not archived, "
                f"{a.get('done', 0)} archived, {a.get('lost', 0)} lost")
    eta = a.get("eta_s")
    when = "done" if not a.get("pending") else (
        f"about {fmt_duration(eta)} to go" if eta else "rate not measured yet")
    oldest = a.get("oldest_pending_start")
    parts = [
        f"{a.get('pending', 0)} pending" + (f" (oldest {oldest})" if oldest else ""),
        f"{a.get('done', 0)} archived ({fmt_bytes(a.get('bytes', 0))})",
        f"{a.get('rate_per_min', 0):g}/min, {when}",
        f"{a.get('at_risk') or 0} at risk, {a.get('lost', 0)} lost",
    ]
    if a.get("error"):
        parts.append(str(a["error"]))
    return "; ".join(parts)


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["Archiver", "summary_line"]
