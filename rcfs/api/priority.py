"""Request priorities, and a priority that may rise while its request waits.

`Priority` orders the rate limiter's queues (ratelimit.py's essay: readers
first, then background work, then the archive). `Urgency` is a priority shared
by everyone who may raise it; `Waiter` is one queued request, which an
`Urgency` moves to a higher queue when it rises. The limiter owns the queues.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from rcfs.api.ratelimit import GroupLimiter


class Priority(enum.IntEnum):
    INTERACTIVE = 0  # a reader or a listing waits for it
    BACKGROUND = 1  # polling, index backfill, prefetch
    BULK = 2  # the archive's downloads


@dataclass(eq=False)
class Waiter:
    priority: Priority
    event: trio.Event = field(default_factory=trio.Event)
    op: str = ""
    since: float = 0.0  # trio time it queued at


class Urgency:
    """A request's priority that may rise while it waits for admission.

    Shared by whoever may raise it: a download started by the archive (BULK)
    that a reader then joins is raised to INTERACTIVE, and its request, if it
    is still queued in a limiter, moves to that queue at once.
    """

    def __init__(self, priority: Priority | int) -> None:
        self.priority = Priority(priority)
        self._waiting: list[tuple[GroupLimiter, Waiter]] = []

    def __repr__(self) -> str:
        return f"<Urgency {self.priority.name}>"

    def raise_to(self, priority: Priority | int) -> None:
        if priority >= self.priority:
            return
        self.priority = Priority(priority)
        for group, waiter in list(self._waiting):
            group._requeue(waiter, self.priority)


PriorityLike = Priority | Urgency
