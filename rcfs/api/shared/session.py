"""One RingCentral session for every process on one account: the token in Redis.

Owns the shared session record, the refresh lock, and the leases that keep
a superseded token from being sent. `SharedAuthenticator` is the
`Authenticator` of a client opened with `--redis`.

The record (`<ns>:session`, a hash): `gen` (a random id of this token pair),
`blob` (access and refresh token, sealed by `crypto.TokenCipher`), `exp` /
`rexp` (expiry of each, in Redis's clock), `holder` (the peer that logged in
or refreshed last), `how` (login, refresh), `logins` / `refreshes` (counts
over all processes), `draining` (the gen being replaced). Times in Redis are
Redis's (`TIME`), turned into each process's trio clock when read, so the
machines' clocks never matter.

Renewal (`_renew_locked`), by exactly one process: it takes the lock
(`SET NX PX`, an owner value, released by compare-and-delete), **re-reads the
record** (another process may have renewed while it waited: then it adopts
that token and stops), announces the drain, waits until no request is in
flight with the old token, refreshes with the refresh token *from the
record*, and publishes the new pair. Processes that find the lock held poll
the record and adopt the new token when it appears: they never log in or
refresh themselves. Only when nothing usable is in Redis (the first start,
a refused refresh) does the lock holder log in with the JWT: one login for
all.

Why leases. A refresh invalidates the previous access token at once, so a
request sent with it a millisecond later gets a 401. Each request therefore
holds a lease on its token's generation from just before it is sent until
its response headers arrive (`use`); a lease cannot be taken while the
generation drains, and the refresher waits for the live leases to end
(bounded by `DRAIN_MAX` and by the token's own expiry). A process whose
lease is refused because its generation was superseded re-reads the record
and uses the new token: it never refreshes a token it did not find current
in Redis. A 401 is answered the same way: re-read first, renew only if Redis
still holds the token that was refused.

Redis lost. The process goes on with the token it has while it is usable;
if it must renew meanwhile, it does so alone as without Redis (the local,
file-locked token store), and offers the result to Redis when it answers
again.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio

from rcfs.api.auth import FAILURE_MEMORY, JWT_GRANT, Authenticator, Grant, Token, TokenStore
from rcfs.api.shared.crypto import TokenCipher, Undecryptable
from rcfs.api.shared.link import RedisDown, RedisLink
from rcfs.config import Credentials
from rcfs.errors import AuthError, TemporaryFailure

log = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000  # the refresh lock outlives a stuck holder by this much at most
LOCK_WAIT = 45.0  # seconds a process waits for another's renewal before giving up
LOCK_POLL = 0.02
LEASE_TTL = 30.0  # seconds a request's lease lasts if its process dies mid-request
USE_WAIT = 10.0  # seconds a request waits for a drain to end before going without a lease
DRAIN_POLL = 0.005
DRAIN_MAX = 5.0  # seconds the refresher waits for requests in flight with the old token


@dataclass(frozen=True)
class SharedRecord:
    gen: str
    token: Token = field(repr=False)
    holder: str
    draining: bool


class SessionStore:
    """The session record's Redis operations (scripts); tokens in and out sealed."""

    def __init__(self, link: RedisLink, cipher: TokenCipher) -> None:
        self._link = link
        self._cipher = cipher
        self.session_key = link.key("session")
        self.use_key = link.key("session", "use")
        self.lock_key = link.key("session", "lock")
        self.undecryptable = 0
        self.register(link)

    @staticmethod
    def register(link: RedisLink) -> None:
        for name, source in (("s_read", READ_LUA), ("s_publish", PUBLISH_LUA),
                             ("s_begin", BEGIN_USE_LUA), ("s_drain", DRAIN_LUA),
                             ("s_undrain", UNDRAIN_LUA), ("s_lock", LOCK_LUA),
                             ("s_unlock", UNLOCK_LUA), ("s_clear", CLEAR_LUA)):
            link.script(name, source)

    def __repr__(self) -> str:
        return f"<SessionStore {self.session_key}>"

    def _aad(self, gen: str) -> bytes:
        return f"{self.session_key}:{gen}".encode()

    async def read(self) -> SharedRecord | None:
        r = await self._link.run_script("s_read", [self.session_key], [])
        now_redis = float(r[0]) + float(r[1]) / 1e6
        gen, blob, exp, rexp, lifetime, draining, holder = (str(x or "") for x in r[2:9])
        if not gen or not blob:
            return None
        try:
            plain = json.loads(self._cipher.open(blob, self._aad(gen)))
            access, refresh = plain["access_token"], plain.get("refresh_token") or None
            if not isinstance(access, str) or not access:
                raise ValueError("no access token")
        except (Undecryptable, ValueError, KeyError, TypeError) as exc:
            self.undecryptable += 1
            if self.undecryptable == 1 or self.undecryptable % 100 == 0:
                log.warning("the session token in Redis cannot be used (%s): ignoring it",
                            exc if isinstance(exc, Undecryptable) else "malformed")
            return None
        now = trio.current_time()
        try:
            token = Token(
                access_token=access,
                expires_at=now + (float(exp) - now_redis),
                lifetime=float(lifetime or 3600.0),
                refresh_token=refresh,
                refresh_expires_at=now + (float(rexp) - now_redis) if rexp else None,
            )
        except ValueError:
            return None
        return SharedRecord(gen=gen, token=token, holder=holder, draining=draining == gen)

    async def publish(self, token: Token, *, expect: str, how: str) -> str | None:
        """Store `token` as a new generation if the record is still at `expect` ('' for
        absent, '*' for any); the new gen, or None if another process got there first."""
        gen = secrets.token_hex(8)
        blob = self._cipher.seal(json.dumps({"access_token": token.access_token,
                                             "refresh_token": token.refresh_token}).encode(),
                                 self._aad(gen))
        now = trio.current_time()
        rttl = (token.refresh_expires_at - now) if token.refresh_expires_at is not None else 0.0
        r = await self._link.run_script(
            "s_publish", [self.session_key, self.use_key],
            [expect, gen, blob, f"{token.remaining(now):.3f}", f"{max(0.0, rttl):.3f}",
             f"{token.lifetime:.3f}", self._link.peer, how])
        return gen if int(r[0]) == 1 else None

    async def begin_use(self, gen: str, lease: str) -> str:
        r = await self._link.run_script("s_begin", [self.session_key, self.use_key],
                                        [gen, lease, LEASE_TTL])
        return str(r)

    async def end_use(self, lease: str) -> None:
        await self._link.call(lambda c: c.zrem(self.use_key, [lease]))

    async def drain(self, gen: str) -> int:
        """Mark `gen` draining; the number of leases still live (-1: `gen` is not current)."""
        return int(await self._link.run_script("s_drain", [self.session_key, self.use_key], [gen]))

    async def undrain(self, gen: str) -> None:
        await self._link.run_script("s_undrain", [self.session_key], [gen])

    async def try_lock(self, owner: str) -> bool:
        return int(await self._link.run_script("s_lock", [self.lock_key], [owner, LOCK_TTL_MS])) == 1

    async def unlock(self, owner: str) -> None:
        await self._link.run_script("s_unlock", [self.lock_key], [owner])

    async def clear(self, gen: str) -> None:
        await self._link.run_script("s_clear", [self.session_key, self.use_key], [gen])


