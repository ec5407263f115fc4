"""Where the emulator was stricter or laxer than RingCentral, and what real accounts do.

Content-Disposition encoding, `Accept: application/json` on content, 405 with
`Allow`, `perPage` clamping, pages past the last, FSync's `recordCount` limit,
the call-log filters (`phoneNumber`, `telephonySessionId`, `showBlocked`,
`transport`), dates without a zone, empty parameters, `dateFrom` after
`dateTo`, recordings that exist only on legs, 429 without `Retry-After`, 503
with it, and ISync over 250 changes refused. Bodies are validated against
RingCentral's OpenAPI schemas.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from rcfs.emulator import Emulator, EmulatorConfig, parse_faults
from rcfs.emulator.account import Account
from rcfs.emulator.generate import LEG_ONLY_RATE
from rcfs.emulator.testing import OpenAPI, login, open_emulator

pytestmark = pytest.mark.timeout(90)

ALL_TIME = {"dateFrom": "2000-01-01T00:00:00Z"}
LOG = "/restapi/v1.0/account/~/call-log"
SYNC = "/restapi/v1.0/account/~/call-log-sync"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=600, seed=7, rate_limits="off", days=30)


async def admin(emulator: Emulator, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.request(method, emulator.info["server_url"] + "/__emulator" + path, **kw)


async def every(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every record of the whole history matching `params` (Detailed, 250 a page)."""
    records: list[dict[str, Any]] = []
    response = await api.get(LOG, params={**ALL_TIME, "view": "Detailed", "perPage": 250, **params})
    for _ in range(100):
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["records"]
        nxt = body["navigation"].get("nextPage")
        if nxt is None:
            return records
        response = await api.get(nxt["uri"])
    raise AssertionError("too many pages")


async def a_recording(api: httpx.AsyncClient) -> dict[str, Any]:
    body = (await api.get(LOG, params={**ALL_TIME, "withRecording": "true", "perPage": 1})).json()
    rec: dict[str, Any] = body["records"][0]["recording"]
    return rec


def assert_param_error(response: httpx.Response, openapi: OpenAPI, parameter: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    openapi.validate_response("InvalidRequest", body)
    assert body["errorCode"] == "CMN-101"
    assert body["errors"][0]["parameterName"] == parameter


def test_new_fault_keys_parse() -> None:
    parsed = parse_faults("no_retry_after=1,retry_after_503=7s,redirect=yes,isync_limit=true")
    assert (parsed["no_retry_after"], parsed["retry_after_503"], parsed["redirect"],
            parsed["isync_limit"]) == (True, 7, True, True)  # fmt: skip
    assert parse_faults("retry_after_503=1.2")["retry_after_503"] == 2  # whole seconds, rounded up
    assert parse_faults("retry_after_503=2m")["retry_after_503"] == 120
    assert parse_faults("retry_after_503=0")["retry_after_503"] is None
    off = parse_faults("")
    assert not off["no_retry_after"] and not off["redirect"] and not off["isync_limit"]
    assert off["retry_after_503"] is None
    for bad in ("redirect=2", "no_retry_after=maybe", "retry_after_503=soon", "isync_limit=-1"):
        with pytest.raises(ValueError):
            parse_faults(bad)


# -- 5. Content-Disposition ---------------------------------------------------------


def disposition_filename(header: str) -> str:
    """The name a user agent takes from a Content-Disposition value (filename* first)."""
    params = dict(
        part.strip().split("=", 1) for part in header.split(";")[1:] if "=" in part
    )
    if "filename*" in params:
        charset, _, encoded = params["filename*"].partition("''")
        assert charset == "UTF-8"
        return unquote(encoded, encoding="utf-8", errors="strict")
    return params["filename"].strip('"')


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("call.mp3", "call.mp3"),
        ("café.mp3", "cafe.mp3"),  # Latin-1, not ASCII
        ("Zoë's call ☎ 2026.mp3", "Zoe's call _ 2026.mp3"),
        ("通话录音.mp3", "____.mp3"),
        ('a"b\\c.mp3', "a_b_c.mp3"),
        ("emoji 😀;x=1.mp3", "emoji _;x=1.mp3"),
    ],
)
async def test_disposition_filenames_are_rfc_6266_encoded(
    api: httpx.AsyncClient, name: str, fallback: str
) -> None:
    rec = await a_recording(api)
    params = {"contentDisposition": "Attachment", "contentDispositionFilename": name}
    for method in ("GET", "HEAD"):
        response = await api.request(method, rec["contentUri"], params=params)
        assert response.status_code == 200, response.text
        header = response.headers["content-disposition"]
        assert header.isascii()
        assert header.startswith(f'attachment; filename="{fallback}"')
        assert ("filename*=" in header) == (name != fallback)
        assert disposition_filename(header) == name


