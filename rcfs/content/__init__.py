"""Recordings' content: single-flight downloads and the on-disk cache.

The FUSE adapter uses exactly this API (design essay: `rcfs.content.manager`)::

    manager = await ContentManager.create(
        cache_dir=Path, size_limit=int, client=ContentSource,
        nursery=trio.Nursery,                      # long-lived, owned by mount/lifecycle.py
        on_exact_size=Callable[[str, int], None],  # (recording_id, size), once learned
        on_gone=Callable[[str], None] | None,      # a download was answered 404
    )
    info = await manager.open(ContentRef(recording_id, content_uri, size_hint))
        # -> OpenInfo(size, complete). size is exact: a cache hit, or the
        # download's response headers (or its end, if they carry no length).
        # complete=True: the whole file is cached (the adapter may keep_cache).
    data = await manager.read(recording_id, offset, size)
        # returns once [offset, offset+size) clamped to EOF has arrived; b"" at EOF
    manager.release(recording_id)            # one reader closed
    manager.is_cached(recording_id) -> bool  # complete content in the cache or archive
    await manager.prefetch(ref, priority=BACKGROUND)  # cache it; returns when cached
    await manager.archive([recording_id]) -> set  # deleted upstream: out of LRU eviction
    await manager.prune_archive([recording_id]) -> (count, bytes)
    manager.snapshot() -> {"cache": {bytes, limit, entries, hits, misses,
                                     archived, archived_bytes},
                           "downloads": {active, queued, done, failed, bytes}}
    await manager.aclose()                   # cancel downloads, close the cache

Errors are rcfs.errors domain errors: NotFound, AuthError, TemporaryFailure
(and RateLimited), BadResponse (wrong length or range), CacheFull (ENOSPC).
Priorities are `rcfs.api.Priority` (an IntEnum; plain ints 0 = interactive,
1 = background are accepted). `ContentSource` is the API client's
`stream_content` (a Protocol; `RingCentralClient` satisfies it).
"""

from __future__ import annotations

from .manager import ContentManager
from .types import BACKGROUND, BULK, INTERACTIVE, ContentRef, ContentResponse, ContentSource, OpenInfo

__all__ = [
    "BACKGROUND",
    "BULK",
    "INTERACTIVE",
    "ContentManager",
    "ContentRef",
    "ContentResponse",
    "ContentSource",
    "OpenInfo",
]
