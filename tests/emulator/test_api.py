"""The platform API against RingCentral's OpenAPI schemas and semantics."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
import trio

from rcfs.emulator import Emulator, EmulatorConfig
from rcfs.emulator.testing import JWT_GRANT, OpenAPI, login

pytestmark = pytest.mark.timeout(60)

ALL_TIME = {"dateFrom": "2000-01-01T00:00:00Z"}
LOG = "/restapi/v1.0/account/~/call-log"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=600, seed=7, rate_limits="off", days=30)


async def all_pages(api: httpx.AsyncClient, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    response = await api.get(url, params=params)
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body["records"])
        pages += 1
        assert pages < 1000
        nxt = body["navigation"].get("nextPage")
        if nxt is None:
            return records
        response = await api.get(nxt["uri"])


# -- OAuth --------------------------------------------------------------------


async def test_token_matches_schema(
    client: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI
) -> None:
    body = await login(client, emulator.info)
    openapi.validate("TokenInfo", body)
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token_expires_in"] == 604800
    assert body["access_token"].startswith("rcfs-emu-at-")
    assert emulator.info["client_id"] == "rcfs-emulator-client"
    assert emulator.info["jwt"].startswith("rcfs-emulator-jwt.")


async def test_refresh_invalidates_previous_access_token(
    client: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI
) -> None:
    info = emulator.info
    first = await login(client, info)
    response = await client.post(
        info["server_url"] + "/restapi/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert response.status_code == 200
    second = response.json()
    openapi.validate("TokenInfo", second)
    url = info["server_url"] + LOG
    old = await client.get(url, headers={"Authorization": f"Bearer {first['access_token']}"})
    assert old.status_code == 401
    assert old.json()["errorCode"] == "TokenInvalid"
    assert old.json()["errors"][0]["errorCode"] == "OAU-213"
    new = await client.get(url, headers={"Authorization": f"Bearer {second['access_token']}"})
    assert new.status_code == 200
    # The old refresh token is spent too.
    again = await client.post(
        info["server_url"] + "/restapi/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_oauth_errors(client: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI) -> None:
    info = emulator.info
    url = info["server_url"] + "/restapi/oauth/token"
    bad_jwt = await client.post(
        url,
        data={"grant_type": JWT_GRANT, "assertion": "rcfs-emulator-jwt.nope"},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert bad_jwt.status_code == 400
    assert bad_jwt.json()["error"] == "invalid_grant"
    openapi.validate_response("OauthInvalidRequest", bad_jwt.json())
    bad_client = await client.post(
        url, data={"grant_type": JWT_GRANT, "assertion": info["jwt"]}, auth=(info["client_id"], "x")
    )
    assert bad_client.status_code == 401
    assert bad_client.json()["error"] == "invalid_client"
    openapi.validate_response("OauthInvalidRequest", bad_client.json())
    no_client = await client.post(url, data={"grant_type": JWT_GRANT, "assertion": info["jwt"]})
    assert no_client.status_code == 401
    grant = await client.post(
        url, data={"grant_type": "password"}, auth=(info["client_id"], info["client_secret"])
    )
    assert grant.status_code == 400
    assert grant.json()["error"] == "unsupported_grant_type"


async def test_revoke_ends_the_session(client: httpx.AsyncClient, emulator: Emulator) -> None:
    info = emulator.info
    tokens = await login(client, info)
    response = await client.post(
        info["server_url"] + "/restapi/oauth/revoke",
        data={"token": tokens["access_token"]},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert response.status_code == 200
    after = await client.get(
        info["server_url"] + LOG, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert after.status_code == 401
    refresh = await client.post(
        info["server_url"] + "/restapi/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert refresh.status_code == 400


async def test_auth_errors(client: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI) -> None:
    url = emulator.info["server_url"] + LOG
    missing = await client.get(url)
    assert missing.status_code == 401
    assert missing.json()["errorCode"] == "AGW-401"
    openapi.validate("ApiErrorResponseModel", missing.json())
    garbage = await client.get(url, headers={"Authorization": "Bearer garbage"})
    assert garbage.status_code == 401
    assert garbage.json()["errorCode"] == "TokenInvalid"
    assert garbage.json()["errors"][0]["errorCode"] == "OAU-149"
    unknown = await client.get(url, headers={"Authorization": "Bearer rcfs-emu-at-0000"})
    assert unknown.json()["errors"][0]["errorCode"] == "OAU-213"


async def test_expired_and_revoked_tokens_via_admin(
    client: httpx.AsyncClient, emulator: Emulator
) -> None:
    info = emulator.info
    tokens = await login(client, info)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    admin = info["server_url"] + "/__emulator/auth"
    assert (await client.put(admin, json={"expire_tokens": True})).status_code == 204
    expired = await client.get(info["server_url"] + LOG, headers=headers)
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["errorCode"] == "OAU-128"
    assert (await client.put(admin, json={"jwt_valid": False, "revoke_tokens": True})).status_code == 204
    refused = await client.post(
        info["server_url"] + "/restapi/oauth/token",
        data={"grant_type": JWT_GRANT, "assertion": info["jwt"]},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert refused.status_code == 400
    await client.put(admin, json={"jwt_valid": True})
    await login(client, info)


# -- call log -----------------------------------------------------------------


async def test_call_log_pages_match_schema(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    for view in ("Simple", "Detailed"):
        response = await api.get(LOG, params={**ALL_TIME, "view": view, "perPage": 50})
        assert response.status_code == 200
        body = response.json()
        openapi.validate("CallLogResponse", body)
        assert len(body["records"]) == 50
        assert body["paging"] == {"page": 1, "perPage": 50, "pageStart": 0, "pageEnd": 49}
        for record in body["records"]:
            assert ("legs" in record) == (view == "Detailed")
            assert ("lastModifiedTime" in record) == (view == "Detailed")


async def test_following_next_page_yields_every_record_once(api: httpx.AsyncClient) -> None:
    records = await all_pages(api, LOG, {**ALL_TIME, "perPage": 37})
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 600
    starts = [r["startTime"] for r in records]
    assert starts == sorted(starts, reverse=True)  # newest first
    # Navigation is absolute and consistent.
    first = (await api.get(LOG, params={**ALL_TIME, "perPage": 37, "page": 2})).json()
    nav = first["navigation"]
    assert nav["firstPage"]["uri"].startswith("http://127.0.0.1:")
    assert "page=1" in nav["firstPage"]["uri"] and "page=3" in nav["nextPage"]["uri"]
    assert "page=1" in nav["previousPage"]["uri"] and "page=17" in nav["lastPage"]["uri"]
    last = (await api.get(nav["lastPage"]["uri"])).json()
    assert "nextPage" not in last["navigation"]
    assert len(last["records"]) == 600 - 16 * 37


async def test_default_window_is_last_24_hours(api: httpx.AsyncClient) -> None:
    body = (await api.get(LOG, params={"perPage": "max"})).json()
    everything = await all_pages(api, LOG, {**ALL_TIME, "perPage": 1000})
    newest = everything[0]["startTime"]
    assert body["paging"]["perPage"] == 1000
    assert 0 < len(body["records"]) < len(everything)
    assert body["records"][0]["startTime"] == newest


def recordings_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level recording, or, without one, the legs' (a Detailed record)."""
    if "recording" in record:
        return [record["recording"]]
    return [leg["recording"] for leg in record.get("legs", []) if "recording" in leg]


