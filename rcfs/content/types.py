"""Value types and the one interface the content package consumes.

`ContentSource` is the slice of the API client (`rcfs.api.RingCentralClient`,
docs/INTERFACES.md) that downloads need; tests implement it with a fake.
`call_back` is how the package calls the callbacks its caller hands to
`ContentManager.create`. This module must not import httpx or pyfuse3.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from rcfs.api import Priority

log = logging.getLogger(__name__)

INTERACTIVE = Priority.INTERACTIVE  # a reader waits: ahead in the Heavy queue
BACKGROUND = Priority.BACKGROUND  # prefetch
BULK = Priority.BULK  # the archive


class Indexed(Protocol):
    """What `ContentRef.of` reads of an indexed recording (rcfs.index.IndexedRecording)."""

    @property
    def recording_id(self) -> str: ...
    @property
    def content_uri(self) -> str: ...
    @property
    def size_exact(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def digest(self) -> str | None: ...
    @property
    def deleted(self) -> bool: ...
    @property
    def duration(self) -> int: ...


@dataclass(frozen=True)
class ContentRef:
    """What the content layer needs to know about one recording."""

    recording_id: str
    content_uri: str
    size_hint: int | None = None  # the exact size, if the index knows it
    digest: str | None = None  # BLAKE2b-512 hex taken when it was downloaded, if it was
    duration: int | None = None  # seconds: bounds the size a server may declare
    gone: bool = False  # deleted upstream: damaged content cannot be fetched again

    @classmethod
    def of(cls, ir: Indexed) -> ContentRef:
        return cls(ir.recording_id, ir.content_uri, ir.size if ir.size_exact else None,
                   digest=ir.digest, duration=ir.duration, gone=ir.deleted)


@dataclass(frozen=True)
class OpenInfo:
    """The answer to `ContentManager.open`: `size` is always exact."""

    size: int
    complete: bool  # the whole file is in the cache (the adapter may keep_cache)


class SizeReport(Protocol):
    """What the manager tells the tree about a recording's size: `final` once the
    whole content is on disk (persist it, with its digest and content type),
    provisional while only a response's headers have named it."""

    def __call__(
        self, recording_id: str, size: int, *, final: bool = ..., digest: str | None = ...,
        content_type: str | None = ...,
    ) -> None: ...


class ContentResponse(Protocol):
    """A streaming content response (headers already received)."""

    @property
    def status(self) -> int: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def start(self) -> int: ...  # offset the body starts at: 0 for a 200
    @property
    def total_size(self) -> int | None: ...  # the whole recording's size, if known
    @property
    def length(self) -> int | None: ...  # this body's length, if known

    def iter_chunks(self) -> AsyncIterator[bytes]: ...


class ContentSource(Protocol):
    """`stream_content` of the API client: raises rcfs.errors domain errors."""

    def stream_content(
        self, content_uri: str, *, start: int = ..., priority: Any = ...
    ) -> AbstractAsyncContextManager[ContentResponse]: ...


def call_back(callback: Callable[..., None], *args: Any) -> None:
    """A callback's failure is logged, never raised into the download or commit."""
    try:
        callback(*args)
    except Exception:
        log.exception("content callback %s failed for %r", getattr(callback, "__name__", "?"),
                      args[0] if args else None)
