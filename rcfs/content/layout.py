"""The cache directory's layout, and its parts that are plain files and directories.

Layout under `cache_dir` (every directory 0700)::

    cache/                  diskcache.Cache: cache.db + <xx>/<hex>.val files
    partial/<session>/      one directory per running ContentManager, holding
        .lock               an flock(2) held for the session's lifetime
        <id>.<n>.part       downloads in progress
        <n>.spare           empty files made ahead for the next downloads
    archive/<id>            recordings deleted upstream, kept out of LRU eviction
                            (and, with --archive, every download)
    seals.sqlite            what each file's fstat was when its digest was taken (seals.py)
    damaged/<id>.<time>.<n> entries whose bytes no longer match their digest,
                            taken out of service and kept for inspection

Owns the names above, the private (0700) and durable (fsynced) directory
helpers, a manager's session directory in `partial/` (`Session`), its spare
files and the removal of stale sessions, where diskcache puts a file it
adopts (`AdoptingDisk`), and the files of `archive/` (`ArchiveDir`): how a
recording id names its file there, the list of what is archived, and the
atomic, durable link (or copy) that moves a file in. `store.py` composes
them with diskcache and owns when each is done (its essay). Everything here
is synchronous and may block on the disk: worker threads only, but for
`Session.take_spare`, one rename, on the trio thread.

Sessions. A session's `.lock` is flocked for as long as its manager runs, so
another mount of the same account keeps its partial files; a session
directory whose lock is free (its manager is gone: a crash, a kill -9) is
removed when the next manager starts.

Spare files. A download's partial file is not created when the download
starts: it is a spare, made earlier in a worker thread (after each commit,
`make_spares`), renamed to the download's name on the trio thread
(`take_spare`, ~16 us). Creating a file is the one costly call in starting a
download: on ext4 without a journal each O_CREAT checks the inode bitmap's
free slots for recent deletions, and took 95 to 650 us here (a rename, 16 us).
Inline it stalled every FUSE request behind it (14% of the event loop's
time while reading uncached small files); in a thread of its own it costs a
hop per download. With no spare left the download creates its file inline.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, UNKNOWN

log = logging.getLogger(__name__)

CACHE_SUBDIR = "cache"
PARTIAL_SUBDIR = "partial"
ARCHIVE_SUBDIR = "archive"
DAMAGED_SUBDIR = "damaged"
TMP_SUFFIX = ".tmp"
SPARE_SUFFIX = ".spare"
SPARES = 8  # spare partial files kept ready (module docstring, "Spare files")
PARTIAL_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
LOCK_NAME = ".lock"
SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@dataclass(frozen=True)
class Adopt:
    """A diskcache value: a complete, fsynced file to move into the cache."""

    path: str
    size: int


class AdoptingDisk(diskcache.Disk):
    """diskcache's Disk, plus storing an `Adopt` value by renaming its file.

    An adopted file goes to `<xx>/<hex>.val`: one level of 256 directories,
    not diskcache's two levels of 65,536, where nearly every one of the first
    hundred thousand files made a directory of its own (an inode, and a
    directory fsync, per commit). Rows keep their relative paths, so files
    stored under the old layout are found where they are."""

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
        if not isinstance(value, Adopt):
            return super().store(value, read, key=key)
        hex_name = os.urandom(16).hex()
        filename = os.path.join(hex_name[:2], hex_name[2:] + ".val")
        full_path = os.path.join(self._directory, filename)
        full_dir = os.path.dirname(full_path)
        try:
            os.mkdir(full_dir, 0o700)
        except FileExistsError:
            pass
        else:
            fsync_dir(self._directory)  # the new directory's own entry
        os.rename(value.path, full_path)
        fsync_dir(full_dir)
        return value.size, MODE_BINARY, filename, None


class Session:
    """This manager's directory of partial files, `partial/<session>/`, and its lock."""

    def __init__(self, partial_root: Path) -> None:
        self.dir = private_dir(partial_root / uuid.uuid4().hex)
        self._lock_fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            self.close()
            raise
        self._counter = itertools.count()
        # (descriptor, path): appended by a worker thread, taken by the trio thread
        # (deque appends and pops are atomic).
        self._spares: collections.deque[tuple[int, str]] = collections.deque()

    def partial_path(self, recording_id: str) -> str:
        """A fresh path: a failed download's cleanup never meets its successor."""
        stem = recording_id if SAFE_ID.fullmatch(recording_id) else uuid.uuid4().hex
        return str(self.dir / f"{stem}.{next(self._counter)}.part")

    def make_spares(self) -> None:
        """Create spare files until there are SPARES (worker threads only)."""
        while len(self._spares) < SPARES:
            path = str(self.dir / f"{next(self._counter)}{SPARE_SUFFIX}")
            self._spares.append((os.open(path, PARTIAL_FLAGS, 0o600), path))

    def take_spare(self, path: str) -> int | None:
        """A spare file renamed to `path`, open read-write; None if none is left."""
        while self._spares:
            fd, spare = self._spares.popleft()
            try:
                os.rename(spare, path)
            except OSError:  # its directory was removed under the mount: the next fails too
                os.close(fd)
                continue
            return fd
        return None

    def relock(self) -> None:
        """Take the lock again, on a new `.lock` (the directory was made again)."""
        while self._spares:  # their directory is gone
            os.close(self._spares.pop()[0])
        lock_fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(self._lock_fd)
        self._lock_fd = lock_fd

    def close(self) -> None:
        """Remove the directory (what partial and spare files are left), release the lock."""
        while self._spares:
            os.close(self._spares.pop()[0])
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)


