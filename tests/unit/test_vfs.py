from __future__ import annotations

import json
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rcfs.errors import NotFound
from rcfs.index import Index
from rcfs.vfs import (
    CONTROL_DIR_INO,
    RECORDING_BASE,
    ROOT_INO,
    STATUS_INO,
    Node,
    Vfs,
    calls_json_ino,
    dir_ino,
)

from .rcfs_records import make_record, recording_block

NY = ZoneInfo("America/New_York")
STATUS = b'{"ok": true}\n'


def make_vfs(index: Index, tz: ZoneInfo = NY, **kw: Any) -> Vfs:
    kw.setdefault("umask", 0o022)
    return Vfs(index, tz, uid=1000, gid=100, status_provider=lambda: STATUS,
               clock_ns=lambda: 42, **kw)


def walk(vfs: Vfs, path: str) -> Node:
    node = vfs.getattr(ROOT_INO)
    for part in path.strip("/").split("/"):
        if part:
            node = vfs.lookup(node.ino, part)
    return node


def names(vfs: Vfs, path: str) -> list[str]:
    return [name for name, _ in vfs.readdir(walk(vfs, path).ino)]


@pytest.fixture
def filled(index: Index) -> Index:
    index.upsert_records([
        # 2026-11-23 09:30:15 in New York.
        make_record("C1", "2026-11-23T14:30:15Z", recording_id="R1",
                    lastModifiedTime="2026-11-23T15:00:00Z"),
        make_record("C2", "2026-11-23T18:15:02Z", recording_id="R2", direction="Outbound",
                    frm={"extensionNumber": "101", "name": "Front Desk"},
                    to={"phoneNumber": "(415) 555-0177"},
                    legs=[{"startTime": "2026-11-23T18:16:00Z", "legType": "Transfer",
                           "direction": "Outbound", "to": {"extensionNumber": "202"},
                           "recording": recording_block("R2b", "OnDemand")}]),
        # 23:30 local on the 24th is 04:30 UTC on the 25th.
        make_record("C3", "2026-11-25T04:30:00Z", recording_id="R3"),
        make_record("C4", "2025-12-31T12:00:00Z", recording_id="R4"),
    ])
    return index


def test_tree_shape(filled: Index) -> None:
    vfs = make_vfs(filled)
    assert names(vfs, "/") == ["2025", "2026"]
    assert names(vfs, "/2026") == ["11"]
    assert names(vfs, "/2026/11") == ["23", "24"]
    assert names(vfs, "/2026/11/23") == [
        "093015_in_+16505550123_to_101_R1.mp3",
        "131502_out_101_to_202_R2b.mp3",
        "131502_out_101_to_4155550177_R2.mp3",
        "calls.json",
    ]
    assert names(vfs, "/2026/11/24") == ["233000_in_+16505550123_to_101_R3.mp3", "calls.json"]


def test_hidden_control_dir(filled: Index) -> None:
    vfs = make_vfs(filled)
    assert ".rcfs" not in names(vfs, "/")
    ctl = vfs.lookup(ROOT_INO, ".rcfs")
    assert ctl.ino == CONTROL_DIR_INO and ctl.is_dir
    status = vfs.lookup(ctl.ino, "status.json")
    assert status.ino == STATUS_INO and status.size == len(STATUS)
    assert vfs.read_small(STATUS_INO) == STATUS
    assert [n for n, _ in vfs.readdir(CONTROL_DIR_INO)] == ["status.json"]
    assert vfs.getattr(ROOT_INO).nlink == 2 + 2 + 1


def test_unknown_names_and_inodes(filled: Index) -> None:
    vfs = make_vfs(filled)
    day = walk(vfs, "/2026/11/23")
    for parent, name in [(ROOT_INO, "2024"), (ROOT_INO, "26"), (ROOT_INO, "status.json"),
                         (walk(vfs, "/2026").ino, "1"), (walk(vfs, "/2026").ino, "12"),
                         (day.ino, "nope.mp3"), (CONTROL_DIR_INO, "x")]:
        with pytest.raises(NotFound):
            vfs.lookup(parent, name)
    for ino in [0, 4, dir_ino(2024), dir_ino(2026, 10), dir_ino(2026, 11, 22),
                calls_json_ino(datetime(2026, 11, 22).date()), dir_ino(2026, 13),
                RECORDING_BASE + 999, RECORDING_BASE]:
        with pytest.raises(NotFound):
            vfs.getattr(ino)
    for bad_parent in (dir_ino(2026, 2, 31), dir_ino(2026, 11, 22)):
        with pytest.raises(NotFound):
            vfs.lookup(bad_parent, "calls.json")
        with pytest.raises(NotFound):
            vfs.readdir(bad_parent)
    file_ino = vfs.lookup(day.ino, "calls.json").ino
    with pytest.raises(NotFound):
        vfs.readdir(file_ino)
    with pytest.raises(NotFound):
        vfs.lookup(file_ino, "x")
    with pytest.raises(NotFound):
        vfs.read_small(day.ino)


