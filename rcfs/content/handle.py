"""The open state of one recording, shared by all its open file handles.

Owns `Handle`: what the manager's `read` is served from, refcounted by its
`open` and `release`: the download's partial file while it grows (the same
inode is the cache file once it is committed), a complete cache or archive
file, or the download itself when it streams through memory. Must not
import httpx or pyfuse3.

Reads. A complete file is served by `os.pread` on a descriptor kept open per
recording (refcounted by open/release), inline on the trio thread: STYLE.md's
measured exception (a pread of page-cached data is ~2x faster than a thread
hop). Reads of a growing file pread bytes that just arrived and are in the
page cache, so the same reasoning holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .download import Download, SharedFd, State
from .types import ContentRef


@dataclass
class Handle:
    """The open state of one recording, shared by all its open file handles."""

    ref: ContentRef
    refs: int = 0
    fd: SharedFd | None = None  # the file being read: partial or complete
    download: Download | None = None  # None once the file is complete
    size: int = 0

    def attach_complete(self, fd: SharedFd, size: int) -> None:
        self._drop_fd()
        self.fd, self.size, self.download = fd, size, None

    def attach_download(self, download: Download) -> None:
        if self.download is download:
            return
        assert download.total is not None
        self._drop_fd()
        if download.transient:  # streamed through memory: no file
            self.size, self.download = download.total, download
            return
        assert download.fd is not None
        self.fd, self.size, self.download = download.fd.acquire(), download.total, download

    def complete(self) -> bool:
        d = self.download
        if d is not None and d.state is State.DONE and not d.transient:
            self.download = None  # same inode: the partial file is now the cache file
        return self.fd is not None and self.download is None

    async def read(self, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) clamped to EOF, as soon as they have arrived."""
        if self.complete():
            # Inline pread of a complete, open file: STYLE.md's measured exception.
            assert self.fd is not None
            return os.pread(self.fd.fd, size, offset)
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        download = self.download
        assert download is not None
        if download.transient:
            await download.wait_bytes(end)
            return download.transient_read(offset, end)
        assert self.fd is not None
        fd = self.fd.acquire()  # a concurrent open may swap the handle's fd
        try:
            await download.wait_bytes(end)
            # Bytes below `received` just arrived: a page-cache pread, inline.
            return os.pread(fd.fd, end - offset, offset)
        finally:
            fd.release()

    def close(self) -> None:
        self._drop_fd()
        self.download = None

    def _drop_fd(self) -> None:
        if self.fd is not None:
            self.fd.release()
            self.fd = None
