"""Opening the shared backend (`--redis URL`) and its `status.json` block.

Owns the lifetime of the coredis client and of the link's tasks, the two
factories the API client uses (`group_factory` for its limiter,
`authenticator` for its tokens), and the `redis` block of `status.json`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import trio

from rcfs.api.auth import Grant, TokenStore, fingerprint
from rcfs.api.groups import Budget
from rcfs.api.shared.budget import FALLBACK_SHARE, SharedGroupLimiter
from rcfs.api.shared.crypto import TokenCipher
from rcfs.api.shared.link import CALL_TIMEOUT, RedisDown, RedisLink, _coredis_url, check_url
from rcfs.api.shared.session import SessionStore, SharedAuthenticator
from rcfs.config import Credentials, is_loopback_url
from rcfs.errors import ConfigError

log = logging.getLogger(__name__)


def namespace(creds: Credentials) -> str:
    """Keys of one credential set (`{...}`: one Redis Cluster slot for all of them)."""
    return f"rcfs:{{{fingerprint(creds)}}}"


class SharedBackend:
    """What a RingCentralClient needs to share its session and budget with its peers."""

    def __init__(self, link: RedisLink, creds: Credentials) -> None:
        self.link = link
        self._cipher = TokenCipher(creds.client_secret, link.namespace)
        self._groups: list[SharedGroupLimiter] = []
        self.auth: SharedAuthenticator | None = None

    def __repr__(self) -> str:
        return f"<SharedBackend {self.link!r}>"

    def group_factory(self, name: str, budget: Budget) -> SharedGroupLimiter:
        group = SharedGroupLimiter(name, budget, self.link)
        self._groups.append(group)
        return group

    def authenticator(self, creds: Credentials, store: TokenStore, grant: Grant) -> SharedAuthenticator:
        self.auth = SharedAuthenticator(creds, store, grant, self.link, self._cipher)
        return self.auth

    def snapshot(self) -> dict[str, Any]:
        link = self.link

        def iso(ts: float) -> str:
            return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

        budget = {}
        for g in self._groups:
            view = dict(g.shared_view)
            seen = view.pop("seen", None)
            if view:
                view["as_of_s_ago"] = round(trio.current_time() - seen, 1) if seen else None
                budget[g.name] = view
        session = dict(link.session_info)
        if self.auth is not None:
            session["this_process"] = self.auth.snapshot()
        return {
            "url": link.display_url,
            "connected": link.connected,
            "since": iso(link.changed_at),
            "error": link.error,
            "lost": link.losses,
            "reconnects": link.reconnects,
            "peer": link.peer,
            "peers_seen": len(link.peers),
            "peers": link.peers,
            "session": session,
            "budget": budget,
            "fallback": {
                "active": not link.connected,
                "share": round(FALLBACK_SHARE, 3),
                "limits": {g.name: g.fallback_limit() for g in self._groups},
            },
            "updates_dropped": link.jobs_dropped,
            "uptime_s": round(time.time() - link.started),
        }


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@asynccontextmanager
async def open_shared(url: str, creds: Credentials, *, label: str = "") -> AsyncIterator[SharedBackend]:
    """Connect to Redis at `url` and share through it until the block ends.

    Raises ConfigError (one line, no password) when the URL is unusable or Redis
    does not answer at once."""
    try:
        check_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    import coredis  # only mounts that share pay for the import
    from coredis.retry import NoRetryPolicy

    link = RedisLink(url, namespace(creds), label=label)
    if urlsplit(url).scheme in ("redis", "valkey") and not is_loopback_url(url):
        log.info("Redis at %s is reached without TLS: the session tokens in it are encrypted, "
                 "but use rediss:// across an untrusted network", link.display_url)
    try:
        client = coredis.Redis.from_url(
            _coredis_url(url), decode_responses=True, stream_timeout=CALL_TIMEOUT,
            connect_timeout=CALL_TIMEOUT, retry_policy=NoRetryPolicy())
    except Exception as exc:
        raise ConfigError(f"unusable Redis URL {link.display_url}: {exc}") from None
    backend = SharedBackend(link, creds)
    SessionStore.register(link)  # loaded at connect: no request meets NOSCRIPT
    SharedGroupLimiter.register(link)
    failure: str | None = None
    try:
        async with client:
            try:
                await link.connect(client)
            except RedisDown as exc:
                failure = str(exc)
            if failure is None:
                async with trio.open_nursery() as nursery:
                    await nursery.start(link.run)
                    try:
                        yield backend
                    finally:
                        nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the body's error, through coredis' and our task groups
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    if failure is not None:
        raise ConfigError(f"cannot reach Redis at {link.display_url} ({failure}); "
                          "check --redis / RCFS_REDIS_URL, or mount without it")
