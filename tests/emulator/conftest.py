"""Fixtures for the emulator's tests: a running emulator, HTTP clients, the OpenAPI schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from rcfs.emulator import Emulator
from rcfs.emulator.testing import emulator, emulator_config, login, openapi  # noqa: F401


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


@pytest.fixture
async def token(client: httpx.AsyncClient, emulator: Emulator) -> str:  # noqa: F811
    return str((await login(client, emulator.info))["access_token"])


@pytest.fixture
async def api(emulator: Emulator, token: str) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    """An authenticated client whose relative URLs go to the platform host."""
    async with httpx.AsyncClient(
        base_url=emulator.info["server_url"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as c:
        yield c
