"""A failed refresh is counted, recorded and raised as one line (rcfs/freshness.py).

Whatever fails under `Freshness.refresh` (the index on a full disk, or a bug)
becomes `refresh failed: <cause>`: in `failures`, in the error log, and as
the RcfsError the control socket hands to `rcfs refresh`; the poller goes on.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from rcfs import freshness
from rcfs.errors import RcfsError
from rcfs.freshness import Freshness
from rcfs.index import StateDiskFull
from rcfs.status import ErrorLog

pytestmark = pytest.mark.timeout(30)


class _Nothing:
    """The index, tree and content of a mount with nothing to settle."""

    def undecided_deleted(self) -> list[str]:
        return []

    def invalidate(self, starts: Any) -> set[int]:
        return set()


def make(errors: ErrorLog) -> Freshness:
    nothing: Any = _Nothing()
    return Freshness(client=nothing, index=nothing, vfs=nothing, content=nothing, errors=errors,
                     keep_deleted=True, poll_interval=3600)


@pytest.mark.parametrize("raised, cause", [
    (StateDiskFull("the state disk is full (/s/index.sqlite)"),
     "the state disk is full (/s/index.sqlite)"),
    (ValueError("boom"), "internal error: ValueError('boom') (the log has the traceback)"),
], ids=["disk-full", "bug"])
async def test_a_failed_refresh_is_one_counted_line(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, cause: str
) -> None:
    calls = 0

    async def failing(client: object, index: object) -> None:
        nonlocal calls
        calls += 1
        raise raised

    monkeypatch.setattr(freshness, "refresh", failing)
    errors = ErrorLog()
    fresh = make(errors)
    with pytest.raises(RcfsError) as exc:
        await fresh.refresh()
    assert str(exc.value) == f"refresh failed: {cause}"
    assert fresh.snapshot()["failures"] == 1
    assert [e["cause"] for e in errors.snapshot()] == [f"refresh failed: {cause}"]

    # The poller counts the next failure the same way and keeps going.
    async with trio.open_nursery() as nursery:
        await nursery.start(fresh.run)
        fresh.request()
        with trio.fail_after(5):
            while fresh.snapshot()["failures"] < 2:
                await trio.sleep(0.01)
        fresh.request()
        with trio.fail_after(5):
            while fresh.snapshot()["failures"] < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert calls == 3
    assert [e["cause"] for e in errors.snapshot()] == [f"refresh failed: {cause}"] * 3
