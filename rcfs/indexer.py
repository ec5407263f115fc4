"""Filling the index from the call log: spans of time, refreshes and sync.

Owns: how a span of the call log is read into the index (`read_span`), what
each refresh reads (`refresh`), the sync token and the bookkeeping in the
index's meta table (`sync_token`, `sync_token_time`, `last_sync`, ISO 8601
UTC). Which spans to read, and when, belongs to `backfill.py`.

Must not: import httpx or pyfuse3, retry (the client does), or touch the
tree (callers pass the changed starts to `Vfs.invalidate`). It uses only
`client.iter_call_log` and `client.sync_call_log` (docs/INTERFACES.md).
Index writes run in worker threads.

Coverage per page. The call log comes newest first, so once a page of
[lo, hi) has arrived, everything in (its oldest start, hi) is in the index.
That span is covered with the records of the *next* page, in one
transaction, once that page confirms the order (its newest call is not
newer than the last page's oldest): a server that does not sort newest
first gets its span covered only when it has been read whole. An
interrupted read (a failure, an unmount, a crash) resumes where it stopped.
The oldest millisecond of a page is left uncovered (the next page may hold
calls that started in it); the end of the span covers [lo, hi).

Refresh reads [min(now, top) - overlap, now], where `top` is the newest
covered time (all of what is new, as pages of up to 1,000), then at most
`MAX_SYNC_REQUESTS` ISync requests for changes to older records (deletions
above all). A sync token the server rejects (CLG-10x) is dropped and a new
FSync started at once; so is a token older than the sync API's 30-day window
(`SYNC_WINDOW`), whose changes the window read covers instead. Every request
is at background priority (the client's default for these operations), so
interactive reads go first.

Cost per refresh, in Heavy requests: one per 1,000 call-log records in the
window (a single request unless more than 1,000 calls started since the last
refresh), plus at most `MAX_SYNC_REQUESTS` (+1 after a refused token) for
sync: bounded by what is new, never by the size of the account.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import trio

from rcfs.api import Priority, PriorityLike
from rcfs.errors import ApiError, RcfsError, SyncTokenInvalid
from rcfs.index import Index, UpsertResult
from rcfs.models import epoch_ms, from_epoch_ms, record_start_ms

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = timedelta(hours=2)
MAX_SYNC_REQUESTS = 4
SYNC_WINDOW = timedelta(days=30)
ISYNC_PAGE_LIMIT = 250

META_SYNC_TOKEN = "sync_token"
META_SYNC_TOKEN_TIME = "sync_token_time"
META_LAST_SYNC = "last_sync"


class SyncResultLike(Protocol):
    @property
    def records(self) -> list[dict[str, Any]]: ...
    @property
    def sync_token(self) -> str: ...
    @property
    def full(self) -> bool: ...


class CallLogClient(Protocol):
    """The part of RingCentralClient this module uses."""

    def iter_call_log(
        self, date_from: datetime, date_to: datetime, *, priority: PriorityLike = ...
    ) -> AsyncGenerator[list[dict[str, Any]], None]: ...

    async def sync_call_log(
        self, sync_token: str | None, *, date_from: datetime | None
    ) -> SyncResultLike: ...


@dataclass(frozen=True)
class RefreshResult:
    # The changed days, as the epoch-ms start of a call in each (the index
    # knows no zone): pass to Vfs.invalidate.
    changed_days: frozenset[int]
    new_recordings: int
    records_read: int = 0
    added: tuple[str, ...] = ()  # the new recordings' ids


@dataclass
class Tally:
    """What a read brought in, summed over its pages."""

    records: int = 0
    pages: int = 0
    added: list[str] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)

    def add(self, result: UpsertResult, count: int) -> None:
        self.records += count
        self.pages += 1
        self.added.extend(result.added_recordings)
        self.changed.update(result.changed_starts_ms)
        for line in result.bad_records:
            log.warning("skipping a bad call-log record: %s", line)


# Called after each page is in the index (e.g. to invalidate the tree).
PageHook = Callable[[UpsertResult], Awaitable[None]]


async def read_span(
    client: CallLogClient,
    index: Index,
    lo_ms: int,
    hi_ms: int,
    *,
    priority: PriorityLike = Priority.BACKGROUND,
    tally: Tally | None = None,
    on_page: PageHook | None = None,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Read the call log of [lo_ms, hi_ms) into the index, covering it page by page.

    Returns True when the whole span was read, False when `stop()` said to stop
    after a page (the part read is covered; the rest is a gap to read later).
    """
    tally = tally if tally is not None else Tally()
    floor = hi_ms  # the oldest start seen so far: the next page must not go above it
    sorted_ok = True
    vouched: tuple[int, int] | None = None  # covered once the next page confirms the order
    log.debug("reading the call log from %s to %s", _iso_ms(lo_ms), _iso_ms(hi_ms))
    async with aclosing(client.iter_call_log(
            from_epoch_ms(lo_ms), from_epoch_ms(hi_ms), priority=priority)) as pages:
        async for page in pages:
            cover = None
            starts = [s for s in map(record_start_ms, page) if s is not None]
            if starts and sorted_ok:
                if max(starts) > floor:
                    log.info("the call log did not come newest first: covering %s..%s "
                             "only once it is read", _iso_ms(lo_ms), _iso_ms(hi_ms))
                    sorted_ok = False
                else:
                    cover, floor = vouched, min(starts)
                    vouched = (max(lo_ms, floor + 1), hi_ms) if floor + 1 < hi_ms else None
            result = await trio.to_thread.run_sync(_upsert, index, page, cover)
            tally.add(result, len(page))
            if on_page is not None:
                await on_page(result)
            if stop is not None and stop():
                return False
    await trio.to_thread.run_sync(index.add_coverage, lo_ms, hi_ms)
    return True


