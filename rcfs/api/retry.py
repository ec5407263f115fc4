"""The one retry policy (S3QL's @retry) for idempotent requests.

Owns: which failures are retried, how long to wait between attempts, and how
loudly to log them. Retried: TemporaryFailure (transport errors, 5xx) and its
subclass RateLimited (429), each waiting at least its `retry_after` when the
server sent one (a 429's Retry-After, or a 503's). Everything else
(NotFound, AuthError, PermissionDenied, other 4xx, BadResponse) propagates at
once. Back-off is exponential with jitter and bounded in attempts and delay;
the log level rises with the attempt number. Only use it around requests that
are safe to repeat.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from rcfs.errors import TemporaryFailure

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A 429's retry_after can exceed max_delay (RingCentral's penalty is 60 s).
    max_retry_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        delay = backoff * self.rng.uniform(0.5, 1.0)
        wanted = exc.retry_after if isinstance(exc, TemporaryFailure) else None
        if wanted is not None:  # a 429's, or a 503's Retry-After
            delay = max(delay, min(wanted, self.max_retry_after))
        return delay


DEFAULT_POLICY = RetryPolicy()

# Who wants to hear of each retry as it happens (the mount's start-up, which says
# on the terminal what it waits for): set in a task, seen by the tasks it starts.
retry_observer: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "retry_observer", default=None)


def _level(attempt: int) -> int:
    if attempt <= 1:
        return logging.DEBUG
    if attempt <= 3:
        return logging.INFO
    return logging.WARNING


async def retrying(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy | None = None,
) -> T:
    """Await `fn()`, retrying temporary failures per `policy`.

    `what` names the operation in log lines. After the last attempt the last
    TemporaryFailure (or RateLimited) propagates unchanged.
    """
    policy = policy or DEFAULT_POLICY
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except TemporaryFailure as exc:
            if attempt >= policy.max_attempts:
                log.warning("%s failed after %d attempts: %s", what, attempt, exc)
                raise
            delay = policy.delay(attempt, exc)
            log.log(
                _level(attempt),
                "%s failed (attempt %d of %d): %s; retrying in %.1fs",
                what,
                attempt,
                policy.max_attempts,
                exc,
                delay,
            )
            observer = retry_observer.get()
            if observer is not None:
                observer(f"{exc}; retrying in {delay:.0f} s (attempt {attempt + 1} of "
                         f"{policy.max_attempts})")
            await trio.sleep(delay)
