"""Query-parameter parsing shared by the call-log and sync routes.

Owns RingCentral's parameter grammar: booleans are `true`/`false`, dates are
ISO 8601 (zone optional, UTC assumed), repeatable parameters may also be
comma-separated, and a bad value raises `ParamError` (answered 400 CMN-101).
"""

from __future__ import annotations

from rcfs.emulator.errors import ParamError
from rcfs.emulator.model import AUTOMATIC, ON_DEMAND
from rcfs.emulator.records import parse_iso


def one(params: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in params if k == name]
    return values[-1] if values else None


def many(params: list[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for key, value in params:
        if key == name:
            out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def boolean(params: list[tuple[str, str]], name: str, default: bool = False) -> bool:
    value = one(params, name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ParamError(name, value)


def integer(params: list[tuple[str, str]], name: str, default: int, lo: int, hi: int) -> int:
    value = one(params, name)
    if value is None or value == "":
        return default
    if not value.strip().isdigit() or not lo <= int(value) <= hi:
        raise ParamError(name, value)
    return int(value)


def timestamp(params: list[tuple[str, str]], name: str) -> int | None:
    value = one(params, name)
    if value is None or value == "":
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise ParamError(name, value) from None


def enum(values: list[str], name: str, allowed: tuple[str, ...]) -> frozenset[str] | None:
    for value in values:
        if value not in allowed:
            raise ParamError(name, value)
    return frozenset(values) if values else None


def recording_filter(params: list[tuple[str, str]]) -> frozenset[str] | None:
    """`recordingType` wins over the deprecated `withRecording` when both are given."""
    rtype = one(params, "recordingType")
    if rtype:
        if rtype == "All":
            return frozenset({AUTOMATIC, ON_DEMAND})
        if rtype in (AUTOMATIC, ON_DEMAND):
            return frozenset({rtype})
        raise ParamError("recordingType", rtype)
    if boolean(params, "withRecording"):
        return frozenset({AUTOMATIC, ON_DEMAND})
    return None


def view_detailed(params: list[tuple[str, str]]) -> bool:
    view = one(params, "view") or "Simple"
    if view not in ("Simple", "Detailed"):
        raise ParamError("view", view)
    return view == "Detailed"
