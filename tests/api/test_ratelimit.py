"""The per-group limiter under trio's autojump clock (no real sleeps)."""

from __future__ import annotations

import math

import pytest
import trio

from rcfs.api.groups import Budget
from rcfs.api.priority import Priority, Urgency
from rcfs.api.ratelimit import BULK_SHARE_EVERY, GroupLimiter, RateLimiter


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def _run_requests(
    lim: RateLimiter,
    n: int,
    op: str = "readCallRecordingContent",
    latency: float = 0.1,
    remaining: bool = True,
) -> list[float]:
    sends: list[float] = []

    async def one() -> None:
        async with lim.slot(op, Priority.BACKGROUND) as ticket:
            sends.append(trio.current_time())
            await trio.sleep(latency)
            g = ticket.group
            headers = {
                "X-Rate-Limit-Group": "Heavy",
                "X-Rate-Limit-Limit": str(g.limit),
                "X-Rate-Limit-Window": f"{g.window:g}",
            }
            if remaining:
                used = sum(1 for s in sends if s > ticket.sent_at - g.window)
                headers["X-Rate-Limit-Remaining"] = str(max(0, g.limit - used))
            lim.observe(ticket, 200, headers)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return sends


async def test_never_exceeds_budget_and_uses_it(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter({"heavy": Budget(10, 60.0, 60.0)})
    t0 = trio.current_time()
    sends = await _run_requests(lim, 100)
    assert len(sends) == 100
    assert _max_in_window(sends, 60.0) <= 10
    elapsed = max(sends) - t0
    # 10 windows of 10: the last batch may go after 9 windows (+ margins, + the probe)
    assert 9 * 60 <= elapsed <= 9 * 60 * 1.05 + 1
    assert lim.group("heavy").sent == 100


async def test_probe_first_then_burst(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter()
    sends = await _run_requests(lim, 10, latency=1.0)
    t0 = min(sends)
    assert sorted(sends)[1] == pytest.approx(t0 + 1.0)  # the rest waited for the first response
    assert all(s == pytest.approx(t0 + 1.0) for s in sorted(sends)[1:])


async def test_remaining_header_respected(autojump_clock: trio.abc.Clock) -> None:
    """Another process used 8 of 10: after the first response only 1 more goes this window."""
    lim = RateLimiter()
    g = lim.group("heavy")
    t = await g.acquire(Priority.BACKGROUND, "x")
    g.release(t)
    lim.observe(t, 200, {"X-Rate-Limit-Remaining": "1", "X-Rate-Limit-Limit": "10"})
    now = trio.current_time()
    t2 = await g.acquire(Priority.BACKGROUND, "x")
    g.release(t2)
    assert t2.sent_at == now
    t3 = await g.acquire(Priority.BACKGROUND, "x")
    assert t3.sent_at >= now + 60.0


async def test_limit_and_window_follow_headers(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter()
    g = lim.group("Heavy")
    t = await g.acquire(Priority.BACKGROUND, "readCallRecording")
    g.release(t)
    lim.observe(
        t, 200, {"x-rate-limit-limit": "3", "x-rate-limit-window": "2", "x-rate-limit-remaining": "2"}
    )
    assert (g.limit, g.window) == (3, 2.0)
    times = []
    for _ in range(7):
        tk = await g.acquire(Priority.BACKGROUND, "readCallRecording")
        g.release(tk)
        times.append(tk.sent_at)
    assert _max_in_window([t.sent_at, *times], 2.0) <= 3


async def test_429_pauses_whole_group(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter()
    g = lim.group("heavy")
    t = await g.acquire(Priority.INTERACTIVE, "a")
    g.release(t)
    lim.observe(t, 429, {"Retry-After": "45"})
    assert g.throttled_429 == 1
    start = trio.current_time()
    snap = lim.snapshot()["Heavy"]
    assert snap["paused_until"] is not None
    t2 = await g.acquire(Priority.INTERACTIVE, "a")
    assert t2.sent_at >= start + 45


async def test_429_without_retry_after_waits_30s(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter()
    g = lim.group("heavy")
    t = await g.acquire(Priority.INTERACTIVE, "a")
    g.release(t)
    start = trio.current_time()
    lim.observe(t, 429, {})
    t2 = await g.acquire(Priority.INTERACTIVE, "a")
    assert t2.sent_at >= start + 30


async def test_interactive_goes_before_queued_background(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter({"heavy": Budget(1, 10.0, 60.0)})
    g = lim.group("heavy")
    first = await g.acquire(Priority.BACKGROUND, "a")
    g.release(first)
    lim.observe(first, 200, {})
    order: list[str] = []

    async def req(name: str, prio: Priority) -> None:
        t = await g.acquire(prio, "a")
        order.append(name)
        g.release(t)

    async with trio.open_nursery() as n:
        for i in range(3):
            n.start_soon(req, f"bg{i}", Priority.BACKGROUND)
            await trio.sleep(0.1)  # start_soon order is not run order: enqueue one by one
        await trio.sleep(1)  # the background requests are queued
        n.start_soon(req, "fg", Priority.INTERACTIVE)
    assert order == ["fg", "bg0", "bg1", "bg2"]


async def test_cancelled_waiter_leaks_nothing(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter({"heavy": Budget(1, 10.0, 60.0)})
    g = lim.group("heavy")
    t = await g.acquire(Priority.BACKGROUND, "a")
    g.release(t)
    lim.observe(t, 200, {})
    with trio.move_on_after(3):
        await g.acquire(Priority.INTERACTIVE, "a")  # head of the queue, cancelled
    assert g.queued == 0 and g.in_flight == 0
    got = await g.acquire(Priority.BACKGROUND, "a")
    assert got.sent_at == pytest.approx(t.sent_at + 10 + g.margin(), abs=0.01)
    g.release(got)
    # a probe cancelled while in flight releases its slot
    lim2 = RateLimiter()
    g2 = lim2.group("heavy")
    with trio.move_on_after(1):
        async with lim2.slot("readCallRecording", Priority.BACKGROUND):
            await trio.sleep(10)
    assert g2.in_flight == 0
    with trio.fail_after(1):
        async with lim2.slot("readCallRecording", Priority.BACKGROUND):
            pass


async def test_group_header_remaps_operation(autojump_clock: trio.abc.Clock) -> None:
    lim = RateLimiter()
    assert lim.group_for("readCallRecordingContent").name == "Heavy"
    async with lim.slot("readCallRecordingContent", Priority.INTERACTIVE) as t:
        pass
    lim.observe(
        t,
        200,
        {
            "X-Rate-Limit-Group": "media-downloads",
            "X-Rate-Limit-Limit": "5",
            "X-Rate-Limit-Remaining": "4",
            "X-Rate-Limit-Window": "60",
        },
    )
    g = lim.group_for("readCallRecordingContent")
    assert g.name == "media-downloads" and g.limit == 5
    assert lim.group("MEDIA-DOWNLOADS") is g  # case-insensitive
    # 'heavy' in lower case is still the Heavy group
    async with lim.slot("readCallRecording", Priority.INTERACTIVE) as t2:
        pass
    lim.observe(t2, 200, {"X-Rate-Limit-Group": "heavy"})
    assert lim.group_for("readCallRecording") is lim.group("Heavy")


async def test_restamp_and_unsend(autojump_clock: trio.abc.Clock) -> None:
    g = GroupLimiter("Heavy", Budget(2, 10.0, 60.0))
    g._probed = True
    a = await g.acquire(Priority.BACKGROUND)
    await trio.sleep(1)
    assert a.restamp()
    assert a.sent_at == trio.current_time()
    b = await g.acquire(Priority.BACKGROUND)
    b.unsend()
    assert g.sent == 1
    assert g.snapshot()["remaining"] == 1
    assert math.isinf(g.paused_until) or g.paused_until < trio.current_time()


async def _queued_order(g: GroupLimiter, plan: list[tuple[str, Priority | Urgency]],
                        after: float = 1.0, raise_: tuple[Urgency, Priority] | None = None) -> list[str]:
    """Admit one request, queue `plan` one by one behind it, optionally raise an Urgency,
    and return the admission order."""
    first = await g.acquire(Priority.BACKGROUND, "a")
    g.release(first)
    g._probed = True
    order: list[str] = []

    async def req(name: str, prio: Priority | Urgency) -> None:
        t = await g.acquire(prio, "a")
        order.append(name)
        g.release(t)

    async with trio.open_nursery() as n:
        for name, prio in plan:
            n.start_soon(req, name, prio)
            await trio.sleep(0.01)  # start_soon order is not run order: enqueue one by one
        await trio.sleep(after)
        if raise_ is not None:
            raise_[0].raise_to(raise_[1])
    return order


async def test_bulk_gets_a_share_while_background_waits(autojump_clock: trio.abc.Clock) -> None:
    g = GroupLimiter("Heavy", Budget(1, 10.0, 60.0))
    plan: list[tuple[str, Priority | Urgency]] = [(f"bulk{i}", Priority.BULK) for i in range(3)]
    plan += [(f"bg{i}", Priority.BACKGROUND) for i in range(8)]
    order = await _queued_order(g, plan)
    # Background goes first, but every BULK_SHARE_EVERY-th admission is a bulk one.
    assert order[:BULK_SHARE_EVERY - 1] == ["bg0", "bg1", "bg2"][:BULK_SHARE_EVERY - 1]
    assert order[BULK_SHARE_EVERY - 1] == "bulk0"
    assert [o for o in order if o.startswith("bulk")] == ["bulk0", "bulk1", "bulk2"]
    positions = [order.index(f"bulk{i}") for i in range(2)]
    assert positions[1] - positions[0] == BULK_SHARE_EVERY


async def test_interactive_ignores_the_bulk_share(autojump_clock: trio.abc.Clock) -> None:
    g = GroupLimiter("Heavy", Budget(1, 10.0, 60.0))
    plan: list[tuple[str, Priority | Urgency]] = [("bulk", Priority.BULK)]
    plan += [(f"fg{i}", Priority.INTERACTIVE) for i in range(6)]
    order = await _queued_order(g, plan)
    assert order == [f"fg{i}" for i in range(6)] + ["bulk"]


async def test_raised_urgency_jumps_the_queue(autojump_clock: trio.abc.Clock) -> None:
    g = GroupLimiter("Heavy", Budget(1, 10.0, 60.0))
    urgent = Urgency(Priority.BULK)
    plan: list[tuple[str, Priority | Urgency]] = [(f"bulk{i}", Priority.BULK) for i in range(3)]
    plan += [("joined", urgent), ("bg", Priority.BACKGROUND)]
    order = await _queued_order(g, plan, raise_=(urgent, Priority.INTERACTIVE))
    assert order[0] == "joined"
    assert urgent.priority is Priority.INTERACTIVE and not urgent._waiting
    urgent.raise_to(Priority.BULK)  # never lowered
    assert urgent.priority is Priority.INTERACTIVE


async def test_a_reader_kept_waiting_is_logged_once_and_counted(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    g = GroupLimiter("Heavy", Budget(1, 10.0, 60.0))
    first = await g.acquire(Priority.BACKGROUND, "a")
    g.release(first)
    g._probed = True
    with caplog.at_level(logging.INFO, logger="rcfs.api.ratelimit"):
        async with trio.open_nursery() as n:
            async def read() -> None:
                t = await g.acquire(Priority.INTERACTIVE, "readCallRecordingContent")
                g.release(t)

            n.start_soon(read)
            await trio.sleep(1)
            snap = g.snapshot()
            assert snap["interactive_waiting"] == [
                {"position": 1, "op": "readCallRecordingContent", "waiting_s": 1.0}]
    waits = [r for r in caplog.records if "waits" in r.getMessage()]
    assert len(waits) == 1 and "readCallRecordingContent" in waits[0].getMessage()
    assert g.counters()["waits"] == 1 and g.counters()["waited_s"] >= 9
