"""The web player over a real stack: an in-process emulator on 127.0.0.1:0, the API
client, an Index filled from its call log, a Vfs, a ContentManager, and the
WebApp served by Hypercorn on 127.0.0.1:0, all in one trio nursery that is
cancelled (and the index closed) when the block ends.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rcfs.api import RingCentralClient
from rcfs.config import Credentials
from rcfs.content import ContentManager
from rcfs.emulator import EmulatorConfig
from rcfs.emulator.testing import open_emulator
from rcfs.index import Index, IndexedRecording
from rcfs.indexer import read_span
from rcfs.models import epoch_ms
from rcfs.status import ErrorLog
from rcfs.vfs import Vfs
from rcfs.web import WebApp, serve_web

FAST = "heavy=100000/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"
TZ = ZoneInfo("UTC")


def creds_of(info: dict[str, str]) -> Credentials:
    return Credentials(server_url=info["server_url"], client_id=info["client_id"],
                       client_secret=info["client_secret"], jwt=info["jwt"],
                       media_url=info["media_url"])


class FakeClock:
    """Wall time that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


@dataclass
class Stack:
    emulator_info: dict[str, str]
    admin: httpx.AsyncClient  # the emulator's platform port (/__emulator/...)
    client: RingCentralClient
    index: Index
    vfs: Vfs
    content: ContentManager
    errors: ErrorLog
    web: WebApp
    url: str  # the player's base URL, ending in /
    http: httpx.AsyncClient  # to the player, no cookie
    clock: FakeClock
    nursery: trio.Nursery
    # Every request the player answered: (method, path, Range header, status).
    requests: list[tuple[str, str, str | None, int]] = field(default_factory=list)

    def recordings(self) -> list[IndexedRecording]:
        """Every indexed recording, oldest first, as the tree shows it."""
        out = []
        for ir in self.index.recordings_between(0, 2**62):
            out.append(self.vfs.recording(self.vfs.recording_ino(ir)))
        return out

    async def emulator_content(self, recording_id: str) -> bytes:
        r = await self.admin.get(f"/__emulator/recordings/{recording_id}/content")
        r.raise_for_status()
        return r.content

    async def issued_tokens(self) -> list[str]:
        r = await self.admin.get("/__emulator/tokens")
        r.raise_for_status()
        return [str(t) for t in r.json()["tokens"]]

    def name_of(self, ir: IndexedRecording) -> str:
        return self.vfs.path_of(ir).rsplit("/", 1)[1]

    def audio_url(self, ir: IndexedRecording, purpose: str = "audio") -> str:
        view = self.web._signed([self.web._view(ir)])[0]
        return view.audio_url if purpose == "audio" else view.download_url

    async def signed_in(self) -> httpx.AsyncClient:
        """A new client with a session cookie (signed in through a sign-in link)."""
        http = httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=30)
        r = await http.get(self.web.sign_in_url())
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/"
        return http

    def day_href(self, ir: IndexedRecording) -> str:
        return "/day/" + self.vfs.path_of(ir).rsplit("/", 1)[0]


def links(page: str) -> list[str]:
    """Every href and src in a page, unescaped."""
    import html

    return [html.unescape(m) for m in re.findall(r'(?:href|src)="([^"]*)"', page)]


class _Recorder:
    """ASGI middleware: notes each request's method, path, Range and status."""

    def __init__(self, app: ASGIApp, into: list[tuple[str, str, str | None, int]]) -> None:
        self._app = app
        self._into = into

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rng = headers.get(b"range")

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._into.append((scope["method"], scope["path"],
                                   None if rng is None else rng.decode(), message["status"]))
            await send(message)

        await self._app(scope, receive, noting)


@asynccontextmanager
async def web_stack(
    tmp_path: Path,
    *,
    calls: int = 30,
    days: int = 3,
    seed: int = 5,
    audio_format: str = "mp3",
    faults: str = "",
    rate_limits: str = FAST,
    before_index: Callable[[httpx.AsyncClient], Awaitable[None]] | None = None,
    **web_kwargs: Any,
) -> AsyncIterator[Stack]:
    config = EmulatorConfig(calls=calls, days=days, seed=seed, rate_limits=rate_limits,
                            audio_format=audio_format, faults=faults)
    clock = FakeClock()
    async with open_emulator(config) as emulator:
        info = emulator.info
        async with (
            httpx.AsyncClient(base_url=info["server_url"], trust_env=False, timeout=30) as admin,
            RingCentralClient.open(creds_of(info), tmp_path / "token.json") as client,
        ):
            if before_index is not None:
                await before_index(admin)
            index = Index(tmp_path / "index.sqlite")
            try:
                now = datetime.now(UTC)
                await read_span(client, index, epoch_ms(now - timedelta(days=days + 2)),
                                epoch_ms(now + timedelta(hours=1)))
                if audio_format == "wav":  # what the mount learns from readCallRecording
                    index.set_account_format("audio/wav", now.isoformat(), name_from_rowid=0)
                async with trio.open_nursery() as nursery:
                    vfs = Vfs(index, TZ, uid=os.getuid(), gid=os.getgid(), umask=0o022,
                              status_provider=lambda: b"{}\n")
                    await nursery.start(vfs.run)
                    content = await ContentManager.create(
                        cache_dir=tmp_path / "cache", size_limit=1 << 30, client=client,
                        nursery=nursery, on_exact_size=vfs.set_exact_size)
                    errors = ErrorLog()
                    web = WebApp(vfs=vfs, index=index, content=content, errors=errors,
                                 clock=clock, **web_kwargs)
                    requests: list[tuple[str, str, str | None, int]] = []
                    web.asgi = _Recorder(web.asgi, requests)
                    url = await nursery.start(serve_web, web, "127.0.0.1", 0)
                    try:
                        async with httpx.AsyncClient(base_url=url, trust_env=False,
                                                     timeout=30) as http:
                            yield Stack(info, admin, client, index, vfs, content, errors, web,
                                        url, http, clock, nursery, requests)
                    finally:
                        with trio.CancelScope(shield=True):
                            await content.aclose()
                        nursery.cancel_scope.cancel()
            finally:
                index.close()
