"""Recordings deleted upstream in the index and the tree: marking, keeping,
hiding, the calls.json marks, and the schema migration that added `kept`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rcfs.errors import NotFound
from rcfs.index import SCHEMA_VERSION, Index
from rcfs.vfs import ROOT_INO, Node, Vfs

from .rcfs_records import make_record

UTC = ZoneInfo("UTC")


def make_vfs(index: Index, **kw: Any) -> Vfs:
    return Vfs(index, UTC, uid=1, gid=1, umask=0o022, status_provider=lambda: b"{}", **kw)


def walk(vfs: Vfs, path: str) -> Node:
    node = vfs.getattr(ROOT_INO)
    for part in path.strip("/").split("/"):
        node = vfs.lookup(node.ino, part)
    return node


def names(vfs: Vfs, path: str) -> list[str]:
    return [n for n, _ in vfs.readdir(walk(vfs, path).ino)]


def test_record_that_lost_its_recording_marks_it_deleted(index: Index) -> None:
    original = make_record("C1", "2026-11-23T10:00:00Z", recording_id="R1")
    index.upsert_records([original, make_record("C2", "2026-11-23T11:00:00Z", recording_id="R2")])
    # ISync after DELETE /recording: the same call, without its recording block.
    stripped = {k: v for k, v in original.items() if k != "recording"}
    stripped["lastModifiedTime"] = "2026-11-24T08:00:00Z"
    result = index.upsert_records([stripped])
    assert result.changed_starts_ms and not result.added_recordings
    r1 = index.get_recording("R1")
    assert r1 is not None and r1.deleted and r1.kept is None
    assert index.undecided_deleted() == ["R1"]
    # The stored record is the one that carried the recording (calls.json keeps it)...
    stored = index.records_between(0, 2**62)[0]
    assert stored.raw["recording"]["id"] == "R1"
    # ...and its mtime moved to the deletion, so rsync copies calls.json again.
    assert stored.mod_ms == 1795507200000
    assert index.stats()["recordings"] == 1 and index.stats()["deleted"] == 1


def test_kept_deleted_stays_listed_and_marked_dropped_leaves(index: Index) -> None:
    index.upsert_records(
        [
            make_record("C1", "2026-11-23T10:00:00Z", recording_id="R1"),
            make_record("C2", "2026-11-23T11:00:00Z", recording_id="R2"),
            make_record("C3", "2026-11-25T11:00:00Z", recording_id="R3"),
        ]
    )
    vfs = make_vfs(index)
    shown = names(vfs, "/2026/11/23")
    index.mark_deleted(["R1", "R2", "R3"])
    vfs.invalidate_all()
    assert names(vfs, "/2026/11/23") == shown  # undecided: still listed
    index.set_kept(["R1"], True)
    index.set_kept(["R2", "R3"], False)
    vfs.invalidate_all()
    listing = names(vfs, "/2026/11/23")
    assert [n for n in listing if n.endswith(".mp3")] == [shown[0]]
    assert names(vfs, "/2026/11") == ["23"]  # the day with only a dropped recording is gone
    node = walk(vfs, "/2026/11/23/" + shown[0])
    assert vfs.xattrs(node.ino)["user.rc.deleted"] == b"1"
    day = json.loads(vfs.read_small(walk(vfs, "/2026/11/23/calls.json").ino))
    assert [(r["id"], r.get("rcfsDeleted")) for r in day] == [("C1", True)]
    gone = vfs.entry_of(index.get_recording("R2"))  # type: ignore[arg-type]
    assert gone == (walk(vfs, "/2026/11/23").ino, shown[1])
    with pytest.raises(NotFound):
        vfs.recording(2**30 + index.get_recording("R2").rowid)  # type: ignore[union-attr]
    assert index.kept_deleted() == ["R1"] and index.stats()["deleted_kept"] == 1
    # --no-keep-deleted hides the kept one too (and with it the whole tree here).
    assert make_vfs(index, keep_deleted=False).readdir(ROOT_INO) == []
    # Seen live again: back in the tree, undecided flag cleared.
    index.upsert_records([make_record("C2", "2026-11-23T11:00:00Z", recording_id="R2")])
    r2 = index.get_recording("R2")
    assert r2 is not None and not r2.deleted and r2.kept is None


def test_schema_1_index_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    Index(path).close()
    with sqlite3.connect(path) as conn:  # make it look like a version-1 index
        conn.execute("DROP TABLE recordings")
        conn.execute(
            "CREATE TABLE recordings (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "recording_id TEXT NOT NULL UNIQUE, call_id TEXT NOT NULL, "
            "start_ms INTEGER NOT NULL, direction TEXT NOT NULL, from_phone TEXT, "
            "from_ext TEXT, from_name TEXT, to_phone TEXT, to_ext TEXT, to_name TEXT, "
            "session_id TEXT NOT NULL, telephony_session_id TEXT, "
            "recording_type TEXT NOT NULL, name_content_type TEXT, "
            "duration INTEGER NOT NULL, content_uri TEXT NOT NULL, content_type TEXT, "
            "exact_size INTEGER, deleted INTEGER NOT NULL DEFAULT 0, deleted_at INTEGER)"
        )
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    idx = Index(path)
    try:
        assert idx.get_meta("schema_version") == str(SCHEMA_VERSION)
        idx.upsert_records([make_record("C1")])
        idx.mark_deleted(["4082461004"])
        assert idx.set_kept(["4082461004"], True)
        assert idx.get_recording("4082461004").kept is True  # type: ignore[union-attr]
    finally:
        idx.close()
