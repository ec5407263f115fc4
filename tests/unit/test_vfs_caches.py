"""The Vfs caches: bounded day listings whose calls.json bytes are rebuilt on
open, the recording cache by inode and what drops it, and the write-behind of
learned sizes."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from rcfs.errors import NotFound
from rcfs.index import Index, IndexedRecording, StoredRecord
from rcfs.vfs import ROOT_INO, Node, Vfs, calls_json_ino, dir_ino

from .rcfs_records import make_record, recording_block

NY = ZoneInfo("America/New_York")
R1 = "/2026/11/23/093015_in_+16505550123_to_101_R1.mp3"
R3 = "/2026/11/24/233000_in_+16505550123_to_101_R3.mp3"
DAY23 = dir_ino(2026, 11, 23)
CALLS23 = calls_json_ino(date(2026, 11, 23))


class CountingIndex(Index):
    """An Index that counts the queries the tree makes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.queries: Counter[str] = Counter()

    def get_recording(self, recording_id: str) -> IndexedRecording | None:
        self.queries["get_recording"] += 1
        return super().get_recording(recording_id)

    def recording_by_rowid(self, rowid: int) -> IndexedRecording | None:
        self.queries["recording_by_rowid"] += 1
        return super().recording_by_rowid(rowid)

    def recordings_between(
        self, start_ms: int, end_ms: int, *, include_deleted: bool = True
    ) -> list[IndexedRecording]:
        self.queries["recordings_between"] += 1
        return super().recordings_between(start_ms, end_ms, include_deleted=include_deleted)

    def records_between(self, start_ms: int, end_ms: int) -> list[StoredRecord]:
        self.queries["records_between"] += 1
        return super().records_between(start_ms, end_ms)


@pytest.fixture
def idx(tmp_path: Path) -> Iterator[CountingIndex]:
    index = CountingIndex(tmp_path / "index.sqlite")
    index.upsert_records([
        make_record("C1", "2026-11-23T14:30:15Z", recording_id="R1"),
        make_record("C2", "2026-11-23T18:15:02Z", recording_id="R2",
                    legs=[{"startTime": "2026-11-23T18:16:00Z", "legType": "Transfer",
                           "recording": recording_block("R2b", "OnDemand")}]),
        make_record("C3", "2026-11-25T04:30:00Z", recording_id="R3"),  # the 24th in New York
    ])
    try:
        yield index
    finally:
        index.close()


def make_vfs(index: Index, **kw: Any) -> Vfs:
    return Vfs(index, NY, uid=1, gid=1, umask=0o022, status_provider=lambda: b"{}", **kw)


def walk(vfs: Vfs, path: str) -> Node:
    node = vfs.getattr(ROOT_INO)
    for part in path.strip("/").split("/"):
        node = vfs.lookup(node.ino, part)
    return node


# -- calls.json and the day listings ------------------------------------------


def test_calls_json_size_is_the_length_of_the_rebuilt_bytes(idx: CountingIndex) -> None:
    idx.mark_deleted(["R2b"])
    idx.set_kept(["R2b"], True)  # listed, and marked "rcfsDeleted" in calls.json
    vfs = make_vfs(idx, calls_cache_bytes=0)  # keeps no bytes: every open rebuilds them
    size = walk(vfs, "/2026/11/23/calls.json").size
    before = idx.queries["records_between"]
    first = vfs.read_small(CALLS23)
    second = vfs.read_small(CALLS23)
    assert idx.queries["records_between"] == before + 2  # really rebuilt, twice
    assert len(first) == size and first == second
    assert b'"rcfsDeleted":true' in first and b'"rcfsPath":"2026/11/23/' in first
    # The same bytes as those the listing was built with (kept by a default Vfs)...
    kept = make_vfs(idx)
    assert kept.getattr(CALLS23).size == size
    queries = idx.queries["records_between"]
    assert kept.read_small(CALLS23) == first
    assert idx.queries["records_between"] == queries  # served from the bytes cache
    # ...and after the listing itself was evicted and built again.
    small = make_vfs(idx, day_cache_entries=4, calls_cache_bytes=0)
    assert small.getattr(CALLS23).size == size
    small.readdir(dir_ino(2026, 11, 24))  # 4 + 2 entries > 4: the 23rd is evicted
    listings = idx.queries["recordings_between"]
    assert small.read_small(CALLS23) == first
    assert idx.queries["recordings_between"] == listings + 1
    assert small.getattr(CALLS23).size == size


