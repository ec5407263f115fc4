"""RingCentralClient against the in-process emulator on 127.0.0.1:0 (real sockets, real time).

Timing is never asserted beyond hang guards; throttling is checked through the
emulator's own statistics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rcfs.api import Priority, RingCentralClient
from rcfs.config import Credentials
from rcfs.emulator import EmulatorConfig
from rcfs.emulator.testing import open_emulator
from rcfs.errors import AuthError

HANG_GUARD = 90


def creds_of(info: dict[str, str]) -> Credentials:
    return Credentials(
        server_url=info["server_url"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        jwt=info["jwt"],
        media_url=info["media_url"],
    )


class Emu:
    def __init__(self, info: dict[str, str], admin: httpx.AsyncClient) -> None:
        self.info = info
        self.admin = admin

    async def put(self, what: str, body: dict[str, Any]) -> None:
        r = await self.admin.put(f"/__emulator/{what}", json=body)
        assert r.status_code == 204, r.text

    async def stats(self) -> dict[str, Any]:
        r = await self.admin.get("/__emulator/stats")
        return r.json()  # type: ignore[no-any-return]

    async def recordings(self) -> list[dict[str, Any]]:
        r = await self.admin.get("/__emulator/recordings")
        return r.json()["recordings"]  # type: ignore[no-any-return]

    async def content(self, rid: str) -> bytes:
        r = await self.admin.get(f"/__emulator/recordings/{rid}/content")
        return r.content


@asynccontextmanager
async def running(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[Emu, RingCentralClient]]:
    cfg = EmulatorConfig(**({"calls": 60, "seed": 3, "rate_limits": "off"} | config))
    with trio.fail_after(HANG_GUARD):
        async with open_emulator(cfg) as emulator:
            info = emulator.info
            async with (
                httpx.AsyncClient(base_url=info["server_url"], trust_env=False) as admin,
                RingCentralClient.open(creds_of(info), tmp_path / "token.json") as c,
            ):
                yield Emu(info, admin), c


def window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=400), now + timedelta(days=1)


async def content_uri(client: RingCentralClient) -> list[str]:
    uris = []
    async for page in client.iter_call_log(*window()):
        uris += [r["recording"]["contentUri"] for r in page if r.get("recording")]
    return uris


async def test_login_refresh_and_token_reuse(tmp_path: Path) -> None:
    async with running(tmp_path) as (emu, client):
        await client.login()
        await emu.put("auth", {"expire_tokens": True})
        await client.recording_info((await emu.recordings())[0]["id"])  # 401 -> refresh -> ok
        stats = await emu.stats()
        assert stats["requests"]["getToken"] == 2
        assert client.snapshot()["auth"] == {"logins": 1, "refreshes": 1}
        async with RingCentralClient.open(creds_of(emu.info), tmp_path / "token.json") as c2:
            await c2.login()
        assert (await emu.stats())["requests"]["getToken"] == 2  # stored token re-used


async def test_short_token_lifetime_under_load(tmp_path: Path) -> None:
    async with running(tmp_path, rate_limits="heavy=20/2s,auth=5/2s", faults="token_ttl=3s") as (
        emu,
        client,
    ):
        ids = [r["id"] for r in await emu.recordings()][:30]
        results: list[dict[str, Any]] = []

        async def get(rid: str) -> None:
            for _ in range(2):
                results.append(await client.recording_info(rid))
                await trio.sleep(0.5)

        async with trio.open_nursery() as n:
            for rid in ids:
                n.start_soon(get, rid)
        assert len(results) == 2 * len(ids)  # no failed request
        auth = client.snapshot()["auth"]
        assert auth["refreshes"] + auth["logins"] >= 2
        assert (await emu.stats())["throttled"] == 0


async def test_revoked_tokens_recovered_by_jwt_login(tmp_path: Path) -> None:
    async with running(tmp_path) as (emu, client):
        await client.login()
        await emu.put("auth", {"revoke_tokens": True})
        rid = (await emu.recordings())[0]["id"]
        assert (await client.recording_info(rid))["id"] == rid
        assert client.snapshot()["auth"]["logins"] == 2


async def test_revoked_credentials_give_autherror(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path, rate_limits="real") as (emu, client):
        await client.login()
        await emu.put("auth", {"jwt_valid": False, "revoke_tokens": True})
        rid = (await emu.recordings())[0]["id"]
        errors = []

        async def get() -> None:
            try:
                await client.recording_info(rid)
            except AuthError as exc:
                errors.append(exc)

        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                for _ in range(5):
                    n.start_soon(get)
        assert len(errors) == 5
        assert "JWT login" in str(errors[0])
        secrets = [emu.info["jwt"], emu.info["client_secret"], "rcfs-emu-at-", "rcfs-emu-rt-"]
        for text in [str(e) for e in errors] + [r.getMessage() for r in caplog.records]:
            assert not any(s in text for s in secrets), text


async def test_multi_page_call_log(tmp_path: Path) -> None:
    async with running(tmp_path, calls=2300) as (emu, client):
        pages = [p async for p in client.iter_call_log(*window())]
        assert len(pages) >= 3
        got = {r["id"] for p in pages for r in p}
        assert sum(len(p) for p in pages) == len(got)  # no duplicates
        recorded = {rec["callId"] for rec in await emu.recordings()}
        assert recorded <= got
        assert (await emu.stats())["requests"]["readCompanyCallLog"] == len(pages)


async def test_content_streamed_headers_first(tmp_path: Path) -> None:
    async with running(tmp_path) as (emu, client):
        uri = (await content_uri(client))[0]
        rid = uri.rsplit("/", 2)[-2]
        expected = await emu.content(rid)
        async with client.stream_content(uri) as resp:
            assert resp.total_size == len(expected)  # known before any body byte is read
            assert resp.content_type == "audio/mpeg" and resp.start == 0
            chunks = [c async for c in resp.iter_chunks()]
        assert b"".join(chunks) == expected
        async with client.stream_content(uri, start=1000) as resp:
            assert (resp.status, resp.start, resp.total_size) == (206, 1000, len(expected))
            assert b"".join([c async for c in resp.iter_chunks()]) == expected[1000:]


async def test_content_without_length(tmp_path: Path) -> None:
    async with running(tmp_path, faults="no_length=1") as (emu, client):
        uri = (await content_uri(client))[0]
        async with client.stream_content(uri) as resp:
            data = b"".join([c async for c in resp.iter_chunks()])
        assert data == await emu.content(uri.rsplit("/", 2)[-2])


async def test_403_falls_back_to_extension_log(tmp_path: Path) -> None:
    async with running(tmp_path) as (emu, client):
        await emu.put("permissions", {"company_call_log": False})
        records = [r async for p in client.iter_call_log(*window()) for r in p]
        assert records and client.call_log_scope == "extension"
        sync = await client.sync_call_log(None, date_from=datetime.now(UTC) - timedelta(days=20))
        assert sync.sync_token
        requests = (await emu.stats())["requests"]
        assert requests.get("readUserCallLog", 0) >= 1


async def test_account_info(tmp_path: Path) -> None:
    async with running(tmp_path) as (emu, client):
        info = await client.account_info()
        assert str(info["id"]) == emu.info["account_id"]


async def test_100_concurrent_downloads_no_429(tmp_path: Path) -> None:
    async with running(tmp_path, calls=260, rate_limits="heavy=10/2s") as (emu, client):
        uris = (await content_uri(client))[:100]
        assert len(uris) == 100
        await emu.admin.post("/__emulator/stats/reset")
        done = 0

        async def fetch(uri: str) -> None:
            nonlocal done
            async with client.stream_content(uri, priority=Priority.BACKGROUND) as resp:
                async for _ in resp.iter_chunks():
                    pass
            done += 1

        async with trio.open_nursery() as n:
            for uri in uris:
                n.start_soon(fetch, uri)
        stats = await emu.stats()
        assert done == 100
        assert stats["throttled"] == 0
        assert stats["requests"]["readCallRecordingContent"] == 100
        assert client.snapshot()["requests"]["Heavy"]["throttled_429"] == 0


async def test_follows_runtime_limit_changes(tmp_path: Path) -> None:
    async with running(tmp_path, rate_limits="heavy=10/2s") as (emu, client):
        ids = [r["id"] for r in await emu.recordings()][:40]

        async def burst(n_req: int) -> None:
            async with trio.open_nursery() as n:
                for rid in ids[:n_req]:
                    n.start_soon(client.recording_info, rid)

        await burst(15)
        await emu.put("rate-limits", {"heavy": "20/2s"})
        await client.recording_info(ids[0])
        assert client.snapshot()["rate_limits"]["Heavy"]["limit"] == 20
        await burst(40)
        await emu.put("rate-limits", {"heavy": "4/2s"})
        await client.recording_info(ids[0])  # one request learns the new limit
        heavy = client.snapshot()["rate_limits"]["Heavy"]
        assert (heavy["limit"], heavy["window"]) == (4, 2.0)
        await burst(12)
        assert (await emu.stats())["throttled"] == 0


async def test_faults_retried_transparently(tmp_path: Path) -> None:
    async with running(tmp_path, rate_limits="heavy=100/1s", faults="5xx=0.1,reset=0.05") as (
        emu,
        client,
    ):
        ids = [r["id"] for r in await emu.recordings()][:30]
        got: list[str] = []

        async def get(rid: str) -> None:
            got.append((await client.recording_info(rid))["id"])

        async with trio.open_nursery() as n:
            for rid in ids:
                n.start_soon(get, rid)
        assert sorted(got) == sorted(ids)
        assert client.snapshot()["requests"]["Heavy"]["errors"] > 0
