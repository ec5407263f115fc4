"""The admin API under /__emulator/ on the platform port: loopback clients only.

Owns the test and script hooks: counters (stats), adding calls (`legOnly`: a
call whose recording exists only on its legs), deleting recordings and
records, faults, rate limits, recording retention and the audio format at run
time, auth switches (invalidate the JWT, revoke or expire every token), the
company-call-log permission, an unauthenticated, unthrottled copy of any
recording's content, the list of every token issued (leak tests), the storage
host's request log (redirect leak tests) and per-record merge patches
(malformed or hostile records on demand). JSON in,
JSON out; a bad body is 400 with a one-line reason. Admin requests are not
counted in the stats and never see faults.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rcfs.emulator.config import (
    normalise_faults,
    parse_audio_format,
    parse_duration,
    rate_limits_from_json,
    retention_from_json,
)
from rcfs.emulator.errors import json_response
from rcfs.emulator.media import content_response
from rcfs.emulator.model import INBOUND, OUTBOUND
from rcfs.emulator.records import iso, parse_iso
from rcfs.emulator.state import EmulatorState

log = logging.getLogger(__name__)

AdminHandler = Callable[[Request], Awaitable[Response]]


class AdminError(Exception):
    pass


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Admin:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        def r(path: str, fn: AdminHandler, method: str) -> Route:
            return Route("/__emulator" + path, self._wrap(fn), methods=[method])

        return [
            r("/info", self.info, "GET"),
            r("/stats", self.stats, "GET"),
            r("/stats/reset", self.stats_reset, "POST"),
            r("/calls", self.add_calls, "POST"),
            r("/calls/{callId}", self.delete_call, "DELETE"),
            r("/calls/{callId}/patch", self.patch_call, "PUT"),
            r("/tokens", self.tokens, "GET"),
            r("/recordings", self.list_recordings, "GET"),
            r("/recordings/{recordingId}", self.delete_recording, "DELETE"),
            r("/recordings/{recordingId}/content", self.content, "GET"),
            r("/faults", self.get_faults, "GET"),
            r("/faults", self.put_faults, "PUT"),
            r("/rate-limits", self.get_rate_limits, "GET"),
            r("/rate-limits", self.put_rate_limits, "PUT"),
            r("/retention", self.get_retention, "GET"),
            r("/retention", self.put_retention, "PUT"),
            r("/auth", self.put_auth, "PUT"),
            r("/permissions", self.put_permissions, "PUT"),
            r("/audio-format", self.get_audio_format, "GET"),
            r("/audio-format", self.put_audio_format, "PUT"),
            r("/storage/requests", self.storage_requests, "GET"),
            r("/storage/requests", self.clear_storage_requests, "DELETE"),
        ]

    def _wrap(self, fn: AdminHandler) -> AdminHandler:
        async def handler(request: Request) -> Response:
            if not _loopback(request):
                return _error(403, "the admin API answers loopback clients only")
            try:
                return await fn(request)
            except AdminError as err:
                return _error(400, str(err))

        return handler

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise AdminError(f"body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise AdminError("body must be a JSON object")
        return body

    async def info(self, request: Request) -> Response:
        return json_response(self.state.info())

    async def stats(self, request: Request) -> Response:
        return json_response(self.state.stats.as_json())

    async def stats_reset(self, request: Request) -> Response:
        self.state.stats.reset()
        return Response(status_code=204)

    async def add_calls(self, request: Request) -> Response:
        body = await self._body(request)
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100_000:
            raise AdminError("count must be an integer 1..100000")
        start = None
        if body.get("startTime") is not None:
            try:
                start = parse_iso(str(body["startTime"])) / 1000
            except ValueError:
                raise AdminError("startTime must be ISO 8601") from None
        recorded = body.get("recorded", True)
        if recorded is not None and not isinstance(recorded, bool):
            raise AdminError("recorded must be true, false or null")
        duration = body.get("duration")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, int | float):
                raise AdminError("duration must be a number of seconds")
            if not 1 <= duration <= 4 * 3600:
                raise AdminError("duration must be 1..14400 seconds")
            duration = int(duration)
        direction = body.get("direction")
        if direction is not None and direction not in (INBOUND, OUTBOUND):
            raise AdminError("direction must be Inbound or Outbound")
        extension = None
        if body.get("extensionId") is not None:
            extension = self.state.account.extension(str(body["extensionId"]))
            if extension is None:
                raise AdminError("unknown extensionId")
        leg_only = body.get("legOnly", False)
        if not isinstance(leg_only, bool):
            raise AdminError("legOnly must be true or false")
        if leg_only and recorded is False:
            raise AdminError("legOnly needs a recorded call")
        now = time.time()
        calls = self.state.account.add_calls(
            count,
            now,
            start=start,
            recorded=recorded,
            duration=duration,
            direction=direction,
            extension=extension,
            late=self.state.faults.late_recording,
            leg_only=leg_only or None,
        )
        records = [self.state.renderer.record(c, now) for c in calls]
        return json_response({"records": records})

    async def delete_call(self, request: Request) -> Response:
        if not self.state.account.delete_call(request.path_params["callId"], time.time()):
            return _error(404, "no such call record")
        return Response(status_code=204)

    async def patch_call(self, request: Request) -> Response:
        """Chaos knob: a JSON merge patch applied to the record whenever it is served
        (`{}` removes the patch). Lets tests serve malformed or hostile records."""
        call_id = request.path_params["callId"]
        if self.state.account.call(call_id) is None:
            return _error(404, "no such call record")
        body = await self._body(request)
        if body:
            self.state.record_patches[call_id] = body
        else:
            self.state.record_patches.pop(call_id, None)
        return Response(status_code=204)

    async def tokens(self, request: Request) -> Response:
        """Every access and refresh token issued so far (for leak tests)."""
        return json_response({"tokens": list(self.state.auth.issued)})

    async def list_recordings(self, request: Request) -> Response:
        recs = self.state.account.visible_recordings(time.time())
        return json_response(
            {"recordings": [{"id": r.id, "duration": r.duration, "callId": r.call.id,
                             "startTime": iso(r.call.start_ms)} for r in recs]}
        )

    async def delete_recording(self, request: Request) -> Response:
        if not self.state.account.delete_recording(request.path_params["recordingId"], time.time()):
            return _error(404, "no such recording")
        return Response(status_code=204)

    async def content(self, request: Request) -> Response:
        return content_response(self.state, request, request.path_params["recordingId"], api=False)

    async def get_faults(self, request: Request) -> Response:
        return json_response(self.state.faults.describe())

    async def put_faults(self, request: Request) -> Response:
        try:
            self.state.faults.update(normalise_faults(await self._body(request)))
        except ValueError as err:
            raise AdminError(str(err)) from None
        log.info("faults now %s", self.state.faults.describe())
        return Response(status_code=204)

    async def get_rate_limits(self, request: Request) -> Response:
        return json_response(self.state.limiter.describe())

    async def put_rate_limits(self, request: Request) -> Response:
        try:
            limits = rate_limits_from_json(await self._body(request))
        except ValueError as err:
            raise AdminError(str(err)) from None
        self.state.limiter.set_limits(limits)
        log.info("rate limits now %s", self.state.limiter.describe())
        return Response(status_code=204)

    async def get_retention(self, request: Request) -> Response:
        account = self.state.account
        account.tick(time.time())  # `deleted` includes what is due by now
        return json_response(account.retention_info())

    async def put_retention(self, request: Request) -> Response:
        """{"count": N, "duration": "10m"}: a key absent stays, null turns that rule off."""
        try:
            changes = retention_from_json(await self._body(request))
        except ValueError as err:
            raise AdminError(str(err)) from None
        account = self.state.account
        account.set_retention(
            changes.get("count", account.retention_count),
            changes.get("duration_s", account.retention_s),
            time.time(),
        )
        log.info("retention now %s", account.retention_info())
        return Response(status_code=204)

    async def put_auth(self, request: Request) -> Response:
        body = await self._body(request)
        for key in body:
            if key not in ("jwt_valid", "revoke_tokens", "expire_tokens", "access_ttl"):
                raise AdminError(f"unknown auth setting {key!r}")
        auth = self.state.auth
        if "jwt_valid" in body:
            auth.jwt_valid = bool(body["jwt_valid"])
        if body.get("revoke_tokens"):
            auth.revoke_all()
        if body.get("expire_tokens"):
            auth.expire_all(trio.current_time())
        if "access_ttl" in body:
            try:
                auth.access_ttl = parse_duration(body["access_ttl"], "access_ttl") or 1.0
            except ValueError as err:
                raise AdminError(str(err)) from None
        return Response(status_code=204)

    async def get_audio_format(self, request: Request) -> Response:
        return json_response({"format": self.state.audio_format})

    async def put_audio_format(self, request: Request) -> Response:
        """{"format": "mp3" | "wav" | "mixed"}: every recording's content type (metadata,
        Content-Type and bytes) follows at once."""
        body = await self._body(request)
        for key in body:
            if key != "format":
                raise AdminError(f"unknown audio-format setting {key!r} (known: format)")
        try:
            self.state.audio_format = parse_audio_format(body.get("format"))
        except ValueError as err:
            raise AdminError(str(err)) from None
        log.info("audio format now %s", self.state.audio_format)
        return Response(status_code=204)

    async def storage_requests(self, request: Request) -> Response:
        """{"url": the storage host, "requests": [{"time", "method", "path", "query",
        "headers"}, ...]}: every request the storage host received, oldest first."""
        return json_response(self.state.storage.describe())

    async def clear_storage_requests(self, request: Request) -> Response:
        self.state.storage.requests.clear()
        return Response(status_code=204)

    async def put_permissions(self, request: Request) -> Response:
        body = await self._body(request)
        for key in body:
            if key != "company_call_log":
                raise AdminError(f"unknown permission {key!r}")
        if "company_call_log" in body:
            self.state.company_call_log = bool(body["company_call_log"])
        return Response(status_code=204)
