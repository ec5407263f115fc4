"""How rcfs writes sizes and durations for people (status, progress, logs)."""

from __future__ import annotations

import math


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def fmt_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3.5 h`, `6.2 days`."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def count(n: int, noun: str) -> str:
    """`1 recording`, `2 recordings`, `0 recordings` (English nouns with a plain -s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
