"""A fake call-log client for the indexer and backfill tests: call log by date window
(newest first, paged) and FSync/ISync over a change log, recording what was asked."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from rcfs.api import Priority, PriorityLike, Urgency
from rcfs.errors import ApiError, TemporaryFailure
from rcfs.indexer import ISYNC_PAGE_LIMIT
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
    records: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 3
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    priorities: list[Priority] = field(default_factory=list)
    syncs: list[str | None] = field(default_factory=list)
    stale_tokens: set[str] = field(default_factory=set)
    fail_after_pages: int | None = None
    page_delay: float = 0.0
    pages_served: int = 0
    content_type: str = "audio/mpeg"  # the account's recording format (readCallRecording)
    metadata_reads: list[str] = field(default_factory=list)

    async def recording_info(self, recording_id: str, *, priority: PriorityLike = Priority.INTERACTIVE
                             ) -> dict[str, Any]:
        self.metadata_reads.append(recording_id)
        await trio.sleep(0)
        return {"id": recording_id, "contentType": self.content_type, "duration": 60}

    def add(self, record: dict[str, Any]) -> None:
        self.records = [r for r in self.records if r["id"] != record["id"]] + [record]
        self.changes.append(record)

    async def iter_call_log(
        self, date_from: datetime, date_to: datetime, *, priority: PriorityLike = Priority.BACKGROUND
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        self.windows.append((date_from, date_to))
        self.priorities.append(priority.priority if isinstance(priority, Urgency) else priority)
        hits = [r for r in self.records
                if date_from <= parse_time(r["startTime"], "") <= date_to]
        hits.sort(key=lambda r: r["startTime"], reverse=True)
        for n in range(0, max(1, len(hits)), self.page_size):
            if self.fail_after_pages is not None and n // self.page_size >= self.fail_after_pages:
                raise TemporaryFailure("connection reset")
            await trio.sleep(self.page_delay)
            self.pages_served += 1
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


def history(count: int, end: datetime = NOW, every: timedelta = timedelta(hours=5)) -> list[dict[str, Any]]:
    """`count` recorded calls, the newest 1 h before `end`, then one every `every`."""
    return [rec(n, end - every * n - timedelta(hours=1)) for n in range(count)]
