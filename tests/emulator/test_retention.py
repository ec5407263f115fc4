"""Recording retention: the count and age rules, their admin API and options, and their cost."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import trio

from rcfs.emulator import Emulator, EmulatorConfig
from rcfs.emulator.account import Account
from rcfs.emulator.config import retention_from_json
from rcfs.emulator.model import Call, Recording
from rcfs.emulator.server import config_from_args, main
from rcfs.emulator.testing import OpenAPI, emulator_process, open_emulator

pytestmark = pytest.mark.timeout(60)

T = 1.8e9  # the generated history of the unit tests ends here (epoch seconds)
SYNC = "/restapi/v1.0/account/~/call-log-sync"
LOG = "/restapi/v1.0/account/~/call-log"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=300, seed=6, rate_limits="off", days=10)  # 5 legged recordings


def alive(call: Call) -> list[Recording]:
    return [] if call.deleted else [r for r in call.recordings() if not r.deleted]


def existing(account: Account) -> list[Recording]:
    """Every recording that exists, oldest call first (the order retention deletes in)."""
    return [r for c in account.calls() for r in alive(c)]


def check_invariants(account: Account) -> None:
    """The running count is exact and no recording exists behind the cursor."""
    calls = list(account.calls())
    assert account.live_recordings == len(existing(account))
    assert not any(alive(c) for c in calls[: account.retention_cursor])


async def admin(emulator: Emulator, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.request(method, emulator.info["server_url"] + "/__emulator" + path, **kw)


def live_account(emulator: Emulator) -> Account:
    assert emulator.state is not None
    return emulator.state.account


# -- the rules on the account (no I/O) ----------------------------------------


def test_count_keeps_the_newest_at_once_and_when_calls_arrive() -> None:
    account = Account(11, 400, 20, end=T)
    everything = existing(account)
    assert len(everything) > 60
    account.set_retention(50, None, T)
    assert existing(account) == everything[-50:]
    assert account.retention_deleted == len(everything) - 50
    for rec in everything[:-50]:  # deleted like DELETE /__emulator/recordings/{id}
        assert rec.deleted and rec.call.rec_touched and rec.call.seq > 0
        assert account.call(rec.call.id) is not None  # the record stays
        assert account.recording(rec.id, T) is None
    check_invariants(account)

    added = account.add_calls(3, T + 10, recorded=True)
    new = [r for c in added for r in c.recordings()]
    assert len(new) >= 3
    kept = everything[-50 + len(new) :]
    assert {r.id for r in existing(account)} == {r.id for r in kept + new}
    assert account.live_recordings == 50
    assert account.retention_deleted == len(everything) - 50 + len(new)
    assert all(account.recording(r.id, T + 10) is not None for r in new)
    check_invariants(account)


def test_count_zero_and_off() -> None:
    account = Account(11, 200, 20, end=T)
    total = len(existing(account))
    account.set_retention(None, None, T)
    assert account.retention_deleted == 0 and account.live_recordings == total
    account.set_retention(0, None, T)
    assert existing(account) == [] and account.retention_deleted == total
    assert account.retention_cursor == len(account)
    check_invariants(account)
    with pytest.raises(ValueError):
        account.set_retention(-1, None, T)
    with pytest.raises(ValueError):
        account.set_retention(None, 0.0, T)


def test_deleted_records_and_recordings_no_longer_count() -> None:
    account = Account(11, 300, 20, end=T)
    everything = existing(account)
    account.set_retention(30, None, T)
    newest = existing(account)
    assert account.delete_recording(newest[-1].id, T)  # the admin deletions
    assert account.delete_call(newest[-2].call.id, T)
    gone = {newest[-1].id} | {r.id for r in newest[-2].call.recordings()}
    check_invariants(account)
    assert account.live_recordings == 30 - len(gone)
    account.add_calls(len(gone), T + 5, recorded=True, direction="Outbound")
    assert account.live_recordings == 30
    assert account.retention_deleted == len(everything) - 30  # room was made: none went
    check_invariants(account)


def test_age_deletes_as_time_passes() -> None:
    account = Account(12, 400, 2, end=T)
    everything = existing(account)
    age = 6 * 3600.0

    def expected(now: float) -> list[Recording]:
        return [r for r in everything if r.call.start_ms >= (now - age) * 1000]

    account.set_retention(None, age, T)
    assert 0 < len(existing(account)) == len(expected(T)) < len(everything)
    check_invariants(account)
    before = T
    for now in (T + 60, T + 600, T + 3600, T + 2 * 3600, T + 4 * 3600):
        due = [r for r in expected(before) if r.call.start_ms < (now - age) * 1000]
        if due:  # consulting the account is enough: a look-up applies the rule first
            assert account.recording(due[-1].id, now) is None
        else:
            account.tick(now)
        assert existing(account) == expected(now)
        check_invariants(account)
        before = now
    assert len(expected(T + 4 * 3600)) < len(expected(T))
    gone = everything[0]
    # The change is dated when the recording's age passed the limit, not when noticed.
    assert gone.call.modified_ms == int(gone.call.start_ms + age * 1000) < T * 1000
    assert account.retention_deleted == len(everything) - len(expected(T + 4 * 3600))
    account.tick(T + 3 * 86_400)
    assert existing(account) == [] and account.retention_cursor == len(account)


def test_calls_added_behind_the_cursor() -> None:
    account = Account(14, 300, 10, end=T)
    account.set_retention(40, None, T)
    kept = {r.id for r in existing(account)}
    cursor = account.retention_cursor
    oldest = next(iter(account.calls())).start_ms / 1000
    # An unrecorded call in the past shifts the cursor by one.
    account.add_calls(1, T, start=oldest + 1, recorded=False)
    assert account.retention_cursor == cursor + 1
    check_invariants(account)
    # A recorded call in the past is now the oldest recording: it goes at once.
    (past,) = account.add_calls(1, T, start=oldest + 2, recorded=True)
    assert all(r.deleted for r in past.recordings())
    assert {r.id for r in existing(account)} == kept
    check_invariants(account)

    # With the rule off, a past recording survives; once it is on, it goes first.
    account.set_retention(None, None, T)
    (past,) = account.add_calls(1, T, start=oldest + 3, recorded=True)
    assert account.retention_cursor <= list(account.calls()).index(past)
    check_invariants(account)
    account.set_retention(40, None, T)
    assert all(r.deleted for r in past.recordings())
    assert {r.id for r in existing(account)} == kept
    # An old call past the age limit goes as soon as it is added.
    account.set_retention(None, 3600, T)
    (stale,) = account.add_calls(1, T, start=T - 7200, recorded=True)
    assert all(r.deleted for r in stale.recordings())
    # Exactly the limit is not longer ago than it.
    (edge,) = account.add_calls(1, T, start=T - 3600, recorded=True, direction="Outbound")
    assert account.recording(edge.recordings()[0].id, T) is not None
    assert account.recording(edge.recordings()[0].id, T + 0.001) is None
    check_invariants(account)


def test_legs_recordings_are_retained_one_by_one() -> None:
    account = Account(13, 2000, 30, end=T)
    everything = existing(account)
    # A leg's own recording on a call that has a top-level one too.
    i = next(
        i for i, r in enumerate(everything) if r.call.recording not in (None, r)
    )
    leg_rec = everything[i]
    call, top = leg_rec.call, everything[i - 1]
    assert call.recording is top
    assert any(leg.recording is leg_rec for leg in call.legs)
    account.set_retention(len(everything) - i, None, T)  # up to the call's own recording
    assert top.deleted and not leg_rec.deleted
    assert list(account.calls())[account.retention_cursor] is call
    assert account.recording(leg_rec.id, T) is leg_rec
    check_invariants(account)
    account.set_retention(len(everything) - i - 1, None, T)
    assert leg_rec.deleted and account.recording(leg_rec.id, T) is None
    assert list(account.calls())[account.retention_cursor - 1] is call
    check_invariants(account)


def test_a_100k_call_account_stays_cheap() -> None:
    """Work is counted, not timed: each call is stepped over once in the account's life."""
    account = Account(3, 100_000, 365, end=T)
    calls = list(account.calls())
    total = account.live_recordings
    assert total > 40_000

    account.set_retention(total - 1000, None, T)
    first = next(i for i, c in enumerate(calls) if alive(c))
    # The cursor stopped at the first call still holding a recording, and the
    # walk examined each call up to it once (plus the one it stopped in).
    assert account.retention_cursor == first
    assert first <= account.retention_steps <= first + 1
    assert account.retention_deleted == 1000

    steps = account.retention_steps
    newest = existing(account)[-1]
    started = time.perf_counter()
    for i in range(10_000):  # nothing due: no call examined
        account.tick(T + i / 1000)
        assert account.recording(newest.id, T) is newest
    print(f"10,000 idle ticks on 100,000 calls: {time.perf_counter() - started:.3f} s")
    assert account.retention_steps == steps

    cursor = account.retention_cursor
    account.add_calls(1, T + 20, recorded=True)
    moved = account.retention_cursor - cursor
    assert 0 <= moved <= account.retention_steps - steps <= moved + 1
    assert moved < 50  # the next recorded call is near

    # Age: a day of wall time passing in 1,000 ticks examines each call once.
    account.set_retention(None, 350 * 86_400.0, T)
    cursor, steps = account.retention_cursor, account.retention_steps
    assert calls[cursor - 1].start_ms < (T - 350 * 86_400) * 1000 <= calls[cursor].start_ms
    for i in range(1, 1001):
        account.tick(T + i * 86.4)
    assert account.retention_steps - steps == account.retention_cursor - cursor > 100
    cutoff_ms = (T + 86_400 - 350 * 86_400) * 1000
    calls = list(account.calls())
    assert calls[account.retention_cursor - 1].start_ms < cutoff_ms
    assert all(c.start_ms >= cutoff_ms for c in list(account.calls())[account.retention_cursor :])
    check_invariants(account)


