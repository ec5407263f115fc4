"""The `redirect` fault: content redirected to a signed URL on another (loopback) host,
and that host's request log, which shows whether a token ever reached it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rcfs.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.timeout(60)

LOG = "/restapi/v1.0/account/~/call-log"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=60, seed=3, rate_limits="off", faults="redirect=1")


async def admin(emulator: Emulator, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.request(method, emulator.info["server_url"] + "/__emulator" + path, **kw)


async def recordings(api: httpx.AsyncClient, n: int = 2) -> list[dict[str, Any]]:
    params = {"dateFrom": "2000-01-01T00:00:00Z", "withRecording": "true", "perPage": n}
    return [r["recording"] for r in (await api.get(LOG, params=params)).json()["records"]]


async def storage_log(emulator: Emulator) -> dict[str, Any]:
    response = await admin(emulator, "GET", "/storage/requests")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def assert_no_token_reached_storage(log: list[dict[str, Any]], tokens: list[str]) -> None:
    assert log, "the storage host saw no request"
    for entry in log:
        assert "authorization" not in entry["headers"], entry
        assert "access_token" not in entry["query"], entry
        for token in tokens:
            assert token not in entry["query"] and token not in entry["path"]
            assert all(token not in value for value in entry["headers"].values())


async def test_content_is_redirected_to_the_storage_host(
    api: httpx.AsyncClient, emulator: Emulator, token: str
) -> None:
    storage = await storage_log(emulator)
    assert storage["url"].startswith("http://127.0.0.1:") and storage["requests"] == []
    assert emulator.storage_url == storage["url"]
    media = urlsplit(emulator.info["media_url"])
    for rec in await recordings(api):
        expected = (await admin(emulator, "GET", f"/recordings/{rec['id']}/content")).content
        redirect = await api.get(rec["contentUri"])
        assert redirect.status_code == 302 and redirect.content == b""
        location = redirect.headers["location"]
        target = urlsplit(location)
        assert location.startswith(storage["url"] + "/")
        assert (target.hostname, target.port) != (media.hostname, media.port)
        assert rec["id"] in target.path and token not in location
        # httpx drops Authorization when a redirect leaves the origin, as rcfs must.
        followed = await api.get(rec["contentUri"], follow_redirects=True)
        assert followed.status_code == 200
        assert followed.headers["content-type"] == "audio/mpeg"
        assert int(followed.headers["content-length"]) == len(expected)
        assert followed.content == expected
        ranged = await api.get(rec["contentUri"], headers={"Range": "bytes=100-199"}, follow_redirects=True)
        assert ranged.status_code == 206 and ranged.content == expected[100:200]
        assert ranged.headers["content-range"] == f"bytes 100-199/{len(expected)}"
        async with httpx.AsyncClient(timeout=30) as plain:
            head = await plain.head(location)
            assert head.status_code == 200 and int(head.headers["content-length"]) == len(expected)
            tail = await plain.get(location, headers={"Range": "bytes=-10"})
            assert tail.status_code == 206 and tail.content == expected[-10:]
            past = await plain.get(location, headers={"Range": f"bytes={len(expected)}-"})
            assert past.status_code == 416
    issued = (await admin(emulator, "GET", "/tokens")).json()["tokens"]
    log = (await storage_log(emulator))["requests"]
    assert {e["method"] for e in log} == {"GET", "HEAD"}
    assert all(e["path"].startswith("/blob/") for e in log)
    assert_no_token_reached_storage(log, issued)


async def test_access_token_in_the_query_does_not_travel(
    client: httpx.AsyncClient, api: httpx.AsyncClient, emulator: Emulator, token: str
) -> None:
    rec = (await recordings(api, 1))[0]
    params = {"access_token": token, "contentDisposition": "Attachment",
              "contentDispositionFilename": "café.mp3"}  # fmt: skip
    redirect = await client.get(rec["contentUri"], params=params)
    assert redirect.status_code == 302
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert "access_token" not in query and token not in redirect.headers["location"]
    assert query["contentDisposition"] == ["Attachment"]
    followed = await client.get(rec["contentUri"], params=params, follow_redirects=True)
    assert followed.status_code == 200
    assert followed.headers["content-disposition"].startswith('attachment; filename="cafe.mp3"')
    assert_no_token_reached_storage((await storage_log(emulator))["requests"], [token])
    # Errors still come from the media host, before any redirect.
    assert (await client.get(rec["contentUri"])).status_code == 401
    missing = rec["contentUri"].replace(rec["id"], "123")
    assert (await client.get(missing, params={"access_token": token})).status_code == 404
    nul = {"access_token": token, "contentDispositionFilename": "\x00"}
    bad = await client.get(rec["contentUri"], params=nul)
    assert bad.status_code == 400 and bad.json()["errorCode"] == "CMN-101"


async def test_a_leak_would_be_visible_and_signatures_are_checked(
    api: httpx.AsyncClient, emulator: Emulator, token: str
) -> None:
    first, second = await recordings(api, 2)
    location = (await api.get(first["contentUri"])).headers["location"]
    assert (await admin(emulator, "DELETE", "/storage/requests")).status_code == 204
    assert (await storage_log(emulator))["requests"] == []
    async with httpx.AsyncClient(timeout=30) as plain:
        # A client that leaks the token is served all the same, and the log shows it.
        leaked = await plain.get(location, headers={"Authorization": f"Bearer {token}"})
        assert leaked.status_code == 200
        log = (await storage_log(emulator))["requests"]
        assert log[-1]["headers"]["authorization"] == f"Bearer {token}"
        with pytest.raises(AssertionError):
            assert_no_token_reached_storage(log, [token])
        # The signed path is not transferable or forgeable.
        parts = urlsplit(location)
        other = location.replace(f"/{first['id']}?", f"/{second['id']}?")
        assert (await plain.get(other)).status_code == 403
        forged = location.replace(parts.path.split("/")[2], "0" * 64)
        assert (await plain.get(forged)).status_code == 403
        expired = location.replace(parse_qs(parts.query)["expires"][0], "1000000000")
        assert (await plain.get(expired)).status_code == 403
        assert (await plain.get(location.split("?")[0])).status_code == 403
        assert (await plain.get(f"{parts.scheme}://{parts.netloc}/elsewhere")).status_code == 404
    assert len((await storage_log(emulator))["requests"]) == 6  # every request, whatever its fate


async def test_stats_and_switching_the_fault(api: httpx.AsyncClient, emulator: Emulator) -> None:
    rec = (await recordings(api, 1))[0]
    await admin(emulator, "POST", "/stats/reset")
    body = (await api.get(rec["contentUri"], follow_redirects=True)).content
    stats = (await admin(emulator, "GET", "/stats")).json()
    assert stats["requests"] == {"readCallRecordingContent": 1}
    assert stats["content_bytes"] == len(body)
    assert (await admin(emulator, "PUT", "/faults", json={})).status_code == 204
    direct = await api.get(rec["contentUri"])
    assert direct.status_code == 200 and direct.content == body
    assert (await admin(emulator, "PUT", "/faults", json={"redirect": 1})).status_code == 204
    assert (await api.get(rec["contentUri"])).status_code == 302
    assert (await admin(emulator, "PUT", "/audio-format", json={"format": "wav"})).status_code == 204
    wav = await api.get(rec["contentUri"], follow_redirects=True)
    assert wav.headers["content-type"] == "audio/wav" and wav.content[:4] == b"RIFF"