async def test_filters(api: httpx.AsyncClient) -> None:
    everything = await all_pages(api, LOG, {**ALL_TIME, "perPage": 1000, "view": "Detailed"})
    recorded = await all_pages(
        api, LOG, {**ALL_TIME, "perPage": 1000, "withRecording": "true", "view": "Detailed"}
    )
    # A recording filter matches a record whose recording exists only on its legs.
    assert recorded and all(recordings_of(r) for r in recorded)
    assert any("recording" not in r for r in recorded)
    assert len(recorded) == sum(1 for r in everything if recordings_of(r))
    on_demand = await all_pages(
        api,
        LOG,
        {**ALL_TIME, "perPage": 1000, "withRecording": "true", "recordingType": "OnDemand",
         "view": "Detailed"},
    )  # fmt: skip
    assert on_demand and all(
        any(rec["type"] == "OnDemand" for rec in recordings_of(r)) for r in on_demand
    )
    assert len(on_demand) < len(recorded)
    inbound = await all_pages(api, LOG, {**ALL_TIME, "perPage": 1000, "direction": "Inbound"})
    assert inbound and all(r["direction"] == "Inbound" for r in inbound)
    both = await all_pages(
        api, LOG, {**ALL_TIME, "perPage": 1000, "direction": ["Inbound", "Outbound"]}
    )
    assert len(both) == len(everything)
    fax = await all_pages(api, LOG, {**ALL_TIME, "perPage": 1000, "type": "Fax"})
    assert all(r["type"] == "Fax" for r in fax)
    assert len(fax) + len(await all_pages(api, LOG, {**ALL_TIME, "type": "Voice"})) == 600


