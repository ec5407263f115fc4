"""The emulator from the outside: RingCentral's own SDK, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from rcfs.emulator import EmulatorConfig, main
from rcfs.emulator.testing import emulator_in_thread, emulator_process, stop_process

pytestmark = pytest.mark.timeout(90)


def test_official_sdk_works_unmodified() -> None:
    from ringcentral import SDK

    with emulator_in_thread(EmulatorConfig(calls=150, seed=4, rate_limits="real")) as info:
        sdk = SDK(info["client_id"], info["client_secret"], info["server_url"])
        platform = sdk.platform()
        platform.login(jwt=info["jwt"])
        assert platform.logged_in()
        response = platform.get(
            "/restapi/v1.0/account/~/call-log",
            {"view": "Detailed", "withRecording": True, "dateFrom": "2000-01-01T00:00:00Z",
             "perPage": 10},
        )  # fmt: skip
        body = response.json_dict()
        assert len(body["records"]) == 10
        assert response.response().headers["X-Rate-Limit-Group"] == "Heavy"
        rec = body["records"][0]["recording"]
        meta = platform.get(rec["uri"]).json_dict()
        assert meta["id"] == rec["id"]
        content = platform.get(rec["contentUri"])  # the SDK's own download path
        assert content.response().headers["Content-Type"] == "audio/mpeg"
        assert content.body()[:3] == b"ID3"
        platform.refresh()
        assert platform.get("/restapi/v1.0/account/~/extension/~/call-log").ok()
        platform.logout()


def test_command_prints_info_and_stops_on_sigterm() -> None:
    with emulator_process("--calls", "30", "--seed", "9", "--rate-limits", "off") as (info, proc):
        assert set(info) == {
            "server_url", "media_url", "client_id", "client_secret", "jwt", "account_id",
        }  # fmt: skip
        assert info["server_url"].startswith("http://127.0.0.1:")
        stats = httpx.get(info["server_url"] + "/__emulator/stats", timeout=10)
        assert stats.status_code == 200
        assert stop_process(proc) == 0


def test_same_seed_same_credentials_and_account() -> None:
    with emulator_process("--calls", "5", "--seed", "21") as (a, _):
        pass
    with emulator_process("--calls", "5", "--seed", "21") as (b, _):
        pass
    keys = ("client_id", "client_secret", "jwt", "account_id")
    assert [a[k] for k in keys] == [b[k] for k in keys]


def test_sigint_exits_zero() -> None:
    with emulator_process("--calls", "5") as (_, proc):
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--rate-limits", "heavy=lots"],
        ["--faults", "5xx=2"],
        ["--faults", "explode=1"],
        ["--port", "70000"],
        ["--calls", "many"],
        ["--days", "0"],
        ["--bogus"],
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rcfs emulator: error:")


def test_module_entry_point_rejects_bad_option() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rcfs.emulator", "--faults", "latency=soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and "latency" in proc.stderr


def test_info_line_is_json_only() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcfs.emulator", "--calls", "3"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["jwt"].startswith("rcfs-emulator-jwt.")
    finally:
        stop_process(proc)
        assert proc.stdout is not None
        assert proc.stdout.read() == b""
        proc.stdout.close()
