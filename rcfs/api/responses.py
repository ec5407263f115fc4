"""Turning HTTP responses into domain results and domain errors, once.

Owns: the status → exception mapping (STYLE.md "Errors and retries"),
parsing RingCentral's error bodies, Retry-After, Content-Range, and the
streamed content response handed to the content layer. Messages are passed
through a redactor so no token or secret can reach an exception or a log.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from rcfs.api.groups import DEFAULT_RETRY_AFTER
from rcfs.errors import (
    ApiError,
    AuthError,
    BadResponse,
    NotFound,
    PermissionDenied,
    RateLimited,
    RcfsError,
    SyncTokenInvalid,
    TemporaryFailure,
    UnreadableResponse,
)

log = logging.getLogger(__name__)

Redactor = Callable[[str], str]
_SYNC_TOKEN_CODES = re.compile(r"^CLG-10[1-5]$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)


def error_details(body: bytes) -> tuple[str, str]:
    """(errorCode, message) from a RingCentral or OAuth error body, '' if absent."""
    data = _error_body(body)
    if data is None:
        return "", ""
    code = str(data.get("errorCode") or data.get("error") or "")
    message = str(data.get("message") or data.get("error_description") or "")
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        inner = str(errors[0].get("errorCode") or "")
        if inner and inner != code:
            code = f"{code}/{inner}" if code else inner
        message = message or str(errors[0].get("message") or "")
    return code, message[:300]


def _error_body(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _about_sync_token(body: bytes, message: str) -> bool:
    """A 400 that names the sync token (RingCentral documents CMN-101 "Parameter
    [syncToken] is invalid", also for "max sync record number limit is exceeded")."""
    data = _error_body(body) or {}
    errors = data.get("errors")
    named = isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("parameterName") == "syncToken" for e in errors)
    return named or "synctoken" in message.lower() or "max sync record number" in message.lower()


def retry_after_header(headers: httpx.Headers) -> float | None:
    """Seconds a Retry-After header asks for, or None when there is none (or it is garbage)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def retry_after(headers: httpx.Headers) -> float:
    """Seconds a 429 asks for: its Retry-After, else DEFAULT_RETRY_AFTER."""
    seconds = retry_after_header(headers)
    return DEFAULT_RETRY_AFTER if seconds is None else seconds


def error_for(
    op: str, status: int, headers: httpx.Headers, body: bytes, redact: Redactor, group: str = ""
) -> RcfsError:
    """The domain exception for a non-2xx response of operation `op`."""
    code, message = error_details(body)
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    text = redact(f"{op}: {detail}")
    if status == 401:
        return AuthError(text)
    if status == 403:
        return PermissionDenied(text)
    if status == 404:
        return NotFound(text)
    if status == 429:
        return RateLimited(text, retry_after(headers), group)
    if status >= 500:
        # A 503 (or any 5xx) may say when to come back: the retry waits at least that long.
        err = TemporaryFailure(text)
        err.retry_after = retry_after_header(headers)
        return err
    last_code = code.rsplit("/", 1)[-1]
    if status == 400 and (_SYNC_TOKEN_CODES.match(last_code) or _about_sync_token(body, message)):
        return SyncTokenInvalid(text, status, last_code)
    return ApiError(text, status, last_code)


def parse_json_object(op: str, body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise UnreadableResponse(f"{op}: response is not valid JSON ({_sniff(body)})") from None
    if not isinstance(data, dict):
        raise BadResponse(f"{op}: expected a JSON object, got {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(body):
        data = _scrub(data)
    return data


# JSON may escape half of a surrogate pair ("\ud83d" alone). Python keeps such
# a lone surrogate in the str, and SQLite, file names and xattrs cannot encode
# it: one bad name would fail a whole page. They become U+FFFD instead.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


def _sniff(body: bytes) -> str:
    """What a non-JSON body looks like, for the log: never its content (it may echo secrets)."""
    head = body[:512].lstrip().lower()
    if not head:
        return "empty body"
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return f"an HTML page of {len(body)} bytes"
    if head[:1] in (b"{", b"["):
        return f"truncated or malformed JSON, {len(body)} bytes"
    return f"{len(body)} bytes of something else"


class ContentResponse:
    """A streamed recording download: headers known, body not yet read.

    `start` is the offset of the first body byte (0 for a 200, even when a
    range was asked for); `total_size` is the recording's size if the server
    said it (Content-Range total, or Content-Length of a 200); `length` the
    body's length if known.
    """

    def __init__(
        self, resp: httpx.Response, *, requested_start: int, on_bytes: Callable[[int], None]
    ) -> None:
        self._resp = resp
        self._on_bytes = on_bytes
        self.status = resp.status_code
        self.content_type = resp.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
        clen = resp.headers.get("content-length")
        self.length: int | None = int(clen) if clen and clen.strip().isdigit() else None
        self.start = 0
        self.total_size: int | None = None
        if self.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
            if m is None:
                raise BadResponse("readCallRecordingContent: 206 without a usable Content-Range")
            first, last = int(m.group(1)), int(m.group(2))
            self.start = first
            self.total_size = None if m.group(3) == "*" else int(m.group(3))
            if self.length is None:
                self.length = last - first + 1
            if first != requested_start:
                log.debug("range asked from %d, server sent from %d", requested_start, first)
        else:
            self.total_size = self.length

    def __repr__(self) -> str:
        return (
            f"<ContentResponse {self.status} {self.content_type} start={self.start} "
            f"length={self.length} total={self.total_size}>"
        )

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body in chunks; a broken or short body raises TemporaryFailure."""
        received = 0
        try:
            async for chunk in self._resp.aiter_bytes():
                if chunk:
                    received += len(chunk)
                    self._on_bytes(len(chunk))
                    yield chunk
        except httpx.TransportError as exc:
            raise TemporaryFailure(
                f"readCallRecordingContent: body interrupted after {received} bytes ({type(exc).__name__})"
            ) from None
        if self.length is not None and received != self.length:
            raise TemporaryFailure(
                f"readCallRecordingContent: body ended after {received} of {self.length} bytes"
            )
