"""What a day directory holds: its recordings' files and its `calls.json`.

A day listing (`Day`) holds its nodes and, once asked for, the size of its
calls.json; the listings are an LRU of at most 20,000 entries in all by
default (a bigger day is still cached, alone). calls.json is built (~30 ms
for a 2,000-call day: a second index query, every record decoded and
encoded) only when something lists the day, looks it up or opens it, not
when a recording's path is looked up: opening a day's files by name after a
remount spent ~15% of the daemon's time building it. The bytes of the days
built last are kept up to 8 MiB in all by default (rsync lists a day, then
copies its calls.json); otherwise they are built again, deterministically,
from the listing's names and deletions when calls.json is opened.
Building a listing also fills the tree's recordings cache with the day's
files, so that opening them costs no index query.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cachetools import LRUCache

from rcfs.index import Index, IndexedRecording
from rcfs.naming import day_of, day_path, file_name

from .inodes import CALLS_JSON, Attrs, Node, calls_json_ino
from .listings import Listings
from .sizes import LearnedSizes

log = logging.getLogger(__name__)


@dataclass
class Day:
    names: list[str]  # sorted, calls.json included
    nodes: dict[str, Node]  # calls.json's once sized: the length of `_calls_bytes(...)`
    ids: dict[str, str]  # recording id -> name
    deleted: frozenset[str]  # recording ids gone upstream (marked in calls.json)


class Days:
    """Day listings and calls.json bytes over `index` in zone `tz`.

    `recordings` is the tree's LRU of recordings by inode, (start_ms, recording,
    node), which a build fills with the day's files.
    """

    def __init__(
        self,
        index: Index,
        tz: ZoneInfo,
        attrs: Attrs,
        *,
        listings: Listings,
        sizes: LearnedSizes,
        recordings: LRUCache[int, tuple[int, IndexedRecording, Node]],
        keep_deleted: bool,
        entries: int,
        calls_bytes: int,
    ) -> None:
        self._index = index
        self._tz = tz
        self._attrs = attrs
        self._listings = listings
        self._sizes = sizes
        self._recs = recordings
        self._all = keep_deleted
        self._days: LRUCache[date, Day] = LRUCache(
            maxsize=entries, getsizeof=lambda day: min(len(day.names), entries))
        # calls.json bytes of the days built last, consistent with their listing.
        self._calls: LRUCache[date, bytes] = LRUCache(maxsize=calls_bytes, getsizeof=len)

    def listing(self, d: date, *, calls: bool = True) -> Day:
        """The day's listing; with `calls`, its calls.json node is in `nodes` too."""
        listing = self._days.get(d)
        if listing is None:
            listing = self._days[d] = self._build(d)
            self._calls.pop(d, None)
        if calls and CALLS_JSON not in listing.nodes:
            self._size_calls(d, listing)
        return listing

    def node(self, d: date, name: str) -> Node | None:
        """The node of one name in the day (a recording's costs no calls.json)."""
        return self.listing(d, calls=name == CALLS_JSON).nodes.get(name)

    def calls_json(self, d: date) -> bytes:
        """The content of the day's calls.json, of the size its listing shows."""
        listing = self.listing(d, calls=False)
        if CALLS_JSON not in listing.nodes:
            return self._size_calls(d, listing)
        data = self._calls.get(d)
        if data is None:
            data = self._calls_bytes(d, listing.ids, listing.deleted)
            if len(data) != listing.nodes[CALLS_JSON].size:
                # The index changed under the cached listing and the refresh
                # has not invalidated it yet: serve the new state, size and all.
                log.debug("calls.json of %s changed before invalidation: rebuilt", d)
                self.forget(d)
                return self._size_calls(d, self.listing(d, calls=False))
            self._keep_calls(d, data)
        return data

    def show(self, ir: IndexedRecording) -> None:
        """Put a changed recording in its day's listing, if that is cached."""
        listing = self._days.get(day_of(ir.recording, self._tz))
        if listing is not None and ir.recording_id in listing.ids:
            listing.nodes[listing.ids[ir.recording_id]] = self._attrs.recording(ir)

    def forget(self, d: date) -> None:
        self._days.pop(d, None)
        self._calls.pop(d, None)

    def clear(self) -> None:
        self._days.clear()
        self._calls.clear()

    def _size_calls(self, d: date, listing: Day) -> bytes:
        """Build calls.json, put its node (its size) in the listing, keep the bytes."""
        data = self._calls_bytes(d, listing.ids, listing.deleted)
        listing.nodes[CALLS_JSON] = self._attrs.file(calls_json_ino(d), len(data),
                                                     self._listings.mtime_of_day(d))
        self._keep_calls(d, data)
        return data

    def _keep_calls(self, d: date, data: bytes) -> None:
        if len(data) <= self._calls.maxsize:
            self._calls[d] = data

    def _build(self, d: date) -> Day:
        """The day's listing, without calls.json's node (`_size_calls` adds it)."""
        tz = self._tz
        lo, hi = self._listings.start_of(d), self._listings.start_of(d + timedelta(days=1))
        nodes: dict[str, Node] = {}
        ids: dict[str, str] = {}
        deleted: set[str] = set()
        recs: list[tuple[int, tuple[int, IndexedRecording, Node]]] = []
        for ir in self._index.recordings_between(lo, hi, include_deleted=self._all):
            if not self._sizes.empty:
                ir = self._sizes.overlay(ir)
            name = file_name(ir.recording, tz)
            node = nodes[name] = self._attrs.recording(ir)
            ids[ir.recording_id] = name
            recs.append((node.ino, (ir.start_ms, ir, node)))
            if ir.deleted:
                deleted.add(ir.recording_id)
        if len(recs) <= self._recs.maxsize // 2:
            # What the opens of this day's files will ask for (`Vfs._recording`): from
            # the listing's query, not one index query per first open (9% of the
            # daemon reading a remounted day of 2,000 files).
            for ino, rec in recs:
                self._recs[ino] = rec
        return Day(sorted([*nodes, CALLS_JSON]), nodes, ids, frozenset(deleted))

    def _calls_bytes(self, d: date, ids: dict[str, str], deleted: frozenset[str]) -> bytes:
        """calls.json of a day: the same bytes for the same records, ids and deletions."""
        lo, hi = self._listings.start_of(d), self._listings.start_of(d + timedelta(days=1))
        prefix = day_path(d) + "/"
        records: list[dict[str, Any]] = []
        for stored in self._index.records_between(lo, hi):
            raw = stored.raw
            if _add_paths(raw, ids, prefix, deleted):
                records.append(raw)
        return _calls_json(records)


