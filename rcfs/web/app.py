"""The web player's ASGI application: routes, sign-in, pages and media.

Owns `WebApp`, built from the mount's own components (the `Vfs` for the
tree, the `Index` for search, the `ContentManager` for audio), so a play in
the browser is one more reader of the same cache, the same single-flight
downloads and the same rate limiter as a read through FUSE.

Routes (all GET, which Starlette also answers for HEAD; none changes
anything, so there is nothing for a cross-site request to forge):

    /signin?token=T          one-time sign-in: sets the session cookie, 303 to /
    /                        the date tree (years, months, days with counts)
    /day/YYYY/MM/DD          one row and one <audio> per recording of that day
    /search?q=...            by phone number, extension number or name
    /audio/INO/NAME?s=SIG    the recording, inline (Range, HEAD)
    /download/INO/NAME?s=SIG the recording as an attachment named as in the mount
    /static/rcfs.css         the style sheet (public)

Security model:
- Pages need the session cookie; without it they answer 401 with a page
  saying how to sign in. Media URLs need their signature instead (see
  auth.py), so players without the cookie (mpv, VLC, <audio>) can use them;
  a bad, expired or misplaced signature answers 403.
- Sign-in is a GET because it is the link the user opens; it consumes its
  one-time token, which is the whole of its effect, and it always redirects
  to `/` (no user-supplied target exists, so no open redirect).
- The cookie is HttpOnly, Path=/, SameSite=Lax (Secure over HTTPS).
  Lax, not Strict: when the sign-in link is opened from another site (a
  chat or mail web app), Strict would withhold the new cookie from the
  redirect to `/` (the chain started cross-site), and the consumed link
  would leave the user signed out. Lax only adds cookies to cross-site
  top-level GET navigations, and every route is a GET that changes nothing
  and whose response the other site cannot read (no CORS, no framing).
- Every response carries a Content-Security-Policy with no script source at
  all (the pages have none), `X-Content-Type-Options: nosniff`,
  `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY` (and
  `frame-ancestors 'none'`), and `Cache-Control: no-store` unless set.
- No RingCentral token, JWT or secret is reachable from here: the app never
  sees one (the content manager's client holds them), and the URLs carry
  only inode numbers, the mount's file names and our own signatures.
- The access log (`rcfs.web.access`, INFO) records the client address,
  method, path without the query string (where sign-in tokens and
  signatures travel), status, bytes and time.

Must not: import pyfuse3 or httpx; call the Vfs from a worker thread (the
Vfs belongs to the trio thread); block the trio thread on a long query
(search runs in a worker thread).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date
from typing import Any, Protocol
from urllib.parse import quote

import trio
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rcfs.content import ContentManager
from rcfs.errors import NotFound, RcfsError
from rcfs.index import Index, IndexedRecording
from rcfs.status import ErrorLog
from rcfs.vfs import ROOT_INO, Vfs, dir_ino

from . import pages
from .auth import SESSION_TTL, SIGN_IN_TTL, URL_TTL, Clock, Sessions, SignIns, UrlSigner
from .media import ErrorPage, RecordingResponse, StreamStats, audio_type
from .pages import DayView, MonthView, PartyView, RecordingView, YearView, esc
from .search import count_between, search

log = logging.getLogger(__name__)
access_log = logging.getLogger("rcfs.web.access")

SESSION_COOKIE = "rcfs_session"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class OnDemandIndex(Protocol):
    """The progressive indexer (backfill.py, or connection.OfflineAware), as the
    FUSE adapter uses it: a day not indexed yet is indexed before it is shown."""

    def complete(self) -> bool: ...
    async def ensure(self, lo_ms: int, hi_ms: int) -> None: ...


class WebApp:
    """The web player over a mount's components; serve it with `serve_web`.

    `vfs`, `index`, `content`: the mount's tree, index and content manager.
    `errors`: the mount's error log (failed plays are recorded there once).
    `on_demand`: the progressive indexer; None when everything is indexed.
    `keep_deleted`: the mount's `--keep-deleted` (which recordings are listed).
    `secret`: the URL-signing key (>= 16 bytes); None: random, for this process only.
    `base_url`: the public URL sign-in links point at (e.g. behind a TLS proxy);
    None: the address `serve_web` bound.
    """

    def __init__(
        self,
        *,
        vfs: Vfs,
        index: Index,
        content: ContentManager,
        errors: ErrorLog | None = None,
        on_demand: OnDemandIndex | None = None,
        keep_deleted: bool = True,
        secret: bytes | None = None,
        base_url: str | None = None,
        url_ttl: float = URL_TTL,
        session_ttl: float = SESSION_TTL,
        sign_in_ttl: float = SIGN_IN_TTL,
        clock: Clock = time.time,
    ) -> None:
        self.vfs = vfs
        self.index = index
        self.content = content
        self.errors = errors
        self.on_demand = on_demand
        self.keep_deleted = keep_deleted
        self.signer = UrlSigner(secret, url_ttl, clock=clock)
        self.sessions = Sessions(session_ttl, clock=clock)
        self.sign_ins = SignIns(sign_in_ttl, clock=clock)
        self.public_url = base_url.rstrip("/") if base_url else None
        self.url: str | None = None  # where it is served, once `serve_web` has bound
        self.cookie_name = SESSION_COOKIE
        self.stream_stats = StreamStats()
        self.responses: dict[int, int] = {}  # status -> count
        self._error_page = ErrorPage(self._message)
        routes = [
            Route("/", self._page(self._tree), methods=["GET"]),
            Route("/day/{y:int}/{m:int}/{d:int}", self._page(self._day), methods=["GET"]),
            Route("/search", self._page(self._search), methods=["GET"]),
            Route("/signin", self._sign_in, methods=["GET"]),
            Route("/audio/{ino:int}/{name:str}", functools.partial(self._media, "audio"),
                  methods=["GET"]),
            Route("/download/{ino:int}/{name:str}", functools.partial(self._media, "download"),
                  methods=["GET"]),
            Route("/static/rcfs.css", self._css, methods=["GET"]),
            Route("/favicon.ico", self._no_icon, methods=["GET"]),
        ]
        handlers: dict[Any, Any] = {HTTPException: self._http_error}
        self.asgi: ASGIApp = _Guard(Starlette(routes=routes, exception_handlers=handlers), self)

    # -- what the daemon calls ---------------------------------------------------

    def bound(self, url: str, port: int) -> None:
        """`serve_web` is listening at `url`: sign-in links and status use it; the
        cookie's name carries the port (browsers share cookies across ports)."""
        self.url = url.rstrip("/") + "/"
        self.cookie_name = f"{SESSION_COOKIE}_{port}"

    def sign_in_url(self) -> str:
        """A new one-time sign-in link (for `rcfs web MOUNTPOINT`)."""
        base = self.public_url or (self.url or "").rstrip("/")
        if not base:
            raise RcfsError("the web player is not serving yet")
        return f"{base}/signin?token={self.sign_ins.mint()}"

    async def command(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The control socket's `{"cmd": "web"}`: a sign-in link and how long it lasts."""
        return {"url": self.sign_in_url(), "expires_in": int(self.sign_ins.ttl)}

    def revoke_sessions(self) -> int:
        """Sign every browser out; returns how many sessions there were."""
        return self.sessions.revoke_all()

    def snapshot(self) -> dict[str, Any]:
        """status.json's `web`."""
        return {
            "url": self.url,
            "sessions": len(self.sessions),
            "sign_ins_pending": self.sign_ins.pending(),
            "streams_active": self.stream_stats.active,
            "bytes_sent": self.stream_stats.bytes,
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
        }

    # -- sessions ----------------------------------------------------------------

    def signed_in(self, request: Request) -> bool:
        return self.sessions.valid(request.cookies.get(self.cookie_name))

    def _page(self, handler: Callable[[Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not self.signed_in(request):
                return self._message(401, "Sign in to the rcfs web player", pages.SIGN_IN_HINT,
                                     raw=True)
            try:
                return await handler(request)
            except NotFound:
                return self._message(404, "Not found", "There is no such page or recording.")
            except RcfsError as exc:
                self._record(f"web: {request.url.path}: {exc}", exc)
                return self._message(503, "Not available just now",
                                     f"rcfs could not answer: {esc(exc)}", raw=True)

        return endpoint

    async def _sign_in(self, request: Request) -> Response:
        if not self.sign_ins.redeem(request.query_params.get("token")):
            return self._message(
                403, "This sign-in link does not work",
                "It was used already, has expired, or is incomplete. "
                + pages.SIGN_IN_HINT
                + ' If you are signed in already, <a href="/">open the player</a>.', raw=True)
        response = RedirectResponse("/", status_code=303)  # always "/": nothing to redirect to
        secure = request.url.scheme == "https" or (self.public_url or "").startswith("https:")
        response.set_cookie(self.cookie_name, self.sessions.create(),
                            max_age=int(self.sessions.ttl), path="/", httponly=True,
                            samesite="lax", secure=secure)
        log.info("web: a browser signed in from %s",
                 request.client.host if request.client else "?")
        return response

    # -- pages -------------------------------------------------------------------

    async def _tree(self, request: Request) -> Response:
        years: list[YearView] = []
        for yname, _ in reversed(self.vfs.readdir(ROOT_INO)):
            y = int(yname)
            months: list[MonthView] = []
            for mname, _ in reversed(self.vfs.readdir(dir_ino(y))):
                m = int(mname)
                days = []
                for dname, _ in reversed(self.vfs.readdir(dir_ino(y, m))):
                    d = int(dname)
                    span = self.vfs.day_range(dir_ino(y, m, d))
                    assert span is not None
                    n = count_between(self.index, *span, keep_deleted=self.keep_deleted)
                    days.append(DayView(f"/day/{y:04d}/{m:02d}/{d:02d}", d,
                                        date(y, m, d).weekday(), n))
                months.append(MonthView(y, m, days))
            years.append(YearView(y, months))
        note = ""
        if self.on_demand is not None and not self.on_demand.complete():
            note = ("The call log is still being indexed: more days appear as they are "
                    "indexed, and a day you open is indexed first.")
        return self._html(pages.tree_page(years, note))

    async def _day(self, request: Request) -> Response:
        p = request.path_params
        try:
            day = date(p["y"], p["m"], p["d"])
        except ValueError:
            raise NotFound("no such date") from None
        ino = dir_ino(day.year, day.month, day.day)
        note = ""
        if self.on_demand is not None and not self.on_demand.complete():
            span = self.vfs.day_range(ino)
            if span is not None:
                try:
                    await self.on_demand.ensure(*span)
                except RcfsError as exc:
                    note = f"This day could not be indexed just now ({exc}); showing what is known."
        rows = []
        day_path = f"{day.year:04d}/{day.month:02d}/{day.day:02d}"
        for name, node in self.vfs.readdir(ino, calls=False):  # NotFound: no recordings that day
            rows.append(self._view(self.vfs.recording(node.ino), (day_path, name)))
        span = self.vfs.day_range(ino)
        assert span is not None
        prev_ms = self.index.prev_start(span[0], include_deleted=self.keep_deleted)
        next_ms = self.index.next_start(span[1], include_deleted=self.keep_deleted)
        prev_href = None if prev_ms is None else _day_href(self.vfs.day_name(prev_ms))
        next_href = None if next_ms is None else _day_href(self.vfs.day_name(next_ms))
        return await self._render(lambda: pages.day_page(
            day.year, day.month, day.day, day.weekday(), self._signed(rows),
            prev_href=prev_href, next_href=next_href, note=note))

    async def _search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query:
            return self._html(pages.search_page("", None, truncated=False))
        result = await trio.to_thread.run_sync(
            functools.partial(search, self.index, query, keep_deleted=self.keep_deleted),
            abandon_on_cancel=True)
        rows = []
        for ir in result.recordings:
            try:  # through the tree: its learned sizes, and what it still lists
                rows.append(self._view(self.vfs.recording(self.vfs.recording_ino(ir))))
            except NotFound:
                continue
        return await self._render(lambda: pages.search_page(
            result.query, self._signed(rows), truncated=result.truncated))

    async def _render(self, make: Callable[[], str]) -> Response:
        """Sign the URLs and write the page in a worker thread: ~50 ms for a day of
        2,000 recordings that would otherwise hold up every FUSE request. (`make`
        must not touch the Vfs: whatever it needs was read on the trio thread.)"""
        return self._html(await trio.to_thread.run_sync(make))

    def _signed(self, rows: list[RecordingView]) -> list[RecordingView]:
        """The rows with their audio and download URLs (pure: safe in a worker thread)."""
        out = []
        for r in rows:
            quoted = quote(r.file_name, safe="")
            out.append(replace(
                r,
                audio_url=f"/audio/{r.ino}/{quoted}?s={self.signer.sign('audio', r.ino)}",
                download_url=f"/download/{r.ino}/{quoted}?s={self.signer.sign('download', r.ino)}"))
        return out

    def _view(self, ir: IndexedRecording, where: tuple[str, str] | None = None) -> RecordingView:
        """The row of a recording; `where` = (day path, file name) if known (a listing)."""
        ino = self.vfs.recording_ino(ir)
        if where is None:
            # YYYY/MM/DD/HHMMSS_...: the mount's local date and time, and its file name.
            day_path, name = self.vfs.path_of(ir).rsplit("/", 1)
        else:
            day_path, name = where
        rec = ir.recording
        rid = ir.recording_id
        deleted = self.vfs.xattrs(ino).get("user.rc.deleted") == b"1"
        return RecordingView(
            ino=ino,
            anchor=f"r{ino}",
            day_href="/day/" + day_path,
            date=day_path.replace("/", "-"),
            time=f"{name[0:2]}:{name[2:4]}:{name[4:6]}",
            inbound=rec.is_inbound,
            from_party=_party(rec.from_party),
            to_party=_party(rec.to_party),
            duration_s=rec.duration,
            size=ir.size,
            size_exact=ir.size_exact,
            cached=self.content.is_cached(rid),
            downloading=self.content.in_flight(rid),
            deleted=deleted,
            file_name=name,
            audio_url="",  # `_signed` adds the URLs
            download_url="",
            content_type=audio_type(ir),
        )

    # -- media ---------------------------------------------------------------------

    async def _media(self, purpose: str, request: Request) -> Response:
        ino = request.path_params["ino"]
        if not self.signer.check(purpose, ino, request.query_params.get("s")):
            return self._message(403, "This link has expired",
                                 "Links to recordings are valid for an hour: reload the page "
                                 "you came from to get new ones.")
        try:
            ir = self.vfs.recording(ino)
        except NotFound:
            return self._message(404, "Not found", "There is no such recording.")
        name = self.vfs.path_of(ir).rsplit("/", 1)[1]
        return RecordingResponse(
            content=self.content, recording=ir, name=name,
            disposition="attachment" if purpose == "download" else "inline",
            request_headers=request.headers, page=self._error_page, errors=self.errors,
            stats=self.stream_stats)

    # -- small things ----------------------------------------------------------------

    async def _css(self, request: Request) -> Response:
        return Response(pages.CSS, media_type="text/css",
                        headers={"cache-control": "public, max-age=3600"})

    async def _no_icon(self, request: Request) -> Response:
        return Response(status_code=204)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405:
            return self._message(405, "Not allowed", "This player only reads.")
        return self._message(status, "Not found", "There is no such page.")

    def _message(self, status: int, title: str, text: str, *, raw: bool = False) -> HTMLResponse:
        body = text if raw else esc(text)
        return HTMLResponse(pages.message_page(title, body), status_code=status)

    def _html(self, text: str) -> HTMLResponse:
        return HTMLResponse(text)

    def _record(self, message: str, exc: BaseException) -> None:
        if getattr(exc, "_rcfs_recorded", False):
            log.debug("%s", message)
        elif self.errors is not None:
            self.errors.record(message)
        else:
            log.warning("%s", message)


def _party(p: Any) -> PartyView:
    return PartyView(p.phone_number or "", p.extension_number or "", p.name or "")


def _day_href(iso_day: str) -> str:
    d = date.fromisoformat(iso_day)
    return f"/day/{d.year:04d}/{d.month:02d}/{d.day:02d}"


class _Guard:
    """ASGI middleware: security headers on every response, the access log, counts."""

    def __init__(self, app: ASGIApp, web: WebApp) -> None:
        self._app = app
        self._web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0

        async def guarded_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, receive, guarded_send)
        finally:
            self._web.responses[status] = self._web.responses.get(status, 0) + 1
            client = scope.get("client")
            # The path only: the query string carries sign-in tokens and signatures.
            access_log.info("%s %s %s %d %d %.1fms", client[0] if client else "-",
                            scope["method"], _printable(scope.get("path", "")), status, sent,
                            1000 * (time.perf_counter() - started))


def _printable(path: str) -> str:
    return "".join(c if c.isprintable() and c != " " else "%%%02X" % (ord(c) & 0xFF) for c in path)
