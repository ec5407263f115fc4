"""The emulator's hooks for fault and security tests: issued tokens, record patches."""

from __future__ import annotations

import httpx

from rcfs.emulator import Emulator
from rcfs.emulator.records import merge_patch

LOG = "/restapi/v1.0/account/~/call-log"


def test_merge_patch_is_rfc_7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    assert merge_patch(target, {"a": None, "b": {"c": 9, "x": {"y": 1}}, "e": {"f": 1}}) == {
        "b": {"c": 9, "d": 3, "x": {"y": 1}}, "e": {"f": 1}}
    assert target == {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}  # not modified in place
    assert merge_patch(target, [1]) == [1]


async def test_tokens_lists_every_token_issued(
    emulator: Emulator, api: httpx.AsyncClient, token: str
) -> None:
    admin = emulator.info["server_url"] + "/__emulator/tokens"
    async with httpx.AsyncClient() as plain:
        tokens = (await plain.get(admin)).json()["tokens"]
    assert token in tokens
    assert any(t.startswith("rcfs-emu-rt-") for t in tokens)


async def test_record_patch_applies_and_is_removable(
    emulator: Emulator, api: httpx.AsyncClient
) -> None:
    params = {"dateFrom": "2000-01-01", "withRecording": "true", "perPage": "1000", "view": "Detailed"}
    record = (await api.get(LOG, params=params)).json()["records"][0]
    url = emulator.info["server_url"] + f"/__emulator/calls/{record['id']}/patch"
    async with httpx.AsyncClient() as plain:
        body = {"startTime": "never", "recording": {"contentUri": "http://127.0.0.1:9/x"}, "legs": None}
        assert (await plain.put(url, json=body)).status_code == 204
        patched = {r["id"]: r for r in (await api.get(LOG, params=params)).json()["records"]}[record["id"]]
        assert patched["startTime"] == "never" and "legs" not in patched
        assert patched["recording"]["contentUri"] == "http://127.0.0.1:9/x"
        assert patched["recording"]["id"] == record["recording"]["id"]
        assert (await plain.put(url, json={})).status_code == 204
        again = {r["id"]: r for r in (await api.get(LOG, params=params)).json()["records"]}[record["id"]]
        assert again == record
        missing = emulator.info["server_url"] + "/__emulator/calls/nope/patch"
        assert (await plain.put(missing, json={"a": 1})).status_code == 404