def _add_paths(
    raw: dict[str, Any], ids: dict[str, str], prefix: str,
    deleted: set[str] | frozenset[str] = frozenset(),
) -> int:
    """Add "rcfsPath" to a record (its own recording, else its first leg's) and to
    each leg with a listed recording, and "rcfsDeleted": true beside a path whose
    recording is gone upstream (kept in the archive); returns how many paths were found."""
    found = 0
    first: tuple[str, bool] | None = None
    for leg in raw.get("legs") or ():
        if isinstance(leg, dict) and isinstance(leg.get("recording"), dict):
            rid = str(leg["recording"].get("id"))
            name = ids.get(rid)
            if name is not None:
                leg["rcfsPath"] = prefix + name
                if rid in deleted:
                    leg["rcfsDeleted"] = True
                first = first or (prefix + name, rid in deleted)
                found += 1
    own = raw.get("recording")
    rid = str(own.get("id")) if isinstance(own, dict) else ""
    name = ids.get(rid) if isinstance(own, dict) else None
    if name is not None:
        found += 1
        raw["rcfsPath"], gone = prefix + name, rid in deleted
    else:
        raw["rcfsPath"], gone = first if first is not None else (None, False)
    if gone:
        raw["rcfsDeleted"] = True
    return found


def _calls_json(records: list[dict[str, Any]]) -> bytes:
    """A JSON array, one record per line with sorted keys: deterministic, diffable,
    and 15x faster than indent= (which bypasses the C encoder)."""
    if not records:
        return b"[]\n"
    lines = ",\n".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for r in records)
    return f"[\n{lines}\n]\n".encode()
