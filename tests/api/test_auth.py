"""Token store and renewal coordination (fake server, autojump clock)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import trio

from rcfs.api import RetryPolicy, RingCentralClient
from rcfs.api.auth import TokenStore

from .fakerc import FakeRC


def _open(fake: FakeRC, path: Path):  # type: ignore[no-untyped-def]
    return RingCentralClient.open(
        fake.creds(),
        path,
        transport=fake.transport(),
        retry_policy=RetryPolicy(rng=random.Random(5)),
    )


async def test_processes_sharing_a_store_refresh_once(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    fake = FakeRC()
    fake.access_ttl = 100.0
    path = tmp_path / "token.json"
    async with _open(fake, path) as a, _open(fake, path) as b:
        await a.login()
        await b.login()
        assert fake.logins == 1  # b read a's token from the store
        await trio.sleep(90)  # both tokens are due for refresh
        await a.recording_info("1")
        await b.recording_info("2")
        assert fake.refreshes == 1  # b adopted the token a renewed
        assert b._auth.usable_token() == a._auth.usable_token()


async def test_store_is_private_and_ignores_other_credentials(tmp_path: Path) -> None:
    fake = FakeRC()
    path = tmp_path / "sub" / "token.json"
    async with _open(fake, path) as a:
        await a.login()
    assert (os.stat(path).st_mode & 0o777) == 0o600
    assert (os.stat(path.parent).st_mode & 0o777) == 0o700
    assert await TokenStore(path, "another-fingerprint").load() is None


async def test_store_lock_excludes(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    s1 = TokenStore(tmp_path / "t.json", "fp")
    s2 = TokenStore(tmp_path / "t.json", "fp")
    events: list[str] = []

    async def holder() -> None:
        async with s1.locked():
            events.append("1 in")
            await trio.sleep(5)
            events.append("1 out")

    async def waiter() -> None:
        await trio.sleep(1)
        async with s2.locked():
            events.append("2 in")

    async with trio.open_nursery() as n:
        n.start_soon(holder)
        n.start_soon(waiter)
    assert events == ["1 in", "1 out", "2 in"]


async def test_unreadable_store_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("{not json")
    fake = FakeRC()
    async with _open(fake, path) as a:
        await a.login()
    assert fake.logins == 1


async def test_token_grant_429_waits_for_auth_group(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    fake = FakeRC(limits={"Auth": (1, 60.0), "Heavy": (10, 60.0)})
    fake.groups["Auth"].accepted.append(trio.current_time())  # budget spent elsewhere
    async with _open(fake, tmp_path / "t.json") as a:
        start = trio.current_time()
        await a.login()
        assert trio.current_time() - start >= 60
        assert fake.groups["Auth"].throttled == 1
