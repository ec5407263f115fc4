from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from rcfs.errors import ApiError, TemporaryFailure
from rcfs.index import Index
from rcfs.indexer import (
    ISYNC_PAGE_LIMIT,
    MAX_SYNC_REQUESTS,
    META_COVERED_FROM,
    META_COVERED_TO,
    META_LAST_SYNC,
    META_SYNC_TOKEN,
    SYNC_WINDOW,
    index_window,
    refresh,
)
from rcfs.models import parse_time

from .rcfs_records import make_record

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@dataclass
class SyncResult:
    records: list[dict[str, Any]]
    sync_token: str
    sync_time: str | None
    full: bool


@dataclass
class FakeClient:
    """Call log by date window (newest first, paged) and FSync/ISync over a change log."""

    records: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 3
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    syncs: list[str | None] = field(default_factory=list)
    stale_tokens: set[str] = field(default_factory=set)
    fail_after_pages: int | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.records = [r for r in self.records if r["id"] != record["id"]] + [record]
        self.changes.append(record)

    async def iter_call_log(
        self, date_from: datetime, date_to: datetime
    ) -> AsyncIterator[list[dict[str, Any]]]:
        self.windows.append((date_from, date_to))
        hits = [r for r in self.records
                if date_from <= parse_time(r["startTime"], "") <= date_to]
        hits.sort(key=lambda r: r["startTime"], reverse=True)
        for n in range(0, len(hits), self.page_size):
            if self.fail_after_pages is not None and n // self.page_size >= self.fail_after_pages:
                raise TemporaryFailure("connection reset")
            await trio.sleep(0)
            yield hits[n:n + self.page_size]

    async def sync_call_log(
        self, sync_token: str | None, *, date_from: datetime | None
    ) -> SyncResult:
        self.syncs.append(sync_token)
        await trio.sleep(0)
        if sync_token is None:
            assert date_from is not None
            recs = [r for r in self.records if parse_time(r["startTime"], "") >= date_from]
            return SyncResult(recs, str(len(self.changes)), None, True)
        if sync_token in self.stale_tokens:
            raise ApiError("sync token expired", 400, "CLG-101")
        pos = int(sync_token)
        batch = self.changes[pos:pos + ISYNC_PAGE_LIMIT]
        return SyncResult(batch, str(pos + len(batch)), None, False)


def rec(n: int, at: datetime, **kw: Any) -> dict[str, Any]:
    return make_record(f"C{n}", at.isoformat().replace("+00:00", "Z"),
                       recording_id=kw.pop("recording_id", f"R{n}"), **kw)


def history(count: int, end: datetime = NOW) -> list[dict[str, Any]]:
    return [rec(n, end - timedelta(hours=5 * n + 1)) for n in range(count)]


async def test_initial_window_indexes_everything(index: Index) -> None:
    client = FakeClient(records=history(10))
    seen: list[int] = []
    count = await index_window(client, index, NOW - timedelta(days=3), NOW, progress=seen.append)
    assert count == 10 and seen == [3, 6, 9, 10]
    assert index.stats()["recordings"] == 10
    assert client.windows == [(NOW - timedelta(days=3), NOW)]
    assert index.get_meta(META_COVERED_FROM) == (NOW - timedelta(days=3)).isoformat()
    assert index.get_meta(META_COVERED_TO) == NOW.isoformat()


async def test_remount_reads_only_the_new_part(index: Index) -> None:
    client = FakeClient(records=history(10))
    since = NOW - timedelta(days=3)
    await index_window(client, index, since, NOW, progress=None)
    later = NOW + timedelta(hours=6)
    client.add(rec(99, NOW + timedelta(hours=1)))
    client.windows.clear()
    count = await index_window(client, index, since, later, progress=None)
    assert client.windows == [(NOW - timedelta(hours=2), later)]
    assert count == 2  # the overlap's C0 (1 h before NOW) and the new C99
    assert index.get_recording("R99") is not None
    assert index.get_meta(META_COVERED_TO) == later.isoformat()


async def test_earlier_since_reads_the_gap_too(index: Index) -> None:
    client = FakeClient(records=history(30))
    await index_window(client, index, NOW - timedelta(days=2), NOW, progress=None)
    client.windows.clear()
    await index_window(client, index, NOW - timedelta(days=5), NOW, progress=None)
    assert client.windows == [
        (NOW - timedelta(days=5), NOW - timedelta(days=2)),
        (NOW - timedelta(hours=2), NOW),
    ]
    assert index.stats()["recordings"] == 24
    assert index.get_meta(META_COVERED_FROM) == (NOW - timedelta(days=5)).isoformat()


async def test_interrupted_window_is_not_recorded_as_covered(index: Index) -> None:
    client = FakeClient(records=history(10), fail_after_pages=2)
    with pytest.raises(TemporaryFailure):
        await index_window(client, index, NOW - timedelta(days=3), NOW, progress=None)
    assert index.stats()["recordings"] == 6  # the pages read are kept
    assert index.get_meta(META_COVERED_TO) is None
    client.fail_after_pages = None
    client.windows.clear()
    await index_window(client, index, NOW - timedelta(days=3), NOW, progress=None)
    assert client.windows == [(NOW - timedelta(days=3), NOW)]
    assert index.stats()["recordings"] == 10


async def test_bad_records_are_skipped_and_logged(
    index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    bad = rec(5, NOW - timedelta(hours=1))
    bad["direction"] = 7
    client = FakeClient(records=[*history(2), bad])
    with caplog.at_level(logging.WARNING, logger="rcfs.indexer"):
        assert await index_window(client, index, NOW - timedelta(days=1), NOW) == 3
    assert index.stats()["recordings"] == 2
    assert any("C5" in r.getMessage() and "direction" in r.getMessage() for r in caplog.records)


async def test_refresh_picks_up_new_and_late_recordings(index: Index) -> None:
    client = FakeClient(records=history(5))
    await index_window(client, index, NOW - timedelta(days=2), NOW)
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
    await index_window(client, index, NOW - timedelta(days=1), NOW)
    client.add(rec(70, NOW + timedelta(hours=10)))
    result = await refresh(client, index, now=NOW + timedelta(days=1))
    assert client.windows[-1][0] == NOW - timedelta(hours=2)
    assert result.new_recordings == 1


async def test_sync_deletions_and_stale_token(index: Index) -> None:
    client = FakeClient(records=history(5))
    await index_window(client, index, NOW - timedelta(days=2), NOW)
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
    await index_window(client, index, NOW - timedelta(days=5), NOW)
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


async def test_initial_index_sets_last_sync(index: Index) -> None:
    client = FakeClient(records=history(3))
    await index_window(client, index, NOW - timedelta(days=3), NOW, progress=None)
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
