"""A minimal read-only pyfuse3 passthrough: the floor any Python FUSE daemon sits on.

    python scripts/bench/passthrough.py SOURCE MOUNTPOINT

Serves SOURCE's tree with the same choices rcfs makes (pyfuse3 on trio,
single-threaded, 60 s entry/attribute timeouts, a readdir snapshot taken in
opendir, `keep_cache` on open, `os.pread` inline on the trio thread, mount
options ro/default_permissions/noatime), and nothing else: no index, no cache
manager, no HTTP. rcfs reading from its cache is compared with this. Unmounts
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any

import pyfuse3
import trio

TIMEOUT = 60.0


class Passthrough(pyfuse3.Operations):
    def __init__(self, source: str) -> None:
        super().__init__()
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self._dirs: dict[int, list[tuple[bytes, pyfuse3.EntryAttributes]]] = {}
        self._fds: dict[int, int] = {}
        self._next_fh = 1

    def _attrs(self, path: str) -> pyfuse3.EntryAttributes:
        st = os.lstat(path)
        ino = pyfuse3.ROOT_INODE if path == self._paths[pyfuse3.ROOT_INODE] else st.st_ino
        self._paths[ino] = path
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(ino)
        a.entry_timeout = a.attr_timeout = TIMEOUT
        a.st_mode, a.st_nlink, a.st_uid, a.st_gid = st.st_mode, st.st_nlink, st.st_uid, st.st_gid
        a.st_size, a.st_blksize, a.st_blocks = st.st_size, 128 * 1024, st.st_blocks
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        return a

    def _path(self, inode: int) -> str:
        try:
            return self._paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(self, parent_inode: Any, name: Any, ctx: Any = None) -> pyfuse3.EntryAttributes:
        try:
            return self._attrs(os.path.join(self._path(parent_inode), os.fsdecode(name)))
        except FileNotFoundError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def getattr(self, inode: Any, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(self._path(inode))

    async def opendir(self, inode: Any, ctx: Any) -> Any:
        base = self._path(inode)
        entries = sorted((os.fsencode(n), self._attrs(os.path.join(base, n))) for n in os.listdir(base))
        fh = self._next_fh = self._next_fh + 1
        self._dirs[fh] = entries
        return fh

    async def readdir(self, fh: Any, start_id: int, token: Any) -> None:
        entries = self._dirs[fh]
        for pos in range(start_id, len(entries)):
            if not pyfuse3.readdir_reply(token, entries[pos][0], entries[pos][1], pos + 1):
                return

    async def releasedir(self, fh: Any) -> None:
        self._dirs.pop(fh, None)

    async def open(self, inode: Any, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        fd = os.open(self._path(inode), os.O_RDONLY)
        fh = self._next_fh = self._next_fh + 1
        self._fds[fh] = fd
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: Any, off: int, size: int) -> bytes:
        return os.pread(self._fds[fh], size, off)  # inline, as rcfs does for complete files

    async def release(self, fh: Any) -> None:
        os.close(self._fds.pop(fh))

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def stop() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main() -> int:
    source, mountpoint = os.path.abspath(sys.argv[1]), sys.argv[2]
    options = {"fsname=passthrough", "ro", "default_permissions", "noatime"}
    pyfuse3.init(Passthrough(source), mountpoint, options)
    try:
        trio.run(_serve)
    except BaseException:
        pyfuse3.close(unmount=False)
        raise
    pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
