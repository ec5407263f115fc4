"""Indexing the `--since` window progressively: newest first, on demand first.

Owns: which spans of the window to read and in what order, the interactive
requests for a day that is not indexed yet, and the progress figures
(`status.json` `index.progress`). Reading a span is `indexer.read_span`;
what a refresh reads is `indexer.refresh`.

Why. At 10 Heavy requests a minute, a 100,000-call account's 90 days are
~400 call-log pages: ~40 minutes. A mount that waited for all of it would
serve nothing for that long. Instead:

- `prefill` (before the tree is served) takes the sync token and reads the
  newest part of the window for at most `PREFILL_SECONDS`: a small account
  is complete before the first `ls`, a big one has its newest days.
- `run` (in the mount's nursery, at BACKGROUND priority) reads the rest,
  newest gap first, in windows of up to `MAX_SPAN_MS` that shrink to the
  account's density (a window stops after `MAX_PAGES_PER_WINDOW` pages and
  the next one is smaller): a sparse account takes a request or two per
  window (a 300-recording account is indexed in 3 requests, 1% of what
  archiving it costs), and a dense one never asks the server for a deep
  page of a huge window.
  In archive mode it reads the oldest day of the window second: those
  recordings are the next to be deleted, and the archive starts on them.
- `ensure(lo, hi)` is what a lookup or listing of a day calls: if part of it
  is not indexed, that part is read at INTERACTIVE priority, ahead of all
  background work, and the caller waits. Concurrent callers for one day
  share one read.

Coverage is per span in the index (`Index.coverage`), written with each
page, so an interrupted first mount resumes where it stopped; at a remount
the last `overlap` before the newest covered time is forgotten, so what
arrived late is read again, and only what is new is read.

Must not: import pyfuse3 or httpx, or touch the tree: every page goes to
`on_page` (the mount invalidates the days it changed and wakes the archive).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import trio

from rcfs.api import Priority, PriorityLike
from rcfs.errors import RcfsError, TemporaryFailure
from rcfs.index import Index, UpsertResult
from rcfs.index.store import META_CONTENT_TYPE_CHECKED
from rcfs.indexer import (
    DEFAULT_OVERLAP,
    META_LAST_SYNC,
    CallLogClient,
    Tally,
    read_span,
    take_sync_token,
)
from rcfs.models import epoch_ms, from_epoch_ms
from rcfs.units import fmt_duration

log = logging.getLogger(__name__)

PREFILL_SECONDS = 2.0
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_SPAN_MS = 32 * DAY_MS
# A window stops after this many pages and the next is smaller; one of a
# single page makes the next one four times as long.
MAX_PAGES_PER_WINDOW = 12
RETRY_DELAYS = (5.0, 15.0, 60.0, 300.0)  # after failed background reads, in turn
PROGRESS_LOG_SECONDS = 60.0
FORMAT_RECHECK = timedelta(days=7)  # how often the account's recording format is read again


class IndexingClient(CallLogClient, Protocol):
    """What the backfill uses of RingCentralClient: the call log, sync, and metadata."""

    async def recording_info(
        self, recording_id: str, *, priority: PriorityLike = ...
    ) -> dict[str, Any]: ...


class Backfill:
    """Progressive indexing of [since, the time of mount) for one mount."""

    def __init__(
        self,
        client: IndexingClient,
        index: Index,
        *,
        since: datetime,
        tz: ZoneInfo,
        now: datetime | None = None,
        archive_first: bool = False,
        overlap: timedelta = DEFAULT_OVERLAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._index = index
        self._tz = tz
        now = now or datetime.now(UTC)
        self.lo = epoch_ms(since)
        self.hi = max(self.lo, epoch_ms(now))
        self._now = now
        self._archive_first = archive_first
        self._overlap_ms = int(overlap.total_seconds() * 1000)
        self._clock = clock
        self._span_ms = MAX_SPAN_MS
        self._ensuring: dict[tuple[int, int], trio.Event] = {}
        self._oldest_day_done = not archive_first
        self._started: float | None = None
        self._covered_at_start = 0
        self.running = False
        self.error: str | None = None
        self.requests = 0  # call-log pages read (prefill, background, on demand)
        self.on_page: Callable[[UpsertResult], Awaitable[None]] | None = None
        self.on_complete: Callable[[], Awaitable[None]] | None = None

    # -- state -----------------------------------------------------------------

    def complete(self) -> bool:
        return self._index.coverage.covers(self.lo, self.hi)

    def incomplete_span(self) -> tuple[int, int] | None:
        """The window while part of it is not indexed (the tree shows its months), else None."""
        return None if self.complete() else (self.lo, self.hi)

    def snapshot(self) -> dict[str, Any]:
        """`index.progress` of status.json."""
        coverage = self._index.coverage
        days_total = days_indexed = 0
        d = self._local_date(self.lo)
        last = self._local_date(self.hi - 1) if self.hi > self.lo else d
        while d <= last:
            lo = max(self.lo, self._day_start(d))
            hi = min(self.hi, self._day_start(d + timedelta(days=1)))
            days_total += 1
            days_indexed += coverage.covers(lo, hi)
            d += timedelta(days=1)
        complete = coverage.covers(self.lo, self.hi)
        return {
            "days_indexed": days_indexed,
            "days_total": days_total,
            "complete": complete,
            "eta_s": 0 if complete else self._eta(coverage.covered_ms(self.lo, self.hi)),
            "since": _iso(self.lo),
            "requests": self.requests,
            "running": self.running,
            "error": self.error,
        }

    def _eta(self, covered: int) -> float | None:
        if self._started is None:
            return None
        elapsed = self._clock() - self._started
        done = covered - self._covered_at_start
        if elapsed < 1.0 or done <= 0:
            return None
        return round((self.hi - self.lo - covered) * elapsed / done, 1)

    # -- phases ------------------------------------------------------------------

    async def prefill(
        self, seconds: float = PREFILL_SECONDS, progress: Callable[[str], None] | None = None,
        *, tolerate_failure: bool = False,
    ) -> bool:
        """Before serving: a sync token, then the newest part of the window for up to `seconds`.

        Raises what the first request raises (bad credentials, no network): a
        mount that cannot read anything says so at once. With `tolerate_failure`
        (the index holds what an earlier mount read), a temporary failure (no
        network, 5xx, 429 after the retries) is logged and kept in `error`
        instead, the overlap forgotten for re-reading is marked indexed again
        (its records are still there: the tree keeps listing those days), and
        False is returned: the mount serves the index and `run` tries again.
        """
        forget: tuple[int, int] | None = None
        top = self._index.coverage.top()
        if top is not None and top > self.lo:
            # A remount: what reached the call log late is read again.
            forget = (max(self.lo, min(top, self.hi) - self._overlap_ms), top)
            await trio.to_thread.run_sync(self._index.remove_coverage, *forget)
        self._mark_start()
        try:
            await self._prefill(seconds, progress)
        except TemporaryFailure as exc:
            if not tolerate_failure:
                raise
            if forget is not None:
                await trio.to_thread.run_sync(self._index.add_coverage, *forget)
            self.error = f"indexing the call log failed: {exc}"
            log.warning("%s; serving the index of the last mount, trying again in the background",
                        self.error)
            return False
        return True

    async def _prefill(self, seconds: float, progress: Callable[[str], None] | None) -> None:
        first_new = self._index.max_rowid() + 1
        await take_sync_token(self._client, self._index, self._now)
        deadline = trio.current_time() + seconds
        with trio.move_on_at(deadline + 10 * seconds):  # a page that never comes
            while (gap := self._next_gap()) is not None:
                if progress is not None:
                    progress(self._progress_line())
                await self._read_window(gap, Priority.BACKGROUND,
                                        stop=lambda: trio.current_time() >= deadline)
                if trio.current_time() >= deadline:
                    break
        if self._index.coverage.covers(self.hi - 1, self.hi) or self.complete():
            await trio.to_thread.run_sync(self._index.set_meta, META_LAST_SYNC, _iso(self.hi))
        await self.learn_format(first_new)
        if progress is not None:
            progress(self._progress_line())

    async def learn_format(self, first_new: int) -> None:
        """Learn the account's recording format (MP3 or WAV, a company setting) from one
        recording's metadata, before any name is shown: the recordings indexed in this
        mount so far, and every new one, are named and estimated for it. Re-checked
        every `FORMAT_RECHECK`; one Heavy request. A failure keeps what is known."""
        index = self._index
        checked = index.get_meta(META_CONTENT_TYPE_CHECKED)
        try:
            fresh = checked is not None and (
                datetime.fromisoformat(checked) > self._now - FORMAT_RECHECK)
        except ValueError:
            fresh = False
        if fresh and index.default_content_type:
            return
        for rid in index.newest_recording_ids(3):
            try:
                info = await self._client.recording_info(rid, priority=Priority.INTERACTIVE)
            except RcfsError as exc:
                log.info("cannot read recording %s's metadata to learn the format: %s", rid, exc)
                continue
            ctype = info.get("contentType")
            if not isinstance(ctype, str) or not ctype.strip():
                continue
            ctype = ctype.split(";", 1)[0].strip().lower()
            renamed = await trio.to_thread.run_sync(
                functools.partial(index.set_account_format, ctype, _iso(epoch_ms(self._now)),
                                  name_from_rowid=first_new))
            if ctype != "audio/mpeg":
                log.info("the account records %s: files are named and sized for it "
                         "(%d recordings so far)", ctype, renamed)
            return


    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Index what `prefill` left, at background priority; then return."""
        task_status.started()
        if self._started is None:
            self._mark_start()
        failures = 0
        next_log = self._clock() + PROGRESS_LOG_SECONDS
        self.running = True
        try:
            while (gap := self._next_gap()) is not None:
                try:
                    await self._read_window(gap, Priority.BACKGROUND)
                except RcfsError as exc:
                    delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                    failures += 1
                    self.error = f"indexing the call log failed: {exc}"
                    log.warning("%s; trying again in %.0f s", self.error, delay)
                    await trio.sleep(delay)
                    continue
                failures, self.error = 0, None
                if self._clock() >= next_log:
                    next_log = self._clock() + PROGRESS_LOG_SECONDS
                    log.info("%s", self._progress_line())
        finally:
            self.running = False
        try:
            await trio.to_thread.run_sync(self._index.set_meta, META_LAST_SYNC, _iso(self.hi))
        except RcfsError as exc:  # recorded by the index; the next refresh sets it
            log.warning("cannot record the last sync time: %s", exc)
        log.info("indexed the call log since %s: %s", _iso(self.lo), self._progress_line())
        if self.on_complete is not None:
            try:
                await self.on_complete()
            except Exception:  # the tree shows it at the next refresh anyway
                log.exception("updating the tree after indexing failed")

    async def ensure(self, lo_ms: int, hi_ms: int) -> None:
        """Make sure [lo_ms, hi_ms) of the window is indexed, reading it now (interactive)."""
        lo, hi = max(lo_ms, self.lo), min(hi_ms, self.hi)
        if self._index.coverage.covers(lo, hi):
            return
        key = (lo, hi)
        running = self._ensuring.get(key)
        if running is not None:
            await running.wait()
            if not self._index.coverage.covers(lo, hi):
                raise TemporaryFailure(
                    f"the call log of {_iso(lo)}..{_iso(hi)} could not be read (see the log)")
            return
        done = self._ensuring[key] = trio.Event()
        try:
            while gaps := self._index.coverage.gaps(lo, hi):
                await self._read_window(gaps[-1], Priority.INTERACTIVE, whole=True)
        finally:
            del self._ensuring[key]
            done.set()

    # -- internals -----------------------------------------------------------------

    def _mark_start(self) -> None:
        self._started = self._clock()
        self._covered_at_start = self._index.coverage.covered_ms(self.lo, self.hi)

    def _next_gap(self) -> tuple[int, int] | None:
        gaps = self._index.coverage.gaps(self.lo, self.hi)
        if not gaps:
            return None
        if not self._oldest_day_done and gaps[-1][1] < self.hi:
            # Archive mode: the oldest day next, once the newest part is in.
            self._oldest_day_done = True
            lo, hi = gaps[0]
            return lo, min(hi, lo + DAY_MS)
        return gaps[-1]

    async def _read_window(
        self, gap: tuple[int, int], priority: Priority, *, whole: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Read the newest window of `gap`: all of it if `whole`, else `_span_ms` of it."""
        lo, hi = gap
        if not whole:
            lo = max(lo, hi - self._span_ms)
        tally = Tally()

        def enough() -> bool:
            return (not whole and tally.pages >= MAX_PAGES_PER_WINDOW) or (
                stop is not None and stop())

        async def on_page(result: UpsertResult) -> None:
            self.requests += 1
            if self.on_page is not None:
                await self.on_page(result)

        finished = await read_span(self._client, self._index, lo, hi, priority=priority,
                                   tally=tally, on_page=on_page, stop=enough)
        if whole:
            return
        if finished and tally.pages <= 1:
            self._span_ms = min(MAX_SPAN_MS, self._span_ms * 4)
        elif tally.pages >= MAX_PAGES_PER_WINDOW:
            self._span_ms = max(HOUR_MS, self._span_ms // 2)

    def _progress_line(self) -> str:
        snap = self.snapshot()
        eta = snap["eta_s"]
        left = "" if snap["complete"] or eta is None else f", about {fmt_duration(eta)} left"
        return (f"indexed {snap['days_indexed']} of {snap['days_total']} days "
                f"of the call log{left}")

    def _local_date(self, ms: int) -> date:
        return from_epoch_ms(ms).astimezone(self._tz).date()

    def _day_start(self, d: date) -> int:
        return epoch_ms(datetime(d.year, d.month, d.day, tzinfo=self._tz))


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).isoformat(timespec="seconds").replace("+00:00", "Z")
