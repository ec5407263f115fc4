"""The shared backend (`--redis`) against a real redis-server, in real time.

Each "process" is a RedisLink of its own (its own peer id and connection) in
one trio run. The budget tests read admission times from Redis's own clock
(`SharedSlot.at`), the clock the Lua script decides by.
"""

from __future__ import annotations

import base64
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rcfs.api import Priority, RetryPolicy, RingCentralClient
from rcfs.api.groups import Budget
from rcfs.api.ratelimit import RateLimiter
from rcfs.api.shared.backend import namespace, open_shared
from rcfs.api.shared.budget import SharedGroupLimiter, fallback_limit
from rcfs.api.shared.crypto import TokenCipher, Undecryptable
from rcfs.api.shared.link import display_url
from rcfs.api.shared.session import SessionStore
from rcfs.config import Credentials, load_credentials
from rcfs.errors import ConfigError
from tests.redis_server import RedisServer, redis_server

from .fakerc import CREDS, FakeRC

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@contextlib.asynccontextmanager
async def processes(url: str, n: int, budget: Budget) -> AsyncIterator[list[RateLimiter]]:
    """`n` limiters, each on its own Redis connection, sharing one budget."""
    async with contextlib.AsyncExitStack() as stack:
        limiters = []
        for _ in range(n):
            backend = await stack.enter_async_context(open_shared(url, CREDS))
            limiters.append(RateLimiter({"heavy": budget}, backend.group_factory))
        yield limiters


async def _requests(lim: RateLimiter, count: int, prio: Priority, admitted: list[tuple[float, str]],
                    tag: str, latency: float = 0.01) -> None:
    async def one() -> None:
        async with lim.slot("readCallRecordingContent", prio) as ticket:
            admitted.append((ticket.shared.at, tag))
            await trio.sleep(latency)
            g = ticket.group
            lim.observe(ticket, 200, {"X-Rate-Limit-Group": "Heavy",
                                      "X-Rate-Limit-Limit": str(g.limit),
                                      "X-Rate-Limit-Window": f"{g.window:g}"})

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)


async def test_concurrent_acquirers_never_exceed_the_budget(redis: RedisServer) -> None:
    budget = Budget(5, 0.4, 0.4)
    admitted: list[tuple[float, str]] = []
    async with processes(redis.url, 4, budget) as lims:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i, lim in enumerate(lims):
                nursery.start_soon(_requests, lim, 10, Priority.BACKGROUND, admitted, f"p{i}")
        elapsed = trio.current_time() - start
    times = [t for t, _ in admitted]
    assert len(times) == 40
    # Never more than the limit in any window of Redis's clock, whoever admitted them.
    assert _max_in_window(times, budget.window) <= budget.limit
    # And the budget is used: 40 requests at 5 a 0.4 s window take about 3 s.
    assert elapsed <= 1.3 * (40 / budget.limit) * budget.window + 0.5, elapsed
    assert len({tag for _, tag in admitted}) == 4


async def test_a_read_anywhere_goes_ahead_of_background_everywhere(redis: RedisServer) -> None:
    budget = Budget(2, 0.5, 0.5)
    admitted: list[tuple[float, str]] = []
    async with processes(redis.url, 2, budget) as (a, b), trio.open_nursery() as nursery:
        nursery.start_soon(_requests, a, 8, Priority.BACKGROUND, admitted, "background")
        await trio.sleep(0.2)  # a has its two, six more wait for the budget
        nursery.start_soon(_requests, b, 2, Priority.INTERACTIVE, admitted, "read")
    order = [tag for _, tag in sorted(admitted)]
    assert order[:2] == ["background", "background"]
    assert order[2:4] == ["read", "read"], order  # the next slots, before a's background work
    assert _max_in_window([t for t, _ in admitted], budget.window) <= budget.limit


async def test_a_429_anywhere_pauses_the_group_everywhere(redis: RedisServer) -> None:
    budget = Budget(10, 1.0, 1.0)
    async with processes(redis.url, 2, budget) as (a, b):
        async with a.slot("readCallRecordingContent", Priority.INTERACTIVE) as ticket:
            a.observe(ticket, 429, {"X-Rate-Limit-Group": "Heavy", "Retry-After": "1"})
        await trio.sleep(0.1)  # the observation reaches Redis through a's update queue
        t0 = trio.current_time()
        async with b.slot("readCallRecordingContent", Priority.INTERACTIVE) as ticket:
            waited = trio.current_time() - t0
        assert waited >= 0.8, waited  # b never saw the 429 itself