@pytest.mark.parametrize("name", ["a\x00b.mp3", "line\r\nX-Evil: 1", "tab\there.mp3", "del\x7f", "c1\x85"])
async def test_unencodable_disposition_filenames_are_cmn_101(
    api: httpx.AsyncClient, openapi: OpenAPI, name: str
) -> None:
    rec = await a_recording(api)
    response = await api.get(rec["contentUri"], params={"contentDispositionFilename": name})
    assert_param_error(response, openapi, "contentDispositionFilename")
    bad = await api.get(rec["contentUri"], params={"contentDisposition": "Sideways"})
    assert_param_error(bad, openapi, "contentDisposition")
    # An empty parameter is absent: no header, no error.
    blank = {"contentDisposition": "", "contentDispositionFilename": ""}
    empty = await api.get(rec["contentUri"], params=blank)
    assert empty.status_code == 200 and "content-disposition" not in empty.headers


# -- 7. Accept, 405 -----------------------------------------------------------------


async def test_accept_json_on_content_is_refused(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    rec = await a_recording(api)
    for accept in ("application/json", "application/json; charset=utf-8",
                   "application/json, audio/*;q=0"):  # fmt: skip
        refused = await api.get(rec["contentUri"], headers={"Accept": accept})
        assert refused.status_code == 406, accept
        openapi.validate("ApiErrorResponseModel", refused.json())
    for accept in ("*/*", "audio/mpeg", "audio/*", "application/json, */*;q=0.1", "text/html"):
        served = await api.get(rec["contentUri"], headers={"Accept": accept})
        assert served.status_code == 200 and served.content[:3] == b"ID3", accept


async def test_405_carries_allow(api: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI) -> None:
    rec = await a_recording(api)
    cases = [
        ("POST", emulator.info["server_url"] + LOG, {"GET", "HEAD"}),
        ("DELETE", rec["contentUri"], {"GET", "HEAD"}),
        ("GET", emulator.info["server_url"] + "/restapi/oauth/token", {"POST"}),
        ("DELETE", emulator.info["server_url"] + "/__emulator/faults", {"GET", "HEAD", "PUT"}),
        ("POST", emulator.info["server_url"] + "/__emulator/storage/requests", {"GET", "HEAD", "DELETE"}),
    ]
    for method, url, allowed in cases:
        response = await api.request(method, url)
        assert response.status_code == 405, (method, url)
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed, (method, url)
        openapi.validate("ApiErrorResponseModel", response.json())


# -- 7. paging ----------------------------------------------------------------------


async def test_per_page_over_1000_is_clamped(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    for value in ("1001", "5000", "99999999999999999999999999999"):
        response = await api.get(LOG, params={**ALL_TIME, "perPage": value})
        assert response.status_code == 200, value
        body = response.json()
        openapi.validate("CallLogResponse", body)
        assert body["paging"]["perPage"] == 1000 and len(body["records"]) == 600
        assert "perPage=1000" in body["navigation"]["firstPage"]["uri"]
    for value in ("0", "-1", "1.5", "max2", "²"):
        assert_param_error(await api.get(LOG, params={"perPage": value}), openapi, "perPage")


async def test_page_past_the_last_is_empty_and_valid(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    for page in ("3", "1001", "123456789012345678901234567890"):
        response = await api.get(LOG, params={**ALL_TIME, "perPage": 300, "page": page})
        assert response.status_code == 200, page
        body = response.json()
        openapi.validate("CallLogResponse", body)
        assert body["records"] == []
        assert body["paging"] == {"perPage": 300}
        nav = body["navigation"]
        assert "nextPage" not in nav
        assert "page=2" in nav["lastPage"]["uri"] and "page=2" in nav["previousPage"]["uri"]
    last = (await api.get(LOG, params={**ALL_TIME, "perPage": 300, "page": 2})).json()
    openapi.validate("CallLogResponse", last)
    assert last["paging"] == {"page": 2, "perPage": 300, "pageStart": 300, "pageEnd": 599}
    # An empty window is page 1, empty.
    empty = await api.get(LOG, params={"dateFrom": "2001-01-01T00:00:00Z", "dateTo": "2001-01-02T00:00:00Z"})
    openapi.validate("CallLogResponse", empty.json())
    assert empty.json()["paging"] == {"page": 1, "perPage": 100} and empty.json()["records"] == []
    assert_param_error(await api.get(LOG, params={"page": "0"}), openapi, "page")


async def test_fsync_record_count_is_at_most_250(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    ok = await api.get(SYNC, params={"syncType": "FSync", "recordCount": 250})
    assert ok.status_code == 200
    openapi.validate("CallLogSyncResponse", ok.json())
    assert len(ok.json()["records"]) == 250
    for value in ("251", "1000", "99999999999999999999999999", "0", "x"):
        response = await api.get(SYNC, params={"syncType": "FSync", "recordCount": value})
        assert_param_error(response, openapi, "recordCount")


# -- 7. filters and dates ---------------------------------------------------------


async def test_phone_number_filter(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    everything = await every(api)
    external = [
        r for r in everything
        if r["from"].get("phoneNumber", "").startswith("+1") and r["internalType"] != "Usual"
    ]  # fmt: skip
    target = external[0]["from"]["phoneNumber"]  # E.164, e.g. +16505550123
    wanted = {r["id"] for r in everything
              if target in (r["from"].get("phoneNumber"), r["to"].get("phoneNumber"))}  # fmt: skip
    assert external[0]["id"] in wanted and len(wanted) < len(everything)
    for value in (target[1:], target):  # E.164 without the '+' (the spec's form), and with it
        got = await every(api, phoneNumber=value)
        assert {r["id"] for r in got} == wanted, value
    response = await api.get(LOG, params={**ALL_TIME, "phoneNumber": target[1:]})
    openapi.validate("CallLogResponse", response.json())
    assert await every(api, phoneNumber="19999999999") == []
    both = await api.get(LOG, params={"phoneNumber": target[1:], "extensionNumber": "101"})
    assert_param_error(both, openapi, "phoneNumber")


async def test_telephony_session_id_filter(api: httpx.AsyncClient) -> None:
    everything = await every(api)
    record = everything[17]
    got = await every(api, telephonySessionId=record["telephonySessionId"])
    assert [r["id"] for r in got] == [record["id"]]
    assert await every(api, telephonySessionId="s-nope") == []
    session = await every(api, sessionId=record["sessionId"])
    assert [r["id"] for r in session] == [record["id"]]


async def test_show_blocked_filter(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    everything = await every(api)
    blocked = [r for r in everything if r["result"] == "Blocked"]
    assert blocked and all(r["direction"] == "Inbound" and "recording" not in r for r in blocked)
    assert {r["id"] for r in await every(api, showBlocked="true")} == {r["id"] for r in everything}
    unblocked = await every(api, showBlocked="false")
    assert {r["id"] for r in unblocked} == {r["id"] for r in everything} - {r["id"] for r in blocked}
    assert_param_error(await api.get(LOG, params={"showBlocked": "sometimes"}), openapi, "showBlocked")


async def test_transport_filter(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    everything = await every(api)
    voip = await every(api, transport="VoIP")
    pstn = await every(api, transport="PSTN")
    assert voip and pstn
    assert all(r["transport"] == "VoIP" for r in voip) and all(r["transport"] == "PSTN" for r in pstn)
    assert len(voip) + len(pstn) == len(everything)
    assert len(await every(api, transport=["PSTN", "VoIP"])) == len(everything)
    assert_param_error(await api.get(LOG, params={"transport": "Carrier pigeon"}), openapi, "transport")


async def test_dates_without_zone_empty_parameters_and_reversed_windows(
    api: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    zoned = await api.get(LOG, params={"dateFrom": "2000-01-01T00:00:00Z", "perPage": 1000})
    for value in ("2000-01-01T00:00:00", "2000-01-01"):  # no zone: UTC
        bare = await api.get(LOG, params={"dateFrom": value, "perPage": 1000})
        assert bare.status_code == 200
        assert [r["id"] for r in bare.json()["records"]] == [r["id"] for r in zoned.json()["records"]]
    # Empty parameters are absent: the defaults apply.
    default = await api.get(LOG)
    empty = await api.get(
        LOG,
        params={"dateFrom": "", "dateTo": "", "perPage": "", "page": "", "view": "", "type": "",
                "direction": "", "recordingType": "", "withRecording": "", "showDeleted": "",
                "showBlocked": "", "transport": "", "phoneNumber": "", "telephonySessionId": "",
                "extensionNumber": "", "sessionId": ""},
    )  # fmt: skip
    assert empty.status_code == 200, empty.text
    openapi.validate("CallLogResponse", empty.json())
    assert [r["id"] for r in empty.json()["records"]] == [r["id"] for r in default.json()["records"]]
    assert empty.json()["paging"] == default.json()["paging"]
    # dateFrom after dateTo: 400; equal: an empty window.
    reversed_ = await api.get(
        LOG, params={"dateFrom": "2026-01-02T00:00:00Z", "dateTo": "2026-01-01T00:00:00Z"}
    )
    assert_param_error(reversed_, openapi, "dateFrom")
    future = await api.get(LOG, params={"dateFrom": "2999-01-01T00:00:00Z"})  # dateTo: now
    assert_param_error(future, openapi, "dateFrom")
    same = await api.get(LOG, params={"dateFrom": "2026-01-01T00:00:00Z", "dateTo": "2026-01-01T00:00:00Z"})
    assert same.status_code == 200 and same.json()["records"] == []
    extreme = await api.get(LOG, params={"dateTo": "0001-01-01T00:00:00Z"})
    assert extreme.status_code == 200
    openapi.validate("CallLogResponse", extreme.json())


# -- 6. recordings only on legs ----------------------------------------------------


def test_a_seeded_fraction_of_multi_leg_calls_carry_recordings_only_on_legs() -> None:
    account = Account(21, 6000, 60, end=1.8e9)
    legged = [c for c in account.calls() if len(c.legs) > 1]
    only = [c for c in legged if c.recording is None]
    assert len(legged) > 50
    assert 0.5 * LEG_ONLY_RATE < len(only) / len(legged) < 1.5 * LEG_ONLY_RATE
    for call in only:
        master = call.legs[0]
        assert master.master and master.recording is not None
        assert account.recordings[master.recording.id] is master.recording
    again = Account(21, 6000, 60, end=1.8e9)
    assert [c.id for c in again.calls() if len(c.legs) > 1 and c.recording is None] == [
        c.id for c in only
    ]


async def test_leg_only_recordings_over_the_api(
    api: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI
) -> None:
    detailed = await every(api)
    only = [r for r in detailed if "recording" not in r and any("recording" in leg for leg in r["legs"])]
    assert only
    page = (await api.get(LOG, params={**ALL_TIME, "perPage": 1000})).json()
    simple = {r["id"]: r for r in page["records"]}
    listed = {r["id"] for r in (await admin(emulator, "GET", "/recordings")).json()["recordings"]}
    for record in only:
        openapi.validate("CallLogRecord", record)
        assert len(record["legs"]) > 1
        assert "recording" not in simple[record["id"]]
        rec = next(leg["recording"] for leg in record["legs"] if "recording" in leg)
        assert rec["id"] in listed
        meta = await api.get(rec["uri"])
        assert meta.status_code == 200
        openapi.validate("GetCallRecordingResponse", meta.json())
        assert (await api.get(rec["contentUri"], headers={"Range": "bytes=0-9"})).status_code == 206
    # On demand through the admin API.
    added = (await admin(emulator, "POST", "/calls", json={"count": 2, "legOnly": True})).json()
    for record in added["records"]:
        assert "recording" not in record
        full = (await api.get(f"{LOG}/{record['id']}", params={"view": "Detailed"})).json()
        openapi.validate("CallLogRecord", full)
        assert "recording" not in full
        assert any("recording" in leg for leg in full["legs"])
    bad = await admin(emulator, "POST", "/calls", json={"legOnly": "yes"})
    assert bad.status_code == 400
    unrecorded = await admin(emulator, "POST", "/calls", json={"legOnly": True, "recorded": False})
    assert unrecorded.status_code == 400


# -- 6. Retry-After -----------------------------------------------------------------


async def test_429_without_retry_after(emulator: Emulator, api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    assert (await admin(emulator, "PUT", "/rate-limits", json={"heavy": "1/60s"})).status_code == 204
    assert (await admin(emulator, "PUT", "/faults", json={"no_retry_after": 1})).status_code == 204
    assert (await api.get(LOG)).status_code == 200
    throttled = await api.get(LOG)
    assert throttled.status_code == 429
    assert "retry-after" not in throttled.headers
    assert throttled.headers["X-Rate-Limit-Group"] == "Heavy"
    assert throttled.json()["errorCode"] == "CMN-301"
    openapi.validate("ApiErrorResponseModel", throttled.json())
    assert (await admin(emulator, "PUT", "/faults", json={})).status_code == 204
    assert (await api.get(LOG)).headers["Retry-After"] == "60"  # the default is back


async def test_503_with_retry_after() -> None:
    config = EmulatorConfig(calls=10, seed=2, rate_limits="off", faults="retry_after_503=7")
    async with open_emulator(config) as emu, httpx.AsyncClient(timeout=30) as client:
        token = (await login(client, emu.info))["access_token"]
        url = emu.info["server_url"]
        assert (await client.put(url + "/__emulator/faults",
                                 json={"5xx": 1, "retry_after_503": "7s"})).status_code == 204  # fmt: skip
        response = await client.get(url + LOG, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json()["errorCode"] == "CMN-201"
        await client.put(url + "/__emulator/faults", json={"5xx": 1})
        plain = await client.get(url + LOG, headers={"Authorization": f"Bearer {token}"})
        assert plain.status_code == 503 and "retry-after" not in plain.headers


# -- 6. ISync over 250 changes ----------------------------------------------------


async def test_isync_over_250_changes_refused_under_the_fault(
    emulator: Emulator, api: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    full = (await api.get(SYNC, params={"syncType": "FSync", "recordCount": 1})).json()
    token = full["syncInfo"]["syncToken"]
    assert (await admin(emulator, "PUT", "/faults", json={"isync_limit": True})).status_code == 204
    await admin(emulator, "POST", "/calls", json={"count": 250})
    exactly = await api.get(SYNC, params={"syncType": "ISync", "syncToken": token})
    assert exactly.status_code == 200 and len(exactly.json()["records"]) == 250
    await admin(emulator, "POST", "/calls", json={"count": 1})
    refused = await api.get(SYNC, params={"syncType": "ISync", "syncToken": token})
    assert_param_error(refused, openapi, "syncToken")
    assert "max sync record number limit is exceeded" in refused.json()["message"]
    # Without the fault: paged at 250, the default.
    assert (await admin(emulator, "PUT", "/faults", json={})).status_code == 204
    paged = await api.get(SYNC, params={"syncType": "ISync", "syncToken": token})
    assert paged.status_code == 200 and len(paged.json()["records"]) == 250
    openapi.validate("CallLogSyncResponse", paged.json())
