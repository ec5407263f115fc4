from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from rcfs.errors import ApiError, TemporaryFailure
from rcfs.index import Index
from rcfs.indexer import (
    ISYNC_PAGE_LIMIT,
    MAX_SYNC_REQUESTS,
    META_LAST_SYNC,
    META_SYNC_TOKEN,
    SYNC_WINDOW,
    Tally,
    read_span,
    refresh,
    take_sync_token,
)
from rcfs.models import epoch_ms

from .calllog_fakes import NOW, FakeClient, SyncResult, history, rec


async def index_all(client: FakeClient, index: Index, since: datetime, until: datetime = NOW) -> int:
    """What a first mount does: a sync token, then the window."""
    await take_sync_token(client, index, until)
    tally = Tally()
    await read_span(client, index, epoch_ms(since), epoch_ms(until), tally=tally)
    return tally.records


async def test_a_span_is_covered_page_by_page(index: Index) -> None:
    client = FakeClient(records=history(10))
    lo, hi = epoch_ms(NOW - timedelta(days=3)), epoch_ms(NOW)
    seen: list[list[tuple[int, int]]] = []

    async def on_page(_: object) -> None:
        seen.append(index.coverage.spans())

    tally = Tally()
    assert await read_span(client, index, lo, hi, tally=tally, on_page=on_page)
    assert (tally.records, tally.pages) == (10, 4)
    assert index.stats()["recordings"] == 10
    assert client.windows == [(NOW - timedelta(days=3), NOW)]
    # Newest first: once the next page confirms the order, everything newer than
    # a page's oldest call is covered.
    oldest = [epoch_ms(NOW - timedelta(hours=5 * n + 1)) for n in (2, 5, 8)]
    assert seen == [[], *([(t + 1, hi)] for t in oldest)]
    assert index.coverage.spans() == [(lo, hi)]


async def test_interrupted_span_keeps_what_it_read(index: Index) -> None:
    client = FakeClient(records=history(10), fail_after_pages=2)
    lo, hi = epoch_ms(NOW - timedelta(days=3)), epoch_ms(NOW)
    with pytest.raises(TemporaryFailure):
        await read_span(client, index, lo, hi)
    assert index.stats()["recordings"] == 6  # the pages read are kept...
    r2 = index.get_recording("R2")
    assert r2 is not None  # ...and what the second page vouched for is covered
    assert index.coverage.spans() == [(r2.start_ms + 1, hi)]
    assert index.coverage.gaps(lo, hi) == [(lo, r2.start_ms + 1)]


async def test_stop_after_a_page(index: Index) -> None:
    client = FakeClient(records=history(10))
    lo, hi = epoch_ms(NOW - timedelta(days=3)), epoch_ms(NOW)
    assert not await read_span(client, index, lo, hi, stop=lambda: True)
    assert index.stats()["recordings"] == 3 and not index.coverage.covers(lo, hi)


async def test_a_server_that_does_not_sort_gets_covered_only_at_the_end(index: Index) -> None:
    client = FakeClient(records=history(6))

    async def shuffled(date_from: datetime, date_to: datetime, **_: object):  # type: ignore[no-untyped-def]
        hits = sorted(client.records, key=lambda r: r["startTime"])  # oldest first
        for n in range(0, len(hits), 3):
            yield hits[n:n + 3]

    client.iter_call_log = shuffled  # type: ignore[method-assign]
    lo, hi = epoch_ms(NOW - timedelta(days=3)), epoch_ms(NOW)
    spans: list[list[tuple[int, int]]] = []

    async def on_page(_: object) -> None:
        spans.append(index.coverage.spans())

    await read_span(client, index, lo, hi, on_page=on_page)
    assert spans == [[], []]  # nothing vouched for: the second page broke the order...
    assert index.coverage.spans() == [(lo, hi)]  # ...and the whole span is covered once read


