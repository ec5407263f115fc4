"""Everything one running emulator knows, and the gate every API request passes.

`EmulatorState` ties together the account, OAuth sessions, rate limiter,
faults, counters, the storage host and admin switches (among them the
company's recording format, which decides each recording's content type).
`State.guard()` is the single request
pipeline, in RingCentral's order: count -> injected latency -> authenticate
(401 AGW-401 / TokenInvalid) -> throttle (429 CMN-301, headers on every
limited response, `Retry-After` unless the `no_retry_after` fault) -> injected
503 CMN-201 (with `Retry-After` under the `retry_after_503` fault) -> handler
-> maybe drop the connection mid-body. Route modules only parse parameters and
render results.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from rcfs.emulator.account import Account
from rcfs.emulator.audio import MP3_TYPE, WAV_TYPE
from rcfs.emulator.auth import AuthState, Credentials, Session, TokenError
from rcfs.emulator.errors import DroppableStream, DroppingResponse, api_error
from rcfs.emulator.faults import Faults
from rcfs.emulator.ratelimit import OPERATION_GROUPS, RateLimiter
from rcfs.emulator.records import Renderer
from rcfs.emulator.storage import Storage

log = logging.getLogger(__name__)

Handler = Callable[[Request, Session | None], Awaitable[Response]]


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    group_requests: Counter[str] = field(default_factory=Counter)
    group_throttled: Counter[str] = field(default_factory=Counter)
    content_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        groups = {
            g: {"requests": self.group_requests[g], "throttled": self.group_throttled[g]}
            for g in sorted(set(self.group_requests) | set(self.group_throttled))
        }
        return {
            "requests": dict(sorted(self.requests.items())),
            "groups": groups,
            "throttled": sum(self.group_throttled.values()),
            "content_bytes": self.content_bytes,
        }

    def reset(self) -> None:
        self.requests.clear()
        self.group_requests.clear()
        self.group_throttled.clear()
        self.content_bytes = 0


class EmulatorState:
    def __init__(
        self,
        account: Account,
        credentials: Credentials,
        limiter: RateLimiter,
        faults: Faults,
        seed: int,
    ) -> None:
        self.account = account
        self.credentials = credentials
        self.auth = AuthState(seed, credentials, account.user.id)
        self.limiter = limiter
        self.faults = faults
        self.stats = Stats()
        self.company_call_log = True
        self.audio_format = "mp3"  # mp3 | wav | mixed (--audio-format, PUT /__emulator/audio-format)
        self.storage = Storage()
        self.server_url = ""
        self.media_url = ""
        self.seed = seed
        self.record_patches: dict[str, dict[str, Any]] = {}
        self.renderer = Renderer(account.account_id, "", "", self.record_patches)
        self._request_ids = itertools.count(1)
        # Sync tokens name the run that issued them: a restarted emulator refuses them.
        self.sync_nonce = hashlib.blake2b(
            f"{seed}:{time.time_ns()}".encode(), digest_size=6
        ).hexdigest()

    def set_urls(self, server_url: str, media_url: str) -> None:
        self.server_url = server_url
        self.media_url = media_url
        self.renderer = Renderer(self.account.account_id, server_url, media_url, self.record_patches)

    def info(self) -> dict[str, str]:
        return {
            "server_url": self.server_url,
            "media_url": self.media_url,
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret,
            "jwt": self.credentials.jwt,
            "account_id": self.account.account_id,
        }

    @property
    def content_type(self) -> str:
        """The company's format (for `mixed`, the majority's: MP3)."""
        return WAV_TYPE if self.audio_format == "wav" else MP3_TYPE

    def content_type_for(self, recording_id: str) -> str:
        """`audio/mpeg` or `audio/wav`: what readCallRecording's `contentType`, the
        content's Content-Type and its bytes all say for this recording. With
        `mixed`, a seeded quarter of the recordings are WAV."""
        if self.audio_format == "mixed":
            digest = hashlib.blake2b(f"{self.seed}:{recording_id}".encode(), digest_size=2).digest()
            return WAV_TYPE if digest[0] % 4 == 0 else MP3_TYPE
        return self.content_type

    def token_ttl(self) -> float:
        ttl = self.faults.token_ttl
        return self.auth.access_ttl if ttl is None else ttl

    def account_matches(self, account_id: str) -> bool:
        return account_id in ("~", self.account.account_id)

    @staticmethod
    def bearer(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return request.query_params.get("access_token") or None

    async def guard(
        self, request: Request, operation: str, handler: Handler, *, key: str | None = None
    ) -> Response:
        """Run `handler` behind RingCentral's gateway behaviour (see module docstring).

        `key` set means the operation needs no bearer token (the OAuth endpoints)
        and is throttled under that key.
        """
        self.stats.requests[operation] += 1
        if self.faults.latency > 0:
            await trio.sleep(self.faults.latency)
        now = trio.current_time()
        session: Session | None = None
        if key is None:
            token = self.bearer(request)
            if token is None:
                return api_error(401, "AGW-401", "Authorization header is not specified")
            try:
                session = self.auth.authenticate(token, now)
            except TokenError as err:
                response = api_error(401, err.code, err.message, top_code="TokenInvalid")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            key = f"{session.client_id}:{session.owner_id}"
        group = OPERATION_GROUPS[operation]
        self.stats.group_requests[group] += 1
        decision = self.limiter.check(key, group, now)
        headers = dict(decision.headers)
        if self.faults.no_retry_after:
            headers.pop("Retry-After", None)
        if not decision.allowed:
            self.stats.group_throttled[group] += 1
            log.debug("throttled %s (%s), retry after %d s", operation, group, decision.retry_after)
            response = api_error(429, "CMN-301", "Request rate exceeded", headers=headers)
        elif self.faults.server_error():
            retry = self.faults.retry_after_503
            response = api_error(
                503,
                "CMN-201",
                "Service Temporary Unavailable",
                headers=None if retry is None else {"Retry-After": str(retry)},
            )
        else:
            response = await handler(request, session)
        response.headers.update(headers)
        response.headers["RCRequestId"] = f"rcfs-emu-{next(self._request_ids)}"
        fraction = self.faults.reset()
        if fraction is not None:
            if isinstance(response, DroppableStream):
                response.drop_after = fraction
            elif request.method != "HEAD":
                response = DroppingResponse(response, fraction)
        return response
