"""The inode number scheme, and the attributes of an inode (`Node`).

Inodes are arithmetic, hence stable across remounts of the same index and
zone: 1 root, 2 `.rcfs`, 3 `.rcfs/status.json`; a date key K = yyyymmdd (year
dirs use mmdd = 0000, months dd = 00) gives the directory 16 + 2K and the day's
`calls.json` 17 + 2K (< 2**28); a recording is 2**30 + its index row id.

Pure: no I/O, no caches. Whether a date that decodes exists is for
`listings` to say.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from rcfs.errors import NotFound

if TYPE_CHECKING:
    from rcfs.index import IndexedRecording

ROOT_INO = 1
CONTROL_DIR_INO = 2
STATUS_INO = 3
CONTROL_DIR_NAME = ".rcfs"
STATUS_NAME = "status.json"
CALLS_JSON = "calls.json"
_DATE_BASE = 16
RECORDING_BASE = 1 << 30


@dataclass(frozen=True, slots=True)
class Node:
    """Attributes of one inode. `mode` includes the S_IFDIR/S_IFREG type bits."""

    ino: int
    is_dir: bool
    mode: int
    nlink: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    recording_id: str | None = None
    size_exact: bool = True


@dataclass(frozen=True, slots=True)
class Attrs:
    """What every node of a tree shares: its owner, and its modes under the umask."""

    uid: int
    gid: int
    dir_mode: int
    file_mode: int

    @classmethod
    def masked(cls, *, uid: int, gid: int, umask: int) -> Attrs:
        return cls(uid, gid, stat.S_IFDIR | (0o555 & ~umask), stat.S_IFREG | (0o444 & ~umask))

    def directory(self, ino: int, nlink: int, mtime_ns: int) -> Node:
        return Node(ino, True, self.dir_mode, nlink, 0, mtime_ns, self.uid, self.gid)

    def file(self, ino: int, size: int, mtime_ns: int, *, size_exact: bool = True) -> Node:
        return Node(ino, False, self.file_mode, 1, size, mtime_ns, self.uid, self.gid,
                    size_exact=size_exact)

    def recording(self, ir: IndexedRecording) -> Node:
        return Node(RECORDING_BASE + ir.rowid, False, self.file_mode, 1, ir.size,
                    ir.start_ms * 1_000_000, self.uid, self.gid,
                    recording_id=ir.recording_id, size_exact=ir.exact_size is not None)


def dir_ino(year: int, month: int = 0, day: int = 0) -> int:
    return _DATE_BASE + 2 * (year * 10000 + month * 100 + day)


def calls_json_ino(d: date) -> int:
    return dir_ino(d.year, d.month, d.day) + 1


def decode(ino: int) -> tuple[str, tuple[int, ...]]:
    """(kind, key) of an inode number: "root", "ctl" or "status" with (); "rec"
    with (row id,); "year" (y,), "month" (y, m), "day" or "calls" (y, m, d).
    A date that decodes may still not exist (2026-02-31, or no calls that day)."""
    if ino == ROOT_INO:
        return "root", ()
    if ino == CONTROL_DIR_INO:
        return "ctl", ()
    if ino == STATUS_INO:
        return "status", ()
    if ino > RECORDING_BASE:
        return "rec", (ino - RECORDING_BASE,)
    if ino >= _DATE_BASE:
        key, odd = divmod(ino - _DATE_BASE, 2)
        y, rest = divmod(key, 10000)
        m, d = divmod(rest, 100)
        if 1 <= y <= 9999 and 1 <= m <= 12 and 1 <= d <= 31:
            return ("calls" if odd else "day"), (y, m, d)
        if not odd and 1 <= y <= 9999 and 1 <= m <= 12 and d == 0:
            return "month", (y, m)
        if not odd and 1 <= y <= 9999 and m == 0 and d == 0:
            return "year", (y,)
    raise NotFound(f"no inode {ino}")