class SharedAuthenticator(Authenticator):
    """Tokens from the shared session in Redis; the local store only while Redis is lost."""

    def __init__(self, creds: Credentials, store: TokenStore, grant: Grant, link: RedisLink,
                 cipher: TokenCipher) -> None:
        super().__init__(creds, store, grant)
        self._link = link
        self._session = SessionStore(link, cipher)
        self._gen: str | None = None  # the generation of self._token in Redis, if it is there
        self._leases = itertools.count(1)
        self._unpublished = False  # renewed alone while Redis was lost
        self._replaced_gen: str | None = None  # the generation that renewal superseded
        self._offering = False
        self.adopted = 0  # tokens taken from Redis (another process's login or refresh)
        self.superseded = 0  # times our token had been replaced when we went to use it
        self.refused_401 = 0
        self.drain_waits = 0
        self.local_renewals = 0
        link.on_change(self._link_changed)

    def __repr__(self) -> str:
        state = "token" if self._token else "no token"
        return f"<SharedAuthenticator {self._creds.server_url} {state} gen={self._gen}>"

    def snapshot(self) -> dict[str, Any]:
        return {"generation_known": self._gen is not None, "adopted": self.adopted,
                "superseded": self.superseded, "refused_401": self.refused_401,
                "local_renewals": self.local_renewals, "logins": self.logins,
                "refreshes": self.refreshes, "undecryptable": self._session.undecryptable}

    # -- adopting ---------------------------------------------------------------------

    def _adopt_record(self, rec: SharedRecord) -> str:
        if self._token is None or self._token.access_token != rec.token.access_token:
            self.adopted += 1
            log.debug("using the shared session's token (generation by %s)", rec.holder)
        self._token, self._gen, self._failure = rec.token, rec.gen, None
        return rec.token.access_token

    def _link_changed(self, connected: bool) -> None:
        if not connected:
            return
        # Back: offer a token renewed alone meanwhile (if Redis has none or ours superseded it).
        tok, gen = self._token, self._replaced_gen
        if self._unpublished and tok is not None and not self._offering:
            self._offering = True

            async def offer() -> None:
                try:
                    new = await self._session.publish(tok, expect=gen or "", how="rejoin")
                finally:
                    self._offering = False
                if new is not None and self._token is tok:
                    self._gen, self._unpublished = new, False
            self._link.submit(offer)

    # -- the Authenticator interface -----------------------------------------------------

    async def token(self) -> str:
        if (held := self._not_due()) is not None:
            return held
        async with self._lock:
            if (held := self._not_due()) is not None:
                return held  # another process's token, adopted meanwhile
            tok = self._token
            stale = tok.access_token if tok is not None else None
            try:
                rec = await self._session.read()
                now = trio.current_time()
                if (rec is not None and rec.token.access_token != stale
                        and not rec.token.refresh_due(now)):
                    return self._adopt_record(rec)
                return await self._renew_locked(stale)
            except RedisDown:
                return await self._renew_alone(stale)

    async def after_401(self, used: str) -> str:
        async with self._lock:
            self.refused_401 += 1
            tok = self._token
            now = trio.current_time()
            if tok is not None and tok.access_token != used and tok.usable(now):
                return tok.access_token
            try:
                rec = await self._session.read()
                if rec is not None and rec.token.access_token != used and rec.token.usable(now):
                    log.info("access token refused (401): another process had renewed it; "
                             "using the new one")
                    self.superseded += 1
                    return self._adopt_record(rec)
                log.info("access token refused (401); renewing the shared session")
                return await self._renew_locked(used)
            except RedisDown:
                return await self._renew_alone(used, force=True)

    async def _renew_alone(self, stale: str | None, *, force: bool = False) -> str:
        """Redis is lost: keep a usable token; renew alone only when we must."""
        tok = self._token
        if not force and tok is not None and tok.usable(trio.current_time()):
            return tok.access_token
        self.local_renewals += 1
        if self._gen is not None:
            self._replaced_gen = self._gen
        token = await self._renew(stale)  # the local (file-locked) path of Authenticator
        self._gen, self._unpublished = None, True
        return token

    async def _renew_locked(self, stale: str | None) -> str:
        """Renew the shared session under the Redis lock, or adopt another process's renewal."""
        owner = f"{self._link.peer}:{secrets.token_hex(4)}"
        deadline = trio.current_time() + LOCK_WAIT
        while not await self._session.try_lock(owner):
            await trio.sleep(LOCK_POLL)
            rec = await self._session.read()
            now = trio.current_time()
            if (rec is not None and rec.token.access_token != stale and rec.token.usable(now)
                    and not rec.token.refresh_due(now)):
                return self._adopt_record(rec)
            if now > deadline:
                raise TemporaryFailure("the shared session in Redis is being renewed by another "
                                       f"process for more than {LOCK_WAIT:.0f} s")
        drained: str | None = None
        try:
            rec = await self._session.read()  # re-read under the lock
            now = trio.current_time()
            if (rec is not None and rec.token.access_token != stale and rec.token.usable(now)
                    and not rec.token.refresh_due(now)):
                return self._adopt_record(rec)
            if self._failure is not None and now - self._failed_at < FAILURE_MEMORY:
                raise AuthError(str(self._failure))
            refresh_cause = ""
            if rec is not None and rec.token.refresh_usable(now):
                assert rec.token.refresh_token is not None
                drained = rec.gen
                await self._drain(rec)
                try:
                    new = await self._grant({"grant_type": "refresh_token",
                                             "refresh_token": rec.token.refresh_token})
                except AuthError as exc:
                    refresh_cause = self.redact(str(exc))
                    log.info("shared token refresh refused (%s); logging in with the JWT",
                             refresh_cause)
                else:
                    self.refreshes += 1
                    drained = None
                    return await self._publish(new, "refresh", expect=rec.gen)
            try:
                new = await self._grant({"grant_type": JWT_GRANT, "assertion": self._creds.jwt})
            except AuthError as exc:
                err = self._login_refused(exc, refresh_cause)
                self._token, self._gen = None, None
                raise err from None
            self.logins += 1
            log.info("logged in to %s with the JWT (the session is shared through Redis)",
                     self._creds.server_url)
            drained = None
            return await self._publish(new, "login", expect=rec.gen if rec is not None else "")
        finally:
            with trio.CancelScope(shield=True):
                try:
                    if drained is not None:
                        await self._session.undrain(drained)
                    await self._session.unlock(owner)
                except RedisDown:
                    pass

    async def _drain(self, rec: SharedRecord) -> None:
        """Wait until no request is in flight with `rec`'s access token (new ones wait)."""
        live = await self._session.drain(rec.gen)
        if live > 0:
            self.drain_waits += 1
        deadline = min(trio.current_time() + DRAIN_MAX, rec.token.expires_at)
        while live > 0 and trio.current_time() < deadline:
            await trio.sleep(DRAIN_POLL)
            live = await self._session.drain(rec.gen)
        if live > 0:
            log.info("refreshing with %d request(s) still in flight on the old token", live)

    async def _publish(self, data: dict[str, Any], how: str, *, expect: str) -> str:
        tok = Token.from_response(data, trio.current_time())
        self._token, self._failure = tok, None
        try:
            gen = await self._session.publish(tok, expect=expect, how=how)
        except RedisDown:
            gen = None
            self._unpublished = True
        self._gen = gen
        if gen is None and not self._unpublished:
            log.info("another process stored a session meanwhile; keeping ours for now")
        return tok.access_token

    @asynccontextmanager
    async def use(self, token: str) -> AsyncIterator[str]:
        """Hold a lease on the token's generation while a request with it is sent."""
        if self._gen is None or not self._link.connected:
            if self._link.connected and self._token is not None and self._unpublished:
                self._link_changed(True)
            yield token
            return
        lease = f"{self._link.peer}:{next(self._leases)}"
        leased = False
        deadline = trio.current_time() + USE_WAIT
        tries = 0
        try:
            while self._gen is not None and tries < 20:
                tries += 1
                verdict = await self._session.begin_use(self._gen, lease)
                if verdict == "ok":
                    leased = True
                    break
                if verdict == "draining":
                    if trio.current_time() > deadline:
                        log.info("the shared token is still being renewed after %.0f s; "
                                 "sending without waiting", USE_WAIT)
                        break
                    await trio.sleep(DRAIN_POLL)
                    continue
                rec = await self._session.read()  # stale or none: re-read, never refresh here
                now = trio.current_time()
                if rec is not None and rec.gen != self._gen and rec.token.usable(now):
                    self.superseded += 1
                    self._adopt_record(rec)
                    continue
                if rec is None and self._token is not None and self._token.usable(now):
                    # Redis lost its data (a restart): offer ours, which every peer shares.
                    gen = await self._session.publish(self._token, expect="", how="rejoin")
                    if gen is not None:
                        self._gen = gen
                        continue
                    rec = await self._session.read()
                    if rec is not None and rec.token.usable(now):
                        self._adopt_record(rec)
                        continue
                break
        except RedisDown:
            pass
        current = self._token.access_token if self._token is not None else token
        try:
            yield current
        finally:
            if leased:
                with trio.CancelScope(shield=True), suppress(RedisDown):
                    await self._session.end_use(lease)

    async def forget(self) -> Token | None:
        async with self._lock:
            tok, gen = self._token, self._gen
            self._token, self._gen = None, None
            await self._store.clear()
            if gen is not None:
                with suppress(RedisDown):
                    await self._session.clear(gen)
            return tok


