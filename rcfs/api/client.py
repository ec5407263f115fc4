"""RingCentralClient: every request rcfs makes to RingCentral goes through here.

Owns: the httpx.AsyncClient, which hosts may be contacted (the configured
platform and media hosts, with the bearer token; and, for recording content
only, where the media host redirects to, without it: `_send_unauthenticated`), the
request pipeline (rate limiter → bearer token → send → one renewal and resend
on 401 → domain error), the retry policy around idempotent requests, and the
operations of docs/INTERFACES.md. Tokens travel only in the Authorization
header, never in a URL, so httpx's own request logging cannot leak them.
Which hosts get the token is `hosts.py`'s; URLs (origins, secrets stripped)
and transport failures as one line are `wire.py`'s.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import trio

from rcfs.api.auth import Authenticator, TokenStore, default_token_path, fingerprint
from rcfs.api.groups import Budget
from rcfs.api.hosts import Hosts
from rcfs.api.priority import Priority, PriorityLike
from rcfs.api.ratelimit import RateLimiter, Ticket
from rcfs.api.responses import ContentResponse, error_for, parse_json_object
from rcfs.api.retry import RetryPolicy, retrying
from rcfs.api.wire import is_loopback_host, strip_secret_params, transport_reason
from rcfs.config import Credentials
from rcfs.errors import (
    AuthError,
    BadResponse,
    ForeignHostRefused,
    PermissionDenied,
    TemporaryFailure,
)

if TYPE_CHECKING:
    from rcfs.api.shared.backend import SharedBackend

log = logging.getLogger(__name__)

API = "/restapi/v1.0"
MAX_REDIRECTS = 5
STALE_ADMISSION = 0.25  # seconds a request may wait for its token lease on its admitted slot
CONTENT_OP = "readCallRecordingContent"
_REDIRECTS = (301, 302, 303, 307, 308)
SYNC_RECORD_COUNT = 250


@dataclass(frozen=True)
class SyncResult:
    records: list[dict[str, Any]]
    sync_token: str
    sync_time: str | None
    full: bool


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RingCentralClient:
    """Async RingCentral API client for one set of credentials (trio)."""

    def __init__(
        self,
        creds: Credentials,
        http: httpx.AsyncClient,
        *,
        token_path: Path,
        retry_policy: RetryPolicy | None = None,
        budgets: Mapping[str, Budget] | None = None,
        shared: SharedBackend | None = None,
    ) -> None:
        creds.check()
        self._creds = creds
        self._http = http
        self._policy = retry_policy
        # With a shared backend (--redis) the budget and the session live in Redis.
        self._shared = shared
        self._limiter = RateLimiter(budgets, shared.group_factory if shared else None)
        store = TokenStore(token_path, fingerprint(creds))
        self._auth = (shared.authenticator(creds, store, self._grant) if shared
                      else Authenticator(creds, store, self._grant))
        pair = f"{creds.client_id}:{creds.client_secret}".encode()
        self._basic = "Basic " + base64.b64encode(pair).decode()
        self._hosts = Hosts(creds.server_url, creds.media_url)
        self.call_log_scope: Literal["company", "extension"] = "company"
        self.last_failure: str | None = None  # the last transport failure, for start-up messages

    def __repr__(self) -> str:
        return f"<RingCentralClient {self._creds.server_url} scope={self.call_log_scope}>"

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        creds: Credentials,
        token_path: Path | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        budgets: Mapping[str, Budget] | None = None,
        timeout: float = 60.0,
        redis_url: str | None = None,
        redis_label: str = "",
    ) -> AsyncIterator[RingCentralClient]:
        """`async with RingCentralClient.open(creds) as client:`; raises ConfigError for
        unsafe credentials (emulator credentials for a real server, plain http), or for
        a Redis that does not answer (`redis_url`, else `creds.redis_url`; '' for none)."""
        creds.check()
        if token_path is None:
            token_path = default_token_path(creds)
        url = creds.redis_url if redis_url is None else redis_url
        async with contextlib.AsyncExitStack() as stack:
            shared = None
            if url:
                from rcfs.api.shared.backend import open_shared

                shared = await stack.enter_async_context(open_shared(url, creds, label=redis_label))
            http = await stack.enter_async_context(cls._http_client(creds, transport, timeout))
            yield cls(creds, http, token_path=token_path, retry_policy=retry_policy,
                      budgets=budgets, shared=shared)

    @staticmethod
    def _http_client(
        creds: Credentials, transport: httpx.AsyncBaseTransport | None, timeout: float
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            follow_redirects=False,  # redirects are followed by hand, to allowed hosts only
            headers={"User-Agent": "rcfs/0.1"},
            trust_env=not creds.is_loopback,
        )

    # -- the request pipeline -------------------------------------------------------

    async def _exchange(
        self,
        op: str,
        method: str,
        url: str,
        ticket: Ticket,
        *,
        stream: bool,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request under an admitted ticket; feed the limiter back."""
        request = self._http.build_request(method, url, **kwargs)
        try:
            resp = await self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            ticket.group.errors += 1
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                ticket.unsend()  # never reached the server: it counted nothing
            reason = transport_reason(exc, request.url, self._http.timeout)
            self.last_failure = f"{op}: {reason}"
            raise TemporaryFailure(self.last_failure) from None
        self._limiter.observe(ticket, resp.status_code, resp.headers)
        group = self._limiter.group_for(op)
        if not stream:
            group.bytes += len(resp.content)
        if resp.status_code >= 400 and resp.status_code != 429:
            group.errors += 1
        log.debug("%s %s %s -> %d", op, method, request.url.path, resp.status_code)
        return resp

    async def _fail(self, op: str, resp: httpx.Response) -> None:
        try:
            body = await resp.aread()
        except httpx.TransportError:  # the error body broke off: the status still says it
            body = b""
        await resp.aclose()
        group = self._limiter.group_for(op).name
        raise error_for(op, resp.status_code, resp.headers, body, self._auth.redact, group)

    async def _send(
        self,
        op: str,
        method: str,
        url: str,
        *,
        priority: PriorityLike,
        headers: dict[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One attempt of a bearer-authenticated request: a 2xx response or a domain error."""
        url = self._hosts.checked(url, op)
        renewed = False
        redirects = 0
        token = await self._auth.token()
        while True:
            async with self._limiter.slot(op, priority) as ticket:
                usable = self._auth.usable_token()
                if usable is None:
                    # The token expired while we queued: renew, holding our place.
                    usable = await self._auth.token()
                    if not ticket.restamp():
                        ticket.unsend()
                        continue
                # A shared session holds a lease on the token until the response
                # headers, so no peer's refresh supersedes it in flight (shared/session.py).
                leasing = trio.current_time()
                async with self._auth.use(usable) as token:
                    if trio.current_time() - leasing > STALE_ADMISSION:
                        # A peer's refresh kept us waiting: the slot was admitted for
                        # then, and requests held back by a refresh and sent together
                        # would crowd the server's window. Queue again for a fresh one.
                        ticket.unsend()
                        continue
                    hdrs = dict(headers or {})
                    hdrs["Authorization"] = f"Bearer {token}"
                    resp = await self._exchange(
                        op, method, url, ticket, stream=stream, headers=hdrs, params=params
                    )
            status = resp.status_code
            if status == 401 and not renewed:
                await resp.aclose()
                renewed = True
                token = await self._auth.after_401(token)
                continue
            if status in _REDIRECTS and "location" in resp.headers:
                await resp.aclose()
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise TemporaryFailure(f"{op}: too many redirects")
                target = str(resp.url.join(resp.headers["location"]))
                if op == CONTENT_OP and self._hosts.foreign(target):
                    # The media host hands the bytes over to storage elsewhere (a
                    # signed URL): follow it without the token (API-NOTES.md).
                    return await self._send_unauthenticated(
                        op, target, {k: v for k, v in (headers or {}).items()
                                     if k.lower() != "authorization"}, stream, redirects)
                url = self._hosts.checked(target, op)
                params = None
                continue
            if 200 <= status < 300:
                return resp
            await self._fail(op, resp)

    async def _send_unauthenticated(
        self, op: str, url: str, headers: dict[str, str], stream: bool, redirects: int
    ) -> httpx.Response:
        """GET a URL outside RingCentral's hosts: never with the token, never with a secret
        in the query, over https (plain http only to loopback, for the emulator), not
        rate-limited (the media request that redirected here was)."""
        while True:
            parts = urlsplit(url)
            loopback = is_loopback_host(parts.hostname or "")
            if parts.scheme != "https" and not (parts.scheme == "http" and loopback
                                                and self._creds.is_loopback):
                raise ForeignHostRefused(
                    f"{op}: refusing a redirect to {parts.scheme}://{parts.hostname or '?'} "
                    "(only https is followed outside RingCentral's hosts)")
            request = self._http.build_request("GET", strip_secret_params(url), headers=headers)
            try:
                resp = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise TemporaryFailure(f"{op}: redirect target: {type(exc).__name__}: {exc}") from None
            log.debug("%s GET %s (redirected, no token) -> %d", op, request.url.path, resp.status_code)
            if resp.status_code in _REDIRECTS and "location" in resp.headers:
                await resp.aclose()
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise TemporaryFailure(f"{op}: too many redirects")
                url = str(resp.url.join(resp.headers["location"]))
                continue
            if 200 <= resp.status_code < 300:
                return resp
            try:
                body = await resp.aread()
            except httpx.TransportError:
                body = b""
            await resp.aclose()
            raise error_for(op, resp.status_code, resp.headers, body, self._auth.redact)

    async def _get_json(
        self,
        op: str,
        url: str,
        params: Mapping[str, str] | None = None,
        *,
        priority: PriorityLike,
    ) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            resp = await self._send(
                op,
                "GET",
                url,
                priority=priority,
                params=params,
                headers={"Accept": "application/json"},
            )
            return parse_json_object(op, resp.content)

        return await retrying(attempt, what=op, policy=self._policy)

    async def _basic_post(self, op: str, path: str, form: dict[str, str]) -> httpx.Response:
        """POST with HTTP Basic client auth (the OAuth endpoints); any status returned."""
        async with self._limiter.slot(op, Priority.INTERACTIVE) as ticket:
            return await self._exchange(
                op,
                "POST",
                self._creds.server_url + path,
                ticket,
                stream=False,
                data=form,
                headers={"Accept": "application/json", "Authorization": self._basic},
            )

    async def _grant(self, form: dict[str, str]) -> dict[str, Any]:
        """getToken for the authenticator: refused grants become AuthError."""

        async def attempt() -> dict[str, Any]:
            resp = await self._basic_post("getToken", "/restapi/oauth/token", form)
            if resp.status_code in (400, 401, 403):
                err = error_for("getToken", resp.status_code, resp.headers, resp.content, self._auth.redact)
                raise AuthError(str(err))
            if resp.status_code >= 300:
                await self._fail("getToken", resp)
            return parse_json_object("getToken", resp.content)

        return await retrying(attempt, what="getToken", policy=self._policy)

    # -- operations ---------------------------------------------------------------

    async def login(self) -> None:
        """Make sure a valid access token is at hand (stored, refreshed or new)."""
        await self._auth.token()

    async def logout(self) -> None:
        """Revoke the current token and forget it (memory and token store)."""
        tok = await self._auth.forget()
        if tok is not None:
            resp = await self._basic_post("revokeToken", "/restapi/oauth/revoke", {"token": tok.access_token})
            if resp.status_code >= 300:
                log.info("revokeToken answered HTTP %d", resp.status_code)

    async def account_info(self, *, priority: PriorityLike = Priority.INTERACTIVE) -> dict[str, Any]:
        return await self._get_json("readAccountInfo", f"{API}/account/~", priority=priority)

    def _call_log_path(self, sync: bool = False) -> tuple[str, str]:
        suffix = "call-log-sync" if sync else "call-log"
        if self.call_log_scope == "company":
            op = "syncAccountCallLog" if sync else "readCompanyCallLog"
            return op, f"{API}/account/~/{suffix}"
        op = "syncUserCallLog" if sync else "readUserCallLog"
        return op, f"{API}/account/~/extension/~/{suffix}"

    def _fall_back_to_extension(self, exc: PermissionDenied) -> None:
        log.warning(
            "the company call log is not permitted for these credentials (%s); "
            "reading the user's own call log instead",
            exc,
        )
        self.call_log_scope = "extension"

    async def iter_call_log(
        self, date_from: datetime, date_to: datetime, *, priority: PriorityLike = Priority.BACKGROUND
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Pages of raw call-log records with recordings in [date_from, date_to)."""
        params = {
            "dateFrom": _iso(date_from),
            "dateTo": _iso(date_to),
            "view": "Detailed",
            "withRecording": "true",
            "perPage": "1000",
        }
        while True:
            op, path = self._call_log_path()
            try:
                page = await self._get_json(op, path, params, priority=priority)
                break
            except PermissionDenied as exc:
                if self.call_log_scope != "company":
                    raise
                self._fall_back_to_extension(exc)
        seen: set[str] = set()
        while True:
            records = page.get("records")
            if not isinstance(records, list):
                raise _bad(op, "records")
            yield [r for r in records if isinstance(r, dict)]
            nav = page.get("navigation")
            next_page = nav.get("nextPage") if isinstance(nav, dict) else None
            uri = next_page.get("uri") if isinstance(next_page, dict) else None
            if not isinstance(uri, str) or not uri or uri in seen:
                return
            seen.add(uri)
            page = await self._get_json(op, self._hosts.platform_url(uri), priority=priority)

    async def sync_call_log(
        self,
        sync_token: str | None,
        *,
        date_from: datetime | None = None,
        priority: PriorityLike = Priority.BACKGROUND,
    ) -> SyncResult:
        """FSync without a token, ISync with one; SyncTokenInvalid means: FSync again."""
        params = {"view": "Detailed"}
        if sync_token is None:
            params |= {"syncType": "FSync", "recordCount": str(SYNC_RECORD_COUNT)}
            if date_from is not None:
                # The server accepts at most the last 30 days.
                floor = datetime.now(UTC) - timedelta(days=30) + timedelta(minutes=5)
                params["dateFrom"] = _iso(max(date_from.astimezone(UTC), floor))
        else:
            params |= {"syncType": "ISync", "syncToken": sync_token, "showDeleted": "true"}
        while True:
            op, path = self._call_log_path(sync=True)
            try:
                data = await self._get_json(op, path, params, priority=priority)
                break
            except PermissionDenied as exc:
                if self.call_log_scope != "company":
                    raise
                self._fall_back_to_extension(exc)
        records = data.get("records")
        info = data.get("syncInfo")
        if not isinstance(records, list) or not isinstance(info, dict):
            raise _bad(op, "records/syncInfo")
        token = info.get("syncToken")
        if not isinstance(token, str) or not token:
            raise _bad(op, "syncInfo.syncToken")
        sync_time = info.get("syncTime")
        return SyncResult(
            records=[r for r in records if isinstance(r, dict)],
            sync_token=token,
            sync_time=sync_time if isinstance(sync_time, str) else None,
            full=info.get("syncType", params["syncType"]) == "FSync",
        )

    async def recording_info(
        self, recording_id: str | int, *, priority: PriorityLike = Priority.INTERACTIVE
    ) -> dict[str, Any]:
        rid = quote(str(recording_id), safe="")
        return await self._get_json(
            "readCallRecording", f"{API}/account/~/recording/{rid}", priority=priority
        )

    @asynccontextmanager
    async def stream_content(
        self, content_uri: str, *, start: int = 0, priority: PriorityLike = Priority.INTERACTIVE
    ) -> AsyncIterator[ContentResponse]:
        """A recording's bytes from `start`: headers on entry, then `iter_chunks()`.

        Retries cover getting the headers; a body that breaks later raises
        TemporaryFailure and the caller resumes with a new `start`.
        """
        op = CONTENT_OP
        url = self._hosts.checked(content_uri, op)
        # No Accept: application/json here (it breaks binary downloads), and no
        # content-encoding, so byte offsets mean file offsets.
        headers = {"Accept": "*/*", "Accept-Encoding": "identity", "Range": f"bytes={start}-"}

        async def attempt() -> httpx.Response:
            return await self._send(op, "GET", url, priority=priority, headers=headers, stream=True)

        resp = await retrying(attempt, what=op, policy=self._policy)
        try:
            group = self._limiter.group_for(op)

            def on_bytes(n: int) -> None:
                group.bytes += n

            yield ContentResponse(resp, requested_start=start, on_bytes=on_bytes)
        finally:
            with trio.CancelScope(shield=True):
                await resp.aclose()

    # -- status -------------------------------------------------------------------

    def operation_counts(self) -> dict[tuple[str, str], int]:
        """Requests sent, by (rate-limit group, operationId): for the metrics."""
        return self._limiter.operation_counts()

    def snapshot(self) -> dict[str, Any]:
        return {
            "rate_limits": self._limiter.snapshot(),
            "requests": self._limiter.counters(),
            "call_log_scope": self.call_log_scope,
            "auth": {"logins": self._auth.logins, "refreshes": self._auth.refreshes},
            **({"redis": self._shared.snapshot()} if self._shared is not None else {}),
        }


def _bad(op: str, what: str) -> BadResponse:
    return BadResponse(f"{op}: response without a usable {what}")
