"""Recordings over HTTP: Range requests served from the content manager.

Owns the byte-level HTTP semantics of `/audio/...` and `/download/...`:
`Range` (RFC 9110 section 14: one range, `a-b`, `a-` or `-n`; 206 with
`Content-Range`; 416 with `bytes */size` when unsatisfiable; several ranges,
a malformed header, or an `If-Range` that does not match are answered with
the whole file, as the RFC allows), `HEAD`, an exact `Content-Length`, the
content type (audio/mpeg or audio/wav), `ETag`, and the RFC 6266
`Content-Disposition` with the mount's file name.

How the bytes flow. The response opens the recording with
`ContentManager.open(..., INTERACTIVE)` (a play goes ahead of background
work in the Heavy queue and joins a download already in flight), sends the
headers once the size is exact, then `read`s 8 KiB, 16 KiB, ... up to 64 KiB
at a time and sends each piece as soon as it has arrived, so an uncached
recording streams while it downloads, its first bytes leave as soon as 8 KiB
have arrived, and a seek far ahead waits only for its own bytes. A HEAD, or a
416, of a recording whose exact size the index knows opens nothing (no
download). The handle is released when the response ends, fails, or the
client goes away: a task watches `receive()` for `http.disconnect` and
cancels the stream (the download itself goes on: it is paid for, and the
mount's rules keep it, see content/manager.py).

Errors before the headers become an HTML error page (404 gone upstream, 503
with Retry-After for temporary failures, 502 for refused credentials, 507
for a full cache disk); after the headers, the body is cut short (the client
sees a short read and may retry with a Range). Each is recorded once in the
error log, like the FUSE adapter does.

Must not: import pyfuse3 or httpx; hold a handle past the response.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import trio
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send

from rcfs.content import INTERACTIVE, ContentManager, ContentRef
from rcfs.errors import AuthError, CacheFull, NotFound, PermissionDenied, RcfsError, TemporaryFailure
from rcfs.index import IndexedRecording
from rcfs.status import ErrorLog

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# The first read of a response is small and each next one twice as big, up to CHUNK:
# a player gets its first bytes as soon as 8 KiB of an uncached recording has arrived.
FIRST_CHUNK = 8 * 1024
_WAV = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


class Unsatisfiable(Exception):
    """The Range asks only for bytes past the end (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range [start, end] a Range header asks of a `size`-byte
    file, or None for the whole file (no header, or one to ignore: another unit,
    several ranges, bad syntax). Raises Unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    m = _RANGE.fullmatch(spec)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # a suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)


def audio_type(ir: IndexedRecording) -> str:
    """audio/wav or audio/mpeg: the served type if known, else the one the name was made with."""
    for ct in (ir.content_type, ir.recording.content_type):
        if not ct:
            continue
        base = ct.split(";", 1)[0].strip().lower()
        if base in _WAV:
            return "audio/wav"
        if base in ("audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg"):
            return "audio/mpeg"
    return "audio/mpeg"


def content_disposition(kind: str, name: str) -> str:
    """RFC 6266: an ASCII `filename` fallback and the exact name as `filename*`."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='!#$&+^`|')}"


@dataclass(frozen=True)
class ErrorPage:
    """How an error before the headers is shown: `render(status, title, text)`."""

    render: Callable[[int, str, str], HTMLResponse]


def _error_response(exc: RcfsError, page: ErrorPage) -> Response:
    if isinstance(exc, NotFound):
        return page.render(404, "Recording not available",
                           "This recording was deleted upstream and is not in rcfs's cache.")
    if isinstance(exc, AuthError | PermissionDenied):
        return page.render(502, "RingCentral refused the credentials",
                           "rcfs could not fetch this recording: RingCentral refused its "
                           "credentials. See rcfs status.")
    if isinstance(exc, CacheFull):
        return page.render(507, "The cache disk is full",
                           "rcfs has no room to fetch this recording. See rcfs status.")
    if isinstance(exc, TemporaryFailure):
        response = page.render(503, "Try again shortly",
                               "RingCentral did not deliver this recording just now; rcfs will "
                               "try again when it is asked.")
        response.headers["Retry-After"] = "30"
        return response
    return page.render(502, "The recording could not be fetched",
                       "rcfs could not fetch this recording. See rcfs status.")


class RecordingResponse(Response):
    """One recording's bytes (or a range of them) for GET and HEAD; see the module docstring."""

    def __init__(
        self, *, content: ContentManager, recording: IndexedRecording, name: str,
        disposition: str, request_headers: Any, page: ErrorPage,
        errors: ErrorLog | None, stats: StreamStats,
    ) -> None:
        super().__init__()
        self._content = content
        self._ir = recording
        self._name = name
        self._disposition = disposition
        self._range = request_headers.get("range")
        self._if_range = request_headers.get("if-range")
        self._page = page
        self._errors = errors
        self._stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = trio.CancelScope()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.cancel()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with gone:
                await self._respond(scope, receive, send)
            nursery.cancel_scope.cancel()
        if gone.cancelled_caught:
            log.debug("client went away during recording %s", self._ir.recording_id)

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = self._ir.recording_id
        head = scope["method"] == "HEAD"
        opened = False
        started = False
        self._stats.active += 1
        size = 0
        try:
            if self._ir.exact_size is not None:
                size = self._ir.exact_size
            else:  # only an estimate: the exact size comes with the download
                size = (await self._content.open(ContentRef.of(self._ir), INTERACTIVE)).size
                opened = True
            etag = f'"{self._ir.rowid}-{size}"'
            try:
                wanted = (parse_range(self._range, size)
                          if self._if_range is None or self._if_range.strip() == etag else None)
            except Unsatisfiable:
                await self._send_head(send, 416, size, etag, None)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            start, end = wanted if wanted is not None else (0, size - 1)
            if not head and size > 0 and not opened:
                info = await self._content.open(ContentRef.of(self._ir), INTERACTIVE)
                opened = True
                if info.size != size:  # the index's size was wrong: trust the content
                    size, etag = info.size, f'"{self._ir.rowid}-{info.size}"'
                    start, end = (0, size - 1) if wanted is None else (start, min(end, size - 1))
                    if start >= size:
                        raise Unsatisfiable
            started = True
            await self._send_head(send, 206 if wanted is not None else 200, size, etag,
                                  (start, end))
            if head or size == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            pos = start
            step = FIRST_CHUNK
            while pos <= end:
                data = await self._content.read(rid, pos, min(step, end + 1 - pos))
                step = min(2 * step, CHUNK)
                if not data:
                    raise RcfsError(f"recording {rid} ended at byte {pos} of {size}")
                await send({"type": "http.response.body", "body": data, "more_body": True})
                pos += len(data)
                self._stats.bytes += len(data)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Unsatisfiable:
            await self._send_head(send, 416, size, "", None)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except RcfsError as exc:
            self._record(exc)
            if not started:
                await _error_response(exc, self._page)(scope, receive, send)
            # else: the body stays short of its Content-Length; the client sees a short read.
        finally:
            self._stats.active -= 1
            if opened:
                self._content.release(rid)

    async def _send_head(self, send: Send, status: int, size: int, etag: str,
                         span: tuple[int, int] | None) -> None:
        headers = {
            "accept-ranges": "bytes",
            "content-type": audio_type(self._ir) if status != 416 else "text/plain",
            "content-disposition": content_disposition(self._disposition, self._name),
            "last-modified": formatdate(self._ir.start_ms / 1000, usegmt=True),
            "cache-control": "no-store",
        }
        if etag:
            headers["etag"] = etag
        if status == 416:
            headers["content-range"] = f"bytes */{size}"
            headers["content-length"] = "0"
        else:
            assert span is not None
            start, end = span
            headers["content-length"] = str(max(0, end + 1 - start))
            if status == 206:
                headers["content-range"] = f"bytes {start}-{end}/{size}"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]})

    def _record(self, exc: RcfsError) -> None:
        if getattr(exc, "_rcfs_recorded", False):
            log.debug("web: recording %s: %s", self._ir.recording_id, exc)
            return
        if self._errors is not None:
            self._errors.record(f"web: recording {self._ir.recording_id}: {exc}")
        else:
            log.warning("web: recording %s: %s", self._ir.recording_id, exc)
        with contextlib.suppress(AttributeError):
            exc._rcfs_recorded = True  # type: ignore[attr-defined]


@dataclass
class StreamStats:
    active: int = 0  # responses sending a recording
    bytes: int = 0  # recording bytes sent
