"""Digests, plausible sizes, stalls and abandoned downloads in the content layer
(a real ContentManager over a fake content source)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from rcfs.content import ContentManager, ContentRef, download
from rcfs.content.integrity import max_plausible_size
from rcfs.errors import BadResponse, CacheFull, Damaged, TemporaryFailure

from .content_fakes import FakeSource, Plan, payload, read_all, running

URI = "https://media.example/restapi/v1.0/account/~/recording/{}/content"


def b2(data: bytes) -> str:
    return hashlib.blake2b(data).hexdigest()


async def manager_with_reports(tmp_path: Path, source: FakeSource, nursery: trio.Nursery,
                               reports: list[dict[str, object]]) -> ContentManager:
    def report(rid: str, size: int, **kw: object) -> None:
        reports.append({"rid": rid, "size": size, **kw})

    return await ContentManager.create(cache_dir=tmp_path, size_limit=1 << 30, client=source,
                                       nursery=nursery, on_exact_size=report)


async def test_commit_reports_the_final_size_with_its_digest(tmp_path: Path) -> None:
    source = FakeSource()
    data = payload(30_000, seed=4)
    ref = source.add("4", URI.format(4), Plan(data))
    reports: list[dict[str, object]] = []
    async with trio.open_nursery() as nursery:
        manager = await manager_with_reports(tmp_path, source, nursery, reports)
        await manager.prefetch(ref)
        await manager.aclose()
    provisional = [r for r in reports if not r.get("final")]
    final = [r for r in reports if r.get("final")]
    assert provisional == [{"rid": "4", "size": 30_000, "final": False, "digest": None,
                            "content_type": None}]
    assert final == [{"rid": "4", "size": 30_000, "final": True, "digest": b2(data),
                      "content_type": "audio/mpeg"}]


async def test_first_open_after_mount_checks_the_digest(tmp_path: Path) -> None:
    source = FakeSource()
    data = payload(50_000, seed=5)
    ref = source.add("5", URI.format(5), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.prefetch(ref)
    cache_file = next((tmp_path / "cache").rglob("*.val"))
    raw = bytearray(cache_file.read_bytes())
    raw[20_000:24_096] = bytes(4096)
    cache_file.write_bytes(bytes(raw))
    good = ContentRef("5", ref.content_uri, digest=b2(data))
    async with running(tmp_path, source) as (manager, _):
        info = await manager.open(good)  # damaged: fetched again, not served
        assert await read_all(manager, "5", info.size) == data
        manager.release("5")
        await manager.prefetch(good)  # until the new copy is committed
        assert len(source.calls) == 2 and manager.damaged == 1
        assert list((tmp_path / "damaged").iterdir())
    async with running(tmp_path, source) as (manager, _):
        cache_file = next((tmp_path / "cache").rglob("*.val"))
        cache_file.write_bytes(b"\0" * len(data))
        with pytest.raises(Damaged):  # deleted upstream: nothing to fetch again
            await manager.open(ContentRef("5", ref.content_uri, digest=b2(data), gone=True))
        assert len(source.calls) == 2


async def test_an_intact_entry_is_checked_once_per_mount(tmp_path: Path) -> None:
    source = FakeSource()
    data = payload(10_000, seed=6)
    ref = source.add("6", URI.format(6), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.prefetch(ref)
    good = ContentRef("6", ref.content_uri, digest=b2(data))
    async with running(tmp_path, source) as (manager, _):
        for _ in range(3):
            await manager.open(good)
            manager.release("6")
        assert manager.snapshot()["cache"]["verified"] == 1 and len(source.calls) == 1


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every full read-and-hash of a cache file (store.fd_digest), counted."""
    from rcfs.content import store

    calls: list[int] = []
    real = store.fd_digest

    def counting(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(store, "fd_digest", counting)
    return calls


async def test_a_sealed_entry_is_trusted_at_the_first_open_without_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit seals the file; the next mount opens it with no hash and no thread hop."""
    source = FakeSource()
    data = payload(40_000, seed=8)
    ref = source.add("8", URI.format(8), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.prefetch(ref)
    hashes = count_hashes(monkeypatch)
    good = ContentRef("8", ref.content_uri, digest=b2(data))
    async with running(tmp_path, source) as (manager, _):
        info = await manager.open(good)
        assert await read_all(manager, "8", info.size) == data
        manager.release("8")
        assert hashes == [] and manager.snapshot()["cache"]["verified"] == 1
    # The seal is for that digest only: an index that expects other bytes hashes it.
    async with running(tmp_path, source) as (manager, _):
        with pytest.raises(Damaged):  # damaged, and gone upstream: nothing to fetch again
            await manager.open(ContentRef("8", ref.content_uri, digest="0" * 128, gone=True))
        assert len(hashes) == 1


async def test_a_file_changed_at_rest_breaks_its_seal_even_with_its_mtime_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    source = FakeSource()
    data = payload(40_000, seed=9)
    ref = source.add("9", URI.format(9), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.prefetch(ref)
    cache_file = next((tmp_path / "cache").rglob("*.val"))
    st = cache_file.stat()
    with open(cache_file, "r+b") as f:
        f.seek(10_000)
        f.write(bytes(4096))
    os.utime(cache_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashes = count_hashes(monkeypatch)
    good = ContentRef("9", ref.content_uri, digest=b2(data))
    async with running(tmp_path, source) as (manager, _):
        info = await manager.open(good)  # hashed, found damaged, fetched again
        assert await read_all(manager, "9", info.size) == data
        manager.release("9")
        assert manager.damaged == 1 and len(hashes) >= 1


async def test_a_full_check_seals_an_entry_for_the_next_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry without a seal (an older cache, or an archive move) is hashed once,
    then sealed: the mount after that trusts it."""
    source = FakeSource()
    data = payload(20_000, seed=10)
    ref = source.add("10", URI.format(10), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.prefetch(ref)
    (tmp_path / "seals.sqlite").unlink()
    for extra in ("seals.sqlite-wal", "seals.sqlite-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    hashes = count_hashes(monkeypatch)
    good = ContentRef("10", ref.content_uri, digest=b2(data))
    for expected in (1, 1):
        async with running(tmp_path, source) as (manager, _):
            await manager.open(good)
            manager.release("10")
        assert len(hashes) == expected


async def test_an_impossible_declared_size_is_refused(tmp_path: Path) -> None:
    source = FakeSource()
    ref = source.add("7", URI.format(7), Plan(payload(2000)))
    source.plans[ref.content_uri].extra = b""
    lying = ContentRef("7", ref.content_uri, duration=0)  # 0 s of audio: at most 16 MiB
    assert max_plausible_size(0) == 16 << 20
    source.plans[ref.content_uri].data = payload(17 << 20)  # declared (and sent) 17 MiB
    async with running(tmp_path, source) as (manager, sizes):
        with pytest.raises(BadResponse, match="refused"):
            await manager.open(lying)
        assert sizes == [] and not manager.is_cached("7")
        # Without a duration, nothing is refused.
        info = await manager.open(ContentRef("7", ref.content_uri))
        assert info.size == 17 << 20
        manager.release("7")


async def test_a_stalled_body_is_a_failed_attempt_and_retries_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "STALL_SECONDS", 0.2)
    source = FakeSource()
    ref = source.add("8", URI.format(8), Plan(payload(20_000), gate_at=1000))  # never opens
    async with running(tmp_path, source) as (manager, _):
        with trio.fail_after(10), pytest.raises(TemporaryFailure, match="no data for"):
            await manager.prefetch(ref)
        # Each resume brought nothing: the attempts ran out (the conftest's fast policy: 4).
        assert len(source.calls) == download.RESUME_POLICY.max_attempts


async def test_a_trickle_is_too_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RATE_WINDOW", 0.2)
    monkeypatch.setattr(download, "MIN_RATE", 10**9)  # nothing is fast enough
    source = FakeSource()
    ref = source.add("9", URI.format(9), Plan(payload(200_000), chunk=100))
    async with running(tmp_path, source) as (manager, _):
        with trio.fail_after(10), pytest.raises(TemporaryFailure, match="too slow"):
            await manager.prefetch(ref)


async def test_an_abandoned_download_is_not_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "STALL_SECONDS", 0.2)
    source = FakeSource()
    ref = source.add("10", URI.format(10), Plan(payload(20_000), gate_at=1000))
    async with running(tmp_path, source) as (manager, _):
        info = await manager.open(ref)
        assert info.size == 20_000
        manager.release("10")  # the reader goes away
        with trio.fail_after(5):
            while manager.in_flight("10"):
                await trio.sleep(0.05)
        assert len(source.calls) == 1  # no resume for nobody


async def test_bigger_than_the_free_space_is_streamed_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rcfs.content.store.Store.free_bytes", lambda self: 1000)
    monkeypatch.setattr(download, "STREAM_WINDOW", 8192)
    source = FakeSource()
    data = payload(50_000, seed=11)
    ref = source.add("11", URI.format(11), Plan(data, chunk=1000))
    async with running(tmp_path, source) as (manager, _):
        info = await manager.open(ref)
        assert info.size == 50_000 and not info.complete
        got = bytearray()
        while chunk := await manager.read("11", len(got), 4096):
            got += chunk
        assert bytes(got) == data
        with pytest.raises(TemporaryFailure, match="streamed through"):
            await manager.read("11", 0, 100)  # passed: out of the window
        manager.release("11")
        with trio.fail_after(5):
            while manager.in_flight("11"):
                await trio.sleep(0.01)
        assert not manager.is_cached("11")
        assert not list((tmp_path / "partial").rglob("*.part"))
        with pytest.raises(CacheFull):  # a prefetch wants it kept: no room
            await manager.prefetch(ref)


async def test_a_write_after_the_hash_breaks_the_seal_it_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seal is the file's state from before its hash: bytes changed after the hash
    (and its mtime put back) are found at the next mount, not trusted."""
    import os

    from rcfs.content import store

    source = FakeSource()
    data = payload(30_000, seed=11)
    ref = source.add("11", URI.format(11), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.prefetch(ref)
    for name in ("seals.sqlite", "seals.sqlite-wal", "seals.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)  # so the next open hashes, then seals
    real = store.fd_digest

    def hash_then_damage(fd: int) -> str:
        digest = real(fd)
        path = next((tmp_path / "cache").rglob("*.val"))
        st = path.stat()
        with open(path, "r+b") as f:
            f.write(b"\xff" * 4096)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return digest

    monkeypatch.setattr(store, "fd_digest", hash_then_damage)
    good = ContentRef("11", ref.content_uri, digest=b2(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.open(good)  # hashed as good (the write came after the hash) and sealed
        manager.release("11")
    monkeypatch.setattr(store, "fd_digest", real)
    async with running(tmp_path, source) as (manager, _):
        info = await manager.open(good)  # the seal no longer matches: hashed, damaged, fetched
        assert await read_all(manager, "11", info.size) == data
        manager.release("11")
        assert manager.damaged == 1


def test_racy_seals_are_not_trusted_on_coarse_clocks(tmp_path: Path) -> None:
    """Before Linux 6.13 a write in the same tick as the seal's stat may keep the ctime:
    a seal taken that soon after the file changed is trusted only on fine clocks."""
    import os

    from rcfs.content.seals import SealBook, fine_timestamps, trust_key

    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    st = os.stat(path)
    book = SealBook(tmp_path)
    book.put({"r": (str(path), st, "d")})
    assert book.load({"r"}, fine=True) == {"r": (str(path), trust_key(st, "d"))}
    assert book.load({"r"}, fine=False) == {}  # sealed within RACY_NS of its change
    assert book.load(set(), fine=True) == {} and book.load({"r"}, fine=True) == {}  # stale row dropped
    book.close()
    assert fine_timestamps("6.13.0") and fine_timestamps("6.18.44-fc") and not fine_timestamps("6.12.9")
    assert not fine_timestamps("5.10.0-28-amd64")


async def test_a_download_is_wanted_only_while_its_reader_runs(tmp_path: Path) -> None:
    """An open file counts for a failing download only while the process that opened
    it runs (the FUSE layer's `readers`); other holders (the web player) always count."""
    source = FakeSource()
    data = payload(10_000, seed=12)
    ref = source.add("12", URI.format(12), Plan(data))
    async with running(tmp_path, source) as (manager, _):
        await manager.open(ref)
        counts = {"held": 1, "alive": 1}
        manager.fuse_readers = lambda rid: (counts["held"], counts["alive"])
        assert manager._wanted("12")
        counts["alive"] = 0  # its reader was killed; the kernel still holds the file
        assert not manager._wanted("12")
        await manager.open(ref)  # a second holder that is not a FUSE file (refs 2 > held 1)
        assert manager._wanted("12")
        manager.release("12")
        manager.release("12")
        assert not manager._wanted("12")
