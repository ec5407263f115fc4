"""RingCentral-style throttling: per group, per app and user, with a penalty box.

Owns the throttling-group map of the operations the emulator serves (taken
from `x-throttling-group` in rc-public-openapi.yml; a test checks the copy) and
the counters. Each (app, user, group) has a sliding window of accepted
requests. A request over the limit gets 429 and opens a penalty of `penalty`
seconds; *every* request to the group during the penalty is refused and
restarts it, as RingCentral does. Time is monotonic seconds passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from rcfs.emulator.config import Limit

OPERATION_GROUPS = {
    "getToken": "Auth",
    "revokeToken": "Auth",
    "readAccountInfo": "Light",
    "readExtension": "Light",
    "readCompanyCallLog": "Heavy",
    "readUserCallLog": "Heavy",
    "readCompanyCallRecord": "Heavy",
    "readUserCallRecord": "Heavy",
    "syncAccountCallLog": "Heavy",
    "syncUserCallLog": "Heavy",
    "readCallRecording": "Heavy",
    "readCallRecordingContent": "Heavy",
}


@dataclass
class _Bucket:
    accepted: deque[float] = field(default_factory=deque)
    penalty_until: float = 0.0


@dataclass(frozen=True)
class Decision:
    """The verdict on one request, with the headers every limited response carries."""

    allowed: bool
    headers: dict[str, str]
    retry_after: int = 0


class RateLimiter:
    def __init__(self, limits: dict[str, Limit]) -> None:
        self.limits = dict(limits)
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def set_limits(self, limits: dict[str, Limit]) -> None:
        """New budgets apply at once; running penalties and windows are forgotten."""
        self.limits = dict(limits)
        self._buckets.clear()

    def check(self, key: str, group: str, now: float) -> Decision:
        limit = self.limits.get(group)
        if limit is None:
            return Decision(True, {})
        bucket = self._buckets.setdefault((key, group), _Bucket())
        horizon = now - limit.window
        while bucket.accepted and bucket.accepted[0] <= horizon:
            bucket.accepted.popleft()
        if now < bucket.penalty_until or len(bucket.accepted) >= limit.requests:
            bucket.penalty_until = now + limit.penalty
            retry = max(1, math.ceil(limit.penalty))
            headers = self._headers(group, limit, 0)
            headers["Retry-After"] = str(retry)
            return Decision(False, headers, retry)
        bucket.accepted.append(now)
        return Decision(True, self._headers(group, limit, limit.requests - len(bucket.accepted)))

    @staticmethod
    def _headers(group: str, limit: Limit, remaining: int) -> dict[str, str]:
        return {
            "X-Rate-Limit-Group": group,
            "X-Rate-Limit-Limit": str(limit.requests),
            "X-Rate-Limit-Remaining": str(max(0, remaining)),
            "X-Rate-Limit-Window": f"{limit.window:g}",
        }

    def describe(self) -> dict[str, str]:
        return {group: limit.describe() for group, limit in self.limits.items()}