async def test_account_variety(api: httpx.AsyncClient) -> None:
    records = await all_pages(api, LOG, {**ALL_TIME, "perPage": 250, "view": "Detailed"})
    phones = [p.get("phoneNumber", "") for r in records for p in (r["from"], r["to"])]
    assert any(p.startswith("(") for p in phones)  # formatted like (866)123-4567
    assert any(p.endswith("XXXX") for p in phones)  # masked
    assert any("name" not in r["from"] for r in records)
    assert any(p.startswith("+1") for p in phones)
    assert any("extensionNumber" in r["from"] and "extensionNumber" in r["to"] for r in records)
    assert any(r.get("shortRecording") for r in records)
    leg_recs = [
        leg["recording"]["id"]
        for r in records
        for leg in r["legs"]
        if "recording" in leg and leg["recording"]["id"] != r.get("recording", {}).get("id")
    ]
    assert leg_recs, "some legs carry their own recording"
    assert any(len(r["legs"]) > 1 for r in records)
    durations = [r["duration"] for r in records if "recording" in r]
    assert min(durations) >= 30 and max(durations) <= 3600
    assert 60 <= sorted(durations)[len(durations) // 2] <= 600


@pytest.mark.parametrize(
    "params",
    [
        {"perPage": "0"},
        {"perPage": "-5"},
        {"perPage": "lots"},
        {"page": "0"},
        {"dateFrom": "yesterday"},
        {"dateTo": "2026-13-45"},
        {"view": "Everything"},
        {"direction": "Sideways"},
        {"recordingType": "Sometimes"},
        {"withRecording": "maybe"},
    ],
)
async def test_bad_parameters_are_cmn_101(
    api: httpx.AsyncClient, openapi: OpenAPI, params: dict[str, str]
) -> None:
    response = await api.get(LOG, params=params)
    assert response.status_code == 400
    body = response.json()
    openapi.validate_response("InvalidRequest", body)
    assert body["errorCode"] == "CMN-101"
    assert body["errors"][0]["parameterName"] == next(iter(params))


async def test_extension_call_log_and_permissions(
    api: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI
) -> None:
    own = await all_pages(
        api, "/restapi/v1.0/account/~/extension/~/call-log", {**ALL_TIME, "perPage": 1000}
    )
    everything = await all_pages(api, LOG, {**ALL_TIME, "perPage": 1000})
    assert 0 < len(own) < len(everything)
    assert {r["extension"]["id"] for r in own} == {int(own[0]["extension"]["id"])}
    admin = emulator.info["server_url"] + "/__emulator/permissions"
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(admin, json={"company_call_log": False})).status_code == 204
    forbidden = await api.get(LOG)
    assert forbidden.status_code == 403
    assert forbidden.json()["errorCode"] == "CMN-408"
    openapi.validate_response("Forbidden", forbidden.json())
    still = await api.get("/restapi/v1.0/account/~/extension/~/call-log", params=ALL_TIME)
    assert still.status_code == 200
    wrong = await api.get(f"/restapi/v1.0/account/{emulator.info['account_id']}1/call-log")
    assert wrong.status_code == 404


async def test_single_record_and_recording_metadata(
    api: httpx.AsyncClient, openapi: OpenAPI, emulator: Emulator
) -> None:
    body = (await api.get(LOG, params={**ALL_TIME, "withRecording": "true", "perPage": 1})).json()
    record = body["records"][0]
    account_id = emulator.info["account_id"]
    single = await api.get(f"/restapi/v1.0/account/{account_id}/call-log/{record['id']}")
    assert single.status_code == 200
    openapi.validate("CallLogRecord", single.json())
    assert single.json()["id"] == record["id"]
    assert (await api.get("/restapi/v1.0/account/~/call-log/nope")).status_code == 404
    rec = record["recording"]
    assert rec["uri"].startswith(emulator.info["server_url"])
    assert rec["contentUri"].startswith(emulator.info["media_url"])
    meta = await api.get(rec["uri"])
    assert meta.status_code == 200
    openapi.validate("GetCallRecordingResponse", meta.json())
    assert meta.json() == {
        "id": rec["id"],
        "contentUri": rec["contentUri"],
        "contentType": "audio/mpeg",
        "duration": record["duration"],
    }
    missing = await api.get("/restapi/v1.0/account/~/recording/123")
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "CMN-102"
    openapi.validate_response("NotFound", missing.json())


