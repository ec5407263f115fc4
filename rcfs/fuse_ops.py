"""The FUSE protocol adapter: pyfuse3 requests in, `Vfs` and `ContentManager` calls out.

This module only translates (borg's fuse.py). Each handler resolves the inode,
asks the model, and builds `EntryAttributes`. It is the one place that raises
`pyfuse3.FUSEError`, and the one errno mapping lives here: domain errors from
below become errnos, and an unexpected exception is logged with its traceback
and becomes EIO, so nothing escapes a handler.

Handles: open files and directories get a small integer handle that indexes
`_files` / `_dirs`. A directory handle holds a snapshot of the listing taken in
`opendir`, so a refresh cannot shift a `readdir` in progress; offsets are
positions in that snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

import pyfuse3
import trio

from rcfs.content import BACKGROUND, INTERACTIVE, ContentManager, ContentRef
from rcfs.errors import (
    AuthError,
    BadResponse,
    CacheFull,
    NotFound,
    PermissionDenied,
    RcfsError,
    TemporaryFailure,
)
from rcfs.fuse_readonly import ReadOnlyOperations
from rcfs.previews import PreviewGuard, boot_ticks, running_since, thread_group
from rcfs.status import ErrorLog
from rcfs.vfs import Node, Vfs

log = logging.getLogger(__name__)

# Domain error → errno. Order matters: the first matching class wins.
ERRNO_MAP: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (AuthError, errno.EACCES),
    (PermissionDenied, errno.EACCES),
    (CacheFull, errno.ENOSPC),
    (TemporaryFailure, errno.EIO),
    (BadResponse, errno.EIO),
    (RcfsError, errno.EIO),
)

XATTR_PREFIX = b"user.rc."

# Attribute and entry timeouts are not zero: with zero, `ls -l` of 2,000
# entries was 30x slower (STYLE.md). A file whose size is still an estimate
# gets the same timeout (1 s made repeated listings 2x slower in the
# benchmark): `open` invalidates the kernel's attributes of every inode it
# was shown an estimate for, so readers always see the exact size.
ENTRY_TIMEOUT = 60.0
ATTR_TIMEOUT = 60.0
# A recording whose size is exact (and final: a download's promise is not)
# never changes its name, size or times; what does change (a deletion
# upstream pruned, a day re-read) reaches the kernel as an invalidation, and
# `open` drops attributes whose size is not the one it serves. So the kernel
# keeps such an entry and its attributes for an hour: a re-read a minute or
# more later (a player's reopen, a second pass of a backup) costs no LOOKUP or
# GETATTR round trip per file (2,000 files re-read 65 s later: 1.12x the time
# of a warm re-read, against 1.78x with 60 s; another run: 1.34x and 1.51x).
EXACT_RECORDING_TIMEOUT = 3600.0

P = ParamSpec("P")
R = TypeVar("R")


def errno_for(exc: BaseException) -> int:
    for cls, code in ERRNO_MAP:
        if isinstance(exc, cls):
            return code
    return errno.EIO


async def invalidate_kernel(
    inodes: Iterable[int], entries: Iterable[tuple[int, str]] = ()
) -> None:
    """Make the kernel forget what a refresh changed: cached dentries of names
    that left the tree (`entries`: (parent inode, name)) and cached attributes
    and data of changed inodes (directories, calls.json).

    Runs in a worker thread, never from a handler: pyfuse3's invalidations
    block until a related request in progress is answered, and only the trio
    thread answers requests. An inode or name the kernel does not hold gives
    ENOENT, which is expected.
    """
    entries, inodes = list(entries), sorted(set(inodes), reverse=True)  # days before months

    def work() -> None:
        for parent, name in entries:
            try:
                pyfuse3.invalidate_entry(pyfuse3.InodeT(parent), pyfuse3.FileNameT(os.fsencode(name)))
            except OSError as exc:
                log.debug("invalidate_entry(%d, %s): %s", parent, name, exc)
        for ino in inodes:
            try:
                pyfuse3.invalidate_inode(pyfuse3.InodeT(ino))
            except OSError as exc:
                log.debug("invalidate_inode(%d): %s", ino, exc)

    if entries or inodes:
        await trio.to_thread.run_sync(work)


class DeferredInvalidation:
    """Kernel invalidations queued from anywhere, sent by a task of the mount's nursery.

    A handler must never wait for its own invalidation (the kernel holds the
    inode a lookup is about until the lookup is answered): a day indexed on
    demand inside a lookup queues its invalidations here and returns.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self._inodes: set[int] = set()
        self._entries: list[tuple[int, str]] = []
        self._wanted = trio.Event()
        self._enabled = enabled  # False without a kernel to tell (`rcfs serve`)

    def submit(self, inodes: Iterable[int], entries: Iterable[tuple[int, str]] = ()) -> None:
        if not self._enabled:
            return
        self._inodes.update(inodes)
        self._entries.extend(entries)
        if self._inodes or self._entries:
            self._wanted.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            inodes, self._inodes = self._inodes, set()
            entries, self._entries = self._entries, []
            await invalidate_kernel(inodes, entries)


