"""Option grammar, the throttling-group map, and generation speed."""

from __future__ import annotations

import time

import pytest

from rcfs.emulator import parse_faults, parse_rate_limits
from rcfs.emulator.account import Account
from rcfs.emulator.config import Limit
from rcfs.emulator.ratelimit import OPERATION_GROUPS
from rcfs.emulator.testing import OpenAPI


def test_parse_rate_limits() -> None:
    assert parse_rate_limits("off") == {}
    assert parse_rate_limits("real")["Heavy"] == Limit(10, 60.0, 60.0)
    custom = parse_rate_limits("heavy=10/2s,medium=40/2s,light=50/2s,auth=5/2s")
    assert custom == {
        "Heavy": Limit(10, 2.0, 2.0),
        "Medium": Limit(40, 2.0, 2.0),
        "Light": Limit(50, 2.0, 2.0),
        "Auth": Limit(5, 2.0, 2.0),
    }
    assert parse_rate_limits("HEAVY=3/1m/30s") == {"Heavy": Limit(3, 60.0, 30.0)}
    for bad in ("heavy", "heavy=0/2s", "heavy=3/0s", "heavy=3/xs", "he avy=1/1s"):
        with pytest.raises(ValueError):
            parse_rate_limits(bad)


def test_parse_faults() -> None:
    parsed = parse_faults(
        "5xx=0.05,reset=0.05,latency=200ms,token_ttl=30s,no_length=1,late_recording=60s"
    )
    assert parsed == {
        "5xx": 0.05,
        "reset": 0.05,
        "latency": 0.2,
        "token_ttl": 30.0,
        "no_length": True,
        "late_recording": 60.0,
        "lie_length": None,
        "trickle": None,
        "stall_after": None,
        "no_retry_after": False,
        "retry_after_503": None,
        "redirect": False,
        "isync_limit": False,
    }
    assert parse_faults("")["token_ttl"] is None
    hostile = parse_faults("lie_length=1000000000000,trickle=1,stall_after=1000")
    assert (hostile["lie_length"], hostile["trickle"], hostile["stall_after"]) == (10**12, 1, 1000)
    assert parse_faults("stall_after=0")["stall_after"] is None
    for bad in ("5xx=1.5", "reset=-1", "latency=soon", "boom=1", "no_length=2", "5xx",
                "trickle=fast", "lie_length=-3"):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_operation_groups_match_openapi(openapi: OpenAPI) -> None:
    for operation_id, group in OPERATION_GROUPS.items():
        assert openapi.operation(operation_id)["x-throttling-group"] == group, operation_id


def test_generation_is_deterministic() -> None:
    a, b = Account(42, 500, 30, end=1.8e9), Account(42, 500, 30, end=1.8e9)
    assert a.account_id == b.account_id
    assert [(c.id, c.start_ms, c.duration_ms) for c in a.calls()] == [
        (c.id, c.start_ms, c.duration_ms) for c in b.calls()
    ]
    assert sorted(a.recordings) == sorted(b.recordings)
    assert Account(43, 500, 30, end=1.8e9).account_id != a.account_id


@pytest.mark.timeout(60)
def test_generates_10k_recordings_quickly() -> None:
    started = time.perf_counter()
    account = Account(1, 21_000, 90, end=1.8e9)
    elapsed = time.perf_counter() - started
    assert len(account.recordings) >= 10_000
    assert elapsed < 10, f"{elapsed:.1f} s"
    starts = [c.start_ms for c in account.calls()]
    assert min(starts) >= 1.8e12 - 90 * 86_400_000 and max(starts) < 1.8e12
