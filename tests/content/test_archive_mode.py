"""Archive mode: permanent commits, and the Archiver's order, figures and priorities
over a real index and ContentManager with a fake content source."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from rcfs.api import Priority, Urgency
from rcfs.archive import Archiver, _at_risk, summary_line
from rcfs.content import BULK, INTERACTIVE, ContentManager, ContentRef
from rcfs.errors import CacheFull
from rcfs.index import Index
from rcfs.status import ErrorLog
from tests.unit.rcfs_records import MEDIA, make_record

from .content_fakes import FakeSource, Plan, payload, running

DAY = 86_400_000


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(tmp_path / "index.sqlite")
    try:
        yield idx
    finally:
        idx.close()


def uri(rid: str) -> str:
    return f"{MEDIA}/recording/{rid}/content"


def fill(index: Index, source: FakeSource, n: int, *, days_ago: float = 10) -> list[str]:
    """n recordings a day apart, the oldest `days_ago` days back; their content in `source`."""
    now = datetime.now(UTC)
    records, ids = [], []
    for i in range(n):
        rid = f"R{i:03d}"
        start = now - timedelta(days=days_ago - i)
        records.append(make_record(f"C{i}", start.isoformat().replace("+00:00", "Z"), recording_id=rid))
        source.add(rid, uri(rid), Plan(payload(2000 + i, seed=i)))
        ids.append(rid)
    index.upsert_records(records)
    return ids


@asynccontextmanager
async def archive_mount(
    tmp_path: Path, source: FakeSource, index: Index, *, enabled: bool = True, **kw: object
) -> AsyncIterator[tuple[Archiver, ContentManager]]:
    archiver: Archiver | None = None

    def stored(ids: list[str]) -> None:
        assert archiver is not None
        archiver.stored(ids)

    async with trio.open_nursery() as nursery:
        content = await ContentManager.create(
            cache_dir=tmp_path / "cache", size_limit=1 << 30, client=source, nursery=nursery,
            on_exact_size=lambda rid, size, **_: None, permanent=enabled, on_stored=stored)
        archiver = Archiver(index, content, ErrorLog(), enabled=enabled, **kw)  # type: ignore[arg-type]
        await nursery.start(archiver.run)
        try:
            yield archiver, content
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await content.aclose()


async def wait_until(cond: object, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_permanent_commits_go_to_the_archive_store(tmp_path: Path) -> None:
    source = FakeSource()
    ref = source.add("R1", uri("R1"), Plan(payload(5000)))
    stored: list[list[str]] = []
    async with trio.open_nursery() as nursery:
        manager = await ContentManager.create(
            cache_dir=tmp_path, size_limit=1000, client=source, nursery=nursery,
            on_exact_size=lambda rid, size, **_: None, permanent=True, on_stored=stored.append)
        before = manager.snapshot()["cache"]["bytes"]
        await manager.prefetch(ref, BULK)
        snap = manager.snapshot()["cache"]
        assert manager.is_archived("R1") and stored == [["R1"]]
        assert snap["bytes"] == before and snap["entries"] == 0  # not in the LRU cache, not counted
        assert snap["archived"] == 1 and snap["archived_bytes"] == 5000
        await manager.aclose()
    assert (tmp_path / "archive" / "R1").read_bytes() == payload(5000)
    async with running(tmp_path, source, size_limit=1) as (manager, _):  # a later mount
        assert manager.is_archived("R1")
        info = await manager.open(ref)
        assert info.complete and info.size == 5000 and len(source.calls) == 1


async def test_archiver_takes_the_oldest_first_at_bulk_priority(tmp_path: Path, index: Index) -> None:
    source = FakeSource()
    ids = fill(index, source, 12)
    async with archive_mount(tmp_path, source, index, workers=1) as (archiver, _):
        await wait_until(lambda: archiver.snapshot()["pending"] == 0 and not archiver._to_flag)
        snap = archiver.snapshot()
    assert [c[0] for c in source.calls] == [uri(r) for r in ids]  # oldest first
    assert all(c[2] is Priority.BULK for c in source.calls)
    assert snap["done"] == 12 and snap["pending"] == 0 and snap["lost"] == 0
    assert snap["bytes"] == sum(2000 + i for i in range(12))
    assert snap["downloaded"] == 12 and snap["oldest_pending_start"] is None
    assert all(index.get_recording(r).stored for r in ids)  # type: ignore[union-attr]
    assert index.oldest_pending(5) == []


async def test_new_recordings_wake_the_archive(tmp_path: Path, index: Index) -> None:
    source = FakeSource()
    fill(index, source, 2)
    async with archive_mount(tmp_path, source, index) as (archiver, _):
        await wait_until(lambda: archiver.snapshot()["done"] == 2)
        index.upsert_records([make_record("C9", "2026-11-30T10:00:00Z", recording_id="R9")])
        source.add("R9", uri("R9"), Plan(payload(100)))
        archiver.notify()
        await wait_until(lambda: archiver.snapshot()["done"] == 3)


async def test_lru_cached_recordings_are_moved_without_a_request(tmp_path: Path, index: Index) -> None:
    source = FakeSource()
    ids = fill(index, source, 3)
    async with running(tmp_path / "cache", source) as (manager, _):  # an earlier, plain mount
        for rid in ids:
            await manager.prefetch(ContentRef(rid, uri(rid)))
    before = len(source.calls)
    async with archive_mount(tmp_path, source, index) as (archiver, content):
        await wait_until(lambda: archiver.snapshot()["done"] == 3)
        assert all(content.is_archived(r) for r in ids)
    assert len(source.calls) == before


async def test_a_reader_raises_the_archive_download_to_interactive(tmp_path: Path, index: Index) -> None:
    source = FakeSource()
    fill(index, source, 1)
    gate = source.plans[uri("R000")].headers_gate = trio.Event()
    async with archive_mount(tmp_path, source, index) as (_, content):
        await wait_until(lambda: bool(source.calls))
        urgency = source.urgencies[0]
        assert isinstance(urgency, Urgency) and urgency.priority is Priority.BULK
        async with trio.open_nursery() as n:
            n.start_soon(content.open, ContentRef("R000", uri("R000")))
            await wait_until(lambda: urgency.priority is INTERACTIVE)
            gate.set()
        assert len(source.calls) == 1  # one download, shared
        content.release("R000")


async def test_failures_are_retried_later_and_404s_are_not(tmp_path: Path, index: Index) -> None:
    source = FakeSource()
    ids = fill(index, source, 3)
    source.plans[uri(ids[0])].not_found = True
    source.plans[uri(ids[1])].fail_always_at = 10
    async with archive_mount(tmp_path, source, index, workers=1) as (archiver, _):
        await wait_until(lambda: archiver.snapshot()["done"] == 1)
        snap = archiver.snapshot()
        assert snap["failed"] == 2 and snap["pending"] == 2
        assert ids[1] in archiver._retry and ids[0] in archiver._retry
        calls = len(source.calls)
        await trio.sleep(0.3)
        assert len(source.calls) == calls  # nothing hammered


async def test_a_full_disk_pauses_with_an_error(tmp_path: Path, index: Index, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    source = FakeSource()
    fill(index, source, 2)
    errors: list[str] = []

    async def full(self: ContentManager, ref: ContentRef, priority: int = 0) -> None:
        errors.append(ref.recording_id)
        raise CacheFull("No space left on device")

    monkeypatch.setattr(ContentManager, "prefetch", full)
    async with archive_mount(tmp_path, source, index, workers=1) as (archiver, _):
        await wait_until(lambda: archiver.snapshot()["error"] is not None)
        assert "disk full" in archiver.snapshot()["error"]
        assert "disk full" in summary_line(archiver.snapshot())
        await trio.sleep(0.2)
        assert len(errors) == 1  # paused, not spinning


async def test_at_risk_and_summary(tmp_path: Path, index: Index) -> None:
    now = 100 * DAY
    starts = [now - 89 * DAY - DAY // 2, now - 60 * DAY, now - 1 * DAY]
    # One a day: the first is deleted in half a day but reached in one: at risk; the others not.
    assert _at_risk(starts, now, 90 * DAY, 1 / DAY) == 1
    assert _at_risk(starts, now, 90 * DAY, 0.0) == 3
    assert _at_risk([], now, 90 * DAY, 0.0) == 0
    source = FakeSource()
    fill(index, source, 2, days_ago=100)  # already older than the retention
    async with archive_mount(tmp_path, source, index, enabled=False) as (archiver, _):
        snap = archiver.snapshot()
        assert not snap["enabled"] and snap["at_risk"] is None and snap["pending"] == 2
        assert summary_line(snap).startswith("off")
    assert not source.calls  # disabled: no downloads
    async with archive_mount(tmp_path, source, index, budget_per_min=lambda: 1e-9) as (archiver, _):
        assert archiver.snapshot()["at_risk"] == 2  # before any download: the budget's estimate
    assert os.path.isdir(tmp_path / "cache" / "archive")
