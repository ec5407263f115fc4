"""Which spans of time the index holds the call log of: a set of disjoint intervals.

Owns only interval arithmetic (pure, immutable, no I/O): the index persists a
`Coverage` in its `coverage` table and replaces it on every change, and the
indexer asks it which gaps are left. Times are epoch milliseconds, intervals
half-open `[lo, hi)`. Adjacent or overlapping intervals merge, so a coverage
filled page by page stays a handful of spans.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class Coverage:
    """An immutable set of disjoint, sorted, non-adjacent half-open intervals."""

    __slots__ = ("_his", "_los")

    def __init__(self, spans: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in spans if b > a):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._los = tuple(m[0] for m in merged)
        self._his = tuple(m[1] for m in merged)

    def __repr__(self) -> str:
        return f"Coverage({self.spans()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Coverage) and self.spans() == other.spans()

    def __hash__(self) -> int:
        return hash(self.spans())

    def __bool__(self) -> bool:
        return bool(self._los)

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def add(self, lo: int, hi: int) -> Coverage:
        return Coverage([*self.spans(), (lo, hi)]) if hi > lo else self

    def remove(self, lo: int, hi: int) -> Coverage:
        if hi <= lo:
            return self
        out: list[tuple[int, int]] = []
        for a, b in self.spans():
            if b <= lo or a >= hi:
                out.append((a, b))
                continue
            if a < lo:
                out.append((a, lo))
            if b > hi:
                out.append((hi, b))
        return Coverage(out)

    def covers(self, lo: int, hi: int) -> bool:
        """Whether all of [lo, hi) is covered (an empty range always is)."""
        if hi <= lo:
            return True
        i = bisect.bisect_right(self._los, lo) - 1
        return i >= 0 and self._his[i] >= hi

    def gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The uncovered parts of [lo, hi), oldest first."""
        out: list[tuple[int, int]] = []
        t = lo
        i = max(0, bisect.bisect_right(self._los, lo) - 1)
        while t < hi and i < len(self._los):
            a, b = self._los[i], self._his[i]
            if b <= t:
                i += 1
                continue
            if a > t:
                out.append((t, min(a, hi)))
            t = max(t, b)
            i += 1
        if t < hi:
            out.append((t, hi))
        return out

    def covered_ms(self, lo: int, hi: int) -> int:
        """How much of [lo, hi) is covered."""
        return (hi - lo) - sum(b - a for a, b in self.gaps(lo, hi)) if hi > lo else 0

    def top(self) -> int | None:
        """The end of the newest span, or None when nothing is covered."""
        return self._his[-1] if self._his else None

    def bottom(self) -> int | None:
        return self._los[0] if self._los else None