def test_attributes(filled: Index) -> None:
    vfs = make_vfs(filled, umask=0o027)
    f = walk(vfs, "/2026/11/23/093015_in_+16505550123_to_101_R1.mp3")
    assert f.mode == stat.S_IFREG | 0o440 and not f.is_dir and f.nlink == 1
    assert (f.uid, f.gid) == (1000, 100)
    assert f.mtime_ns == int(datetime(2026, 11, 23, 14, 30, 15, tzinfo=UTC).timestamp()) * 10**9
    assert f.size == 95 * 4000 and not f.size_exact and f.recording_id == "R1"
    assert vfs.getattr(f.ino) == f
    day = walk(vfs, "/2026/11/23")
    assert day.mode == stat.S_IFDIR | 0o550 and day.nlink == 2
    calls = walk(vfs, "/2026/11/23/calls.json")
    # The newest start or lastModifiedTime of the day's records: C2's start.
    assert calls.mtime_ns == int(datetime(2026, 11, 23, 18, 15, 2, tzinfo=UTC).timestamp()) * 10**9
    assert day.mtime_ns == calls.mtime_ns
    month = walk(vfs, "/2026/11")
    assert month.nlink == 4
    assert month.mtime_ns == walk(vfs, "/2026/11/24").mtime_ns  # its latest entry
    assert vfs.getattr(ROOT_INO).mtime_ns == walk(vfs, "/2026").mtime_ns == month.mtime_ns
    listed = dict(vfs.readdir(day.ino))
    assert listed["calls.json"] == calls and listed["093015_in_+16505550123_to_101_R1.mp3"] == f


def test_xattrs(filled: Index) -> None:
    vfs = make_vfs(filled)
    leg = walk(vfs, "/2026/11/23/131502_out_101_to_202_R2b.mp3")
    x = vfs.xattrs(leg.ino)
    assert x == {
        "user.rc.call_id": b"C2",
        "user.rc.session_id": b"SC2",
        "user.rc.telephony_session_id": b"s-C2",
        "user.rc.recording_id": b"R2b",
        "user.rc.recording_type": b"OnDemand",
        "user.rc.direction": b"Outbound",
        "user.rc.from": b"101",
        "user.rc.from_name": b"Front Desk",
        "user.rc.to": b"202",
        "user.rc.to_name": b"",
        "user.rc.start_time": b"2026-11-23T18:15:02.000Z",
        "user.rc.duration": b"95",
        "user.rc.content_type": b"",
        "user.rc.size_exact": b"0",
    }
    assert vfs.xattrs(walk(vfs, "/2026/11/23").ino) == {}
    # Index changes reach the tree through invalidate (as freshness does).
    vfs.invalidate(filled.mark_deleted(["R2b"]))
    assert vfs.xattrs(leg.ino)["user.rc.deleted"] == b"1"


def test_calls_json(filled: Index) -> None:
    vfs = make_vfs(filled)
    node = walk(vfs, "/2026/11/23/calls.json")
    data = vfs.read_small(node.ino)
    assert len(data) == node.size
    records = json.loads(data)
    assert [r["id"] for r in records] == ["C1", "C2"]
    assert records[0]["rcfsPath"] == "2026/11/23/093015_in_+16505550123_to_101_R1.mp3"
    assert records[1]["rcfsPath"] == "2026/11/23/131502_out_101_to_4155550177_R2.mp3"
    assert records[1]["legs"][0]["rcfsPath"] == "2026/11/23/131502_out_101_to_202_R2b.mp3"
    # Raw fields survive as the API sent them.
    assert records[1]["to"] == {"phoneNumber": "(415) 555-0177"}
    # Deterministic: sorted keys, same bytes from a fresh Vfs, and after a no-op upsert.
    lines = data.decode().splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 4  # one record per line
    assert lines[1] == json.dumps(records[0], sort_keys=True, separators=(",", ":")) + ","
    assert make_vfs(filled).read_small(node.ino) == data
    vfs.invalidate(filled.upsert_records([make_record("C1", "2026-11-23T14:30:15Z",
                                                      recording_id="R1",
                                                      lastModifiedTime="2026-11-23T15:00:00Z")
                                          ]).changed_starts_ms)
    assert vfs.read_small(node.ino) == data


