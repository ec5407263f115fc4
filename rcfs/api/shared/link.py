"""The connection to Redis (or Valkey) that mounts of one account share.

Owns: the coredis client (natively on trio: coredis 6 is built on anyio, no
thread hops), the key namespace (`rcfs:{<credentials fingerprint>}:...`, so
only processes with the same credentials share), whether Redis answers
(`connected`), the reconnect loop, the heartbeat that lists the peers, and a
queue of fire-and-forget updates (rate-limit observations, released slots)
sent in order by one task. It knows nothing about RingCentral.

Every call is bounded (`CALL_TIMEOUT`) and any failure (refused, reset,
timeout, an error reply) marks the link down at once and raises `RedisDown`;
while down, calls fail immediately without touching the network, so no
request of the mount ever waits on a dead Redis. The supervisor pings with
growing pauses and, once Redis answers, marks the link up again and tells
the listeners (`on_change`), which switch back from their local fallbacks.

Never logs a token or the URL's password (`display_url` drops it).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT = 2.0  # seconds for one Redis round trip before the link counts as lost
CONNECT_TIMEOUT = 5.0  # seconds for the first contact at mount
HEARTBEAT_S = 2.0  # peers announce themselves this often
PEER_TTL_S = 10.0  # a peer not heard of for this long is gone
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)  # pauses between reconnect attempts, then the last
JOB_QUEUE = 10_000


class RedisDown(Exception):
    """Redis did not answer (or answered with an error): use the local fallback."""


def display_url(url: str) -> str:
    """The URL without its password (for status and log lines)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "redis://?"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query = "&".join(q for q in parts.query.split("&") if q and not q.lower().startswith("password"))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def check_url(url: str) -> None:
    """Raise ValueError (a one-line reason) for a URL coredis cannot use."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix", "valkey", "valkeys"):
        raise ValueError(f"the Redis URL must start with redis://, rediss:// or unix://, "
                         f"got {display_url(url)!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"the Redis URL {display_url(url)!r} names no host")
    try:
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"the Redis URL {display_url(url)!r} has an invalid port") from None


def _coredis_url(url: str) -> str:
    # Valkey's own schemes are Redis's protocol.
    if url.startswith("valkey://"):
        return "redis://" + url[len("valkey://"):]
    if url.startswith("valkeys://"):
        return "rediss://" + url[len("valkeys://"):]
    return url


def _cause(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, trio.TooSlowError):
        text = f"no answer within {CALL_TIMEOUT:g} s"
    return text.splitlines()[0][:200] if text else type(exc).__name__


class RedisLink:
    """One process's connection to the shared Redis, with its state for `status.json`."""

    def __init__(self, url: str, namespace: str, *, label: str = "") -> None:
        self.url = url
        self.display_url = display_url(url)
        self.namespace = namespace
        self.peer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.label = label
        self.connected = False
        self.error: str | None = None
        self.changed_at = time.time()
        self.losses = 0
        self.reconnects = 0
        self.started = time.time()
        self.peers: list[dict[str, Any]] = []
        self.session_info: dict[str, Any] = {}
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        self._wake = trio.Event()
        self._listeners: list[Callable[[bool], None]] = []
        self._heartbeat_hooks: list[Callable[[], Awaitable[None]]] = []
        self._jobs_in, self._jobs_out = trio.open_memory_channel[Callable[[], Awaitable[None]]](JOB_QUEUE)
        self.jobs_dropped = 0
        self.script("heartbeat", HEARTBEAT_LUA)

    def __repr__(self) -> str:
        return f"<RedisLink {self.display_url} {'up' if self.connected else 'down'}>"

    def key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    # -- listeners --------------------------------------------------------------

    def on_change(self, fn: Callable[[bool], None]) -> None:
        """`fn(connected)` after the link went down or came back."""
        self._listeners.append(fn)

    def on_heartbeat(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._heartbeat_hooks.append(fn)

    def _set(self, connected: bool, cause: str | None = None) -> None:
        if connected == self.connected:
            if cause is not None:
                self.error = cause
            return
        since = time.time() - self.changed_at
        self.connected, self.changed_at = connected, time.time()
        if connected:
            self.error = None
            self.reconnects += 1
            log.warning("Redis at %s answers again after %.1f s: sharing the session and the "
                        "rate budget again", self.display_url, since)
        else:
            self.error = cause
            self.losses += 1
            log.warning("lost Redis at %s (%s): each rate limit falls back to a local third, "
                        "the session goes on with the token at hand; reconnecting",
                        self.display_url, cause)
            self._wake.set()
        for fn in list(self._listeners):
            try:
                fn(connected)
            except Exception:  # a listener must not break the link
                log.exception("Redis link listener failed")

    # -- calls ----------------------------------------------------------------------

    def script(self, name: str, source: str) -> None:
        """Register a Lua script under `name` (loaded on first use, reloaded after a restart)."""
        if self._sources.get(name) == source:
            return
        self._sources[name] = source
        if self._client is not None:
            self._scripts[name] = self._client.register_script(source)

            async def load() -> None:
                await self.call(lambda c: c.script_load(source))

            self.submit(load)

    async def _load_scripts(self, client: Any) -> None:
        """Load every script now, so that no request meets NOSCRIPT (a new or restarted Redis)."""
        for source in list(self._sources.values()):
            await client.script_load(source)

    async def call(self, fn: Callable[[Any], Awaitable[T]], *, timeout: float = CALL_TIMEOUT) -> T:
        """`await fn(client)` within `timeout`; RedisDown (and the link marked down) on failure."""
        if not self.connected or self._client is None:
            raise RedisDown(self.error or "not connected")
        try:
            with trio.fail_after(timeout):
                return await fn(self._client)
        except trio.Cancelled:
            raise
        except Exception as exc:  # coredis' errors, TimeoutError, OSError, TooSlowError
            self._set(False, _cause(exc))
            raise RedisDown(_cause(exc)) from None

    async def run_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        return await self.call(lambda _c: script(keys=list(keys), args=[str(a) for a in args]))

    def submit(self, job: Callable[[], Awaitable[None]]) -> None:
        """Queue a best-effort update, sent in order by the link's own task (dropped while down)."""
        if not self.connected:
            return
        try:
            self._jobs_in.send_nowait(job)
        except trio.WouldBlock:
            self.jobs_dropped += 1

    # -- lifecycle ----------------------------------------------------------------------

    async def connect(self, client: Any) -> None:
        """First contact, at mount: raise RedisDown with the cause if Redis does not answer."""
        self._client = client
        for name, source in self._sources.items():
            self._scripts[name] = client.register_script(source)
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await client.ping()
                await self._load_scripts(client)
        except trio.Cancelled:
            raise
        except Exception as exc:
            self.error = _cause(exc)
            raise RedisDown(self.error) from None
        self.connected, self.changed_at, self.error = True, time.time(), None
        log.info("sharing the session and the rate budget through Redis at %s as peer %s",
                 self.display_url, self.peer)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The supervisor (heartbeat, reconnect) and the job sender."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_jobs)
            task_status.started()
            await self._supervise()

    async def _send_jobs(self) -> None:
        async for job in self._jobs_out:
            if not self.connected:
                continue
            try:
                await job()
            except RedisDown:
                pass
            except Exception:
                log.exception("a Redis update failed")

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            if self.connected:
                attempt = 0
                try:
                    await self._heartbeat()
                except RedisDown:
                    continue
                except Exception:
                    log.exception("Redis heartbeat failed")
                self._wake = trio.Event()
                with trio.move_on_after(HEARTBEAT_S):
                    await self._wake.wait()
                continue
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            attempt += 1
            await trio.sleep(delay)
            try:
                with trio.fail_after(CALL_TIMEOUT):
                    await self._client.ping()
                    await self._load_scripts(self._client)
            except trio.Cancelled:
                raise
            except Exception as exc:
                self._set(False, _cause(exc))
                log.debug("Redis at %s still unreachable (attempt %d): %s",
                          self.display_url, attempt, _cause(exc))
                continue
            self._set(True)

    async def _heartbeat(self) -> None:
        info = f"{self.label}"
        res = await self.run_script("heartbeat", [self.key("peers"), self.key("peerinfo"),
                                                  self.key("session"), self.key("session", "lock")],
                                    [self.peer, info, PEER_TTL_S])
        now = float(res[0])
        ids, labels = res[1] or [], res[2] or []
        peers = []
        for i in range(0, len(ids), 2):
            peer, seen = ids[i], float(ids[i + 1])
            host, _, rest = str(peer).partition(":")
            pid = rest.partition(":")[0]
            label = labels[i // 2] if i // 2 < len(labels) else None
            peers.append({"id": peer, "host": host, "pid": int(pid) if pid.isdigit() else None,
                          "label": label or None, "seen_s_ago": round(max(0.0, now - seen), 1),
                          "self": peer == self.peer})
        self.peers = peers
        sess = res[3] or []
        fields = ("holder", "how", "at", "exp", "logins", "refreshes", "gen")
        values = dict(zip(fields, [*sess, *[None] * len(fields)], strict=False))
        lock = res[4] or None
        self.session_info = _session_view(values, now, lock, self.peer)
        for hook in list(self._heartbeat_hooks):
            await hook()


def _session_view(v: dict[str, Any], now: float, lock: str | None, me: str) -> dict[str, Any]:
    def num(x: Any) -> float | None:
        try:
            return float(x)
        except (TypeError, ValueError):
            return None

    at, exp = num(v.get("at")), num(v.get("exp"))
    holder = v.get("holder") or None
    refreshing = lock.rsplit(":", 1)[0] if lock else None
    return {
        "present": bool(v.get("gen")),
        "holder": holder,
        "holder_is_me": holder == me,
        "obtained_by": v.get("how") or None,
        "obtained_s_ago": None if at is None else round(max(0.0, now - at), 1),
        "expires_in_s": None if exp is None else round(exp - now, 1),
        "logins": int(num(v.get("logins")) or 0),
        "refreshes": int(num(v.get("refreshes")) or 0),
        "refreshing": refreshing,
    }


HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
for _, p in ipairs(stale) do
  redis.call('ZREM', KEYS[1], p)
  redis.call('HDEL', KEYS[2], p)
end
redis.call('EXPIRE', KEYS[1], math.ceil(ttl * 6))
redis.call('EXPIRE', KEYS[2], math.ceil(ttl * 6))
local peers = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local labels = {}
for i = 1, #peers, 2 do
  labels[#labels + 1] = redis.call('HGET', KEYS[2], peers[i]) or ''
end
local s = redis.call('HMGET', KEYS[3], 'holder', 'how', 'at', 'exp', 'logins', 'refreshes', 'gen')
for i = 1, #s do if not s[i] then s[i] = '' end end
local lock = redis.call('GET', KEYS[4]) or ''
return {string.format('%.6f', now), peers, labels, s, lock}
"""