READ_LUA = """
local t = redis.call('TIME')
local v = redis.call('HMGET', KEYS[1], 'gen', 'blob', 'exp', 'rexp', 'lifetime', 'draining', 'holder')
for i = 1, 7 do if not v[i] then v[i] = '' end end
return {t[1], t[2], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
"""

PUBLISH_LUA = """
local cur = redis.call('HGET', KEYS[1], 'gen') or ''
if ARGV[1] ~= '*' and cur ~= ARGV[1] then return {0, cur} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[4])
local rttl = tonumber(ARGV[5])
local rexp = ''
if rttl > 0 then rexp = string.format('%.6f', now + rttl) end
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'blob', ARGV[3], 'exp', string.format('%.6f', now + ttl),
           'rexp', rexp, 'lifetime', ARGV[6], 'holder', ARGV[7], 'how', ARGV[8],
           'at', string.format('%.6f', now), 'draining', '')
if ARGV[8] == 'login' then redis.call('HINCRBY', KEYS[1], 'logins', 1) end
if ARGV[8] == 'refresh' then redis.call('HINCRBY', KEYS[1], 'refreshes', 1) end
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(ttl, rttl) + 60))
return {1, ARGV[2]}
"""

BEGIN_USE_LUA = """
local v = redis.call('HMGET', KEYS[1], 'gen', 'draining')
local cur = v[1] or ''
if cur == '' then return 'none' end
if cur ~= ARGV[1] then return 'stale' end
if v[2] == ARGV[1] then return 'draining' end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[3]) * 2))
return 'ok'
"""

DRAIN_LUA = """
if (redis.call('HGET', KEYS[1], 'gen') or '') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'draining', ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return redis.call('ZCARD', KEYS[2])
"""

UNDRAIN_LUA = """
if redis.call('HGET', KEYS[1], 'draining') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'draining', '')
end
return 1
"""

LOCK_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

CLEAR_LUA = """
if redis.call('HGET', KEYS[1], 'gen') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'gen', 'blob', 'exp', 'rexp', 'draining')
  redis.call('DEL', KEYS[2])
end
return 1
"""
