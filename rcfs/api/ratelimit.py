"""Client-side rate limiting, one limiter per RingCentral rate-limit group.

Owns: when a request may be sent, in which order queued requests go, and the
per-group counters shown in status. It sends nothing itself and knows nothing
about HTTP beyond the values the client hands it.

How it works. RingCentral counts requests per group in a window (`limit`
requests per `window` seconds) and punishes a request over the limit with a
429 and a penalty that *every* request during it restarts. So:

- Each group keeps a sliding log of its send times. A request is admitted only
  if fewer than `limit` sends lie in the last `window + margin` seconds. The
  margin (a little latency jitter plus a fraction of the window) covers the
  server counting at arrival, not at our send. With work queued this sends
  exactly `limit` requests per window: the full budget, never more.
- Every response's `X-Rate-Limit-Limit/-Window` replace the budget and its
  `-Remaining` reconciles the log: if the server counted more requests than
  the log holds (another process, an earlier run), phantom entries are added
  so the difference is respected too. Until a group has seen one response
  (and again after a penalty) only one request is in flight: a probe that
  learns the server's count before a burst.
- A 429 pauses the whole group for Retry-After (30 s if absent); nothing is
  admitted until the pause ends.
- Waiters queue per priority, FIFO inside one: INTERACTIVE (a reader waits)
  always goes first; then BACKGROUND (polling, indexing, prefetch), then BULK
  (the archive's downloads). BULK is not starved: while both wait, every
  `BULK_SHARE_EVERY`-th admission goes to BULK, so a long index backfill
  still leaves the archive a share of the budget (the oldest recordings are
  the next to be deleted). Only the head of the queue waits for the clock;
  the others sleep on their own event and are woken in turn, so a wakeup
  costs O(1). A cancelled waiter leaves the queue in `finally`, and a slot is
  only taken once admitted.
- A request may carry an `Urgency` instead of a fixed priority: raising it
  (a reader opens a recording the archive is already fetching) moves the
  waiting request to the back of the higher queue at once.

Time is `trio.current_time()`, so tests run under `autojump_clock`.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from rcfs.api.groups import (
    DEFAULT_BUDGETS,
    DEFAULT_RETRY_AFTER,
    OPERATION_GROUPS,
    Budget,
    default_budget,
    display_name,
    group_key,
)
from rcfs.api.priority import Priority, PriorityLike, Urgency, Waiter

log = logging.getLogger(__name__)


# While BACKGROUND and BULK requests both wait, one admission in this many goes to BULK.
BULK_SHARE_EVERY = 4
# A reader's request that must wait this long for its slot is logged (once) and counted.
WAIT_NOTICE = 1.0


@dataclass(eq=False)
class Ticket:
    """One admitted request: its group and the send time recorded in the log."""

    group: GroupLimiter
    sent_at: float
    op: str
    sent: bool = True
    shared: Any = None  # the slot in a shared budget (rcfs.api.shared), if any

    def restamp(self) -> bool:
        """Move the recorded send time to now (the request was delayed after
        admission). False if sending now would break the budget or a pause;
        the caller must then `unsend()` and queue again."""
        return self.group._restamp(self)

    def unsend(self) -> None:
        """Give the slot back: the request was not sent after all."""
        self.group._unsend(self)


class GroupLimiter:
    """The sliding-log limiter and counters of one rate-limit group."""

    LATENCY_SAMPLES = 20

    def __init__(self, name: str, budget: Budget) -> None:
        self.name = display_name(name)
        self.limit = budget.limit
        self.window = budget.window
        self.default_penalty = budget.penalty
        self.paused_until = -math.inf
        self.header_remaining: int | None = None
        self.in_flight = 0
        self.sent = 0
        self.throttled_429 = 0
        self.errors = 0
        self.bytes = 0
        self.waits = 0  # requests that waited WAIT_NOTICE or more for a slot
        self.waited = 0.0  # seconds they waited in all
        self._probed = False
        self._log: list[float] = []  # send times, ascending
        self._latencies: deque[float] = deque(maxlen=self.LATENCY_SAMPLES)
        self._queues: dict[Priority, deque[Waiter]] = {p: deque() for p in Priority}
        self._since_bulk = 0  # BACKGROUND admissions since the last BULK one, while BULK waits

    def __repr__(self) -> str:
        return (
            f"<GroupLimiter {self.name} {self.limit}/{self.window:g}s "
            f"queued={self.queued} in_flight={self.in_flight}>"
        )

    # -- admission ---------------------------------------------------------

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def margin(self) -> float:
        """Safety margin added to the window: server-side arrival jitter."""
        latency = max(self._latencies, default=0.0)
        return 0.03 + 0.02 * self.window + min(latency, 0.25 * self.window)

    def _prune(self, now: float) -> None:
        # Margins stay below one window, so older entries can never matter.
        horizon = now - 2 * self.window - 1.0
        cut = bisect.bisect_right(self._log, horizon)
        if cut:
            del self._log[:cut]

    def _count_since(self, since: float) -> int:
        return len(self._log) - bisect.bisect_right(self._log, since)

    def next_send_time(self, now: float) -> float:
        """Earliest time the next request may go (may be `inf`: wait for an event)."""
        if not self._probed and self.in_flight > 0:
            return math.inf
        self._prune(now)
        t = max(now, self.paused_until)
        limit = max(1, self.limit)
        if len(self._log) >= limit:
            t = max(t, self._log[-limit] + self.window + self.margin())
        return t

    def _head(self) -> Waiter | None:
        interactive, background, bulk = (self._queues[p] for p in Priority)
        if interactive:
            return interactive[0]
        if background and bulk and self._since_bulk >= BULK_SHARE_EVERY - 1:
            return bulk[0]
        for q in (background, bulk):
            if q:
                return q[0]
        return None

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None:
            head.event.set()

    def _requeue(self, waiter: Waiter, priority: Priority) -> None:
        """Move a waiting request to a higher priority's queue (an `Urgency` rose)."""
        old = self._queues[waiter.priority]
        if waiter not in old:
            return
        old.remove(waiter)
        waiter.priority = priority
        self._queues[priority].append(waiter)
        waiter.event.set()  # let it re-check whether it heads the queue now
        self._wake_head()

    def _enqueue(self, priority: PriorityLike, op: str) -> tuple[Waiter, Urgency | None, float]:
        """A new waiter at the end of its priority's queue (and known to its Urgency)."""
        urgency = priority if isinstance(priority, Urgency) else None
        queued_at = trio.current_time()
        waiter = Waiter(priority.priority if isinstance(priority, Urgency) else Priority(priority),
                        op=op, since=queued_at)
        self._queues[waiter.priority].append(waiter)
        if urgency is not None:
            urgency._waiting.append((self, waiter))
        return waiter, urgency, queued_at

    async def acquire(self, priority: PriorityLike, op: str = "") -> Ticket:
        waiter, urgency, queued_at = self._enqueue(priority, op)
        told = False
        try:
            while True:
                now = trio.current_time()
                if self._head() is waiter:
                    t = self.next_send_time(now)
                    if t <= now:
                        # No checkpoint between here and return: admission is atomic.
                        self._admit(waiter, now, queued_at)
                        return Ticket(self, now, op)
                    if not told and waiter.priority is Priority.INTERACTIVE and t - now >= WAIT_NOTICE:
                        told = True
                        log.info("%s waits %.0f s for a %s rate-limit slot (%d a %g s window%s)",
                                 op or "a request", t - now if math.isfinite(t) else self.window,
                                 self.name, self.limit, self.window,
                                 ", paused after a 429" if self.paused_until > now else "")
                    waiter.event = trio.Event()
                    with trio.move_on_at(t):
                        await waiter.event.wait()
                else:
                    waiter.event = trio.Event()
                    await waiter.event.wait()
        except BaseException:
            self._withdraw(waiter)
            raise
        finally:
            if urgency is not None:
                urgency._waiting.remove((self, waiter))

    def _admit(self, waiter: Waiter, now: float, queued_at: float) -> None:
        """The head waiter gets its slot now (no checkpoint: admission is atomic)."""
        self._queues[waiter.priority].remove(waiter)
        self._count_admission(waiter.priority)
        bisect.insort(self._log, now)
        self.in_flight += 1
        self.sent += 1
        if now - queued_at >= WAIT_NOTICE:
            self.waits += 1
            self.waited += now - queued_at
        self._wake_head()

    def _withdraw(self, waiter: Waiter) -> None:
        """A waiter that gives up (cancelled, or its request failed) leaves its queue."""
        q = self._queues[waiter.priority]
        if waiter in q:
            was_head = self._head() is waiter
            q.remove(waiter)
            if was_head:
                self._wake_head()

    def _count_admission(self, priority: Priority) -> None:
        if priority is Priority.BULK:
            self._since_bulk = 0
        elif priority is Priority.BACKGROUND and self._queues[Priority.BULK]:
            self._since_bulk += 1

    def release(self, ticket: Ticket) -> None:
        self.in_flight -= 1
        self._wake_head()

    def _restamp(self, ticket: Ticket) -> bool:
        now = trio.current_time()
        self._remove_entry(ticket.sent_at)
        limit = max(1, self.limit)
        ok = now >= self.paused_until and self._count_since(now - self.window - self.margin()) < limit
        if ok:
            bisect.insort(self._log, now)
            ticket.sent_at = now
        else:
            ticket.sent = False
            self.sent -= 1
        self._wake_head()
        return ok

    def _unsend(self, ticket: Ticket) -> None:
        if ticket.sent:
            ticket.sent = False
            self.sent -= 1
            self._remove_entry(ticket.sent_at)
        self._wake_head()

    def _remove_entry(self, t: float) -> None:
        i = bisect.bisect_left(self._log, t)
        if i < len(self._log) and self._log[i] == t:
            del self._log[i]

    # -- feedback from responses ---------------------------------------------

    def record_send(self, sent_at: float) -> None:
        """A request admitted under another group turned out to count here."""
        bisect.insort(self._log, sent_at)
        self.sent += 1

    def observe_ticket(self, ticket: Ticket, **response: Any) -> None:
        """`observe` for the response to `ticket` (a shared budget needs the ticket)."""
        self.observe(ticket.sent_at, **response)

    def observe(
        self,
        sent_at: float,
        *,
        status: int,
        limit: int | None = None,
        remaining: int | None = None,
        window: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Adjust the budget from one response sent at `sent_at`."""
        now = trio.current_time()
        self._latencies.append(max(0.0, now - sent_at))
        if limit is not None and limit > 0 and limit != self.limit:
            log.info("rate limit of group %s is now %d (was %d)", self.name, limit, self.limit)
            self.limit = limit
        if window is not None and window > 0 and window != self.window:
            log.info("rate window of group %s is now %gs", self.name, window)
            self.window = window
        if remaining is not None:
            self.header_remaining = remaining
            counted = self.limit - max(0, remaining)
            # Everything the server may have counted was sent before this response.
            ours = self._count_since(sent_at - self.window)
            if counted > ours:
                log.debug(
                    "group %s: server counted %d requests, log has %d; adding the difference",
                    self.name,
                    counted,
                    ours,
                )
                for _ in range(counted - ours):
                    bisect.insort(self._log, now)
        self._probed = True
        if status == 429:
            self.throttled_429 += 1
            pause = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
            until = now + pause + self.margin()
            if until > self.paused_until:
                self.paused_until = until
            self._probed = False  # learn the server's count again after the penalty
            log.warning(
                "rate limit exceeded in group %s (HTTP 429): pausing the group for %.1fs",
                self.name,
                pause,
            )
        self._wake_head()

    # -- status ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = trio.current_time()
        used = self._count_since(now - self.window - self.margin())
        paused = self.paused_until > now
        return {
            "limit": self.limit,
            "remaining": max(0, self.limit - used),
            "window": self.window,
            # wall-clock (epoch seconds) for status.json; None when not paused
            "paused_until": time.time() + (self.paused_until - now) if paused else None,
            "queued": self.queued,
            "queued_by_priority": {p.name.lower(): len(q) for p, q in self._queues.items()},
            "in_flight": self.in_flight,
            # Where the waiting readers stand: their place in the queue, and since when.
            "interactive_waiting": [
                {"position": i + 1, "op": w.op, "waiting_s": round(now - w.since, 1)}
                for i, w in enumerate(list(self._queues[Priority.INTERACTIVE])[:10])],
        }

    def counters(self) -> dict[str, float]:
        return {
            "sent": self.sent,
            "throttled_429": self.throttled_429,
            "errors": self.errors,
            "bytes": self.bytes,
            "waits": self.waits,
            "waited_s": round(self.waited, 3),
        }


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name].strip())
    except (KeyError, ValueError):
        return None


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    raw = raw.strip().lower().removesuffix("s")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class RateLimiter:
    """All groups of one client: operation → group, admission, feedback, status."""

    def __init__(
        self,
        budgets: Mapping[str, Budget] | None = None,
        group_factory: Callable[[str, Budget], GroupLimiter] | None = None,
    ) -> None:
        self._budgets = {group_key(k): v for k, v in (budgets or {}).items()}
        self._factory = group_factory or GroupLimiter
        self._groups: dict[str, GroupLimiter] = {}
        self._op_groups: dict[str, str] = {op: group_key(g) for op, g in OPERATION_GROUPS.items()}
        self._op_sent: dict[tuple[str, str], int] = {}  # (group display name, operation) -> sent
        for name in DEFAULT_BUDGETS:  # status shows the documented groups from the start
            self.group(name)

    def group(self, name: str) -> GroupLimiter:
        key = group_key(name)
        g = self._groups.get(key)
        if g is None:
            budget = self._budgets.get(key) or default_budget(key)
            g = self._groups[key] = self._factory(name, budget)
        return g

    def group_for(self, op: str) -> GroupLimiter:
        return self.group(self._op_groups.get(op, "heavy"))

    @asynccontextmanager
    async def slot(self, op: str, priority: PriorityLike) -> AsyncIterator[Ticket]:
        """Wait for admission of one request of operation `op`."""
        g = self.group_for(op)
        ticket = await g.acquire(priority, op)
        key = (g.name, op)
        self._op_sent[key] = self._op_sent.get(key, 0) + 1
        try:
            yield ticket
        finally:
            ticket.group.release(ticket)

    def observe(self, ticket: Ticket, status: int, headers: Mapping[str, str]) -> None:
        """Feed one response's status and (case-insensitive) headers back."""
        headers = {k.lower(): v for k, v in headers.items()}
        group = ticket.group
        named = headers.get("x-rate-limit-group")
        if named and group_key(named) != group_key(group.name):
            new = self.group(named)
            log.info(
                "operation %s counts in rate-limit group %s, not %s",
                ticket.op,
                new.name,
                group.name,
            )
            self._op_groups[ticket.op] = group_key(named)
            new.record_send(ticket.sent_at)
            old_key, new_key = (group.name, ticket.op), (new.name, ticket.op)
            if self._op_sent.get(old_key):
                self._op_sent[old_key] -= 1
            self._op_sent[new_key] = self._op_sent.get(new_key, 0) + 1
            group = new
        retry_after = _float_header(headers, "retry-after")
        if status == 429 and retry_after is None and "retry-after" in headers:
            retry_after = DEFAULT_RETRY_AFTER  # an HTTP-date or garbage: be safe
        group.observe_ticket(
            ticket,
            status=status,
            limit=_int_header(headers, "x-rate-limit-limit"),
            remaining=_int_header(headers, "x-rate-limit-remaining"),
            window=_float_header(headers, "x-rate-limit-window"),
            retry_after=retry_after,
        )

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {g.name: g.snapshot() for g in self._groups.values()}

    def counters(self) -> dict[str, dict[str, float]]:
        return {g.name: g.counters() for g in self._groups.values()}

    def operation_counts(self) -> dict[tuple[str, str], int]:
        """Requests admitted, by (rate-limit group, operationId)."""
        return {k: n for k, n in self._op_sent.items() if n}