def test_calls_json_is_built_only_when_asked_for(idx: CountingIndex) -> None:
    """Looking up a recording by path builds no calls.json (a second index query and
    every record through json); listing the day, or looking calls.json up, does."""
    vfs = make_vfs(idx)
    assert walk(vfs, R1).size > 0
    assert vfs.lookup(DAY23, "calls.json").size > 0 and idx.queries["records_between"] == 1
    fresh = make_vfs(idx)
    walk(fresh, R1)
    assert idx.queries["records_between"] == 1  # the recording alone: none more
    names = [name for name, _ in fresh.readdir(DAY23)]
    assert "calls.json" in names and names == sorted(names)
    assert idx.queries["records_between"] == 2
    assert len(fresh.read_small(CALLS23)) == fresh.getattr(CALLS23).size
    assert idx.queries["records_between"] == 2  # the bytes built for the listing
    other = make_vfs(idx)
    walk(other, R1)
    assert len(other.read_small(CALLS23)) == other.getattr(CALLS23).size  # built on open
    assert idx.queries["records_between"] == 3
    # The web player's day page lists the recordings alone.
    web = make_vfs(idx)
    names = [name for name, _ in web.readdir(DAY23, calls=False)]
    assert names == [name for name in sorted(names) if name != "calls.json"]
    assert len(names) == 3 and idx.queries["records_between"] == 3  # R1, R2 and its leg R2b
    assert "calls.json" in [name for name, _ in web.readdir(DAY23)]
    assert idx.queries["records_between"] == 4


def test_calls_json_changed_before_invalidation_is_served_with_its_size(
    idx: CountingIndex,
) -> None:
    vfs = make_vfs(idx, calls_cache_bytes=0)
    old = vfs.getattr(CALLS23).size
    # A refresh wrote the index and has not called invalidate yet: a new call
    # is not in the cached listing, so not in its calls.json either...
    idx.upsert_records([make_record("C5", "2026-11-23T20:00:00Z", recording_id="R5")])
    stale = vfs.read_small(CALLS23)
    assert len(stale) == old and b'"id":"C5"' not in stale
    # ...but a listed call whose record changed length is served as it is now.
    idx.upsert_records([make_record("C1", "2026-11-23T14:30:15Z", recording_id="R1",
                                    result="Call connected", lastModifiedTime="2026-11-24T00:00Z")])
    data = vfs.read_small(CALLS23)
    assert b'"result":"Call connected"' in data and len(data) != old
    assert vfs.getattr(CALLS23).size == len(data)
    assert b'"id":"C5"' in data  # the listing was built again


def test_day_listings_are_bounded_by_entries(idx: CountingIndex) -> None:
    vfs = make_vfs(idx, day_cache_entries=6)  # the 23rd has 4 entries, the 24th 2
    day24 = dir_ino(2026, 11, 24)
    vfs.readdir(DAY23)
    vfs.readdir(day24)
    n = idx.queries["recordings_between"]
    vfs.readdir(DAY23)
    vfs.readdir(day24)
    assert idx.queries["recordings_between"] == n  # both fit
    tight = make_vfs(idx, day_cache_entries=5)
    tight.readdir(DAY23)
    tight.readdir(day24)
    n = idx.queries["recordings_between"]
    tight.readdir(day24)
    assert idx.queries["recordings_between"] == n
    tight.readdir(DAY23)  # evicted to make room for the 24th
    assert idx.queries["recordings_between"] == n + 1
    # A day bigger than the bound is still cached (alone).
    tiny = make_vfs(idx, day_cache_entries=2)
    tiny.readdir(DAY23)
    n = idx.queries["recordings_between"]
    tiny.readdir(DAY23)
    tiny.lookup(DAY23, "calls.json")
    assert idx.queries["recordings_between"] == n


# -- the recording cache --------------------------------------------------------


