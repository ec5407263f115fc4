"""Query-parameter parsing shared by the call-log and sync routes.

Owns RingCentral's parameter grammar: booleans are `true`/`false`, dates are
ISO 8601 (zone optional, UTC assumed), repeatable parameters may also be
comma-separated, and a bad value raises `ParamError` (answered 400 CMN-101).

An empty parameter (`?dateFrom=`, `?perPage=`): the spec says nothing; the
emulator treats it as absent (its default applies) everywhere, except where a
value is mandatory (FSync's `recordCount`, ISync's `syncToken`: 400 CMN-100).
"""

from __future__ import annotations

import re

from rcfs.emulator.errors import ParamError
from rcfs.emulator.model import AUTOMATIC, ON_DEMAND
from rcfs.emulator.records import parse_iso

PER_PAGE_MAX = 1000
# Integers longer than this are "very large" (Python refuses to parse > 4300 digits).
_BIG = 10**18
_NUMBER = re.compile(r"\s*([0-9]+)\s*")


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


def _number(value: str) -> int | None:
    """ASCII digits (surrounding blanks allowed) -> int, saturating at _BIG; else None."""
    match = _NUMBER.fullmatch(value)
    if match is None:
        return None
    text = match.group(1).lstrip("0") or "0"
    return _BIG if len(text) > 18 else int(text)


def integer(params: list[tuple[str, str]], name: str, default: int, lo: int, hi: int) -> int:
    value = one(params, name)
    if value is None or value == "":
        return default
    number = _number(value)
    if number is None or not lo <= number <= hi:
        raise ParamError(name, value)
    return number


def per_page(params: list[tuple[str, str]], default: int = 100) -> int:
    """`perPage` (the spec's PerPageWithMax): 1.., or `max`; "If the provided integer
    value exceeds 1000, the maximum value of 1000 is applied", so it is clamped."""
    value = one(params, "perPage")
    if value is None or value == "":
        return default
    if value == "max":
        return PER_PAGE_MAX
    number = _number(value)
    if number is None or number < 1:
        raise ParamError("perPage", value)
    return min(number, PER_PAGE_MAX)


def page_number(params: list[tuple[str, str]]) -> int:
    """`page`: 1.. ("Only positive number values are allowed"); no upper bound, a
    page past the last one is answered empty."""
    return integer(params, "page", 1, 1, _BIG)


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
