"""The emulator's configuration and the parsers of its option strings.

Owns `EmulatorConfig` and the grammar of `--rate-limits`, `--faults`,
`--audio-format` and the retention rules (`--retention-count`, `--retention`),
shared by the command line and the admin API. Parsers raise `ValueError` with
a one-line message; they never touch the network or the clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# RingCentral's four documented throttling groups, with their default budgets
# (requests per 60 s window, 60 s penalty).
GROUPS = ("Light", "Medium", "Heavy", "Auth")
REAL_LIMITS = {"Light": 50, "Medium": 40, "Heavy": 10, "Auth": 5}
REAL_WINDOW = 60.0
REAL_PENALTY = 60.0


@dataclass(frozen=True)
class EmulatorConfig:
    """How to run one emulator: where to listen, what account to generate, how to misbehave."""

    host: str = "127.0.0.1"
    port: int = 0
    media_port: int = 0
    seed: int = 1
    calls: int = 200
    days: int = 30
    rate_limits: str = "real"
    faults: str = ""
    # Wall-clock time (epoch seconds) the generated history ends at; None = now.
    # Set it to make start times reproducible as well as everything else.
    epoch: float | None = None
    # Recording retention: keep at most this many recordings (the newest by
    # call start), and/or none whose call started longer ago than `retention`
    # (a duration such as '10m' or seconds). None = no such rule.
    retention_count: int | None = None
    retention: str | float | None = None
    # The company's recording format: 'mp3' (audio/mpeg), 'wav' (audio/wav), or
    # 'mixed' (a seeded quarter of the recordings WAV, the rest MP3).
    audio_format: str = "mp3"


@dataclass(frozen=True)
class Limit:
    """One group's budget: `requests` per `window` seconds, then `penalty` seconds of 429s."""

    requests: int
    window: float
    penalty: float

    def describe(self) -> str:
        return f"{self.requests}/{_fmt_seconds(self.window)}/{_fmt_seconds(self.penalty)}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """'200ms' | '30s' | '2m' | '1h' | '5' (seconds) | a number -> seconds (float >= 0)."""
    if isinstance(text, bool):
        raise ValueError(f"invalid {what}: {text!r}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"invalid {what}: {text!r} (expected e.g. 200ms, 30s, 2m)")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid {what}: {text!r}")
    return value


def _fmt_seconds(value: float) -> str:
    return f"{value:g}s"


def canonical_group(name: str) -> str:
    """Group names are case-insensitive; the four known ones get RingCentral's spelling."""
    for group in GROUPS:
        if group.lower() == name.strip().lower():
            return group
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name.strip()):
        raise ValueError(f"invalid rate-limit group name: {name!r}")
    return name.strip()


def parse_limit(text: str) -> Limit:
    """'10/2s' or '10/60s/30s' (requests / window [/ penalty]); penalty defaults to the window."""
    parts = [p.strip() for p in str(text).split("/")]
    if len(parts) not in (2, 3) or not parts[0].isdigit() or int(parts[0]) < 1:
        raise ValueError(f"invalid rate limit {text!r} (expected e.g. 10/2s)")
    window = parse_duration(parts[1], "rate-limit window")
    penalty = parse_duration(parts[2], "rate-limit penalty") if len(parts) == 3 else window
    if window <= 0:
        raise ValueError(f"invalid rate limit {text!r}: window must be positive")
    return Limit(int(parts[0]), window, penalty)


def real_limits() -> dict[str, Limit]:
    return {g: Limit(n, REAL_WINDOW, REAL_PENALTY) for g, n in REAL_LIMITS.items()}


def parse_rate_limits(spec: str) -> dict[str, Limit]:
    """Parse a `--rate-limits` profile into {group: Limit}.

    'real' gives RingCentral's documented defaults, 'off' (or '') no limits, and
    'heavy=10/2s,auth=5/2s' exactly the listed groups: a group not listed is
    not limited.
    """
    text = spec.strip()
    if text.lower() == "real":
        return real_limits()
    if text.lower() in ("off", "none", ""):
        return {}
    limits: dict[str, Limit] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"invalid rate-limit item {item.strip()!r} (expected group=N/Ws)")
        if value.strip().lower() == "off":
            continue
        limits[canonical_group(name)] = parse_limit(value)
    return limits


def rate_limits_from_json(body: Any) -> dict[str, Limit]:
    """The admin API's form: {"heavy": "10/2s", "auth": "off"} or {"profile": "real"}."""
    if not isinstance(body, dict):
        raise ValueError("rate limits must be a JSON object")
    limits: dict[str, Limit] = {}
    for key, value in body.items():
        if key == "profile":
            limits.update(parse_rate_limits(str(value)))
        elif value is None or str(value).strip().lower() == "off":
            limits.pop(canonical_group(key), None)
        else:
            limits[canonical_group(key)] = parse_limit(str(value))
    return limits


AUDIO_FORMATS = ("mp3", "wav", "mixed")


