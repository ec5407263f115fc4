"""Seals: a check, cheap enough for every first open, that a cache file is unchanged.

Owns `seals.sqlite` in the cache directory: for each cache or archive file
whose digest is known to match (written by a commit, or after a full check),
its path and what `fstat` said right after (device, inode, size, mtime and
ctime in nanoseconds), with the digest it was checked against.

Why. The first open of a cache entry after a mount must not serve bytes that
changed at rest (integrity, `verify.py`). Hashing every entry at its first
open cost a remounted tree half its read speed for small files. Any change
to a file through the file system (a write, a truncate, `utime` to hide a
write, a rename or a planted replacement) changes its ctime, which nothing
but the kernel sets, or its inode: so a file whose `fstat` still matches its
seal holds the bytes whose digest was taken, and needs no read. A file that
does not match is hashed in full, as before, and sealed again if it is good.
What a seal cannot see is damage below the file system (a failing disk that
returns other bytes); `rcfs verify` hashes everything for that.

The seal is taken before the hash, so a write during or after the hash
breaks it. Kernels before 6.13 keep coarse timestamps: a write in the same
clock tick as the stat may leave the ctime as it was. There, as git does for
"racily clean" files, a seal taken within `RACY_NS` of the file's last change
is not trusted (the file is hashed at its next first open, and sealed again
then, long after the change). From 6.13 on, a ctime that was read changes at
the next write (multigrain timestamps), and every seal counts.

The seal is bound to the digest: an entry is trusted only for the digest the
index holds (`trust_key`). Losing a row is harmless (the next open hashes),
so writes are not synced; a damaged or unreadable seals file is replaced by
an empty one. For the same reason the store keeps its book through `Seals`,
which logs a failure to open, read or write it and carries on without: first
opens then hash their files. Synchronous: the store calls it from its worker
threads (one connection, serialised by a lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SEALS_NAME = "seals.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS seals (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, dev INTEGER, ino INTEGER, size INTEGER,
    mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT NOT NULL, sealed_ns INTEGER NOT NULL)
    WITHOUT ROWID"""
RACY_NS = 50_000_000  # a seal taken this soon after the file's last change (coarse clocks)


def fine_timestamps(release: str | None = None) -> bool:
    """Whether this kernel changes a ctime that was read at the next write (6.13+)."""
    m = re.match(r"(\d+)\.(\d+)", release or platform.release())
    return m is not None and (int(m[1]), int(m[2])) >= (6, 13)


def _key(dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int, digest: str | None) -> int:
    return hash((dev, ino, size, mtime_ns, ctime_ns, digest))


def trust_key(st: os.stat_result, digest: str | None) -> int:
    """What a file's `fstat` and the expected digest must hash to for the file to be trusted.
    (A process-local hash: keys are made and compared in one process.)"""
    return _key(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest)


class SealBook:
    """The seals of one cache directory (see the module docstring)."""

    def __init__(self, cache_dir: Path) -> None:
        self._path = cache_dir / SEALS_NAME
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.close(fd)
                db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # a lost row costs one hash, nothing else
                db.execute(_SCHEMA)
                return db
            except sqlite3.DatabaseError as exc:
                if attempt == 2:
                    raise
                log.warning("the seals file %s is unreadable (%s): starting an empty one; "
                            "first opens hash their files until they are sealed again", self._path, exc)
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self._path}{suffix}")
        raise AssertionError("unreachable")

    def load(self, wanted: Iterable[str], *, fine: bool | None = None) -> dict[str, tuple[str, int]]:
        """id -> (path, trust key) for the ids in `wanted` with a seal that can be
        trusted; the rows of other ids (evicted or pruned while not mounted) go."""
        wanted = set(wanted)
        fine = fine_timestamps() if fine is None else fine
        out: dict[str, tuple[str, int]] = {}
        with self._lock:
            rows = self._db.execute("SELECT id, path, dev, ino, size, mtime_ns, ctime_ns, digest, "
                                    "sealed_ns FROM seals").fetchall()
        stale = []
        for rid, path, dev, ino, size, mtime, ctime, digest, sealed in rows:
            if rid not in wanted:
                stale.append(rid)
            elif fine or sealed - ctime >= RACY_NS:
                out[rid] = (path, _key(dev, ino, size, mtime, ctime, digest))
        self.drop(stale)
        return out

    def put(self, seals: Mapping[str, tuple[str, os.stat_result, str]]) -> dict[str, tuple[str, int]]:
        """Seal files (id -> (path, fstat, digest)); returns id -> (path, trust key) of
        the seals that can be trusted (see `load`)."""
        if not seals:
            return {}
        now = time.time_ns()
        rows = [(rid, path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest,
                 now) for rid, (path, st, digest) in seals.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO seals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 rows)
        fine = fine_timestamps()
        return {rid: (path, trust_key(st, digest)) for rid, (path, st, digest) in seals.items()
                if fine or now - st.st_ctime_ns >= RACY_NS}

    def drop(self, ids: Iterable[str]) -> None:
        rows = [(rid,) for rid in ids]
        if rows:
            with self._lock:
                self._db.executemany("DELETE FROM seals WHERE id = ?", rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Seals:
    """The store's `SealBook`, if it opened: its failures cost hashing, never an error."""

    def __init__(self, cache_dir: Path) -> None:
        self._cache_dir = cache_dir
        try:
            self._book: SealBook | None = SealBook(cache_dir)
        except (OSError, sqlite3.Error) as exc:  # only first opens get slower
            log.warning("cannot keep seals in %s (%s): every first open hashes its file", cache_dir, exc)
            self._book = None

    def reopen(self) -> None:
        """Open the book again (the cache directory was made again); without one if it fails."""
        old, self._book = self._book, None
        with contextlib.suppress(Exception):
            if old is not None:
                old.close()
            self._book = SealBook(self._cache_dir)

    def put(self, seals: Mapping[str, tuple[str, os.stat_result, str]]) -> dict[str, tuple[str, int]]:
        """`SealBook.put`, or nothing sealed."""
        if self._book is None or not seals:
            return {}
        try:
            return self._book.put(seals)
        except sqlite3.Error as exc:  # the next first open hashes instead
            log.debug("cannot write %d seals: %s", len(seals), exc)
            return {}

    def drop(self, ids: Sequence[str]) -> None:
        if self._book is not None and ids:
            try:
                self._book.drop(ids)
            except sqlite3.Error as exc:  # a stale seal matches no file: harmless
                log.debug("cannot drop %d seals: %s", len(ids), exc)

    def load(self, ids: frozenset[str] | set[str]) -> dict[str, tuple[str, int]]:
        """`SealBook.load`, or no seals."""
        if self._book is None:
            return {}
        try:
            return self._book.load(ids)
        except sqlite3.Error as exc:
            log.warning("cannot read the seals (%s): first opens hash their files", exc)
            return {}

    def close(self) -> None:
        if self._book is not None:
            self._book.close()
