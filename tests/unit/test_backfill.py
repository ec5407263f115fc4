"""Progressive indexing (rcfs.backfill) against a fake call log.

Real time, small delays: index writes run in worker threads, which trio's
autojump clock would jump over.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import trio

from rcfs.api import Priority
from rcfs.backfill import DAY_MS, MAX_PAGES_PER_WINDOW, Backfill
from rcfs.index import Index
from rcfs.indexer import META_LAST_SYNC, META_SYNC_TOKEN
from rcfs.models import epoch_ms

from .calllog_fakes import NOW, FakeClient, history, rec

UTC_ZONE = ZoneInfo("UTC")


def backfill(client: FakeClient, index: Index, days: int = 10, **kw: object) -> Backfill:
    return Backfill(client, index, since=NOW - timedelta(days=days), tz=UTC_ZONE, now=NOW,
                    clock=trio.current_time, **kw)  # type: ignore[arg-type]


async def test_prefill_of_a_small_account_indexes_it_all(index: Index) -> None:
    client = FakeClient(records=history(20), page_size=250)
    bf = backfill(client, index)
    lines: list[str] = []
    await bf.prefill(progress=lines.append)
    assert bf.complete() and index.stats()["recordings"] == 20
    assert client.syncs == [None]  # the sync token first
    assert index.get_meta(META_SYNC_TOKEN) is not None
    assert index.get_meta(META_LAST_SYNC) is not None
    assert len(client.windows) == 1  # one request for the whole (sparse) window
    snap = bf.snapshot()
    assert snap["complete"] and snap["days_indexed"] == snap["days_total"] == 11 and snap["eta_s"] == 0
    assert "11 of 11 days" in lines[-1]


async def test_prefill_stops_at_its_deadline_newest_first(
    index: Index
) -> None:
    # 10 days, a call every hour: 240 calls, pages of 10 that take 0.5 s each.
    client = FakeClient(records=history(240, every=timedelta(hours=1)), page_size=10, page_delay=0.05)
    bf = backfill(client, index)
    await bf.prefill(seconds=0.2)
    assert not bf.complete()
    assert 2 <= client.pages_served <= 6  # stopped after the page that crossed the deadline
    # What is indexed is the newest part, and the newest day is complete.
    assert index.coverage.covers(epoch_ms(NOW) - 12 * 3600_000, epoch_ms(NOW))
    snap = bf.snapshot()
    assert not snap["complete"] and 0 <= snap["days_indexed"] < snap["days_total"]
    assert bf.incomplete_span() == (bf.lo, bf.hi)
    completed: list[bool] = []

    async def on_complete() -> None:
        completed.append(True)

    bf.on_complete = on_complete
    await bf.run()
    assert bf.complete() and completed == [True] and bf.incomplete_span() is None
    assert index.stats()["recordings"] == 240
    assert all(p is Priority.BACKGROUND for p in client.priorities)


async def test_ensure_reads_one_day_at_interactive_priority_once(
    index: Index
) -> None:
    client = FakeClient(records=history(240, every=timedelta(hours=1)), page_size=10, page_delay=0.05)
    bf = backfill(client, index)
    await bf.prefill(seconds=0.01)
    day = epoch_ms(NOW - timedelta(days=8)) // DAY_MS * DAY_MS
    client.windows.clear()
    client.priorities.clear()
    async with trio.open_nursery() as n:
        for _ in range(3):  # three readers of one day share one read
            n.start_soon(bf.ensure, day, day + DAY_MS)
    assert index.coverage.covers(day, day + DAY_MS)
    assert len(client.windows) == 1 and client.priorities == [Priority.INTERACTIVE]
    await bf.ensure(day, day + DAY_MS)  # covered: no request
    assert len(client.windows) == 1
    # Outside the window: nothing to read.
    await bf.ensure(bf.lo - 5 * DAY_MS, bf.lo - 4 * DAY_MS)
    assert len(client.windows) == 1


async def test_remount_reads_only_the_overlap_and_what_is_new(
    tmp_path: Path
) -> None:
    client = FakeClient(records=history(10), page_size=250)
    index = Index(tmp_path / "i.sqlite")
    await backfill(client, index, days=3).prefill()
    index.close()
    client.add(rec(99, NOW + timedelta(hours=1)))
    client.windows.clear()
    client.syncs.clear()
    index = Index(tmp_path / "i.sqlite")  # coverage survives the remount
    try:
        later = Backfill(client, index, since=NOW - timedelta(days=3), tz=UTC_ZONE,
                         now=NOW + timedelta(hours=6), clock=trio.current_time)
        await later.prefill()
        assert later.complete()
        assert client.windows == [(NOW - timedelta(hours=2), NOW + timedelta(hours=6))]
        assert client.syncs == []  # the token is kept
        assert index.get_recording("R99") is not None
    finally:
        index.close()


async def test_an_earlier_since_reads_only_the_older_gap(index: Index) -> None:
    client = FakeClient(records=history(30), page_size=250)
    await backfill(client, index, days=2).prefill()
    client.windows.clear()
    wider = backfill(client, index, days=5)
    await wider.prefill()
    assert wider.complete() and index.stats()["recordings"] == 24
    # The overlap before the newest covered time, then the older gap.
    assert (NOW - timedelta(days=5), NOW - timedelta(days=2)) in client.windows
    assert all(w[0] >= NOW - timedelta(days=5) for w in client.windows)


async def test_an_interrupted_first_mount_resumes_where_it_stopped(
    tmp_path: Path
) -> None:
    client = FakeClient(records=history(60, every=timedelta(hours=3)), page_size=5, fail_after_pages=4)
    index = Index(tmp_path / "i.sqlite")
    bf = backfill(client, index)
    with trio.move_on_after(1):  # the first failure, then its retry delay: unmounted
        await bf.run()
    read = index.stats()["recordings"]
    covered = index.coverage
    index.close()
    assert read == 20 and covered.spans() == [(covered.spans()[0][0], bf.hi)]
    client.fail_after_pages = None
    client.windows.clear()
    index = Index(tmp_path / "i.sqlite")
    try:
        again = backfill(client, index)
        await again.run()
        assert again.complete() and index.stats()["recordings"] == 60
        # Nothing already covered was asked for again.
        assert max(epoch_ms(w[1]) for w in client.windows) == covered.spans()[0][0]
    finally:
        index.close()


async def test_archive_mode_reads_the_oldest_day_second(
    index: Index
) -> None:
    client = FakeClient(records=history(240, every=timedelta(hours=1)), page_size=10, page_delay=0.05)
    bf = backfill(client, index, archive_first=True)
    await bf.prefill(seconds=0.1)
    client.windows.clear()
    async with trio.open_nursery() as n:
        n.start_soon(bf.run)
        while not client.windows:
            await trio.sleep(0.01)
        n.cancel_scope.cancel()
    lo, hi = client.windows[0]
    assert epoch_ms(lo) == bf.lo and epoch_ms(hi) == bf.lo + DAY_MS


async def test_windows_shrink_on_a_dense_account(index: Index) -> None:
    client = FakeClient(records=history(2000, every=timedelta(minutes=7)), page_size=10)
    bf = backfill(client, index, days=10)
    await bf.run()
    assert bf.complete() and index.stats()["recordings"] == 2000
    assert client.pages_served <= 2000 / 10 * 1.2  # a partial last page per window, little more
    assert bf._span_ms < 10 * DAY_MS  # shrunk to the density


async def test_background_failures_are_retried_with_a_status_error(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rcfs.backfill.RETRY_DELAYS", (0.2,))
    client = FakeClient(records=history(10), page_size=250, fail_after_pages=0)
    bf = backfill(client, index)
    async with trio.open_nursery() as n:
        n.start_soon(bf.run)
        await trio.sleep(0.1)
        assert bf.snapshot()["error"] and "connection reset" in bf.snapshot()["error"]
        client.fail_after_pages = None
    assert bf.complete() and bf.snapshot()["error"] is None


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"])
async def test_days_are_counted_in_the_mount_zone(index: Index, zone: str) -> None:
    client = FakeClient(records=[], page_size=250)
    bf = Backfill(client, index, since=NOW - timedelta(days=3), tz=ZoneInfo(zone), now=NOW)
    snap = bf.snapshot()
    assert snap["days_indexed"] == 0 and snap["days_total"] in (4, 5)
    await bf.prefill()
    assert bf.snapshot()["days_indexed"] == bf.snapshot()["days_total"]


def test_page_limit_is_sane() -> None:
    assert 4 <= MAX_PAGES_PER_WINDOW <= 50


async def test_a_wav_account_is_learned_before_anything_is_named(tmp_path: Path) -> None:
    from rcfs.naming import file_name

    client = FakeClient(records=history(5), page_size=250, content_type="audio/wav")
    index = Index(tmp_path / "i.sqlite")
    try:
        bf = backfill(client, index)
        await bf.prefill()
        assert client.metadata_reads == ["R0"]  # one Heavy request: the newest recording
        assert index.default_content_type == "audio/wav"
        r0 = index.get_recording("R0")
        assert r0 is not None and file_name(r0.recording, UTC_ZONE).endswith(".wav")
        assert r0.size == 44 + r0.recording.duration * 16_000  # WAV, not 32 kbit/s
        index.upsert_records([rec(50, NOW - timedelta(minutes=5))])  # new ones too
        r50 = index.get_recording("R50")
        assert r50 is not None and file_name(r50.recording, UTC_ZONE).endswith(".wav")
    finally:
        index.close()
    index = Index(tmp_path / "i.sqlite")  # a remount within a week asks nothing
    try:
        assert index.default_content_type == "audio/wav"
        await backfill(client, index).prefill()
        assert client.metadata_reads == ["R0"]
    finally:
        index.close()


async def test_an_mp3_account_keeps_mp3_names(index: Index) -> None:
    from rcfs.naming import file_name

    client = FakeClient(records=history(3), page_size=250)
    await backfill(client, index).prefill()
    r0 = index.get_recording("R0")
    assert r0 is not None and file_name(r0.recording, UTC_ZONE).endswith(".mp3")
    assert r0.size == r0.recording.duration * 4000
