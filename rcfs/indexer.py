"""Filling the index from the call log: the initial window and each refresh.

Owns: which date windows to read (re-using what a previous mount indexed),
the sync token and the bookkeeping in the index's meta table (`covered_from`,
`covered_to`, `sync_token`, `last_sync`, ISO 8601 UTC).

Must not: import httpx or pyfuse3, retry (the client does), or touch the
tree (the caller passes `RefreshResult.changed_days` to `Vfs.invalidate`).
It uses only `client.iter_call_log` and `client.sync_call_log`
(docs/INTERFACES.md). Index writes run in worker threads.

Coverage. `covered_from`..`covered_to` is the contiguous span whose call log
is in the index. A remount reads only what is outside it, plus the last
`overlap` before `covered_to`, because calls reach the call log 15-30 s after
they end and recordings later still (API-NOTES.md).

Refresh reads [min(now, covered_to) - overlap, now] from the call log (all of
what is new, as pages of up to 1,000), then at most `MAX_SYNC_REQUESTS` ISync
requests for changes to older records (deletions above all). A sync token the
server rejects (CLG-10x) is dropped and a new FSync started at once; so is a
token older than the sync API's 30-day window (`SYNC_WINDOW`), whose changes
the window read covers instead. Every request is at background priority (the
client's default for these operations), so interactive reads go first.

Cost per refresh, in Heavy requests: one per 1,000 call-log records in the
window (a single request unless more than 1,000 calls started since the last
refresh), plus at most `MAX_SYNC_REQUESTS` (+1 after a refused token) for
sync: bounded by what is new, never by the size of the account.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import trio

from rcfs.errors import ApiError, RcfsError
from rcfs.index import Index, UpsertResult

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = timedelta(hours=2)
MAX_SYNC_REQUESTS = 4
SYNC_WINDOW = timedelta(days=30)
ISYNC_PAGE_LIMIT = 250

META_COVERED_FROM = "covered_from"
META_COVERED_TO = "covered_to"
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
        self, date_from: datetime, date_to: datetime
    ) -> AsyncIterator[list[dict[str, Any]]]: ...

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


@dataclass
class _Tally:
    records: int = 0
    added: int = 0
    changed: set[int] = field(default_factory=set)

    def add(self, result: UpsertResult, count: int) -> None:
        self.records += count
        self.added += len(result.added_recordings)
        self.changed.update(result.changed_starts_ms)
        for line in result.bad_records:
            log.warning("skipping a bad call-log record: %s", line)


async def index_window(
    client: CallLogClient,
    index: Index,
    since: datetime,
    until: datetime,
    *,
    progress: Callable[[int], None] | None = None,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> int:
    """Index the call log of [since, until], re-using what the index already covers.

    Returns the number of call-log records read. Coverage is recorded only
    once a window has been read completely.
    """
    covered = _coverage(index)
    tally = _Tally()
    if index.get_meta(META_SYNC_TOKEN) is None:
        # Take a sync token before reading the window: every change after
        # this point then reaches the first refresh through ISync, whatever
        # the start time of the call it changes (a call longer than the
        # overlap, a recording attached late to an old call).
        await _sync(client, index, until - overlap, _Tally(), until)
    if covered is None or covered[1] < since or covered[0] > until:
        await _read(client, index, since, until, tally, progress)
        await _set_coverage(index, since, until)
    else:
        cfrom, cto = covered
        if since < cfrom:
            await _read(client, index, since, cfrom, tally, progress)
            await _set_coverage(index, since, cto)
            cfrom = since
        start = max(since, cto - overlap)
        if start < until:
            await _read(client, index, start, until, tally, progress)
            await _set_coverage(index, cfrom, max(cto, until))
    await trio.to_thread.run_sync(index.set_meta, META_LAST_SYNC, _iso(until))
    return tally.records


async def refresh(
    client: CallLogClient,
    index: Index,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
    now: datetime | None = None,
) -> RefreshResult:
    """Pick up what is new or changed since the last refresh; see the module docstring."""
    now = now or datetime.now(UTC)
    covered = _coverage(index)
    start = now - overlap if covered is None else min(now, covered[1]) - overlap
    tally = _Tally()
    await _read(client, index, start, now, tally, None)
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
    cfrom = start if covered is None else min(covered[0], start)
    await _set_coverage(index, cfrom, now if covered is None else max(covered[1], now))
    await trio.to_thread.run_sync(index.set_meta, META_LAST_SYNC, _iso(now))
    return RefreshResult(frozenset(tally.changed), tally.added, tally.records)


async def _read(
    client: CallLogClient,
    index: Index,
    start: datetime,
    end: datetime,
    tally: _Tally,
    progress: Callable[[int], None] | None,
) -> None:
    log.debug("reading the call log from %s to %s", _iso(start), _iso(end))
    async for page in client.iter_call_log(start, end):
        result = await trio.to_thread.run_sync(index.upsert_records, page)
        tally.add(result, len(page))
        if progress is not None:
            progress(tally.records)


async def _sync(
    client: CallLogClient, index: Index, fsync_from: datetime, tally: _Tally, now: datetime
) -> None:
    token = index.get_meta(META_SYNC_TOKEN)
    for _ in range(MAX_SYNC_REQUESTS):
        try:
            result = await client.sync_call_log(
                token, date_from=None if token else fsync_from)
        except ApiError as exc:
            if token is not None and exc.error_code.startswith("CLG-"):
                log.info("call-log sync token refused (%s): starting a full sync", exc.error_code)
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


def _coverage(index: Index) -> tuple[datetime, datetime] | None:
    cfrom = index.get_meta(META_COVERED_FROM)
    cto = index.get_meta(META_COVERED_TO)
    if cfrom is None or cto is None:
        return None
    try:
        return datetime.fromisoformat(cfrom), datetime.fromisoformat(cto)
    except ValueError:
        log.warning("ignoring unreadable index coverage %r..%r", cfrom, cto)
        return None


async def _set_coverage(index: Index, cfrom: datetime, cto: datetime) -> None:
    def write() -> None:
        index.set_meta(META_COVERED_FROM, _iso(cfrom))
        index.set_meta(META_COVERED_TO, _iso(cto))

    await trio.to_thread.run_sync(write)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()
