"""`Vfs`: the tree's operations, answered from its parts.

Decodes inodes (`inodes.py`), asks `listings.py` which years, months and days
exist and `days.py` what a day holds, keeps the recordings it has served, and
tells the adapter what to invalidate when the index changes. Learned sizes
are `sizes.py`'s.

Caches. Memory is bounded by entries and bytes, not by days: the bytes of
every cached day's calls.json cost ~900 B per call, 106 MB for 32 busy days.
Day listings are an LRU of at most 20,000 entries in all, and the calls.json
bytes of the days built last one of 8 MiB (`days.py`). Recordings opened or
stat'ed are an LRU by inode (~1.5 KiB each), so an open() costs no index
query; `invalidate` drops those of the days it forgets, and `set_exact_size`
replaces its one. Every change to a recording's row reaches the tree through
one of those two (freshness passes the starts returned by `upsert_records`,
`mark_deleted` and `set_kept` to `invalidate`).
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import trio
from cachetools import LRUCache

from rcfs.errors import NotFound
from rcfs.index import Index, IndexedRecording
from rcfs.models import from_epoch_ms
from rcfs.naming import day_of, day_path, file_name

from .days import Days
from .inodes import (
    CALLS_JSON,
    CONTROL_DIR_INO,
    CONTROL_DIR_NAME,
    RECORDING_BASE,
    ROOT_INO,
    STATUS_INO,
    STATUS_NAME,
    Attrs,
    Node,
    calls_json_ino,
    decode,
    dir_ino,
)
from .listings import Listings
from .sizes import LearnedSizes

_YEAR_RE = re.compile(r"[0-9]{4}")
_TWO_RE = re.compile(r"[0-9]{2}")


class Vfs:
    """The tree over `index` in zone `tz`, owned by `uid`:`gid`, modes masked by `umask`."""

    def __init__(
        self,
        index: Index,
        tz: ZoneInfo,
        *,
        uid: int,
        gid: int,
        umask: int,
        status_provider: Callable[[], bytes],
        keep_deleted: bool = True,
        expected_span: Callable[[], tuple[int, int] | None] = lambda: None,
        clock_ns: Callable[[], int] = time.time_ns,
        day_cache_entries: int = 20_000,
        recording_cache_size: int = 8192,
        calls_cache_bytes: int = 8 << 20,
    ) -> None:
        self._index = index
        self._tz = tz
        self._attrs = Attrs.masked(uid=uid, gid=gid, umask=umask)
        self._status = status_provider
        self._all = keep_deleted
        self._clock_ns = clock_ns
        self._listings = Listings(index, tz, self._attrs, keep_deleted=keep_deleted,
                                  expected_span=expected_span)
        self._sizes = LearnedSizes(index, tz, show=self._show, cached=self._opened)
        # Inode -> (start_ms, recording, node); start_ms finds a day's entries in
        # `invalidate`. ~1.5 KiB an entry: 8,192 entries are 12 MiB.
        self._recs: LRUCache[int, tuple[int, IndexedRecording, Node]] = LRUCache(
            maxsize=recording_cache_size)
        # Recording id -> inode, of recordings `recording` gave out (opens): `_opened`.
        self._ino_of: LRUCache[str, int] = LRUCache(maxsize=recording_cache_size)
        self._days = Days(index, tz, self._attrs, listings=self._listings, sizes=self._sizes,
                          recordings=self._recs, keep_deleted=keep_deleted,
                          entries=day_cache_entries, calls_bytes=calls_cache_bytes)

    # -- public API --------------------------------------------------------

    def lookup(self, parent_ino: int, name: str) -> Node:
        kind, key = decode(parent_ino)
        lists = self._listings
        if kind == "root":
            if name == CONTROL_DIR_NAME:
                return self._control_node()
            if _YEAR_RE.fullmatch(name) and int(name) in lists.years():
                return lists.dir_node((int(name),))
        elif kind == "ctl":
            if name == STATUS_NAME:
                return self._status_node()
        elif kind == "year":
            if _TWO_RE.fullmatch(name) and int(name) in lists.months(key[0]):
                return lists.dir_node((key[0], int(name)))
        elif kind == "month":
            if _TWO_RE.fullmatch(name) and int(name) in lists.day_list(key[0], key[1]):
                return lists.dir_node((key[0], key[1], int(name)))
        elif kind == "day":
            lists.check_exists(kind, key, parent_ino)  # also rejects 2026-02-31
            node = self._days.node(date(*key), name)
            if node is not None:
                return node
        raise NotFound(f"no {name!r} in inode {parent_ino}")

    def getattr(self, ino: int) -> Node:
        kind, key = decode(ino)
        if kind == "root":
            return self._listings.dir_node(())
        if kind == "ctl":
            return self._control_node()
        if kind == "status":
            return self._status_node()
        if kind == "rec":
            return self._recording(ino)[2]
        self._listings.check_exists(kind, key, ino)
        if kind == "calls":
            node = self._days.node(date(*key), CALLS_JSON)
            if node is None:  # never: every day lists one
                raise NotFound(f"no calls.json in inode {ino}")
            return node
        return self._listings.dir_node(key)

    def readdir(self, ino: int, *, calls: bool = True) -> list[tuple[str, Node]]:
        """A sorted snapshot of the directory (`.rcfs` is never listed). Without
        `calls`, a day's `calls.json` is left out, and not built for the listing."""
        kind, key = decode(ino)
        lists = self._listings
        if kind == "ctl":
            return [(STATUS_NAME, self._status_node())]
        if kind == "root":
            return [(f"{y:04d}", lists.dir_node((y,))) for y in lists.years()]
        lists.check_exists(kind, key, ino)
        if kind == "year":
            return [(f"{m:02d}", lists.dir_node((*key, m))) for m in lists.months(key[0])]
        if kind == "month":
            return [(f"{d:02d}", lists.dir_node((*key, d))) for d in lists.day_list(*key)]
        if kind == "day":
            listing = self._days.listing(date(*key), calls=calls)
            return [(name, listing.nodes[name]) for name in listing.names
                    if calls or name != CALLS_JSON]
        raise NotFound(f"inode {ino} is not a directory")

    def parent(self, ino: int) -> int:
        """The directory above directory `ino` (the root is its own parent)."""
        kind, key = decode(ino)
        if kind == "year" or kind == "ctl":
            return ROOT_INO
        if kind == "month":
            return dir_ino(key[0])
        if kind == "day":
            return dir_ino(key[0], key[1])
        return ROOT_INO

    def day_range(self, ino: int, name: str | None = None) -> tuple[int, int] | None:
        """The span (epoch ms, [lo, hi)) whose call log a lookup of `name` in directory
        `ino` (or, without a name, a listing of `ino`) needs indexed: that of the day
        looked up in a month, or of the day directory itself; None for anything else."""
        kind, key = decode(ino)
        if kind == "month" and name is not None and _TWO_RE.fullmatch(name):
            try:
                d = date(key[0], key[1], int(name))
            except ValueError:
                return None
        elif kind == "day":
            d = date(*key)
        else:
            return None
        return self._listings.start_of(d), self._listings.start_of(d + timedelta(days=1))

    def xattrs(self, ino: int) -> dict[str, bytes]:
        """`user.rc.*` of a recording (DESIGN.md); empty for everything else."""
        kind, _ = decode(ino)
        if kind != "rec":
            self.getattr(ino)
            return {}
        ir = self.recording(ino)
        rec = ir.recording
        start = rec.start_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        values = {
            "call_id": rec.call_id,
            "session_id": rec.session_id,
            "telephony_session_id": rec.telephony_session_id or "",
            "recording_id": rec.recording_id,
            "recording_type": rec.recording_type,
            "direction": rec.direction,
            "from": rec.from_party.display(),
            "from_name": rec.from_party.name or "",
            "to": rec.to_party.display(),
            "to_name": rec.to_party.name or "",
            "start_time": start,
            "duration": str(rec.duration),
            "content_type": ir.content_type or "",
            "size_exact": "1" if ir.exact_size is not None and (
                not self._sizes.is_provisional(ir.recording_id)) else "0",
        }
        if ir.digest:
            values["blake2b"] = ir.digest
        if ir.deleted:
            values["deleted"] = "1"
        return {f"user.rc.{k}": v.encode("utf-8") for k, v in values.items()}

    def read_small(self, ino: int) -> bytes:
        """The whole content of a `calls.json` or of `.rcfs/status.json`."""
        kind, key = decode(ino)
        if kind == "status":
            return self._status()
        if kind == "calls":
            self._listings.check_exists(kind, key, ino)
            return self._days.calls_json(date(*key))
        raise NotFound(f"inode {ino} is not a generated file")

    def recording(self, ino: int) -> IndexedRecording:
        """The indexed recording behind a file inode (content URI, size, exactness)."""
        if ino <= RECORDING_BASE:
            raise NotFound(f"inode {ino} is not a recording")
        ir = self._recording(ino)[1]
        self._ino_of[ir.recording_id] = ino
        return ir

    def _opened(self, recording_id: str) -> IndexedRecording | None:
        """The recording as the tree holds it, if `recording` gave it out lately (an
        open, whose download then reports the size): spares `LearnedSizes` an index
        read, ~0.2 ms of every uncached open's time to first byte."""
        ino = self._ino_of.get(recording_id)
        cached = None if ino is None else self._recs.get(ino)
        if cached is None or cached[1].recording_id != recording_id:
            return None
        return cached[1]

    def recording_ino(self, ir: IndexedRecording) -> int:
        return RECORDING_BASE + ir.rowid

    def path_of(self, ir: IndexedRecording) -> str:
        """The recording's path relative to the mount root."""
        return f"{day_path(day_of(ir.recording, self._tz))}/{file_name(ir.recording, self._tz)}"

    def entry_of(self, ir: IndexedRecording) -> tuple[int, str]:
        """(day directory inode, file name) of a recording: for invalidating its dentry."""
        d = day_of(ir.recording, self._tz)
        return dir_ino(d.year, d.month, d.day), file_name(ir.recording, self._tz)

    def day_name(self, start_ms: int) -> str:
        """The day directory (YYYY-MM-DD in the mount's zone) of a call start."""
        return from_epoch_ms(start_ms).astimezone(self._tz).date().isoformat()

    def set_exact_size(
        self, recording_id: str, size: int, content_type: str | None = None, *,
        final: bool = True, digest: str | None = None,
    ) -> None:
        """Record a learned size: the next getattr, listing and `recording` show it.

        A final one is persisted by `run` from a worker thread (inline, an index
        write of ~1 ms that may wait for a running batch, when `run` is not
        running), with the content's digest; a provisional one only lives in memory.
        """
        self._sizes.learn(recording_id, size, content_type, final=final, digest=digest)

    def size_provisional(self, recording_id: str) -> bool:
        """Whether the size shown is only what a running download's headers promised."""
        return self._sizes.is_provisional(recording_id)

    def size_unconfirmed(self, recording_id: str) -> int | None:
        """A download ended without confirming its provisional size: forget it.
        Returns the inode whose attributes the kernel must drop, if any."""
        ir = self._sizes.unconfirm(recording_id)
        return None if ir is None else self.recording_ino(ir)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write learned sizes to the index from a worker thread until cancelled.

        Belongs in the mount's nursery. Sizes learned while a write runs go in
        the next one. On cancellation (unmount) what is left is written inline.
        """
        await self._sizes.run(task_status=task_status)

    def invalidate(self, starts_ms: Iterable[int]) -> set[int]:
        """Forget cached listings for the days of these call starts.

        Returns the inodes whose listing, attributes or content changed: the
        day directories, their calls.json, and their month, year and root
        directories (fuse_ops passes them to pyfuse3.invalidate_inode).
        """
        inos: set[int] = set()
        days: set[date] = set()
        for start in starts_ms:
            d = from_epoch_ms(start).astimezone(self._tz).date()
            days.add(d)
            self._days.forget(d)
            self._listings.forget_day(d)
            inos.update((ROOT_INO, dir_ino(d.year), dir_ino(d.year, d.month),
                         dir_ino(d.year, d.month, d.day), calls_json_ino(d)))
        self._forget_recordings(days)
        return inos

    def window_indexed(self, span: tuple[int, int]) -> tuple[set[int], list[tuple[int, str]]]:
        """The window `span` was being indexed and now is: years and months shown
        in advance that have no recordings go. Returns the directory inodes to
        invalidate and the (parent, name) entries that left the tree."""
        return self._listings.window_indexed(span)

    def invalidate_all(self) -> None:
        self._days.clear()
        self._listings.clear()
        self._recs.clear()
        self._ino_of.clear()

    # -- recordings and generated nodes --------------------------------------

    def _show(self, ir: IndexedRecording) -> None:
        """Put a changed recording in the caches that hold it."""
        self._recs[self.recording_ino(ir)] = (ir.start_ms, ir, self._attrs.recording(ir))
        self._days.show(ir)

    def _forget_recordings(self, days: set[date]) -> None:
        """Drop the cached recordings of these local days: one pass over the cache
        (3.5 ms at 8,192 entries), once per refresh that changed something."""
        if not days or not self._recs:
            return
        start_of = self._listings.start_of
        bounds = sorted(b for d in days
                        for b in (start_of(d), start_of(d + timedelta(days=1))))
        # Disjoint half-open ranges: a start is inside one iff an odd number of bounds <= it.
        stale = [ino for ino, (start, _, _) in self._recs.items()
                 if bisect.bisect_right(bounds, start) % 2]
        for ino in stale:
            del self._recs[ino]

    def _control_node(self) -> Node:
        return self._attrs.directory(CONTROL_DIR_INO, 2, self._clock_ns())

    def _status_node(self) -> Node:
        # size_exact=False: the size changes from one read to the next, so the
        # adapter gives it the short attribute timeout of an estimate.
        return self._attrs.file(STATUS_INO, len(self._status()), self._clock_ns(),
                                size_exact=False)

    def _recording(self, ino: int) -> tuple[int, IndexedRecording, Node]:
        cached = self._recs.get(ino)
        if cached is None:
            found = self._index.recording_by_rowid(ino - RECORDING_BASE)
            if found is None:
                raise NotFound(f"no recording with inode {ino}")
            ir = self._sizes.overlay(found)
            cached = self._recs[ino] = (ir.start_ms, ir, self._attrs.recording(ir))
        ir = cached[1]
        if ir.deleted and (not self._all or ir.kept is False):
            raise NotFound(f"no recording with inode {ino}")
        return cached
