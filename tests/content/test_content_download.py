"""Downloads: open waits for headers, early reads, single flight, resume, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from rcfs.api import Priority
from rcfs.api.retry import RetryPolicy
from rcfs.content import ContentRef
from rcfs.errors import AuthError, BadResponse, NotFound, TemporaryFailure

from .content_fakes import FakeSource, Plan, payload, read_all, running

URI = "https://media.example/restapi/v1.0/account/~/recording/{}/content"
SIZE = 20_000


def recording(source: FakeSource, rid: str = "101", size: int = SIZE, **kw: object) -> ContentRef:
    return source.add(rid, URI.format(rid), Plan(data=payload(size, seed=int(rid)), **kw))  # type: ignore[arg-type]


async def test_open_waits_only_for_headers_and_reports_exact_size(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, gate_at=0)  # headers, then no body byte until the gate opens
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, sizes):
            info = await manager.open(ref)
            assert info.size == SIZE
            assert not info.complete
            assert sizes == [("101", SIZE)]
            assert source.calls == [(ref.content_uri, 0, Priority.INTERACTIVE)]
            assert manager.snapshot()["downloads"]["active"] == 1
            assert not manager.is_cached("101")
            source.plans[ref.content_uri].gate.set()
            assert await read_all(manager, "101", SIZE) == source.plans[ref.content_uri].data


async def test_read_at_offset_returns_before_the_download_ends(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, gate_at=8000)
    data = source.plans[ref.content_uri].data
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            assert await manager.read("101", 0, 1000) == data[:1000]
            assert await manager.read("101", 7000, 1000) == data[7000:8000]
            # Byte 8000 has not arrived: the read waits ...
            with trio.move_on_after(0.2) as scope:
                await manager.read("101", 7500, 1000)
            assert scope.cancelled_caught
            # ... and returns as soon as it does, while the rest is still coming.
            source.plans[ref.content_uri].gate_at = 12_000
            source.plans[ref.content_uri].gate.set()
            source.plans[ref.content_uri].gate = trio.Event()
            assert await manager.read("101", 7500, 1000) == data[7500:8500]
            assert not manager.is_cached("101")
            source.plans[ref.content_uri].gate.set()
            assert await manager.read("101", SIZE - 10, 100) == data[-10:]
            assert await manager.read("101", SIZE, 100) == b""
            assert await manager.read("101", SIZE + 5, 100) == b""


async def test_concurrent_readers_share_one_download(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source)
    results: list[bytes] = []

    async def reader(manager_: object) -> None:
        await manager.open(ref)
        results.append(await read_all(manager, "101", SIZE, step=3000))
        manager.release("101")

    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(reader, manager)
            assert len(source.calls) == 1
            assert results == [source.plans[ref.content_uri].data] * 3
            assert manager.snapshot()["cache"]["misses"] == 3


async def test_mid_body_failure_resumes_with_a_range_request(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, fail_at=[7000, 15_000])
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            assert await read_all(manager, "101", SIZE) == source.plans[ref.content_uri].data
            assert [start for _, start, _ in source.calls] == [0, 7000, 15_000]
            await manager.prefetch(ref)  # waits for the commit
            assert manager.is_cached("101")
            assert source.sent == SIZE


async def test_short_body_is_resumed_not_taken_as_the_end(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, end_early_at=12_000)  # a clean end, 8000 bytes short
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, sizes):
            await manager.prefetch(ref)
            assert [start for _, start, _ in source.calls] == [0, 12_000]
            assert sizes == [("101", SIZE)]
            info = await manager.open(ref)
            assert info.complete and info.size == SIZE
            assert await read_all(manager, "101", SIZE) == source.plans[ref.content_uri].data


async def test_failure_before_headers_is_not_retried_again(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, headers_error=TemporaryFailure("503 after the client's retries"))
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            with pytest.raises(TemporaryFailure):
                await manager.open(ref)
            assert len(source.calls) == 1  # the client's retry policy already ran
            await manager.open(ref)  # the next open tries again
            assert len(source.calls) == 2


async def test_200_instead_of_206_restarts_cleanly(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, fail_at=[7000], ignore_range=True)
    data = source.plans[ref.content_uri].data
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.prefetch(ref)
            assert [start for _, start, _ in source.calls] == [0, 7000]
            assert source.sent == SIZE + 7000
            info = await manager.open(ref)
            assert info.complete and info.size == SIZE
            assert await read_all(manager, "101", SIZE) == data


async def test_no_length_open_waits_for_the_end(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, no_length=True, gate_at=5000)
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, sizes):
            with trio.move_on_after(0.2) as scope:
                await manager.open(ref)
            assert scope.cancelled_caught  # size unknown until the body ends
            assert sizes == []
            source.plans[ref.content_uri].gate.set()
            info = await manager.open(ref)  # joins the same download
            assert info.size == SIZE
            assert sizes == [("101", SIZE)]
            assert len(source.calls) == 1
            assert await read_all(manager, "101", SIZE) == source.plans[ref.content_uri].data


async def test_not_found_propagates_to_open(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, not_found=True)
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            with pytest.raises(NotFound):
                await manager.open(ref)
            assert not manager.is_cached("101")
            assert manager.snapshot()["downloads"]["failed"] == 1


async def test_mid_body_fatal_error_reaches_a_waiting_reader(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, error_at={9000: AuthError("token refused")}, gate_at=9000)
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            assert len(await manager.read("101", 0, 9000)) == 9000

            async def release_gate() -> None:
                await trio.sleep(0.05)
                source.plans[ref.content_uri].gate.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_gate)
                with pytest.raises(AuthError):
                    await manager.read("101", 12_000, 1000)
            assert len(source.calls) == 1  # AuthError is not resumed
            assert not manager.is_cached("101")
            # A new open starts a new download, which now succeeds.
            await manager.open(ref)
            assert await read_all(manager, "101", SIZE) == source.plans[ref.content_uri].data


async def test_exhausted_resume_fails_the_reader_instead_of_hanging(
    tmp_path: Path, fast_resume: RetryPolicy
) -> None:
    source = FakeSource()
    ref = recording(source, fail_always_at=5000)
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            with pytest.raises(TemporaryFailure):
                await manager.read("101", 6000, 100)
            # The first request brought bytes, then every resume stalled at 5000.
            assert len(source.calls) == fast_resume.max_attempts
            assert not manager.is_cached("101")


async def test_body_longer_than_announced_is_never_cached(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source, extra=b"junk")
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            with pytest.raises(BadResponse):
                await manager.prefetch(ref)
            assert not manager.is_cached("101")
        async with running(tmp_path, FakeSource()) as (manager, _):
            assert not manager.is_cached("101")


async def test_download_continues_after_the_last_reader_closes(tmp_path: Path) -> None:
    source = FakeSource()
    ref = recording(source)
    with trio.fail_after(5):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(ref)
            assert await manager.read("101", 0, 100)
            manager.release("101")
            while not manager.is_cached("101"):
                await trio.sleep(0.01)
            snap = manager.snapshot()
            assert snap["downloads"] == {
                "active": 0, "queued": 0, "done": 1, "failed": 0, "bytes": SIZE,
            }
            assert len(source.calls) == 1
