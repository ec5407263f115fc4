"""Descriptors of released, complete cache files, kept open for the next open.

Owns `IdleFds`, the content manager's LRU of parked descriptors (the
manager's essay, "Idle descriptors and reads"): after the last release of a
complete file its descriptor waits here, so opening it again (`cat` after
`file`, a player's re-open, a warm re-read) never leaves the trio thread. An entry
leaves, closed, when the LRU overflows and when the manager's book
(bookkeeping.py) drops it (the recording evicted, archived or pruned, so an
evicted file's blocks are freed). Everything here is inline on the trio
thread: a close of a cache file or an fstat of an open descriptor is a quick
metadata operation.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict

from .download import SharedFd

IDLE_FDS_MAX = 4096  # descriptors kept at the most


def idle_fds() -> int:
    """How many idle descriptors to keep: a quarter of RLIMIT_NOFILE, at most
    IDLE_FDS_MAX (a cyclic re-read of N files only hits an LRU of >= N entries;
    1,024 descriptors, a common soft limit, give 256)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 4 * IDLE_FDS_MAX
    return max(16, min(IDLE_FDS_MAX, soft // 4))


class IdleFds(OrderedDict[str, tuple[SharedFd, int]]):
    """recording id -> (descriptor, size), least recently parked first."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.limit = idle_fds() if limit is None else limit

    def park(self, rid: str, fd: SharedFd, size: int) -> None:
        """Keep `fd` (the caller's reference) for the next open of `rid`."""
        self.drop(rid)
        self[rid] = (fd, size)
        while len(self) > self.limit:
            self.popitem(last=False)[1][0].release()

    def unpark(self, rid: str) -> tuple[SharedFd, int] | None:
        """The parked descriptor of `rid` (the reference passes to the caller), if
        its file still has the size it had; None otherwise."""
        idle = self.pop(rid, None)
        if idle is None:
            return None
        fd, size = idle
        # A lookup checks the size against the entry's tag; an fstat of an open
        # descriptor (no disk I/O, ~1 us) keeps that check for parked ones, and
        # notices a file removed behind rcfs's back (looked up, so fetched again).
        st = os.fstat(fd.fd)
        if st.st_size != size or st.st_nlink == 0:
            fd.release()
            return None
        return idle

    def drop(self, rid: str) -> None:
        idle = self.pop(rid, None)
        if idle is not None:
            idle[0].release()

    def close_all(self) -> None:
        while self:
            self.popitem()[1][0].release()
