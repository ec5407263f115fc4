"""The media host: recording content (readCallRecordingContent), streamed.

Owns byte ranges (`Range: bytes=a-b | a- | -n` -> 206 + Content-Range,
416 CMN-107 when unsatisfiable, multi-range or malformed headers ignored ->
200), Content-Disposition, the `no_length` fault (chunked, no Content-Length),
the `reset` fault (connection dropped part-way through the body) and the
hostile-host faults: `lie_length` (a declared size that is not the body's),
`trickle` (a body at a few bytes a second) and `stall_after` (a body that
stops after so many bytes while the connection stays open). The body
is generated chunk by chunk from `audio.audio_for` (MP3 or WAV, as the
recording's content type says), so headers reach the client at once and an
hour-long file never sits in memory. The token may come in the `Authorization`
header or the `access_token` query parameter. `Accept: application/json`
without an alternative that admits audio is refused with 406, as RingCentral
has done since late 2022 (API-NOTES).

Also the storage host (`StorageHost`, a third port): under the `redirect` fault
the media host answers 302 to a signed URL there (`storage.Storage`), which
serves the same bytes, Range included, without authentication, and logs every
request it gets.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from urllib.parse import quote

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rcfs.emulator.audio import Audio, audio_for
from rcfs.emulator.auth import Session
from rcfs.emulator.errors import (
    DroppableStream,
    ParamError,
    api_error,
    json_response,
    not_found,
    param_error,
)
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
        audio: Audio,
        start: int,
        stop: int,
        status: int,
        headers: dict[str, str],
        stats: Stats | None,
        head: bool,
        trickle: int | None = None,
        stall_after: int | None = None,
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
        self.trickle = trickle
        self.stall_after = stall_after

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
                if self.stall_after is not None and sent + len(chunk) >= self.stall_after:
                    chunk = chunk[: max(0, self.stall_after - sent)]
                    await self._send_body(send, chunk)
                    await trio.sleep_forever()  # until the client goes away
                await self._send_body(send, chunk)
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

    async def _send_body(self, send: Send, chunk: bytes) -> None:
        if not chunk:
            return
        if self.trickle is None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            return
        step = max(1, self.trickle)
        for i in range(0, len(chunk), step):
            await send({"type": "http.response.body", "body": chunk[i:i + step], "more_body": True})
            await trio.sleep(1.0)

    @staticmethod
    async def _watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return


def content_disposition(disposition: str | None, filename: str | None) -> str | None:
    """The Content-Disposition header for the `contentDisposition` and
    `contentDispositionFilename` parameters (None: no header). Raises ParamError.

    RFC 6266 with RFC 8187 (ex-5987) encoding: a printable-ASCII name is sent as
    `filename="..."`; any other name also as `filename*=UTF-8''<percent-encoded>`,
    after an ASCII fallback `filename="..."` (accents stripped, the rest `_`).
    A name with a character no header can carry, encoded or not (NUL, CR, LF,
    DEL and every other control character; unpaired surrogates) is refused with
    400 CMN-101, as the other parameter errors.
    """
    if disposition and disposition not in ("Inline", "Attachment"):
        raise ParamError("contentDisposition", disposition)
    if not disposition and not filename:
        return None
    value = (disposition or "Inline").lower()
    if filename:
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in filename):
            raise ParamError("contentDispositionFilename", filename)
        fallback = "".join(_ascii_fallback(c) for c in filename)
        value += f'; filename="{fallback}"'
        if fallback != filename:
            value += "; filename*=UTF-8''" + quote(filename, safe=_ATTR_CHAR)
    return value


# RFC 8187 attr-char minus ALPHA / DIGIT (which `quote` always keeps).
_ATTR_CHAR = "!#$&+-.^_`|~"


def _ascii_fallback(char: str) -> str:
    if " " <= char <= "~" and char not in '"\\':
        return char
    base = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
    return base if base and all(" " <= b <= "~" and b not in '"\\' for b in base) else "_"


def content_response(
    state: EmulatorState,
    request: Request,
    recording_id: str,
    *,
    api: bool = True,
    storage: bool = False,
) -> Response:
    """The content of a recording, honouring Range. `api=False` serves without
    faults: the admin copy, and (`storage=True`, whose bytes count in the stats)
    the storage host."""
    rec = state.account.recording(recording_id, time.time())
    if rec is None:
        return not_found("recordingId", recording_id)
    content_type = state.content_type_for(rec.id)
    audio = audio_for(rec.id, rec.duration, content_type)
    size = audio.size
    headers = {"Content-Type": content_type, "Accept-Ranges": "bytes"}
    try:
        disposition = content_disposition(
            request.query_params.get("contentDisposition"),
            request.query_params.get("contentDispositionFilename"),
        )
    except ParamError as err:
        return param_error(err)
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except Unsatisfiable:
        response = api_error(416, "CMN-107", "Requested range not satisfiable")
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    start, stop = wanted if wanted is not None else (0, size)
    status = 200 if wanted is None else 206
    faults = state.faults if api else None
    declared = size if faults is None or faults.lie_length is None else faults.lie_length
    if wanted is not None:
        end = stop if declared == size else declared
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{declared}"
    if not (faults is not None and faults.no_length):
        headers["Content-Length"] = str((stop if declared == size else declared) - start)
    return ContentResponse(
        audio,
        start,
        stop,
        status,
        headers,
        state.stats if api or storage else None,
        request.method == "HEAD",
        trickle=None if faults is None else faults.trickle,
        stall_after=None if faults is None else faults.stall_after,
    )


def refuses_audio(accept: str | None, content_type: str) -> bool:
    """True when an Accept header asks for JSON and admits no audio: what RingCentral's
    media host has refused since late 2022 (API-NOTES; its SDKs dropped the header).

    Only `application/json` (or `application/*`) without any range matching the
    audio (`*/*`, `audio/*`, the exact type, q > 0) is refused: other Accept
    values are served, as before.
    """
    if not accept:
        return False
    wants_json = False
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in ("*/*", "audio/*", content_type):
            return False
        if media in ("application/json", "application/*"):
            wants_json = True
    return wants_json


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
        recording_id = request.path_params["recordingId"]
        rec = self.state.account.recording(recording_id, time.time())
        if rec is None:
            return not_found("recordingId", recording_id)
        content_type = self.state.content_type_for(rec.id)
        if refuses_audio(request.headers.get("accept"), content_type):
            return api_error(
                406,
                "CMN-406",
                f"Requested media type is not acceptable: this resource is {content_type}",
            )
        if self.state.faults.redirect:
            return self._redirect(request, rec.id)
        return content_response(self.state, request, recording_id)

    def _redirect(self, request: Request, recording_id: str) -> Response:
        """302 to a signed URL on the storage host; the disposition parameters ride
        along, the token (header or `access_token`) does not."""
        try:
            content_disposition(
                request.query_params.get("contentDisposition"),
                request.query_params.get("contentDispositionFilename"),
            )
        except ParamError as err:
            return param_error(err)
        extra = [
            (k, v)
            for k, v in request.query_params.multi_items()
            if k in ("contentDisposition", "contentDispositionFilename")
        ]
        location = self.state.storage.sign(recording_id, extra)
        return Response(status_code=302, headers={"Location": location})


class StorageHost:
    """The storage host's app: signed content URLs, no authentication, every request logged."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.app = Starlette(
            routes=[Route("/blob/{signature}/{recordingId}", self.blob, methods=["GET"])]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.state.storage.record(dict(scope))
        await self.app(scope, receive, send)

    async def blob(self, request: Request) -> Response:
        recording_id = request.path_params["recordingId"]
        storage = self.state.storage
        if not storage.verify(
            recording_id, request.query_params.get("expires"), request.path_params["signature"]
        ):
            return json_response({"error": "AccessDenied", "message": "bad or expired signature"}, 403)
        return content_response(self.state, request, recording_id, api=False, storage=True)