async def test_bad_records_are_skipped_and_logged(
    index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    bad = rec(5, NOW - timedelta(hours=1))
    bad["direction"] = 7
    client = FakeClient(records=[*history(2), bad])
    with caplog.at_level(logging.WARNING, logger="rcfs.indexer"):
        assert await index_all(client, index, NOW - timedelta(days=1)) == 3
    assert index.stats()["recordings"] == 2
    assert any("C5" in r.getMessage() and "direction" in r.getMessage() for r in caplog.records)


async def test_refresh_picks_up_new_and_late_recordings(index: Index) -> None:
    client = FakeClient(records=history(5))
    await index_all(client, index, NOW - timedelta(days=2))
    # A call that reached the log before its recording, then gained it.
    late = rec(50, NOW - timedelta(minutes=30), recording_id=None)
    client.add(late)
    first = await refresh(client, index, now=NOW)
    assert first.new_recordings == 0 and index.stats()["records"] == 5
    client.add(rec(50, NOW - timedelta(minutes=30)))
    client.add(rec(51, NOW + timedelta(minutes=3)))
    later = NOW + timedelta(minutes=5)
    result = await refresh(client, index, now=later)
    assert result.new_recordings == 2
    starts = {index.get_recording(r).start_ms for r in ("R50", "R51")}  # type: ignore[union-attr]
    assert starts <= result.changed_days
    assert client.windows[-1] == (NOW - timedelta(hours=2), later)
    assert index.get_meta(META_LAST_SYNC) == later.isoformat()
    # Nothing changed: nothing to invalidate.
    quiet = await refresh(client, index, now=later + timedelta(minutes=5))
    assert quiet.changed_days == frozenset() and quiet.new_recordings == 0


async def test_refresh_after_a_long_sleep_reads_from_coverage(index: Index) -> None:
    client = FakeClient(records=history(3))
    await index_all(client, index, NOW - timedelta(days=1))
    client.add(rec(70, NOW + timedelta(hours=10)))
    result = await refresh(client, index, now=NOW + timedelta(days=1))
    assert client.windows[-1][0] == NOW - timedelta(hours=2)
    assert result.new_recordings == 1


async def test_sync_deletions_and_stale_token(index: Index) -> None:
    client = FakeClient(records=history(5))
    await index_all(client, index, NOW - timedelta(days=2))
    assert client.syncs == [None]  # FSync at mount: a first token
    token = index.get_meta(META_SYNC_TOKEN)
    assert token is not None
    await refresh(client, index, now=NOW)
    assert client.syncs == [None, token]  # then ISync
    token = index.get_meta(META_SYNC_TOKEN)
    client.changes.append({"id": "C4", "deleted": True, "lastModifiedTime": NOW.isoformat()})
    result = await refresh(client, index, now=NOW)
    assert client.syncs[-1] == token
    r4 = index.get_recording("R4")
    assert r4 is not None and r4.deleted and r4.start_ms in result.changed_days
    client.stale_tokens.add(index.get_meta(META_SYNC_TOKEN) or "")
    client.syncs.clear()
    await refresh(client, index, now=NOW)
    assert client.syncs[0] is not None and client.syncs[1] is None  # refused, then FSync
    assert index.get_meta(META_SYNC_TOKEN) == str(len(client.changes))


async def test_change_to_an_old_call_after_mount_reaches_the_first_refresh(index: Index) -> None:
    """A call that starts before the overlap window but reaches the log after the mount."""
    client = FakeClient(records=history(3))
    await index_all(client, index, NOW - timedelta(days=5))
    late = rec(80, NOW - timedelta(days=3))
    client.add(late)  # also a change the sync feed reports
    result = await refresh(client, index, now=NOW + timedelta(minutes=5))
    assert index.get_recording("R80") is not None
    assert result.new_recordings == 1


async def test_sync_requests_are_bounded(index: Index) -> None:
    client = FakeClient(records=history(1))
    await refresh(client, index, now=NOW)
    client.changes.extend({"id": f"X{n}", "deleted": True}
                          for n in range(ISYNC_PAGE_LIMIT * (MAX_SYNC_REQUESTS + 2)))
    client.syncs.clear()
    await refresh(client, index, now=NOW)
    assert len(client.syncs) == MAX_SYNC_REQUESTS
    client.syncs.clear()
    await refresh(client, index, now=NOW)  # the rest next time
    assert len(client.syncs) == 3


async def test_sync_failure_does_not_fail_refresh(index: Index) -> None:
    class NoSync(FakeClient):
        async def sync_call_log(
            self, sync_token: str | None, *, date_from: datetime | None
        ) -> SyncResult:
            raise ApiError("forbidden", 403, "CMN-401")

    client = NoSync(records=history(2))  # C1 is older than the 2 h overlap
    result = await refresh(client, index, now=NOW)
    assert result.new_recordings == 1 and index.get_recording("R0") is not None
    assert index.get_meta(META_LAST_SYNC) == NOW.isoformat()


async def test_sync_token_older_than_30_days_is_replaced_by_fsync(index: Index) -> None:
    client = FakeClient(records=history(3))
    await refresh(client, index, now=NOW)  # FSync: a token, stamped NOW
    client.syncs.clear()
    await refresh(client, index, now=NOW + timedelta(days=29))
    assert client.syncs[0] is not None  # still young: ISync
    client.syncs.clear()
    await refresh(client, index, now=NOW + timedelta(days=30) + SYNC_WINDOW)
    assert client.syncs[0] is None  # stale: a fresh FSync, no refused request first
