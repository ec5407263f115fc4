"""Rate-limit groups: the static operation → group map and the documented defaults.

Owns only data and name normalisation. The map comes from `x-throttling-group`
in RingCentral's OpenAPI file (tests/api/test_groups.py checks it against the
YAML); responses correct it at run time through `X-Rate-Limit-Group`.
"""

from __future__ import annotations

from dataclasses import dataclass

# operationId -> x-throttling-group, for every operation rcfs sends.
OPERATION_GROUPS: dict[str, str] = {
    "getToken": "Auth",
    "revokeToken": "Auth",
    "readAccountInfo": "Light",
    "readCompanyCallLog": "Heavy",
    "readUserCallLog": "Heavy",
    "syncAccountCallLog": "Heavy",
    "syncUserCallLog": "Heavy",
    "readCallRecording": "Heavy",
    "readCallRecordingContent": "Heavy",
}


@dataclass(frozen=True)
class Budget:
    limit: int
    window: float  # seconds
    penalty: float  # seconds of silence after a 429 without Retry-After


# RingCentral's documented defaults (API-NOTES.md "Rate limits").
DEFAULT_BUDGETS: dict[str, Budget] = {
    "light": Budget(50, 60.0, 60.0),
    "medium": Budget(40, 60.0, 60.0),
    "heavy": Budget(10, 60.0, 60.0),
    "auth": Budget(5, 60.0, 60.0),
}
# A group only a header has named: be as careful as with Heavy until headers say more.
UNKNOWN_GROUP_BUDGET = DEFAULT_BUDGETS["heavy"]
DEFAULT_RETRY_AFTER = 30.0

_DISPLAY = {"light": "Light", "medium": "Medium", "heavy": "Heavy", "auth": "Auth"}


def group_key(name: str) -> str:
    """Groups are keyed case-insensitively ('heavy' and 'Heavy' are one group)."""
    return name.strip().lower()


def display_name(name: str) -> str:
    """The documented spelling for the four known groups, else the name as given."""
    return _DISPLAY.get(group_key(name), name.strip())


def default_budget(name: str) -> Budget:
    return DEFAULT_BUDGETS.get(group_key(name), UNKNOWN_GROUP_BUDGET)
