"""Bookkeeping without scans: idle descriptors, batched recency, exact key set,
group commits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from rcfs.content import ContentManager, ContentRef, bookkeeping
from rcfs.content.store import Store, ToCommit
from rcfs.errors import TemporaryFailure

from .content_fakes import FakeSource, Plan, payload, read_all, running

URI = "https://media.example/restapi/v1.0/account/~/recording/{}/content"
SIZE = 20_000


def add(source: FakeSource, rid: str, size: int = SIZE) -> ContentRef:
    return source.add(rid, URI.format(rid), Plan(data=payload(size, seed=int(rid)), chunk=size))


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[Any]:
    calls: list[Any] = []
    real: Callable[..., Any] = getattr(obj, name)

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(obj, name, counting)
    return calls


def db_keys(manager: ContentManager) -> set[str]:
    return set(manager._store.cache.iterkeys())


def access_time(store: Store, rid: str) -> float:
    row = store.cache._sql("SELECT access_time FROM Cache WHERE key = ?", (rid,)).fetchone()
    return float(row[0])


async def open_read_release(manager: ContentManager, ref: ContentRef, size: int = SIZE) -> None:
    info = await manager.open(ref)
    assert info.complete and info.size == size
    data = await read_all(manager, ref.recording_id, size)
    assert len(data) == size
    manager.release(ref.recording_id)


async def test_reopen_after_release_stays_on_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource()
    ref = add(source, "1")
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
        async with running(tmp_path, FakeSource()) as (manager, _):  # a remount
            lookups = count_calls(monkeypatch, manager._store, "lookup")
            await open_read_release(manager, ref)
            assert len(lookups) == 1
            hops = count_calls(monkeypatch, trio.to_thread, "run_sync")
            for _ in range(3):
                await open_read_release(manager, ref)
            assert (len(lookups), hops) == (1, [])
            assert manager.snapshot()["cache"]["hits"] == 4


async def test_download_read_to_the_end_is_parked_on_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource()
    ref = add(source, "2")
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            await read_all(manager, "2", SIZE)
            await manager.prefetch(ref)  # waits for the commit
            manager.release("2")
            lookups = count_calls(monkeypatch, manager._store, "lookup")
            await open_read_release(manager, ref)
            assert lookups == [] and len(source.calls) == 1


async def test_idle_lru_overflow_closes_the_oldest_descriptor(tmp_path: Path) -> None:
    source = FakeSource()
    refs = [add(source, str(i)) for i in range(10, 13)]
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            manager.idle_limit = 2
            for ref in refs:
                await manager.prefetch(ref)
                await open_read_release(manager, ref)
            fd_10 = manager._idle["11"][0]
            assert list(manager._idle) == ["11", "12"]  # "10" was closed
            await open_read_release(manager, refs[0])  # by a lookup, then parked
            assert list(manager._idle) == ["12", "10"]
            assert fd_10._refs == 0  # "11" fell out, closed
            with pytest.raises(OSError):
                os.fstat(fd_10.fd)  # (its number is not reused in between)
        assert manager._idle == {}  # aclose closes the rest


async def test_evicted_recording_is_unparked_closed_and_not_cached(tmp_path: Path) -> None:
    size = 100_000
    source = FakeSource()
    refs = {rid: add(source, rid, size) for rid in ("21", "22", "23")}
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            base = manager.snapshot()["cache"]["bytes"]
        async with running(tmp_path, source, size_limit=base + 2 * size + 50_000) as (manager, _):
            for rid in ("21", "22"):
                await manager.prefetch(refs[rid])
                await open_read_release(manager, refs[rid], size)
            parked = manager._idle["21"][0]
            await manager.prefetch(refs["23"])  # evicts "21", least recently opened
            assert not manager.is_cached("21") and "21" not in manager._idle
            assert parked._refs == 0
            assert manager.is_cached("22") and "22" in manager._idle
            assert len(list((tmp_path / "cache").rglob("*.val"))) == 2
            info = await manager.open(refs["21"])  # downloaded again, not the stale fd
            assert not info.complete
            manager.release("21")


async def test_key_set_and_volume_stay_exact_across_evictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 30_000
    source = FakeSource()
    refs = [add(source, str(100 + i), size) for i in range(24)]
    with trio.fail_after(20):
        async with running(tmp_path, source) as (manager, _):
            base = manager.snapshot()["cache"]["bytes"]
        async with running(tmp_path, source, size_limit=base + 5 * size + 20_000) as (manager, _):
            scans = count_calls(monkeypatch, manager._store, "scan")
            for batch in (refs[:8], refs[8:9], refs[9:20], refs[20:]):
                async with trio.open_nursery() as nursery:
                    for ref in batch:
                        nursery.start_soon(manager.prefetch, ref)
                if batch is refs[8:9]:
                    await open_read_release(manager, refs[3], size)  # reopened: recency
                assert manager._book.keys == db_keys(manager)
                snap = manager.snapshot()["cache"]
                assert snap["entries"] == len(db_keys(manager)) >= 4
                assert snap["bytes"] == manager._store.cache.volume() <= snap["limit"]
                assert set(manager._idle) <= manager._book.keys
            await manager.archive([refs[-1].recording_id])
            assert manager._book.keys == db_keys(manager)
            assert manager.snapshot()["cache"]["bytes"] == manager._store.cache.volume()
            assert scans == []


async def test_archive_and_prune_close_parked_descriptors(tmp_path: Path) -> None:
    source = FakeSource()
    ref = add(source, "31")
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
            await open_read_release(manager, ref)
            parked = manager._idle["31"][0]
            assert await manager.archive(["31"]) == ({"31"}, set())
            assert parked._refs == 0 and "31" not in manager._idle
            await open_read_release(manager, ref)  # from the archive, parked again
            parked = manager._idle["31"][0]
            assert await manager.prune_archive(["31"]) == (1, SIZE)
            assert parked._refs == 0 and not manager.is_cached("31")


@pytest.mark.parametrize("damage", ["truncated", "removed"])
async def test_parked_file_changed_behind_our_back_is_fetched_again(
    tmp_path: Path, damage: str
) -> None:
    """Not served from the parked descriptor of a truncated or removed file: its row
    is dropped (nothing counts it as cached) and the next open downloads it again."""
    source = FakeSource()
    ref = add(source, "42")
    data = source.plans[ref.content_uri].data
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
            await open_read_release(manager, ref)
            assert "42" in manager._idle
            (val,) = (tmp_path / "cache").rglob("*.val")
            if damage == "truncated":
                os.truncate(val, 1000)
            else:
                val.unlink()
            info = await manager.open(ref)
            assert not info.complete
            assert "42" not in db_keys(manager)  # the row is gone at once
            assert await read_all(manager, "42", SIZE) == data
            manager.release("42")
            assert len(source.calls) == 2


async def test_recency_of_idle_opens_reaches_diskcache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bookkeeping, "_TOUCH_DELAY", 0.01)
    source = FakeSource()
    refs = [add(source, "51"), add(source, "52")]
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            for ref in refs:
                await manager.prefetch(ref)
            store = manager._store
            before = access_time(store, "51")
            await open_read_release(manager, refs[0])
            while access_time(store, "51") == before:  # the background writer
                await trio.sleep(0.01)
            assert manager._book.touched == {}
            t51 = access_time(store, "51")
            monkeypatch.setattr(bookkeeping, "_TOUCH_DELAY", 3600)
            await trio.sleep(0.05)  # the writer is idle again
            await open_read_release(manager, refs[0])  # from the idle LRU: pending
            assert set(manager._book.touched) == {"51"} and access_time(store, "51") == t51
        # aclose writes what is pending.
        store = Store(tmp_path, 1 << 30)
        try:
            assert access_time(store, "51") > t51
        finally:
            store.close()


async def test_group_commit_commits_each_recording_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FakeSource()
    refs = [add(source, str(60 + i)) for i in range(12)]
    commits = count_calls(monkeypatch, Store, "commit")
    real_one = Store._commit_one

    def failing_one(self: Store, item: ToCommit) -> None:
        if item.recording_id == "65":
            raise OSError(5, "Input/output error")
        real_one(self, item)

    monkeypatch.setattr(Store, "_commit_one", failing_one)
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            results: dict[str, Exception | None] = {}

            async def fetch(ref: ContentRef) -> None:
                try:
                    await manager.prefetch(ref)
                    results[ref.recording_id] = None
                except Exception as exc:
                    results[ref.recording_id] = exc

            async with trio.open_nursery() as nursery:
                for ref in refs:
                    nursery.start_soon(fetch, ref)
            assert len(commits) < len(refs)  # batched: fewer thread hops
            assert sum(len(args[1]) for args in commits) == len(refs)
            assert [rid for rid, exc in results.items() if exc is not None] == ["65"]
            assert manager._book.keys == db_keys(manager) == {r.recording_id for r in refs} - {"65"}
            snap = manager.snapshot()["downloads"]
            assert (snap["done"], snap["failed"]) == (11, 1)
        async with running(tmp_path, FakeSource()) as (manager, _):
            assert manager._book.keys == {r.recording_id for r in refs} - {"65"}



async def _queue_two_commits_then_cancel_71(
    tmp_path: Path, *, commit_by_now: bool
) -> tuple[dict[str, Exception], Any]:
    """Two complete downloads queued behind a running commit; 71's download is
    cancelled (as aclose does), with its commit out of time or not."""
    source = FakeSource()
    refs = [add(source, "71"), add(source, "72")]
    errors: dict[str, Exception] = {}

    async def fetch(manager: ContentManager, ref: ContentRef) -> None:
        try:
            await manager.prefetch(ref)
        except TemporaryFailure as exc:
            errors[ref.recording_id] = exc

    async with running(tmp_path, source) as (manager, _), trio.open_nursery() as nursery, \
            manager._book.lock:  # a commit runs
        for ref in refs:
            nursery.start_soon(fetch, manager, ref)
        while len(manager._book.queue) < 2:
            await trio.sleep(0.005)
        (item_71,) = [i for i in manager._book.queue if i.recording_id == "71"]
        download = manager._inflight["71"]
        download.cancel_scope.cancel()
        if commit_by_now:
            download.commit_scope.deadline = trio.current_time()
            while len(manager._book.queue) > 1:  # it leaves the queue
                await trio.sleep(0.005)
            assert item_71.fd._refs == 0 and not item_71.done
        else:
            await trio.sleep(0.05)
            assert item_71 in manager._book.queue  # still waiting to commit
    return errors, item_71


def cache_keys(cache_dir: Path) -> set[str]:
    store = Store(cache_dir, size_limit=1 << 30)
    try:
        return {k for k in store.cache.iterkeys() if isinstance(k, str)}
    finally:
        store.close()


async def test_complete_download_cancelled_while_queued_for_commit_still_commits(
    tmp_path: Path,
) -> None:
    """An unmount right after a burst of reads: the downloads that had every byte
    are committed, not fetched again by the next mount."""
    with trio.fail_after(10):
        errors, item_71 = await _queue_two_commits_then_cancel_71(tmp_path, commit_by_now=False)
    assert errors == {} and item_71.done
    assert cache_keys(tmp_path) == {"71", "72"}
    assert list((tmp_path / "partial").rglob("*.part")) == []


async def test_download_cancelled_while_queued_for_commit_out_of_time_leaves_nothing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(10):
        errors, _ = await _queue_two_commits_then_cancel_71(tmp_path, commit_by_now=True)
    assert list(errors) == ["71"] and "not committed" in str(errors["71"])
    assert cache_keys(tmp_path) == {"72"}
    assert list((tmp_path / "partial").rglob("*.part")) == []
