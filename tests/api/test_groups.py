"""The static operation → rate-limit group map agrees with RingCentral's OpenAPI file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rcfs.api.groups import DEFAULT_BUDGETS, OPERATION_GROUPS, display_name, group_key
from rcfs.emulator.testing import openapi_path

OPENAPI = openapi_path() or Path("../shared/ringcentral/rc-public-openapi.yml")


@pytest.fixture(scope="module")
def yaml_groups() -> dict[str, str]:
    if not OPENAPI.exists():
        pytest.skip(f"{OPENAPI} not available")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with OPENAPI.open() as f:
        spec = yaml.load(f, Loader=loader)
    groups = {}
    for item in spec["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and "operationId" in op:
                groups[op["operationId"]] = op.get("x-throttling-group")
    return groups


REQUIRED = [
    "readCompanyCallLog",
    "readUserCallLog",
    "syncAccountCallLog",
    "readCallRecording",
    "readCallRecordingContent",
    "readAccountInfo",
    "getToken",
    "revokeToken",
]


def test_map_matches_openapi(yaml_groups: dict[str, str]) -> None:
    assert set(REQUIRED) <= set(OPERATION_GROUPS)
    for op, group in OPERATION_GROUPS.items():
        assert yaml_groups[op] == group, op


def test_defaults_and_names() -> None:
    assert {k: (b.limit, b.window) for k, b in DEFAULT_BUDGETS.items()} == {
        "light": (50, 60.0),
        "medium": (40, 60.0),
        "heavy": (10, 60.0),
        "auth": (5, 60.0),
    }
    assert group_key(" HEAVY ") == "heavy"
    assert display_name("heavy") == "Heavy"
    assert display_name("Media-X") == "Media-X"