def _upsert(index: Index, page: list[dict[str, Any]], cover: tuple[int, int] | None) -> UpsertResult:
    return index.upsert_records(page, cover=cover)


async def take_sync_token(client: CallLogClient, index: Index, now: datetime,
                          overlap: timedelta = DEFAULT_OVERLAP) -> Tally:
    """FSync once if the index has no sync token yet (before its window is read, so
    that every later change reaches a refresh through ISync, whatever the start of
    the call it changes: a call longer than the overlap, a recording attached late)."""
    tally = Tally()
    if index.get_meta(META_SYNC_TOKEN) is None:
        await _sync(client, index, now - overlap, tally, now)
    return tally


async def refresh(
    client: CallLogClient,
    index: Index,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
    now: datetime | None = None,
) -> RefreshResult:
    """Pick up what is new or changed since the last refresh; see the module docstring."""
    now = now or datetime.now(UTC)
    now_ms = epoch_ms(now)
    top = index.coverage.top()
    start_ms = (now_ms if top is None else min(now_ms, top)) - _ms(overlap)
    tally = Tally()
    await read_span(client, index, start_ms, now_ms, tally=tally)
    token_time = index.get_meta(META_SYNC_TOKEN_TIME)
    if token_time is not None and index.get_meta(META_SYNC_TOKEN) is not None:
        try:
            stale = datetime.fromisoformat(token_time) < now - SYNC_WINDOW
        except ValueError:
            stale = True
        if stale:
            log.info("call-log sync token is older than %s days: starting a full sync",
                     SYNC_WINDOW.days)
            await trio.to_thread.run_sync(index.set_meta, META_SYNC_TOKEN, None)
    await _sync(client, index, now - overlap, tally, now)
    await trio.to_thread.run_sync(index.set_meta, META_LAST_SYNC, _iso(now))
    return RefreshResult(frozenset(tally.changed), len(tally.added), tally.records,
                         tuple(tally.added))


async def _sync(
    client: CallLogClient, index: Index, fsync_from: datetime, tally: Tally, now: datetime
) -> None:
    token = index.get_meta(META_SYNC_TOKEN)
    for _ in range(MAX_SYNC_REQUESTS):
        try:
            result = await client.sync_call_log(
                token, date_from=None if token else fsync_from)
        except ApiError as exc:
            # CLG-10x, or any 400 about the token (CMN-101 "Parameter [syncToken] is
            # invalid", also sent when more than 250 changes are pending): FSync again.
            if token is not None and (isinstance(exc, SyncTokenInvalid)
                                      or exc.error_code.startswith("CLG-")):
                log.info("call-log sync token refused (%s): starting a full sync", exc)
                token = None
                await trio.to_thread.run_sync(index.set_meta, META_SYNC_TOKEN, None)
                continue
            log.warning("call-log sync unavailable: %s", exc)
            return
        except RcfsError as exc:
            # The window read already ran; deletions wait for the next refresh.
            log.warning("call-log sync failed: %s", exc)
            return
        upserted = await trio.to_thread.run_sync(index.upsert_records, result.records)
        tally.add(upserted, len(result.records))
        if result.sync_token:
            token = result.sync_token

            def store(token: str = token) -> None:
                index.set_meta(META_SYNC_TOKEN, token)
                index.set_meta(META_SYNC_TOKEN_TIME, _iso(now))

            await trio.to_thread.run_sync(store)
        if result.full or len(result.records) < ISYNC_PAGE_LIMIT:
            return
    log.info("call-log sync has more changes; continuing at the next refresh")


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def _iso_ms(ms: int) -> str:
    return from_epoch_ms(ms).isoformat().replace("+00:00", "Z")
