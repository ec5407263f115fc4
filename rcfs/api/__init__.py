"""The RingCentral API client: the only package that imports httpx.

Modules: `client` (RingCentralClient, the operations), `auth` (tokens and
their store), `ratelimit` (per-group limiter, priorities), `retry` (the one
retry policy), `groups` (operation → rate-limit group map and defaults),
`responses` (HTTP → domain errors, streamed content). This module re-exports
the public names.
"""

from __future__ import annotations

from rcfs.api.auth import default_token_path
from rcfs.api.client import RingCentralClient, SyncResult
from rcfs.api.groups import DEFAULT_BUDGETS, OPERATION_GROUPS, Budget
from rcfs.api.priority import Priority, PriorityLike, Urgency
from rcfs.api.ratelimit import RateLimiter
from rcfs.api.responses import ContentResponse
from rcfs.api.retry import RetryPolicy, retrying

__all__ = [
    "DEFAULT_BUDGETS",
    "OPERATION_GROUPS",
    "Budget",
    "ContentResponse",
    "Priority",
    "PriorityLike",
    "RateLimiter",
    "RetryPolicy",
    "RingCentralClient",
    "SyncResult",
    "Urgency",
    "default_token_path",
    "retrying",
]
