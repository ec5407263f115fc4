"""Throttling (429, headers, penalty restarts) and injected faults."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import trio

from rcfs.emulator import Emulator, EmulatorConfig
from rcfs.emulator.config import Limit, real_limits
from rcfs.emulator.ratelimit import RateLimiter
from rcfs.emulator.testing import OpenAPI, login, open_emulator

pytestmark = pytest.mark.timeout(60)

LOG = "/restapi/v1.0/account/~/call-log"


def test_limiter_window_and_penalty_restart() -> None:
    limiter = RateLimiter({"Heavy": Limit(3, 10.0, 5.0)})
    seen = [limiter.check("app:user", "Heavy", t) for t in (0.0, 1.0, 2.0)]
    assert all(d.allowed for d in seen)
    assert [d.headers["X-Rate-Limit-Remaining"] for d in seen] == ["2", "1", "0"]
    refused = limiter.check("app:user", "Heavy", 3.0)
    assert not refused.allowed and refused.headers["Retry-After"] == "5"
    # During the penalty every request restarts it: still refused at 7.9 (3 + 4.9)...
    assert not limiter.check("app:user", "Heavy", 7.9).allowed
    # ...and at 12.8 (7.9 + 4.9), though the first penalty ended at 8.
    assert not limiter.check("app:user", "Heavy", 12.8).allowed
    assert limiter.check("app:user", "Heavy", 17.9).allowed
    # Other users and groups have their own budgets; unlisted groups are unlimited.
    assert limiter.check("app:other", "Heavy", 12.9).allowed
    assert limiter.check("app:user", "Light", 13.0) .headers == {}


def test_real_profile_is_documented_defaults() -> None:
    limits = real_limits()
    assert {g: (lim.requests, lim.window, lim.penalty) for g, lim in limits.items()} == {
        "Light": (50, 60.0, 60.0),
        "Medium": (40, 60.0, 60.0),
        "Heavy": (10, 60.0, 60.0),
        "Auth": (5, 60.0, 60.0),
    }


async def test_429_headers_and_penalty_restart(openapi: OpenAPI) -> None:
    config = EmulatorConfig(calls=20, rate_limits="heavy=3/2s,auth=5/2s")
    async with open_emulator(config) as emu, httpx.AsyncClient(timeout=30) as client:
        token = (await login(client, emu.info))["access_token"]
        url = emu.info["server_url"] + LOG
        headers = {"Authorization": f"Bearer {token}"}
        for remaining in ("2", "1", "0"):
            ok = await client.get(url, headers=headers)
            assert ok.status_code == 200
            assert ok.headers["X-Rate-Limit-Group"] == "Heavy"
            assert ok.headers["X-Rate-Limit-Limit"] == "3"
            assert ok.headers["X-Rate-Limit-Window"] == "2"
            assert ok.headers["X-Rate-Limit-Remaining"] == remaining
        throttled = await client.get(url, headers=headers)
        assert throttled.status_code == 429
        assert throttled.headers["Retry-After"] == "2"
        assert throttled.headers["X-Rate-Limit-Remaining"] == "0"
        body = throttled.json()
        assert body["errorCode"] == "CMN-301" and body["message"] == "Request rate exceeded"
        openapi.validate("ApiErrorResponseModel", body)
        # Content shares the Heavy group.
        assert (await client.get(url.replace(LOG, "/restapi/v1.0/account/~/recording/1"),
                                 headers=headers)).status_code == 429  # fmt: skip
        await trio.sleep(1.5)
        assert (await client.get(url, headers=headers)).status_code == 429  # restarts
        await trio.sleep(1.5)  # 3 s after the first 429: free, had it not restarted
        assert (await client.get(url, headers=headers)).status_code == 429
        await trio.sleep(2.2)
        assert (await client.get(url, headers=headers)).status_code == 200
        stats = (await client.get(emu.info["server_url"] + "/__emulator/stats")).json()
        assert stats["groups"]["Heavy"] == {"requests": 8, "throttled": 4}
        assert stats["throttled"] == 4
        assert stats["requests"]["getToken"] == 1


async def test_rate_limits_change_at_run_time(emulator: Emulator, api: httpx.AsyncClient) -> None:
    admin = emulator.info["server_url"] + "/__emulator/rate-limits"
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(admin, json={"heavy": "1/60s"})).status_code == 204
        assert (await api.get(LOG)).status_code == 200
        assert (await api.get(LOG)).status_code == 429
        assert (await plain.put(admin, json={"profile": "off"})).status_code == 204
        response = await api.get(LOG)
        assert response.status_code == 200 and "X-Rate-Limit-Group" not in response.headers


async def faults(emulator: Emulator, **settings: Any) -> None:
    async with httpx.AsyncClient() as plain:
        url = emulator.info["server_url"] + "/__emulator/faults"
        assert (await plain.put(url, json=settings)).status_code == 204


async def a_recording(api: httpx.AsyncClient) -> dict[str, Any]:
    body = (
        await api.get(LOG, params={"dateFrom": "2000-01-01", "withRecording": "true", "perPage": 1})
    ).json()
    rec: dict[str, Any] = body["records"][0]["recording"]
    return rec


async def test_no_length(emulator: Emulator, api: httpx.AsyncClient) -> None:
    rec = await a_recording(api)
    whole = (await api.get(rec["contentUri"])).content
    await faults(emulator, no_length=1)
    response = await api.get(rec["contentUri"])
    assert "content-length" not in response.headers
    assert response.headers.get("transfer-encoding") == "chunked"
    assert response.content == whole
    partial = await api.get(rec["contentUri"], headers={"Range": "bytes=0-"})
    assert partial.status_code == 206
    assert partial.headers["content-range"] == f"bytes 0-{len(whole) - 1}/{len(whole)}"


async def test_reset_drops_connections_mid_body(emulator: Emulator, api: httpx.AsyncClient) -> None:
    rec = await a_recording(api)
    await faults(emulator, reset=1)
    async with httpx.AsyncClient(headers=api.headers) as fresh:
        with pytest.raises(httpx.RemoteProtocolError):
            await fresh.get(rec["contentUri"])
        got = 0
        with pytest.raises(httpx.RemoteProtocolError):
            async with fresh.stream("GET", rec["contentUri"]) as response:
                assert response.status_code == 200
                size = int(response.headers["content-length"])
                async for chunk in response.aiter_bytes():
                    got += len(chunk)
        assert 0 < got < size
        with pytest.raises(httpx.RemoteProtocolError):
            await fresh.get(emulator.info["server_url"] + LOG)
    await faults(emulator)
    assert (await api.get(rec["contentUri"])).status_code == 200


async def statuses(seed: int, n: int = 30) -> list[int]:
    config = EmulatorConfig(calls=10, seed=seed, rate_limits="off", faults="5xx=0.3")
    async with open_emulator(config) as emu, httpx.AsyncClient(timeout=30) as client:
        token = None
        while token is None:  # the token endpoint can fail too
            response = await client.post(
                emu.info["server_url"] + "/restapi/oauth/token",
                data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                      "assertion": emu.info["jwt"]},
                auth=(emu.info["client_id"], emu.info["client_secret"]),
            )  # fmt: skip
            if response.status_code == 200:
                token = response.json()["access_token"]
        out = []
        for _ in range(n):
            response = await client.get(
                emu.info["server_url"] + LOG, headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 503:
                assert response.json()["errorCode"] == "CMN-201"
            out.append(response.status_code)
        return out


async def test_5xx_is_seeded() -> None:
    first, again, other = await statuses(1), await statuses(1), await statuses(2)
    assert first == again
    assert first != other
    assert 0 < first.count(503) < len(first)
    assert set(first) == {200, 503}


async def test_latency_and_token_ttl(emulator: Emulator, client: httpx.AsyncClient) -> None:
    await faults(emulator, latency="300ms", token_ttl="1s")
    started = time.monotonic()
    tokens = await login(client, emulator.info)
    assert time.monotonic() - started >= 0.3
    assert tokens["expires_in"] == 1
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get(emulator.info["server_url"] + LOG, headers=headers)).status_code == 200
    await trio.sleep(1.0)
    expired = await client.get(emulator.info["server_url"] + LOG, headers=headers)
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["errorCode"] == "OAU-128"


async def test_late_recording(emulator: Emulator, api: httpx.AsyncClient) -> None:
    await faults(emulator, late_recording="1s")
    sync = "/restapi/v1.0/account/~/call-log-sync"
    token = (await api.get(sync, params={"syncType": "FSync", "recordCount": 1})).json()
    async with httpx.AsyncClient() as plain:
        added = await plain.post(emulator.info["server_url"] + "/__emulator/calls", json={"count": 1})
    record = added.json()["records"][0]
    assert "recording" not in record
    first = (await api.get(sync, params={"syncType": "ISync",
                                         "syncToken": token["syncInfo"]["syncToken"]})).json()  # fmt: skip
    assert [r["id"] for r in first["records"]] == [record["id"]]
    assert "recording" not in first["records"][0]
    await trio.sleep(1.1)
    now = (await api.get(f"{LOG}/{record['id']}")).json()
    assert "recording" in now
    second = (await api.get(sync, params={"syncType": "ISync",
                                          "syncToken": first["syncInfo"]["syncToken"]})).json()  # fmt: skip
    assert [r["id"] for r in second["records"]] == [record["id"]]
    assert second["records"][0]["recording"]["id"] == now["recording"]["id"]
    assert (await api.get(now["recording"]["contentUri"])).status_code == 200
