"""Rows of the results table: figures, references, ratios against goals, and the Markdown."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


@dataclass
class Row:
    section: str
    what: str
    rcfs: str
    reference: str
    ratio: float | None = None  # rcfs / reference (the reference the goal names)
    goal: str = ""
    met: bool | None = None  # None: no goal, for information
    note: str = ""

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        met = "" if self.met is None else ("met" if self.met else "**missed**")
        return [self.what, self.rcfs, self.reference, ratio, self.goal, met]


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def as_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [asdict(r) for r in self.rows], "samples": self.samples,
                "errors": self.errors}

    def markdown(self) -> str:
        head = ["What", "rcfs", "Reference(s)", "Ratio", "Goal", "Met"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        section = None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines.append(f"| **{section}** |" + " |" * (len(head) - 1))
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")
        out = "\n".join(lines) + "\n"
        if self.errors:
            out += "\nSections that failed:\n\n" + "\n".join(f"- {e}" for e in self.errors) + "\n"
        return out


def mbps(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f} MB/s" if x >= 100 else f"{x:.1f} MB/s"


def fmt_s(x: float) -> str:
    if x < 0.01:
        return f"{x * 1000:.2f} ms"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"