async def test_lost_redis_falls_back_to_a_third_and_comes_back(redis: RedisServer) -> None:
    budget = Budget(9, 0.5, 0.5)
    admitted: list[tuple[float, str]] = []
    async with processes(redis.url, 1, budget) as (lim,):
        g = lim.group("heavy")
        assert isinstance(g, SharedGroupLimiter)
        await _requests(lim, 3, Priority.BACKGROUND, admitted, "shared")
        redis.kill()
        local: list[float] = []

        async def one() -> None:
            async with lim.slot("readCallRecordingContent", Priority.INTERACTIVE) as ticket:
                local.append(trio.current_time())
                assert ticket.shared.member == ""  # admitted locally
                lim.observe(ticket, 200, {"X-Rate-Limit-Group": "Heavy",
                                          "X-Rate-Limit-Limit": "9",
                                          "X-Rate-Limit-Window": "0.5"})

        t0 = trio.current_time()
        with trio.fail_after(20):  # no hang
            async with trio.open_nursery() as nursery:
                for _ in range(9):
                    nursery.start_soon(one)
        assert not g._link.connected
        snap = g.snapshot()
        assert snap["budget"] == "local fallback" and snap["fallback_limit"] == fallback_limit(9) == 3
        # The first local request waits out one window (the peers' recent sends are unknown).
        assert min(local) - t0 >= 0.45
        # Then a third of the limit per window, never more.
        assert _max_in_window(local, 0.5) <= 3
        redis.start()
        with trio.fail_after(15):
            while not g._link.connected:
                await trio.sleep(0.05)
        async with lim.slot("readCallRecordingContent", Priority.INTERACTIVE) as ticket:
            assert ticket.shared.member  # shared again
        assert g.snapshot()["budget"] == "shared"


# -- the session ----------------------------------------------------------------------


class StrictRC(FakeRC):
    """A refresh supersedes the previous access token at once (RingCentral does)."""

    def __init__(self) -> None:
        super().__init__(limits={"Heavy": (1000, 1.0), "Light": (1000, 1.0), "Auth": (100, 1.0)})
        self.refused: list[str] = []

    def _token(self, request: httpx.Request) -> httpx.Response:
        before = set(self.tokens)
        resp = super()._token(request)
        if resp.status_code == 200 and b"refresh_token" in request.content:
            for old in before:
                self.tokens.pop(old, None)
        return resp

    async def handle(self, request: httpx.Request) -> httpx.Response:
        resp = await super().handle(request)
        if resp.status_code == 401:
            self.refused.append(request.url.path)
        return resp