def test_recording_cache_one_query_per_inode(idx: CountingIndex) -> None:
    """The day listing fills the recording cache (its files' opens ask no query);
    an inode met without its day listed costs one query, then none."""
    vfs = make_vfs(idx)
    ino = walk(vfs, R1).ino
    n = idx.queries["recording_by_rowid"]
    node = vfs.getattr(ino)
    assert vfs.recording(ino).recording_id == "R1"
    vfs.xattrs(ino)
    assert vfs.getattr(ino) == node
    assert idx.queries["recording_by_rowid"] == n  # the listing's query sufficed
    vfs.invalidate_all()
    vfs.getattr(ino)  # after a remount the kernel may ask for an inode before its day
    vfs.recording(ino)
    vfs.getattr(ino)
    assert idx.queries["recording_by_rowid"] == n + 1


def test_recording_cache_bounded(idx: CountingIndex) -> None:
    vfs = make_vfs(idx, recording_cache_size=1)
    r1, r3 = walk(vfs, R1).ino, walk(vfs, R3).ino
    n = idx.queries["recording_by_rowid"]
    vfs.getattr(r1)
    vfs.getattr(r3)
    vfs.getattr(r3)
    assert idx.queries["recording_by_rowid"] == n + 2
    vfs.getattr(r1)
    assert idx.queries["recording_by_rowid"] == n + 3


def test_invalidate_drops_only_the_recordings_of_its_days(idx: CountingIndex) -> None:
    vfs = make_vfs(idx)
    r1, r3 = walk(vfs, R1).ino, walk(vfs, R3).ino
    vfs.getattr(r1)
    vfs.getattr(r3)
    n = idx.queries["recording_by_rowid"]
    # 04:30Z on the 25th is the 24th in New York: only R3's day is forgotten.
    vfs.invalidate(idx.upsert_records(
        [make_record("C9", "2026-11-25T04:50:00Z", recording_id="R9")]).changed_starts_ms)
    vfs.getattr(r1)
    assert idx.queries["recording_by_rowid"] == n
    vfs.getattr(r3)
    assert idx.queries["recording_by_rowid"] == n + 1


