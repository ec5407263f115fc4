"""The one retry policy, under trio's autojump clock."""

from __future__ import annotations

import itertools
import logging
import random

import pytest
import trio

from rcfs.api.retry import RetryPolicy, retrying
from rcfs.errors import ApiError, NotFound, RateLimited, TemporaryFailure


def _policy(**kw: object) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), **kw)  # type: ignore[arg-type]


async def test_retries_temporary_failures_until_success(autojump_clock: trio.abc.Clock) -> None:
    calls: list[float] = []

    async def fn() -> str:
        calls.append(trio.current_time())
        if len(calls) < 4:
            raise TemporaryFailure("boom")
        return "ok"

    assert await retrying(fn, what="op", policy=_policy(base_delay=1.0)) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # exponential with jitter in [0.5, 1] of 1, 2, 4
    for gap, base in zip(gaps, (1, 2, 4), strict=True):
        assert base * 0.5 <= gap <= base


@pytest.mark.parametrize("exc", [NotFound("x"), ApiError("x", 400, "CMN-101")])
async def test_other_errors_not_retried(autojump_clock: trio.abc.Clock, exc: Exception) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(type(exc)):
        await retrying(fn, what="op", policy=_policy())
    assert calls == 1


async def test_bounded_and_raises_last(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise TemporaryFailure(f"fail {calls}")

    start = trio.current_time()
    with pytest.raises(TemporaryFailure, match="fail 4"):
        await retrying(fn, what="op", policy=_policy(max_attempts=4, max_delay=2.0))
    assert calls == 4
    assert trio.current_time() - start <= 0.5 + 1 + 2  # delays capped by max_delay


async def test_honours_retry_after(autojump_clock: trio.abc.Clock) -> None:
    calls: list[float] = []

    async def fn() -> str:
        calls.append(trio.current_time())
        if len(calls) == 1:
            raise RateLimited("429", retry_after=60.0, group="Heavy")
        return "ok"

    await retrying(fn, what="op", policy=_policy())
    assert calls[1] - calls[0] >= 60.0


async def test_log_level_rises(autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rcfs.api.retry")

    async def fn() -> None:
        raise TemporaryFailure("down")

    with pytest.raises(TemporaryFailure):
        await retrying(fn, what="readX", policy=_policy(max_attempts=5))
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.DEBUG, logging.INFO, logging.INFO, logging.WARNING, logging.WARNING]
    assert "readX" in caplog.records[0].getMessage()
