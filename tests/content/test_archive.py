"""The archive: recordings deleted upstream leave LRU eviction, survive restarts
and crashes mid-move, and go only when pruned."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from rcfs.content import ContentManager, ContentRef
from rcfs.content.store import ARCHIVE_SUBDIR, Store
from rcfs.errors import NotFound

from .content_fakes import FakeSource, Plan, payload, read_all, running

URI = "https://media.example/restapi/v1.0/account/~/recording/{}/content"


def add(source: FakeSource, rid: str, size: int = 50_000) -> ContentRef:
    return source.add(rid, URI.format(rid), Plan(data=payload(size, seed=int(rid))))


async def test_archived_recording_outlives_eviction_and_restarts(tmp_path: Path) -> None:
    size = 100_000
    source = FakeSource()
    refs = {rid: add(source, rid, size) for rid in ("1", "2", "3")}
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            base = manager.snapshot()["cache"]["bytes"]
        async with running(tmp_path, source, size_limit=base + size + 50_000) as (manager, _):
            await manager.prefetch(refs["1"])
            assert await manager.archive(["1", "nope"]) == ({"1"}, set())
            assert await manager.archive(["1"]) == ({"1"}, set())  # idempotent
            # Room for one recording in the LRU cache: two more come and go,
            # the archived one stays.
            await manager.prefetch(refs["2"])
            await manager.prefetch(refs["3"])
            assert manager.is_cached("1") and manager.is_archived("1")
            assert not manager.is_cached("2")
            snap = manager.snapshot()["cache"]
            assert snap["archived"] == 1 and snap["archived_bytes"] == size
            assert snap["entries"] == 1  # the archive is not in the LRU cache
        offline = FakeSource()
        async with running(tmp_path, offline) as (manager, _):
            info = await manager.open(refs["1"])
            assert info.complete and info.size == size
            assert await read_all(manager, "1", size) == source.plans[URI.format("1")].data
            manager.release("1")
            assert offline.calls == []
            assert await manager.prune_archive(["1"]) == (1, size)
            assert not manager.is_cached("1")
            assert manager.snapshot()["cache"]["archived"] == 0


async def test_archive_move_interrupted_by_a_crash_is_finished(tmp_path: Path) -> None:
    source = FakeSource()
    ref = add(source, "5")
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
    # Crash after the link and rename, before the diskcache entry was deleted:
    # the bytes are in both places.
    store = Store(tmp_path, 1 << 30)
    try:
        handle = store.cache.get("5", read=True)
        with handle:
            os.link(handle.name, store.archive_dir / "5")
        os.link(handle.name, store.archive_dir / "6.tmp")  # and a half-made move
    finally:
        store.close()
    with trio.fail_after(10):
        async with running(tmp_path, FakeSource()) as (manager, _):
            assert not (tmp_path / ARCHIVE_SUBDIR / "6.tmp").exists()
            assert manager.is_archived("5") and manager.snapshot()["cache"]["entries"] == 1
            assert await manager.archive(["5"]) == ({"5"}, set())
            assert manager.snapshot()["cache"]["entries"] == 0
            data = source.plans[URI.format("5")].data
            await manager.open(ref)
            assert await read_all(manager, "5", len(data)) == data
            manager.release("5")


async def test_a_404_reports_the_recording_gone(tmp_path: Path) -> None:
    source = FakeSource()
    ref = source.add("9", URI.format("9"), Plan(data=b"x", not_found=True))
    gone: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            manager = await ContentManager.create(
                cache_dir=tmp_path,
                size_limit=1 << 30,
                client=source,
                nursery=nursery,
                on_exact_size=lambda rid, size, **_: None,
                on_gone=gone.append,
            )
            try:
                with pytest.raises(NotFound):
                    await manager.prefetch(ref)
                await trio.sleep(0.01)
                assert gone == ["9"]
            finally:
                await manager.aclose()