def test_inodes_stable_across_reopen(filled: Index, tmp_path: Path) -> None:
    paths = ["/2026", "/2026/11", "/2026/11/23", "/2026/11/23/calls.json",
             "/2026/11/23/131502_out_101_to_202_R2b.mp3", "/2025/12/31"]
    before = {p: walk(make_vfs(filled), p) for p in paths}
    filled.close()
    again = Index(tmp_path / "index.sqlite")
    try:
        vfs = make_vfs(again)
        assert {p: walk(vfs, p) for p in paths} == before
        assert before["/2026/11/23"].ino == dir_ino(2026, 11, 23)
    finally:
        again.close()


def test_invalidate_after_upsert(filled: Index) -> None:
    vfs = make_vfs(filled)
    day = walk(vfs, "/2026/11/23")
    assert len(vfs.readdir(day.ino)) == 4
    result = filled.upsert_records([
        make_record("C5", "2026-11-23T20:00:00Z", recording_id="R5"),
        make_record("C6", "2026-12-01T15:00:00Z", recording_id="R6"),
    ])
    assert len(vfs.readdir(day.ino)) == 4  # cached snapshot until invalidated
    inos = vfs.invalidate(result.changed_starts_ms)
    assert {day.ino, calls_json_ino(datetime(2026, 11, 23).date()), dir_ino(2026, 11),
            dir_ino(2026, 12), dir_ino(2026), ROOT_INO} <= inos
    assert len(vfs.readdir(day.ino)) == 5
    assert names(vfs, "/2026") == ["11", "12"]
    assert b"C5" in vfs.read_small(calls_json_ino(datetime(2026, 11, 23).date()))


def test_set_exact_size_updates_cached_listing(filled: Index) -> None:
    vfs = make_vfs(filled)
    day = walk(vfs, "/2026/11/23")
    vfs.readdir(day.ino)
    vfs.set_exact_size("R1", 777, "audio/mpeg")
    node = dict(vfs.readdir(day.ino))["093015_in_+16505550123_to_101_R1.mp3"]
    assert node.size == 777 and node.size_exact
    assert vfs.getattr(node.ino) == node
    assert vfs.recording(node.ino).size == 777
    assert vfs.xattrs(node.ino)["user.rc.size_exact"] == b"1"


def test_a_provisional_size_is_shown_but_never_kept(filled: Index) -> None:
    vfs = make_vfs(filled)
    day = walk(vfs, "/2026/11/23")
    name = "093015_in_+16505550123_to_101_R1.mp3"
    estimate = dict(vfs.readdir(day.ino))[name].size
    vfs.set_exact_size("R1", 10**12, "audio/mpeg", final=False)  # what headers promised
    node = dict(vfs.readdir(day.ino))[name]
    assert node.size == 10**12
    assert vfs.xattrs(node.ino)["user.rc.size_exact"] == b"0"
    assert filled.get_recording("R1").exact_size is None  # type: ignore[union-attr]
    assert vfs.size_unconfirmed("R1") == node.ino  # the download failed
    assert dict(vfs.readdir(day.ino))[name].size == estimate
    assert vfs.size_unconfirmed("R1") is None
    vfs.set_exact_size("R1", 5000, "audio/mpeg", final=False)
    vfs.set_exact_size("R1", 5000, "audio/mpeg", final=True, digest="ab" * 64)
    assert vfs.size_unconfirmed("R1") is None  # confirmed: nothing to forget
    stored = filled.get_recording("R1")
    assert stored is not None and stored.exact_size == 5000 and stored.digest == "ab" * 64
    attrs = vfs.xattrs(node.ino)
    assert attrs["user.rc.blake2b"] == b"ab" * 64 and attrs["user.rc.size_exact"] == b"1"


def test_hide_deleted(filled: Index) -> None:
    filled.mark_deleted(["R3"])
    shown = make_vfs(filled)
    assert names(shown, "/2026/11") == ["23", "24"]
    hidden = make_vfs(filled, keep_deleted=False)
    assert names(hidden, "/2026/11") == ["23"]
    ino = walk(shown, "/2026/11/24/233000_in_+16505550123_to_101_R3.mp3").ino
    with pytest.raises(NotFound):
        hidden.getattr(ino)


def test_dst_day_and_time_zone_choice(index: Index) -> None:
    # 2026-03-08 is a 23-hour day in New York; 00:10 and 23:50 local both belong to it.
    index.upsert_records([
        make_record("A", "2026-03-08T05:10:00Z", recording_id="RA"),
        make_record("B", "2026-03-09T03:50:00Z", recording_id="RB"),
        make_record("C", "2026-03-09T04:10:00Z", recording_id="RC"),
    ])
    vfs = make_vfs(index)
    assert names(vfs, "/2026/03") == ["08", "09"]
    assert [n[:6] for n in names(vfs, "/2026/03/08")] == ["001000", "235000", "calls."]
    utc = make_vfs(index, tz=ZoneInfo("UTC"))
    assert names(utc, "/2026/03") == ["08", "09"]
    assert [n[:6] for n in names(utc, "/2026/03/09")] == ["035000", "041000", "calls."]