def _handler(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run a handler and map whatever it raises onto one FUSEError."""

    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ops = args[0]
        assert isinstance(ops, Operations)
        ops.requests[name] = ops.requests.get(name, 0) + 1
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError as exc:
            ops.count_error(name, exc.errno)
            raise
        except NotFound as exc:
            # Lookups of absent names are routine (shells probe for files).
            log.debug("%s: %s", fn.__name__, exc)
            ops.count_error(name, errno.ENOENT)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except RcfsError as exc:
            # A failed download raises its one error in every waiting read
            # (readahead sends several): record and log it once.
            if not getattr(exc, "_rcfs_recorded", False):
                ops.errors.record(f"{fn.__name__}: {exc}")
                with contextlib.suppress(AttributeError):
                    exc._rcfs_recorded = True  # type: ignore[attr-defined]
            ops.count_error(name, errno_for(exc))
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            ops.errors.record(f"{fn.__name__}: internal error: {exc!r}")
            log.exception("unexpected error in %s", fn.__name__)
            ops.count_error(name, errno.EIO)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class OnDemandIndex(Protocol):
    """The progressive indexer (backfill.py), as the adapter uses it."""

    def complete(self) -> bool: ...
    async def ensure(self, lo_ms: int, hi_ms: int) -> None: ...


@dataclass
class _OpenFile:
    ino: int
    recording_id: str | None = None  # None: a small generated file held in `data`
    data: bytes = b""
    # (process id, when: boot_ticks) of the opener, while the bytes were still on their way
    opener: tuple[int, int] | None = None


class Operations(ReadOnlyOperations):
    """pyfuse3 handlers over a `Vfs` (the tree) and a `ContentManager` (the bytes)."""

    enable_writeback_cache = False
    supports_dot_lookup = True

    def __init__(
        self, vfs: Vfs, content: ContentManager, errors: ErrorLog,
        index: OnDemandIndex | None = None,
        previews: PreviewGuard | None = None,
    ) -> None:
        super().__init__()
        self.vfs = vfs
        self.content = content
        self.errors = errors
        self.index = index
        self.previews = previews
        self._handles = itertools.count(1)
        self._dirs: dict[int, list[tuple[bytes, Node]]] = {}
        self._files: dict[int, _OpenFile] = {}
        self._lookups: dict[int, int] = {}
        # Inodes whose attributes the kernel got with an estimated size.
        self._estimates_shown: set[int] = set()
        # For the metrics: requests by operation, errors by (operation, errno name).
        self.requests: dict[str, int] = {}
        self.error_counts: dict[tuple[str, str], int] = {}

    def count_error(self, operation: str, code: int) -> None:
        key = (operation, errno.errorcode.get(code, str(code)))
        self.error_counts[key] = self.error_counts.get(key, 0) + 1

    def counters(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        return dict(self.requests), dict(self.error_counts)

    # -- attributes -------------------------------------------------------

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(node.ino)
        a.generation = 0
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        if node.recording_id is not None:
            if not node.size_exact:
                self._estimates_shown.add(node.ino)
            elif not self.vfs.size_provisional(node.recording_id):  # final, not just promised
                a.entry_timeout = a.attr_timeout = EXACT_RECORDING_TIMEOUT
        a.st_mode = pyfuse3.ModeT(node.mode)
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = 0
        a.st_size = node.size
        a.st_blksize = 128 * 1024
        a.st_blocks = (node.size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = node.mtime_ns
        return a

    def _remember(self, ino: int) -> None:
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    async def _indexed(self, ino: int, name: str | None = None) -> None:
        """While the window is being indexed: have the day this request is about
        indexed first (at interactive priority; no-op once it is)."""
        if self.index is None or self.index.complete():
            return
        span = self.vfs.day_range(ino, name)
        if span is not None:
            await self.index.ensure(*span)

    @_handler
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        await self._indexed(parent_inode, text)
        node = self.vfs.lookup(parent_inode, text)
        self._remember(node.ino)
        return self._attrs(node)

    async def forget(self, inode_list: Any) -> None:
        for ino, nlookup in inode_list:
            left = self._lookups.get(ino, 0) - nlookup
            if left > 0:
                self._lookups[ino] = left
            else:
                self._lookups.pop(ino, None)
                self._estimates_shown.discard(ino)  # the kernel dropped its attributes

    @_handler
    async def getattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.getattr(inode))

    # -- directories ------------------------------------------------------

    @_handler
    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        await self._indexed(inode)
        # "." and ".." first, as every file system lists them (`ls -a`).
        dots = [(b".", self.vfs.getattr(inode)), (b"..", self.vfs.getattr(self.vfs.parent(inode)))]
        entries = dots + [(os.fsencode(name), node) for name, node in self.vfs.readdir(inode)]
        fh = next(self._handles)
        self._dirs[fh] = entries
        return pyfuse3.FileHandleT(fh)

    @_handler
    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs[fh]
        for pos in range(start_id, len(entries)):
            name, node = entries[pos]
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name), self._attrs(node), pos + 1):
                return
            if name not in (b".", b".."):  # the kernel does not count a lookup for those
                self._remember(node.ino)

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    # -- files ------------------------------------------------------------

    @_handler
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.vfs.getattr(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        fh = next(self._handles)
        if node.recording_id is None:
            # calls.json / status.json: snapshot now, so size and bytes agree.
            self._files[fh] = _OpenFile(inode, data=self.vfs.read_small(inode))
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        rec = self.vfs.recording(inode)
        rid = rec.recording_id
        preview: tuple[int, int] | None = None  # (process, day) of an uncached open
        priority = INTERACTIVE
        if (self.previews is not None and not self.content.is_cached(rid)
                and not self.content.in_flight(rid)):
            preview = (thread_group(ctx.pid), self.vfs.entry_of(rec)[0])
            verdict = self.previews.decide(*preview)
            if verdict == "refuse":  # a file manager's previews: no Heavy request
                raise pyfuse3.FUSEError(errno.EAGAIN)
            priority = BACKGROUND if verdict == "background" else INTERACTIVE
        info = await self.content.open(ContentRef.of(rec), priority)
        if not rec.size_exact or inode in self._estimates_shown or info.size != rec.size:
            # The kernel may hold an estimated size (the download, or a
            # prefetch since, learned the exact one), or, for an hour
            # (EXACT_RECORDING_TIMEOUT), an exact one the recording no longer
            # has (fetched again after damage): drop its cached attributes so
            # fstat() on the new descriptor, and the read path's EOF, see the
            # size served. An estimate's file has no page cached yet (attr_only);
            # a changed exact size's pages are of the bytes it had: dropped too.
            changed = rec.size_exact and info.size != rec.size
            self._estimates_shown.discard(inode)
            pyfuse3.invalidate_inode(inode, attr_only=not changed)
        opener = None
        if not info.complete:  # see readers()
            opener = (preview[0] if preview is not None else thread_group(ctx.pid), boot_ticks())
        self._files[fh] = _OpenFile(inode, recording_id=rec.recording_id, opener=opener)
        if preview is not None and self.previews is not None:
            self.previews.opened(*preview, fh, info.size)
        # Complete and exact: let the page cache serve re-reads (keep_cache).
        return pyfuse3.FileInfo(fh=fh, keep_cache=bool(info.complete))

    def readers(self, recording_id: str) -> tuple[int, int]:
        """(open files of a recording, of those the ones whose opener still runs).

        A reader killed while the kernel waits on one of its reads (readahead
        in flight) is gone, but its file is released only once that read is
        answered: the download looked wanted, and a failing one was resumed
        to its last attempt for nobody. A file opened while its bytes were on
        their way counts as read only while the process that opened it runs
        (a child it handed the descriptor to is not seen: for it, a failing
        download ends sooner). The content manager asks this only when a
        download has failed an attempt."""
        held = alive = 0
        for f in self._files.values():
            if f.recording_id != recording_id:
                continue
            held += 1
            if f.opener is None or running_since(*f.opener):
                alive += 1
        return held, alive

    @_handler
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        f = self._files[fh]
        if f.recording_id is None:
            return f.data[off : off + size]
        data = await self.content.read(f.recording_id, off, size)
        if self.previews is not None:
            self.previews.read(fh, off + len(data))
        return data

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        # Nothing is ever written. ENOSYS tells the kernel never to send FLUSH
        # again on this mount: every close() is one round trip fewer (~50 us).
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        f = self._files.pop(fh, None)
        if f is not None and f.recording_id is not None:
            self.content.release(f.recording_id)
            if self.previews is not None:
                self.previews.released(fh)

    # -- extended attributes ---------------------------------------------

    @_handler
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        if not name.startswith(b"user."):
            # `ls -l` asks every file for security.selinux and the POSIX ACL
            # names. "Not supported" is the truth, and ls then stops asking
            # for the rest of the file system: a 2,000-file `ls -l` made
            # 4,000 round trips (~50 us each) without it.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if not name.startswith(XATTR_PREFIX):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self.vfs.xattrs(inode).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_handler
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> list[pyfuse3.XAttrNameT]:
        return [pyfuse3.XAttrNameT(os.fsencode(k)) for k in self.vfs.xattrs(inode)]

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s