# -- admin --------------------------------------------------------------------


async def test_admin_add_and_delete(api: httpx.AsyncClient, emulator: Emulator) -> None:
    base = emulator.info["server_url"]
    async with httpx.AsyncClient() as plain:
        added = await plain.post(base + "/__emulator/calls", json={"count": 3, "duration": 95})
        assert added.status_code == 200
        records = added.json()["records"]
        assert len(records) == 3 and all(r["duration"] == 95 for r in records)
        newest = (await api.get(LOG, params={"perPage": 3})).json()["records"]
        assert [r["id"] for r in newest] == [r["id"] for r in records]
        rid = records[0]["recording"]["id"]
        assert (await plain.delete(f"{base}/__emulator/recordings/{rid}")).status_code == 204
        assert (await plain.delete(f"{base}/__emulator/recordings/{rid}")).status_code == 404
        assert (await plain.get(f"{base}/__emulator/recordings/{rid}/content")).status_code == 404
    assert (await api.get(f"/restapi/v1.0/account/~/recording/{rid}")).status_code == 404
    content = await api.get(records[0]["recording"]["contentUri"])
    assert content.status_code == 404
    after = (await api.get(f"/restapi/v1.0/account/~/call-log/{records[0]['id']}")).json()
    assert "recording" not in after  # the record stays, its recording block goes


async def test_admin_stats(api: httpx.AsyncClient, emulator: Emulator) -> None:
    base = emulator.info["server_url"]
    async with httpx.AsyncClient() as plain:
        await plain.post(base + "/__emulator/stats/reset")
        await api.get(LOG)
        await api.get(LOG)
        await api.get("/restapi/v1.0/account/~/extension/~/call-log")
        stats = (await plain.get(base + "/__emulator/stats")).json()
    assert stats["requests"] == {"readCompanyCallLog": 2, "readUserCallLog": 1}
    assert stats["groups"] == {"Heavy": {"requests": 3, "throttled": 0}}
    assert stats["throttled"] == 0 and stats["content_bytes"] == 0


async def test_admin_refuses_bad_input(emulator: Emulator) -> None:
    base = emulator.info["server_url"]
    async with httpx.AsyncClient() as plain:
        assert (await plain.post(base + "/__emulator/calls", json={"count": 0})).status_code == 400
        assert (await plain.put(base + "/__emulator/faults", json={"5xx": 2})).status_code == 400
        bad = await plain.put(base + "/__emulator/rate-limits", json={"heavy": "ten"})
        assert bad.status_code == 400


async def test_cancelling_stops_the_servers() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            emu = Emulator(EmulatorConfig(calls=10))
            info = await nursery.start(emu.run)
            async with httpx.AsyncClient() as c:
                assert (await c.get(info["server_url"] + "/__emulator/stats")).status_code == 200
            nursery.cancel_scope.cancel()
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(info["server_url"] + "/__emulator/stats")


async def test_account_and_extension_info(
    api: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI
) -> None:
    account = await api.get("/restapi/v1.0/account/~")
    assert account.status_code == 200
    openapi.validate("GetAccountInfoResponse", account.json())
    assert str(account.json()["id"]) == emulator.info["account_id"]
    ext = await api.get("/restapi/v1.0/account/~/extension/~")
    assert ext.status_code == 200
    openapi.validate("GetExtensionInfoResponse", ext.json())
    assert ext.json()["extensionNumber"] == "101"


async def test_admin_refuses_non_loopback_clients() -> None:
    emu = Emulator(EmulatorConfig(calls=5))
    platform, _ = emu.apps(emu._build_state())

    async def call(method: str, client_host: str) -> int:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": "/__emulator/stats", "raw_path": b"",
            "query_string": b"", "root_path": "", "headers": [],
            "client": (client_host, 40000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await platform(scope, receive, send)
        return int(sent[0]["status"])

    assert await call("GET", "10.1.2.3") == 403
    assert await call("GET", "192.168.0.7") == 403
    assert await call("GET", "127.0.0.1") == 200
    assert await call("GET", "::1") == 200