@contextlib.asynccontextmanager
async def clients(fake: FakeRC, url: str, tmp: Path, n: int) -> AsyncIterator[list[RingCentralClient]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in range(n):
            out.append(await stack.enter_async_context(RingCentralClient.open(
                fake.creds(), tmp / f"t{i}.json", transport=fake.transport(),
                retry_policy=RetryPolicy(rng=random.Random(i)), redis_url=url, redis_label=f"p{i}")))
        yield out


async def test_one_login_and_one_refresh_for_all(redis: RedisServer, tmp_path: Path) -> None:
    fake = StrictRC()
    fake.access_ttl = 2.5
    async with clients(fake, redis.url, tmp_path, 3) as cs:
        async with trio.open_nursery() as nursery:
            for c in cs:
                nursery.start_soon(c.login)
        assert fake.logins == 1 and fake.refreshes == 0

        async def busy(c: RingCentralClient, k: int) -> None:
            for i in range(60):
                await c.recording_info(f"{k}-{i}")
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:  # ~3 s of requests: a refresh at ~2 s
            for k, c in enumerate(cs):
                nursery.start_soon(busy, c, k)
        assert fake.logins == 1
        assert 1 <= fake.refreshes <= 2, fake.refreshes
        # Refreshes were serialized: no request ever carried a superseded token.
        assert fake.refused == []
        snaps = [c.snapshot() for c in cs]
        assert sum(s["auth"]["refreshes"] for s in snaps) == fake.refreshes
        assert sum(s["redis"]["session"]["this_process"]["adopted"] for s in snaps) >= 2


async def test_a_superseded_token_is_re_read_not_refreshed(redis: RedisServer, tmp_path: Path) -> None:
    fake = StrictRC()
    async with clients(fake, redis.url, tmp_path, 2) as (a, b):
        await a.login()
        await b.login()
        # a renews behind b's back (as after a 401 of its own): b's token is superseded.
        await a._auth.after_401(a._auth.usable_token() or "")
        assert fake.refreshes == 1
        await b.recording_info("1")  # b's lease finds its generation stale: re-read
        assert fake.refreshes == 1 and fake.logins == 1
        assert fake.refused == []
        assert b._auth.usable_token() == a._auth.usable_token()
        # A 401 that another process already answered: re-read, no refresh.
        old = "AT-secret-0001-zz"
        await b._auth.after_401(old)
        assert fake.refreshes == 1


async def test_token_sealed_in_redis(redis: RedisServer, tmp_path: Path) -> None:
    fake = StrictRC()
    async with clients(fake, redis.url, tmp_path, 1) as (a,):
        await a.login()
        token = a._auth.usable_token()
        assert token is not None
        link = a._shared.link  # type: ignore[union-attr]
        key = f"{namespace(CREDS)}:session"
        raw = redis.command("HGETALL", key)
        assert b"blob" in raw and token.encode() not in raw
        blob = await link.call(lambda c: c.hget(key, "blob"))
        assert token.encode() not in base64.b64decode(blob)
        assert CREDS.client_secret.encode() not in raw and CREDS.jwt.encode() not in raw
        # The right secret opens it ...
        rec = await SessionStore(link, TokenCipher(CREDS.client_secret, link.namespace)).read()
        assert rec is not None and rec.token.access_token == token
        # ... another cannot.
        wrong = SessionStore(link, TokenCipher("another-secret", link.namespace))
        assert await wrong.read() is None and wrong.undecryptable == 1
        # A changed byte is detected.
        sealed = bytearray(base64.b64decode(blob))
        sealed[-5] ^= 1
        await link.call(lambda c: c.hset(key, {"blob": base64.b64encode(bytes(sealed)).decode()}))
        store = SessionStore(link, TokenCipher(CREDS.client_secret, link.namespace))
        assert await store.read() is None and store.undecryptable == 1


def test_cipher_binds_record_and_generation() -> None:
    c = TokenCipher("secret-1", "rcfs:{abc}")
    sealed = c.seal(b"token", b"rcfs:{abc}:session:g1")
    assert c.open(sealed, b"rcfs:{abc}:session:g1") == b"token"
    with pytest.raises(Undecryptable):
        c.open(sealed, b"rcfs:{abc}:session:g2")
    with pytest.raises(Undecryptable):
        TokenCipher("secret-1", "rcfs:{other}").open(sealed, b"rcfs:{abc}:session:g1")
    assert "secret" not in repr(c)


async def test_refresh_lock_excludes_and_re_reads(redis: RedisServer, tmp_path: Path) -> None:
    fake = StrictRC()
    async with clients(fake, redis.url, tmp_path, 2) as (a, b):
        await a.login()
        store = a._auth._session  # type: ignore[attr-defined]
        assert await store.try_lock("x:1")
        assert not await store.try_lock("y:1")
        events: list[str] = []

        async def holder() -> None:
            await trio.sleep(0.3)
            # While it holds the lock, the holder renews; the waiter must adopt, not refresh.
            rec = await store.read()
            assert rec is not None
            new = await a._grant({"grant_type": "refresh_token",
                                  "refresh_token": rec.token.refresh_token})
            await a._auth._publish(new, "refresh", expect=rec.gen)
            events.append("published")
            await store.unlock("x:1")

        async def waiter() -> None:
            stale = b._auth.usable_token() or (await b._auth.token())
            token = await b._auth._renew_locked(stale)
            events.append("adopted")
            assert token == a._auth.usable_token()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            nursery.start_soon(waiter)
        assert events == ["published", "adopted"]
        assert fake.refreshes == 1 and fake.logins == 1


async def test_unreachable_redis_is_one_line_without_password(tmp_path: Path) -> None:
    from tests.redis_server import free_port

    url = f"redis://user:s3cretpw@127.0.0.1:{free_port()}/0"
    with pytest.raises(ConfigError) as info:
        async with open_shared(url, CREDS):
            pass
    msg = str(info.value)
    assert msg.startswith("cannot reach Redis at redis://user@127.0.0.1:") and "\n" not in msg
    assert "s3cretpw" not in msg
    with pytest.raises(ConfigError):
        async with open_shared("http://127.0.0.1:1/", CREDS):
            pass


def test_display_url_drops_the_password() -> None:
    assert display_url("redis://:pw@host:6380/2") == "redis://host:6380/2"
    assert display_url("rediss://me:pw@[::1]:6379/0") == "rediss://me@[::1]:6379/0"
    assert display_url("unix:///run/redis.sock?db=1&password=pw") == "unix:///run/redis.sock?db=1"


def test_redis_url_from_environment_and_config(tmp_path: Path) -> None:
    env: dict[str, Any] = {"RC_APP_CLIENT_ID": "id", "RC_APP_CLIENT_SECRET": "s", "RC_USER_JWT": "j"}
    cfg = tmp_path / "config.toml"
    cfg.write_text('redis_url = "redis://10.1.2.3:6379/0"\n')
    assert load_credentials(env, cfg).redis_url == "redis://10.1.2.3:6379/0"
    env["RCFS_REDIS_URL"] = "redis://127.0.0.1:7000/1"
    assert load_credentials(env, cfg).redis_url == "redis://127.0.0.1:7000/1"
    assert "redis" not in repr(load_credentials(env, cfg))
    assert load_credentials({**env, "RCFS_REDIS_URL": ""}, tmp_path / "none.toml").redis_url == ""
    env["RCFS_REDIS_URL"] = "http://nope"
    with pytest.raises(ConfigError):
        load_credentials(env, cfg)
    assert Credentials(server_url="https://x.example", client_id="a", client_secret="b",
                       jwt="c").redis_url == ""