Change = Callable[[Index], set[int] | frozenset[int]]
CHANGES: dict[str, tuple[Change, bool, Callable[[IndexedRecording | None], bool]]] = {
    # name: (index change returning the starts freshness passes to invalidate,
    #        keep_deleted, what recording() shows afterwards (None: NotFound))
    "marked deleted, kept listed": (
        lambda i: i.mark_deleted(["R1"]), True,
        lambda ir: ir is not None and ir.deleted and ir.kept is None),
    "marked deleted, hidden": (lambda i: i.mark_deleted(["R1"]), False, lambda ir: ir is None),
    "lost its recording block": (
        lambda i: i.upsert_records([make_record("C1", "2026-11-23T14:30:15Z", recording_id=None,
                                                lastModifiedTime="2026-11-24T00:00:00Z")]
                                   ).changed_starts_ms, False, lambda ir: ir is None),
    "kept": (lambda i: i.mark_deleted(["R1"]) | i.set_kept(["R1"], True), True,
             lambda ir: ir is not None and ir.kept is True),
    "not kept": (lambda i: i.mark_deleted(["R1"]) | i.set_kept(["R1"], False), True,
                 lambda ir: ir is None),
    "new content uri and duration": (
        lambda i: i.upsert_records([make_record("C1", "2026-11-23T14:30:15Z", recording_id="R1",
                                                duration=300)]).changed_starts_ms, True,
        lambda ir: ir is not None and ir.size == 300 * 4000),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_row_change_reaches_the_cached_recording(idx: CountingIndex, change: str) -> None:
    apply, keep_deleted, expect = CHANGES[change]
    vfs = make_vfs(idx, keep_deleted=keep_deleted)
    ino = walk(vfs, R1).ino
    before = vfs.recording(ino)
    starts = apply(idx)
    assert vfs.recording(ino) == before  # cached until told
    vfs.invalidate(starts)
    try:
        after: IndexedRecording | None = vfs.recording(ino)
    except NotFound:
        after = None
        with pytest.raises(NotFound):
            vfs.getattr(ino)
    assert expect(after), after
    if after is not None:
        assert vfs.getattr(ino).size == after.size


def test_set_exact_size_replaces_the_cached_recording(idx: CountingIndex) -> None:
    vfs = make_vfs(idx)
    ino = walk(vfs, R1).ino
    vfs.getattr(ino)
    n = idx.queries["recording_by_rowid"]
    vfs.set_exact_size("R1", 777, "audio/mpeg")
    assert vfs.getattr(ino).size == 777 and vfs.getattr(ino).size_exact
    assert vfs.recording(ino).content_type == "audio/mpeg"
    assert idx.queries["recording_by_rowid"] == n
    # Without `run`, the index is written inline.
    ir = idx.get_recording("R1")
    assert ir is not None and ir.exact_size == 777


def test_size_of_an_opened_recording_is_learned_without_an_index_read(idx: CountingIndex) -> None:
    vfs = make_vfs(idx)
    ino = walk(vfs, R1).ino
    size = vfs.getattr(ino).size
    vfs.recording(ino)  # what an open looks up
    vfs.set_exact_size("R1", 777, "audio/mpeg", final=False)  # the download's headers
    assert idx.queries["get_recording"] == 0
    assert vfs.getattr(ino).size == 777 and vfs.size_provisional("R1")
    # A provisional size is overlaid: what follows reads the index, as before.
    assert vfs.size_unconfirmed("R1") == ino
    assert vfs.getattr(ino).size == size and idx.queries["get_recording"] == 1
    vfs.set_exact_size("R1", 778, final=False)
    vfs.set_exact_size("R1", 778, "audio/mpeg", final=True)
    assert idx.queries["get_recording"] == 2 and vfs.getattr(ino).size == 778
    # A recording no open looked up is read from the index.
    vfs.set_exact_size("R3", 333, final=False)
    assert idx.queries["get_recording"] == 3
    # Forgotten with the tree's caches.
    vfs.invalidate_all()
    vfs.set_exact_size("R2", 555, final=False)
    assert idx.queries["get_recording"] == 4


# -- write-behind of learned sizes ------------------------------------------------


def exact_size(index: Index, rid: str) -> int | None:
    ir = index.get_recording(rid)
    assert ir is not None
    return ir.exact_size


async def test_learned_size_shown_at_once_and_written_behind(idx: CountingIndex) -> None:
    vfs = make_vfs(idx)
    ino = walk(vfs, R1).ino
    name = R1.rsplit("/", 1)[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(vfs.run)
        vfs.set_exact_size("R1", 777, "audio/mpeg")
        assert vfs.getattr(ino).size == 777 and vfs.getattr(ino).size_exact
        assert exact_size(idx, "R1") is None  # not written on the trio thread
        # Pending sizes are overlaid on what is read from the index meanwhile.
        vfs.invalidate_all()
        assert vfs.recording(ino).exact_size == 777
        assert dict(vfs.readdir(DAY23))[name].size == 777
        with trio.fail_after(5):
            while exact_size(idx, "R1") is None:
                await trio.sleep(0.01)
        ir = idx.get_recording("R1")
        assert ir is not None and ir.content_type == "audio/mpeg"
        vfs.set_exact_size("R2", 555)  # pending when the mount stops
        nursery.cancel_scope.cancel()
    assert exact_size(idx, "R2") == 555  # written inline on cancellation
    vfs.set_exact_size("R3", 333)  # `run` is over: inline again
    assert exact_size(idx, "R3") == 333


async def test_failed_size_write_is_kept_and_retried(
    idx: CountingIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    vfs = make_vfs(idx)
    ino = walk(vfs, R1).ino
    real = idx.set_exact_sizes
    failures = []

    def flaky(sizes: dict[str, tuple[int, str | None]]) -> set[str]:
        if not failures:
            failures.append(dict(sizes))
            raise sqlite3.OperationalError("database is locked")
        return real(sizes)

    monkeypatch.setattr(idx, "set_exact_sizes", flaky)
    async with trio.open_nursery() as nursery:
        await nursery.start(vfs.run)
        vfs.set_exact_size("R1", 777)
        with trio.fail_after(5):
            while not failures:
                await trio.sleep(0.01)
        vfs.invalidate_all()
        assert vfs.getattr(ino).size == 777  # still overlaid
        vfs.set_exact_size("R3", 333)
        with trio.fail_after(5):
            while exact_size(idx, "R1") is None or exact_size(idx, "R3") is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert failures == [{"R1": (777, None, None)}]
    assert exact_size(idx, "R1") == 777
