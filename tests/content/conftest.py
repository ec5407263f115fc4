from __future__ import annotations

import random

import pytest

from rcfs.api.retry import RetryPolicy
from rcfs.content import download


@pytest.fixture(autouse=True)
def fast_resume(monkeypatch: pytest.MonkeyPatch) -> RetryPolicy:
    """Resume back-off in milliseconds, so the tests stay fast on a real clock."""
    policy = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01, rng=random.Random(0))
    monkeypatch.setattr(download, "RESUME_POLICY", policy)
    return policy