def remove_stale_sessions(partial_root: Path) -> None:
    """Remove partial files of managers that are gone (their flock is free)."""
    for entry in partial_root.iterdir():
        if not entry.is_dir():
            entry.unlink(missing_ok=True)
            continue
        try:
            fd = os.open(entry / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:
            fd = -1  # crashed before taking the lock, or a stray directory
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live manager (another mount of the same account)
        finally:
            if fd >= 0:
                os.close(fd)
        log.info("removing stale partial downloads in %s", entry)
        shutil.rmtree(entry, ignore_errors=True)


class ArchiveDir:
    """The files of `archive/`, one per recording (store.py's essay, "Archive")."""

    def __init__(self, path: Path) -> None:
        self.path = private_dir(path)
        for leftover in self.path.glob("*" + TMP_SUFFIX):
            leftover.unlink(missing_ok=True)  # an archive move interrupted by a crash

    def file(self, recording_id: str) -> str:
        """The path of `recording_id`'s archived file (whether it exists or not)."""
        # "=" is outside SAFE_ID, so a hex-encoded name cannot collide with a plain one.
        name = recording_id if SAFE_ID.fullmatch(recording_id) else "=" + recording_id.encode().hex()
        return str(self.path / name)

    def link_in(self, recording_id: str, src: str) -> bool:
        """Make `src` the archived file of `recording_id`, atomically and durably: a
        hard link to `<id>.tmp`, renamed to `<id>`, the directory fsynced. False if
        `src` is gone."""
        dest = self.file(recording_id)
        tmp = dest + TMP_SUFFIX
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(src, tmp)  # same file system: no copy, no doubled disk use
        except FileNotFoundError:
            return False
        except OSError:  # a file system without hard links: copy, durably
            shutil.copyfile(src, tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(tmp, dest)
        self.sync()
        return True

    def sizes(self) -> dict[str, int]:
        """Archived recordings: id -> size."""
        out: dict[str, int] = {}
        for entry in os.scandir(self.path):
            if entry.name.endswith(TMP_SUFFIX) or not entry.is_file():
                continue
            name = entry.name
            try:
                rid = bytes.fromhex(name[1:]).decode() if name.startswith("=") else name
            except ValueError:
                continue  # not ours
            out[rid] = entry.stat().st_size
        return out

    def sync(self) -> None:
        """Make renames in or out of `archive/` durable."""
        fsync_dir(str(self.path))
