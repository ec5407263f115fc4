from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rcfs.api import RetryPolicy, RingCentralClient

from .fakerc import FakeRC


@pytest.fixture
def fake() -> FakeRC:
    return FakeRC()


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "token.json"


@pytest.fixture
async def client(fake: FakeRC, token_path: Path) -> AsyncIterator[RingCentralClient]:
    policy = RetryPolicy(rng=random.Random(1))
    async with RingCentralClient.open(
        fake.creds(), token_path, transport=fake.transport(), retry_policy=policy
    ) as c:
        yield c