def parse_audio_format(value: Any) -> str:
    """'mp3' | 'wav' | 'mixed' (case-insensitive) -> the canonical lower-case name."""
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text not in AUDIO_FORMATS:
        raise ValueError(f"invalid audio format {value!r} (expected mp3, wav or mixed)")
    return text


FAULT_KEYS = ("5xx", "reset", "latency", "token_ttl", "no_length", "late_recording",
              "lie_length", "trickle", "stall_after",
              "no_retry_after", "retry_after_503", "redirect", "isync_limit")
_FLAGS = ("no_length", "no_retry_after", "redirect", "isync_limit")


def _rate(value: Any, key: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid {key} rate: {value!r} (expected a fraction 0..1)") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"invalid {key} rate: {value!r} (expected a fraction 0..1)")
    return rate


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid {key} value: {value!r} (expected 0 or 1)")


def _count(value: Any, key: str) -> int | None:
    """A byte count (0, '', None or 'off': the fault is off)."""
    if value is None or str(value).strip().lower() in ("", "off", "0"):
        return None
    try:
        number = int(float(str(value)))
    except ValueError:
        raise ValueError(f"invalid {key}: {value!r} (expected a number of bytes)") from None
    if number < 0:
        raise ValueError(f"invalid {key}: {value!r} (expected a number of bytes)")
    return number


def _retry_after(value: Any, key: str) -> int | None:
    """Whole seconds for a Retry-After header ('5', '5s', '2m'; 0, '' or 'off': none)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off")):
        return None
    seconds = math.ceil(parse_duration(value, key))
    return seconds or None


def normalise_faults(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate fault keys and values; returns {key: float | bool} with every key present."""
    out: dict[str, Any] = {
        "5xx": 0.0,
        "reset": 0.0,
        "latency": 0.0,
        "token_ttl": None,
        "no_length": False,
        "late_recording": 0.0,
        "lie_length": None,  # bytes: content declares this total size, sends the real body
        "trickle": None,  # bytes a second: content bodies sent that slowly
        "stall_after": None,  # bytes: content bodies stop (the connection stays open) here
        "no_retry_after": False,  # 429 responses carry no Retry-After header
        "retry_after_503": None,  # seconds: injected 503s carry Retry-After (None: they don't)
        "redirect": False,  # the media host answers content with a 302 to the storage host
        "isync_limit": False,  # an ISync with more than 250 changes is refused (400 CMN-101)
    }
    for key, value in raw.items():
        if key not in FAULT_KEYS:
            raise ValueError(f"unknown fault {key!r} (known: {', '.join(FAULT_KEYS)})")
        if key in ("5xx", "reset"):
            out[key] = _rate(value, key)
        elif key in _FLAGS:
            out[key] = _flag(value, key)
        elif key == "retry_after_503":
            out[key] = _retry_after(value, key)
        elif key == "token_ttl" and value is None:
            out[key] = None
        elif key in ("lie_length", "trickle", "stall_after"):
            out[key] = _count(value, key)
        else:
            seconds = parse_duration(value, key)
            if key == "token_ttl" and seconds <= 0:
                raise ValueError("token_ttl must be positive")
            out[key] = seconds
    return out


def parse_faults(spec: str) -> dict[str, Any]:
    """Parse '5xx=0.05,reset=0.05,latency=200ms,token_ttl=30s,no_length=1,late_recording=60s'
    (and the content faults lie_length=BYTES, trickle=BYTES_PER_S, stall_after=BYTES;
    the real-account behaviours no_retry_after=1, retry_after_503=SECONDS, redirect=1,
    isync_limit=1).

    Returns every fault key: rates as floats, durations in seconds, flags
    (`no_length`, `no_retry_after`, `redirect`, `isync_limit`) as bool,
    `retry_after_503` whole seconds or None, `token_ttl` None when not set.
    """
    raw: dict[str, Any] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"invalid fault {item.strip()!r} (expected key=value)")
        raw[key.strip()] = value.strip()
    return normalise_faults(raw)


def parse_retention_count(value: Any) -> int | None:
    """A retention count: an integer >= 0 (keep that many recordings), or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid retention count: {value!r} (expected an integer >= 0)")
    return value


def parse_retention_duration(value: Any) -> float | None:
    """A retention age ('10m', '90s', '2h', seconds), or None (no limit). Must be positive."""
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ValueError(f"invalid retention duration: {value!r} (expected e.g. 10m, 90s, 2h)")
    seconds = parse_duration(value, "retention duration")
    if seconds <= 0:
        raise ValueError(f"invalid retention duration: {value!r} (must be positive)")
    return seconds


def retention_from_json(body: Any) -> dict[str, Any]:
    """The admin API's form: {"count": N | null, "duration": "10m" | seconds | null}.

    Returns only the rules present, as {"count": int | None, "duration_s":
    float | None}; a rule that is absent stays as it is, null turns it off.
    """
    if not isinstance(body, dict):
        raise ValueError("retention must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "count":
            out["count"] = parse_retention_count(value)
        elif key == "duration":
            out["duration_s"] = parse_retention_duration(value)
        else:
            raise ValueError(f"unknown retention setting {key!r} (known: count, duration)")
    return out
