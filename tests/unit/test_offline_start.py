"""Starting without the network: prefill's tolerated failure, the offline state, reconnecting.

The end-to-end version (a real mount, the emulator stopped and restarted on the
same ports) is tests/e2e/test_service.py::test_offline_start_serves_the_index_then_reconnects.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from rcfs.backfill import Backfill
from rcfs.connection import RECONNECT_DELAYS, Link, OfflineAware
from rcfs.errors import AuthError, TemporaryFailure
from rcfs.index import Index
from rcfs.models import epoch_ms
from rcfs.status import ErrorLog

from .calllog_fakes import NOW, FakeClient, history

UTC_ZONE = ZoneInfo("UTC")


def remount(client: FakeClient, index: Index, hours_later: float) -> Backfill:
    return Backfill(client, index, since=NOW - timedelta(days=3), tz=UTC_ZONE,
                    now=NOW + timedelta(hours=hours_later), clock=trio.current_time)


async def test_a_remount_without_the_network_keeps_its_index_listable(tmp_path: Path) -> None:
    client = FakeClient(records=history(20), page_size=250)
    index = Index(tmp_path / "i.sqlite")
    try:
        await remount(client, index, 0).prefill()
        covered, recordings = index.coverage, index.stats()["recordings"]
        assert recordings > 5
        assert covered.covers(epoch_ms(NOW - timedelta(days=3)), epoch_ms(NOW))
        client.fail_after_pages = 0  # every call-log read fails now: no network

        strict = remount(client, index, 6)
        with pytest.raises(TemporaryFailure):
            await strict.prefill()
        # The overlap forgotten for re-reading was not put back: its days would
        # need the network to list (what a first mount, or a strict one, accepts).
        assert not index.coverage.covers(epoch_ms(NOW - timedelta(hours=2)), epoch_ms(NOW))

        index.add_coverage(*covered.spans()[0])
        tolerant = remount(client, index, 6)
        assert await tolerant.prefill(tolerate_failure=True) is False
        assert tolerant.error is not None and "connection reset" in tolerant.error
        # Everything the earlier mount indexed is still indexed; only what is new is not.
        assert index.coverage.covers(epoch_ms(NOW - timedelta(days=3)), epoch_ms(NOW))
        assert not tolerant.complete()
        assert index.stats()["recordings"] == recordings
    finally:
        index.close()


async def test_auth_errors_are_never_tolerated(index: Index) -> None:
    client = FakeClient(records=history(5), page_size=250)
    await remount(client, index, 0).prefill()

    async def refused(*args: Any, **kw: Any) -> Any:
        raise AuthError("RingCentral refused the JWT login")
        yield  # an async generator, like iter_call_log

    client.iter_call_log = refused  # type: ignore[method-assign]
    with pytest.raises(AuthError):
        await remount(client, index, 6).prefill(tolerate_failure=True)


class FlakyLogin:
    """A client whose login fails `failures` times, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def login(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise TemporaryFailure("getToken: ConnectError: network unreachable")

    async def account_info(self, **kw: Any) -> dict[str, Any]:
        return {"id": "123"}


async def test_reconnect_retries_with_growing_pauses_then_refreshes(autojump_clock: Any) -> None:
    link, errors, client = Link(), ErrorLog(), FlakyLogin(failures=3)
    link.lost("cannot reach RingCentral (boot)")
    assert link.snapshot()["online"] is False and link.snapshot()["offline_since"]
    backs: list[bool] = []
    start = trio.current_time()
    await link.reconnect(client, errors, backs.append)  # type: ignore[arg-type]
    assert link.online and link.error is None and backs == [True]
    assert client.attempts == 4 and link.attempts == 4
    assert trio.current_time() - start == pytest.approx(sum(RECONNECT_DELAYS[:4]))
    # One error entry per distinct cause, not one per attempt.
    assert [e["cause"] for e in errors.snapshot()] == [
        "offline: cannot reach RingCentral (getToken: ConnectError: network unreachable); trying again"]


async def test_a_request_that_gets_through_ends_the_offline_state(autojump_clock: Any) -> None:
    link, client = Link(), FlakyLogin(failures=10**6)
    link.lost("cannot reach RingCentral (boot)")
    backs: list[bool] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(link.reconnect, client, ErrorLog(), backs.append)
        await trio.sleep(RECONNECT_DELAYS[0] + 1)  # one failed attempt
        link.reached()  # e.g. `rcfs refresh` got through
    assert link.online and backs == [False]  # no second refresh: the one that got through did it


async def test_offline_listings_come_from_the_index(index: Index) -> None:
    client = FakeClient(records=history(5), page_size=250)
    bf = remount(client, index, 0)
    link = Link()
    aware = OfflineAware(bf, link)
    assert not aware.complete()
    link.lost("boot")
    assert aware.complete()  # no day waits for the network
    await aware.ensure(epoch_ms(NOW - timedelta(days=1)), epoch_ms(NOW))
    assert client.windows == []
    link.reached()
    await aware.ensure(epoch_ms(NOW - timedelta(days=1)), epoch_ms(NOW))
    assert client.windows  # online again: read on demand
