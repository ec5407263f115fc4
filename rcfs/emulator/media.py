"""The media host: recording content (readCallRecordingContent), streamed.

Owns byte ranges (`Range: bytes=a-b | a- | -n` -> 206 + Content-Range,
416 CMN-107 when unsatisfiable, multi-range or malformed headers ignored ->
200), Content-Disposition, the `no_length` fault (chunked, no Content-Length)
and the `reset` fault (connection dropped part-way through the body). The body
is generated chunk by chunk from `audio.RecordingAudio`, so headers reach the
client at once and an hour-long file never sits in memory. The token may come
in the `Authorization` header or the `access_token` query parameter;
`Accept: application/json` is ignored (audio is served anyway).
"""

from __future__ import annotations

import logging
import re
import time

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rcfs.emulator.audio import RecordingAudio
from rcfs.emulator.auth import Session
from rcfs.emulator.errors import DroppableStream, api_error, not_found
from rcfs.emulator.faults import DropConnection
from rcfs.emulator.state import EmulatorState, Stats

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single byte range -> (start, stop) with stop exclusive; None = serve it all.

    Raises Unsatisfiable for a well-formed range that selects nothing.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if not match:
        return None  # malformed or several ranges: RFC 9110 lets us ignore it
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    stop = size if last == "" else min(size, int(last) + 1)
    return start, stop


class ContentResponse(DroppableStream):
    """Streams bytes [start, stop) of a recording; may drop the connection (reset fault)."""

    def __init__(
        self,
        audio: RecordingAudio,
        start: int,
        stop: int,
        status: int,
        headers: dict[str, str],
        stats: Stats | None,
        head: bool,
    ) -> None:
        self.status_code = status
        self.background = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.audio = audio
        self.start = start
        self.stop = stop
        self.stats = stats
        self.head = head
        self.drop_after = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self.head:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        total = self.stop - self.start
        drop_at = None if self.drop_after is None else int(total * self.drop_after)
        dropped = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, nursery.cancel_scope)
            sent = 0
            for chunk in self.audio.chunks(self.start, self.stop):
                if drop_at is not None and sent + len(chunk) >= drop_at:
                    chunk = chunk[: drop_at - sent]
                    dropped = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                if self.stats is not None:
                    self.stats.content_bytes += len(chunk)
                if dropped:
                    break
            if not dropped:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
        if dropped:
            raise DropConnection("reset fault")

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return


def content_response(
    state: EmulatorState, request: Request, recording_id: str, *, api: bool = True
) -> Response:
    """The content of a recording, honouring Range; `api=False` is the admin copy (no faults)."""
    rec = state.account.recording(recording_id, time.time())
    if rec is None:
        return not_found("recordingId", recording_id)
    audio = RecordingAudio(rec.id, rec.duration)
    size = audio.size
    headers = {"Content-Type": state.content_type, "Accept-Ranges": "bytes"}
    disposition = request.query_params.get("contentDisposition")
    filename = request.query_params.get("contentDispositionFilename")
    if disposition is not None and disposition not in ("Inline", "Attachment"):
        return api_error(
            400,
            "CMN-101",
            "Parameter [contentDisposition] value is invalid",
            parameter="contentDisposition",
            value=disposition,
        )
    if disposition or filename:
        value = (disposition or "Inline").lower()
        if filename:
            safe = re.sub(r'["\\\r\n]', "_", filename)
            value += f'; filename="{safe}"'
        headers["Content-Disposition"] = value
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except Unsatisfiable:
        response = api_error(416, "CMN-107", "Requested range not satisfiable")
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    start, stop = wanted if wanted is not None else (0, size)
    status = 200 if wanted is None else 206
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    if not (api and state.faults.no_length):
        headers["Content-Length"] = str(stop - start)
    return ContentResponse(
        audio,
        start,
        stop,
        status,
        headers,
        state.stats if api else None,
        request.method == "HEAD",
    )


class Media:
    """Routes of the media host."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        path = "/restapi/v1.0/account/{accountId}/recording/{recordingId}/content"
        return [Route(path, self.content, methods=["GET"])]

    async def content(self, request: Request) -> Response:
        return await self.state.guard(request, "readCallRecordingContent", self._content)

    async def _content(self, request: Request, session: Session | None) -> Response:
        account_id = request.path_params["accountId"]
        if not self.state.account_matches(account_id):
            return not_found("accountId", account_id)
        return content_response(self.state, request, request.path_params["recordingId"])
