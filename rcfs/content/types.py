"""Value types and the one interface the content package consumes.

`ContentSource` is the slice of the API client (`rcfs.api.RingCentralClient`,
docs/INTERFACES.md) that downloads need; tests implement it with a fake. This
module must not import httpx or pyfuse3.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from rcfs.api import Priority

INTERACTIVE = Priority.INTERACTIVE  # a reader waits: ahead in the Heavy queue
BACKGROUND = Priority.BACKGROUND  # prefetch
BULK = Priority.BULK  # the archive


@dataclass(frozen=True)
class ContentRef:
    """What the content layer needs to know about one recording."""

    recording_id: str
    content_uri: str
    size_hint: int | None = None  # the exact size, if the index knows it


@dataclass(frozen=True)
class OpenInfo:
    """The answer to `ContentManager.open`: `size` is always exact."""

    size: int
    complete: bool  # the whole file is in the cache (the adapter may keep_cache)


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