def test_retention_json_grammar() -> None:
    assert retention_from_json({}) == {}
    assert retention_from_json({"count": 5, "duration": "10m"}) == {"count": 5, "duration_s": 600.0}
    assert retention_from_json({"count": None, "duration": 90}) == {"count": None, "duration_s": 90.0}
    assert retention_from_json({"duration": None}) == {"duration_s": None}
    for bad in ({"count": -1}, {"count": "5"}, {"count": True}, {"count": 1.5},
                {"duration": "soon"}, {"duration": "0s"}, {"duration": -5}, {"duration": [1]},
                {"keep": 1}, [1]):  # fmt: skip
        with pytest.raises(ValueError):
            retention_from_json(bad)


# -- the admin API --------------------------------------------------------------


async def test_admin_get_and_put(emulator: Emulator) -> None:
    account = live_account(emulator)
    total = account.live_recordings
    assert (await admin(emulator, "GET", "/retention")).json() == {
        "count": None, "duration_s": None, "deleted": 0}  # fmt: skip
    assert (await admin(emulator, "PUT", "/retention", json={"count": 5})).status_code == 204
    assert (await admin(emulator, "GET", "/retention")).json() == {
        "count": 5, "duration_s": None, "deleted": total - 5}  # fmt: skip
    listed = (await admin(emulator, "GET", "/recordings")).json()["recordings"]
    assert {r["id"] for r in listed} == {r.id for r in existing(account)[-5:]}

    assert (await admin(emulator, "PUT", "/retention", json={"duration": "720h"})).status_code == 204
    state = (await admin(emulator, "GET", "/retention")).json()
    assert state == {"count": 5, "duration_s": 2_592_000, "deleted": total - 5}
    assert (await admin(emulator, "PUT", "/retention", json={"count": None})).status_code == 204
    state = (await admin(emulator, "GET", "/retention")).json()
    assert state == {"count": None, "duration_s": 2_592_000, "deleted": total - 5}

    for bad in ({"count": -1}, {"count": "5"}, {"count": True}, {"duration": "soon"},
                {"duration": 0}, {"ttl": "1m"}, [5]):  # fmt: skip
        response = await admin(emulator, "PUT", "/retention", json=bad)
        assert response.status_code == 400, bad
        reason = response.json()["error"]
        assert reason and "\n" not in reason
    assert (await admin(emulator, "PUT", "/retention", content=b"{")).status_code == 400
    # A refused body changes nothing.
    assert (await admin(emulator, "GET", "/retention")).json() == state


