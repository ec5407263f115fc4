"""Call-log sync: FSync, ISync change feed, the 250-record cap, deletions, bad tokens."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rcfs.emulator import Emulator, EmulatorConfig
from rcfs.emulator.testing import OpenAPI

pytestmark = pytest.mark.timeout(60)

SYNC = "/restapi/v1.0/account/~/call-log-sync"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=300, seed=5, rate_limits="off", days=20)


async def admin(emulator: Emulator, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient() as plain:
        return await plain.request(method, emulator.info["server_url"] + "/__emulator" + path, **kw)


async def isync(api: httpx.AsyncClient, token: str, **params: str) -> dict[str, Any]:
    response = await api.get(SYNC, params={"syncType": "ISync", "syncToken": token, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_fsync_then_isync(api: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI) -> None:
    full = await api.get(SYNC, params={"syncType": "FSync", "recordCount": 5})
    assert full.status_code == 200
    body = full.json()
    openapi.validate("CallLogSyncResponse", body)
    assert body["syncInfo"]["syncType"] == "FSync"
    assert len(body["records"]) == 5
    newest = (
        await api.get("/restapi/v1.0/account/~/call-log", params={"dateFrom": "2000-01-01"})
    ).json()["records"][0]
    assert body["records"][0]["id"] == newest["id"]
    token = body["syncInfo"]["syncToken"]

    quiet = await isync(api, token)
    openapi.validate("CallLogSyncResponse", quiet)
    assert quiet["records"] == [] and quiet["syncInfo"]["syncType"] == "ISync"

    added = (await admin(emulator, "POST", "/calls", json={"count": 3})).json()["records"]
    changes = await isync(api, quiet["syncInfo"]["syncToken"])
    assert sorted(r["id"] for r in changes["records"]) == sorted(r["id"] for r in added)
    token = changes["syncInfo"]["syncToken"]
    assert (await isync(api, token))["records"] == []

    rid = added[0]["recording"]["id"]
    assert (await admin(emulator, "DELETE", f"/recordings/{rid}")).status_code == 204
    gone = await isync(api, token, withRecording="true")
    assert [r["id"] for r in gone["records"]] == [added[0]["id"]]
    assert "recording" not in gone["records"][0]
    token = gone["syncInfo"]["syncToken"]

    assert (await admin(emulator, "DELETE", f"/calls/{added[1]['id']}")).status_code == 204
    hidden = await isync(api, token)
    assert hidden["records"] == []
    shown = await isync(api, token, showDeleted="true")
    assert [(r["id"], r.get("deleted")) for r in shown["records"]] == [(added[1]["id"], True)]
    openapi.validate("CallLogSyncResponse", shown)


async def test_isync_returns_at_most_250(api: httpx.AsyncClient, emulator: Emulator) -> None:
    token = (await api.get(SYNC, params={"syncType": "FSync", "recordCount": 1})).json()
    token = token["syncInfo"]["syncToken"]
    added = (await admin(emulator, "POST", "/calls", json={"count": 300})).json()["records"]
    first = await isync(api, token)
    assert len(first["records"]) == 250
    second = await isync(api, first["syncInfo"]["syncToken"])
    assert len(second["records"]) == 50
    seen = {r["id"] for r in first["records"]} | {r["id"] for r in second["records"]}
    assert seen == {r["id"] for r in added}


async def test_sync_errors(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    missing = await api.get(SYNC, params={"syncType": "FSync"})
    assert missing.status_code == 400 and missing.json()["errorCode"] == "CMN-100"
    bad = await api.get(SYNC, params={"syncType": "ISync", "syncToken": "!!!"})
    assert bad.status_code == 400 and bad.json()["errorCode"].startswith("CLG-10")
    openapi.validate("ApiErrorResponseModel", bad.json())
    foreign = await api.get(
        SYNC, params={"syncType": "ISync", "syncToken": "eyJuIjoieCIsInMiOjAsIngiOiJhY2NvdW50In0"}
    )
    assert foreign.status_code == 400 and foreign.json()["errorCode"].startswith("CLG-10")
    assert (await api.get(SYNC, params={"syncType": "Sometimes"})).status_code == 400


async def test_extension_sync_is_scoped(api: httpx.AsyncClient) -> None:
    body = (
        await api.get(
            "/restapi/v1.0/account/~/extension/~/call-log-sync",
            params={"syncType": "FSync", "recordCount": 250},
        )
    ).json()
    assert len({r["extension"]["id"] for r in body["records"]}) == 1
    # A token of one scope is refused in another.
    wrong = await api.get(
        SYNC, params={"syncType": "ISync", "syncToken": body["syncInfo"]["syncToken"]}
    )
    assert wrong.status_code == 400