@pytest.mark.parametrize("zone", ["America/Santiago", "America/Havana", "Asia/Tokyo", "UTC"])
def test_midnight_transitions_file_lands_in_its_local_day(index: Index, zone: str) -> None:
    # Santiago: back from 24:00 to 23:00 (2026-04-05 03:00Z) and forward from
    # 24:00 to 01:00 (2026-09-06 04:00Z); Havana: back from 01:00 to 00:00.
    tz = ZoneInfo(zone)
    anchors = [datetime(2026, 4, 5, 3, tzinfo=UTC), datetime(2026, 9, 6, 4, tzinfo=UTC),
               datetime(2026, 11, 1, 5, tzinfo=UTC)]
    times = [a + timedelta(minutes=m) for a in anchors for m in range(-95, 96, 10)]
    index.upsert_records([make_record(f"C{n}", t.isoformat(), recording_id=f"R{n}")
                          for n, t in enumerate(times)])
    vfs = make_vfs(index, tz=tz)
    where: dict[str, str] = {}
    for y, yn in vfs.readdir(ROOT_INO):
        for m, mn in vfs.readdir(yn.ino):
            for d, dn in vfs.readdir(mn.ino):
                assert len(vfs.readdir(dn.ino)) > 1
                for name, node in vfs.readdir(dn.ino):
                    if node.recording_id is not None:
                        where[node.recording_id] = f"{y}-{m}-{d} {name[:6]}"
    assert len(where) == len(times)
    for n, t in enumerate(times):
        local = t.astimezone(tz)
        assert where[f"R{n}"] == f"{local:%Y-%m-%d %H%M%S}"


def test_two_thousand_recording_day(index: Index) -> None:
    start = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # local midnight in New York
    records = [make_record(f"C{n}", (start + timedelta(seconds=40 * n)).isoformat(),
                           recording_id=str(4_000_000_000 + n)) for n in range(2000)]
    records.append(make_record("X", "2026-11-24T05:00:00Z", recording_id="next-day"))
    index.upsert_records(records)
    vfs = make_vfs(index)
    day = walk(vfs, "/2026/11/23")
    t0 = time.perf_counter()
    cold = vfs.readdir(day.ino)
    t1 = time.perf_counter()
    warm = vfs.readdir(day.ino)
    t2 = time.perf_counter()
    assert len(cold) == 2001 and cold == warm
    assert [n for n, _ in cold] == sorted(n for n, _ in cold)
    assert len({node.ino for _, node in cold}) == 2001
    print(f"2,000-entry day: cold {1000 * (t1 - t0):.1f} ms, warm {1000 * (t2 - t1):.2f} ms")
    assert t2 - t1 < 0.02
    assert len(json.loads(vfs.read_small(calls_json_ino(day_date := start.date())))) == 2000
    assert day_date.day == 23


def test_kernel_timeouts_long_only_for_final_exact_sizes(filled: Index) -> None:
    """An hour for a recording whose size is exact and final; a minute for an
    estimate (remembered, so open drops it), a download's promise, and the rest."""
    from rcfs.fuse_ops import ATTR_TIMEOUT, EXACT_RECORDING_TIMEOUT, Operations
    from rcfs.status import ErrorLog

    vfs = make_vfs(filled)
    ops = Operations(vfs, content=None, errors=ErrorLog())  # type: ignore[arg-type]
    path = "/2026/11/23/093015_in_+16505550123_to_101_R1.mp3"
    estimate = ops._attrs(walk(vfs, path))
    assert estimate.attr_timeout == estimate.entry_timeout == ATTR_TIMEOUT
    assert walk(vfs, path).ino in ops._estimates_shown
    vfs.set_exact_size("R1", 5000, "audio/mpeg", final=False)  # promised by the headers
    assert ops._attrs(walk(vfs, path)).attr_timeout == ATTR_TIMEOUT
    vfs.set_exact_size("R1", 5000, "audio/mpeg")
    exact = ops._attrs(walk(vfs, path))
    assert exact.attr_timeout == exact.entry_timeout == EXACT_RECORDING_TIMEOUT
    assert ops._attrs(walk(vfs, "/2026/11/23")).attr_timeout == ATTR_TIMEOUT
    assert ops._attrs(walk(vfs, "/2026/11/23/calls.json")).attr_timeout == ATTR_TIMEOUT