async def test_new_calls_push_the_oldest_out(emulator: Emulator, api: httpx.AsyncClient) -> None:
    account = live_account(emulator)
    before = existing(account)
    count = len(before)
    assert (await admin(emulator, "PUT", "/retention", json={"count": count})).status_code == 204
    body = {"count": 2, "recorded": True, "duration": 60, "direction": "Outbound"}  # no legs
    added = (await admin(emulator, "POST", "/calls", json=body)).json()["records"]
    assert all("recording" in r for r in added)
    assert (await admin(emulator, "GET", "/retention")).json()["deleted"] == 2
    newest = (await api.get(LOG, params={"perPage": 2, "withRecording": "true"})).json()
    assert [r["id"] for r in newest["records"]] == [r["id"] for r in added]
    for rec in before[:2]:
        assert (await api.get(f"/restapi/v1.0/account/~/recording/{rec.id}")).status_code == 404
    assert existing(account)[0] is before[2]


async def test_isync_reports_retention_and_the_recordings_404(
    emulator: Emulator, api: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    account = live_account(emulator)
    fsync = await api.get(SYNC, params={"syncType": "FSync", "recordCount": 10})
    token = fsync.json()["syncInfo"]["syncToken"]
    gone = existing(account)[:3]
    put = await admin(emulator, "PUT", "/retention", json={"count": account.live_recordings - 3})
    assert put.status_code == 204

    response = await api.get(
        SYNC, params={"syncType": "ISync", "syncToken": token, "withRecording": "true"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    openapi.validate("CallLogSyncResponse", body)
    assert {r["id"] for r in body["records"]} == {rec.call.id for rec in gone}
    for record in body["records"]:
        assert "deleted" not in record  # the record is present, only its recording went
        if any(rec is rec.call.recording and rec.call.id == record["id"] for rec in gone):
            assert "recording" not in record

    for rec in gone:
        meta = await api.get(f"/restapi/v1.0/account/~/recording/{rec.id}")
        assert meta.status_code == 404
        openapi.validate_response("NotFound", meta.json())
        media = emulator.info["media_url"]
        content = await api.get(f"{media}/restapi/v1.0/account/~/recording/{rec.id}/content")
        assert content.status_code == 404
        openapi.validate("ApiErrorResponseModel", content.json())
        assert (await admin(emulator, "GET", f"/recordings/{rec.id}/content")).status_code == 404
        assert (await admin(emulator, "DELETE", f"/recordings/{rec.id}")).status_code == 404
    quiet = await api.get(SYNC, params={"syncType": "ISync", "syncToken": body["syncInfo"]["syncToken"]})
    assert quiet.json()["records"] == []


async def test_legs_recordings_over_the_api(
    emulator: Emulator, api: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    account = live_account(emulator)
    everything = existing(account)
    # A leg's own recording on a call that has a top-level one too.
    i = next(
        i for i, r in enumerate(everything) if r.call.recording not in (None, r)
    )
    leg_rec, call = everything[i], everything[i].call
    put = await admin(emulator, "PUT", "/retention", json={"count": len(everything) - i})
    assert put.status_code == 204
    assert call.recording is not None
    record = (await api.get(f"{LOG}/{call.id}", params={"view": "Detailed"})).json()
    openapi.validate("CallLogRecord", record)
    assert "recording" not in record
    assert [leg["recording"]["id"] for leg in record["legs"] if "recording" in leg] == [leg_rec.id]
    top = await api.get(f"/restapi/v1.0/account/~/recording/{call.recording.id}")
    assert top.status_code == 404
    meta = await api.get(f"/restapi/v1.0/account/~/recording/{leg_rec.id}")
    assert meta.status_code == 200
    openapi.validate("GetCallRecordingResponse", meta.json())


async def test_age_over_the_api_as_time_passes(emulator: Emulator, api: httpx.AsyncClient) -> None:
    account = live_account(emulator)
    total = account.live_recordings
    put = await admin(emulator, "PUT", "/retention", json={"duration": "3s"})
    assert put.status_code == 204  # the whole generated history is older than that
    assert (await admin(emulator, "GET", "/recordings")).json()["recordings"] == []
    started = time.time()
    body = {"count": 1, "direction": "Outbound"}  # one recording (no legs)
    (record,) = (await admin(emulator, "POST", "/calls", json=body)).json()["records"]
    rid = record["recording"]["id"]
    assert (await api.get(f"/restapi/v1.0/account/~/recording/{rid}")).status_code == 200
    await trio.sleep(max(0.0, started + 3.3 - time.time()))
    # Nothing else happened: the look-up itself notices the recording's age.
    assert (await api.get(f"/restapi/v1.0/account/~/recording/{rid}")).status_code == 404
    after = (await api.get(f"{LOG}/{record['id']}")).json()
    assert "recording" not in after
    assert (await admin(emulator, "GET", "/retention")).json()["deleted"] == total + 1


async def test_count_applies_at_start() -> None:
    config = EmulatorConfig(calls=300, seed=6, rate_limits="off", days=10, retention_count=7)
    async with open_emulator(config) as emu:
        state = (await admin(emu, "GET", "/retention")).json()
        assert state["count"] == 7 and state["duration_s"] is None and state["deleted"] > 100
        assert len((await admin(emu, "GET", "/recordings")).json()["recordings"]) == 7


# -- the command line -------------------------------------------------------------


def test_command_line_options(capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = config_from_args(["--retention-count", "100000", "--retention", "10m"])
    assert config.retention_count == 100_000 and config.retention == "10m"
    config, _ = config_from_args([])
    assert config.retention_count is None and config.retention is None
    for bad in (["--retention-count", "-1"], ["--retention-count", "x"],
                ["--retention", "soon"], ["--retention", "0"]):  # fmt: skip
        assert main(bad) == 2
    assert "rcfs emulator: error:" in capsys.readouterr().err
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "--retention-count N" in usage and "--retention DURATION" in usage
    with pytest.raises(ValueError):
        Emulator(EmulatorConfig(retention="2 weeks"))


def test_command_line_applies_both_rules() -> None:
    args = ("--rate-limits", "off", "--calls", "300", "--days", "10", "--seed", "6",
            "--retention-count", "20", "--retention", "48h")  # fmt: skip
    with emulator_process(*args) as (info, _):
        state = httpx.get(info["server_url"] + "/__emulator/retention", timeout=10).json()
        recs = httpx.get(info["server_url"] + "/__emulator/recordings", timeout=10).json()
    assert state["count"] == 20 and state["duration_s"] == 172_800 and state["deleted"] > 100
    assert 0 < len(recs["recordings"]) <= 20
