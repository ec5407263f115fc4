"""The on-disk cache: persistence, crash safety, eviction, full disk, modes."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest
import trio

from rcfs.api import Priority
from rcfs.content import ContentRef, download
from rcfs.content.layout import LOCK_NAME, PARTIAL_SUBDIR, SPARE_SUFFIX, SPARES
from rcfs.errors import CacheFull, TemporaryFailure

from .content_fakes import FakeSource, Plan, payload, read_all, running

URI = "https://media.example/restapi/v1.0/account/~/recording/{}/content"


def recording(source: FakeSource, rid: str, size: int = 20_000, **kw: object) -> ContentRef:
    return source.add(rid, URI.format(rid), Plan(data=payload(size, seed=int(rid)), **kw))  # type: ignore[arg-type]


def part_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / PARTIAL_SUBDIR).rglob("*.part"))


async def test_cache_persists_across_instances(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, "7")
    data = source.plans[ref.content_uri].data
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
            assert source.calls == [(ref.content_uri, 0, Priority.BACKGROUND)]
        offline = FakeSource()  # knows no recording: any request would fail
        async with running(tmp_path, offline) as (manager, sizes):
            assert manager.is_cached("7")
            info = await manager.open(ref)
            assert info.complete and info.size == len(data)
            assert sizes == [("7", len(data))]  # size_hint was None: reported
            assert await read_all(manager, "7", len(data)) == data
            assert await manager.read("7", len(data), 10) == b""
            assert offline.calls == []
            snap = manager.snapshot()["cache"]
            assert (snap["hits"], snap["misses"], snap["entries"]) == (1, 0, 1)
            assert snap["bytes"] >= len(data)
            # A second open of an open, complete file does not reach diskcache again.
            info2 = await manager.open(ContentRef("7", ref.content_uri, size_hint=len(data)))
            assert info2.complete and sizes == [("7", len(data))]
            manager.release("7")
            manager.release("7")


async def test_cancelled_download_is_never_served(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, "8", gate_at=9000)
    errors: list[Exception] = []
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            assert len(await manager.read("8", 0, 9000)) == 9000
            assert len(part_files(tmp_path)) == 1

            async def waiting_reader() -> None:
                try:
                    await manager.read("8", 9000, 1000)
                except TemporaryFailure as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting_reader)
                await trio.sleep(0.05)
                await manager.aclose()  # mid-download
        assert len(errors) == 1  # the waiting reader got an error, not a hang
        assert part_files(tmp_path) == []
        source.plans[ref.content_uri].gate.set()
        async with running(tmp_path, source) as (manager, _):
            assert not manager.is_cached("8")
            info = await manager.open(ref)
            assert not info.complete
            assert await read_all(manager, "8", 20_000) == source.plans[ref.content_uri].data


async def test_stale_partials_of_a_crashed_manager_are_removed(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, "9")
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
        crashed = tmp_path / PARTIAL_SUBDIR / "deadbeef"
        crashed.mkdir()
        (crashed / LOCK_NAME).touch()
        (crashed / "9.0.part").write_bytes(b"half a recording")
        (tmp_path / PARTIAL_SUBDIR / "stray").write_bytes(b"x")
        async with running(tmp_path, source) as (manager, _):
            live = tmp_path / PARTIAL_SUBDIR
            # Only this manager's own (locked) session is left; a live one survives.
            assert [p.name for p in live.iterdir()] == [manager._store.session_dir.name]
            async with running(tmp_path, source) as (other, _):
                assert len(list(live.iterdir())) == 2
                assert other.is_cached("9")
            assert manager.is_cached("9")


async def test_downloads_take_spare_files_and_commits_make_more(tmp_path: Path) -> None:
    source = FakeSource()
    refs = [recording(source, str(n)) for n in range(20, 20 + SPARES + 2)]
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            session = manager._store.session_dir
            spares = sorted(session.glob("*" + SPARE_SUFFIX))
            assert len(spares) == SPARES and all(p.stat().st_size == 0 for p in spares)
            assert stat.S_IMODE(spares[0].stat().st_mode) == 0o600
            taken = spares[0]
            await manager.prefetch(refs[0])
            assert not taken.exists()  # renamed to the download's partial file, then committed
            assert len(list(session.glob("*" + SPARE_SUFFIX))) == SPARES  # the commit made one more
            assert part_files(tmp_path) == []
            # More downloads at once than there are spares: the rest create their own files.
            async with trio.open_nursery() as nursery:
                for ref in refs[1:]:
                    nursery.start_soon(manager.prefetch, ref)
            for ref in refs:
                assert manager.is_cached(ref.recording_id)
                data = source.plans[ref.content_uri].data
                assert (await manager.open(ref)).complete
                assert await read_all(manager, ref.recording_id, len(data)) == data
                manager.release(ref.recording_id)
            # Adopted files sit one directory level down: cache/<xx>/<hex>.val.
            vals = list((tmp_path / "cache").rglob("*.val"))
            assert len(vals) == len(refs)
            assert {len(v.relative_to(tmp_path / "cache").parts) for v in vals} == {2}
        assert not session.exists()  # closing removed the spares with the session


async def test_truncated_cache_file_is_dropped_not_served(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, "10")
    data = source.plans[ref.content_uri].data
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
        (val,) = (tmp_path / "cache").rglob("*.val")
        os.truncate(val, 1000)  # e.g. a crash that lost the tail of the data
        async with running(tmp_path, source) as (manager, _):
            info = await manager.open(ref)
            assert not info.complete  # re-downloaded
            assert await read_all(manager, "10", len(data)) == data
            assert len(source.calls) == 2


async def test_lru_eviction_with_a_tiny_limit(tmp_path: Path) -> None:
    size = 100_000
    source = FakeSource()
    refs = {rid: recording(source, rid, size=size) for rid in ("1", "2", "3")}
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            base = manager.snapshot()["cache"]["bytes"]  # SQLite's own pages
        # Room for two recordings (plus a few pages of index growth), not three.
        async with running(tmp_path, source, size_limit=base + 2 * size + 50_000) as (
            manager,
            _,
        ):
            await manager.prefetch(refs["1"])
            await manager.prefetch(refs["2"])
            await manager.open(refs["1"])  # a hit: "1" is now more recent than "2"
            await manager.open(refs["2"])  # keep "2" open while it is evicted
            manager.release("1")
            await trio.sleep(0.01)  # distinct access times
            await manager.open(refs["1"])
            manager.release("1")
            await manager.prefetch(refs["3"])
            assert manager.is_cached("1")
            assert not manager.is_cached("2")
            assert manager.is_cached("3")
            snap = manager.snapshot()["cache"]
            assert snap["entries"] == 2
            assert snap["bytes"] <= snap["limit"]
            # The evicted file stays readable through the descriptor already open.
            assert await read_all(manager, "2", size) == source.plans[refs["2"].content_uri].data
            manager.release("2")
            assert len(list((tmp_path / "cache").rglob("*.val"))) == 2


async def test_full_disk_fails_the_reader_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = download.write_at

    def write_until_full(fd: int, data: bytes, offset: int) -> None:
        if offset >= 10_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data, offset)

    monkeypatch.setattr(download, "write_at", write_until_full)
    source = FakeSource()
    ref = recording(source, "11")
    caplog.set_level(logging.WARNING, logger="rcfs.content")
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            assert len(await manager.read("11", 0, 5000)) == 5000
            with pytest.raises(CacheFull):
                await manager.read("11", 15_000, 1000)
            while part_files(tmp_path):  # removed while the manager runs
                await trio.sleep(0.01)
            assert manager.snapshot()["downloads"]["failed"] == 1
            assert not manager.is_cached("11")
            assert len(source.calls) == 1  # a full disk is not retried
        assert part_files(tmp_path) == []
        assert list((tmp_path / "cache").rglob("*.val")) == []
        failures = [r for r in caplog.records if "recording 11 failed" in r.getMessage()]
        assert len(failures) == 1
        assert "No space left" in failures[0].getMessage()
        monkeypatch.setattr(download, "write_at", real_write)
        async with running(tmp_path, source) as (manager, _):
            assert not manager.is_cached("11")


async def test_cache_directories_are_private(tmp_path: Path) -> None:
    cache_dir = tmp_path / "rcfs" / "acct"
    source = FakeSource()
    ref = recording(source, "12")
    with trio.fail_after(5):
        async with running(cache_dir, source) as (manager, _):
            await manager.prefetch(ref)
            dirs = [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]
            assert len(dirs) >= 5  # root, cache, cache/xx, partial, session
            for d in dirs:
                assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
            for f in cache_dir.rglob("*.val"):
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


async def test_concurrent_commits_all_show_as_cached(tmp_path: Path) -> None:
    source = FakeSource()
    refs = [recording(source, str(20 + i), size=50_000 + i) for i in range(8)]
    with trio.fail_after(10):
        async with running(tmp_path, source) as (manager, _):
            async with trio.open_nursery() as nursery:
                for ref in refs:
                    nursery.start_soon(manager.prefetch, ref)
            assert all(manager.is_cached(ref.recording_id) for ref in refs)
            snap = manager.snapshot()
            assert snap["cache"]["entries"] == 8
            assert snap["downloads"]["done"] == 8
            assert snap["downloads"]["bytes"] == sum(50_000 + i for i in range(8))
