"""Live daemon state: the recent-error ring and the `.rcfs/status.json` document.

The document is assembled on demand from the components' own `snapshot()`
methods, so there is no second copy of any counter to drift. It must never
contain a token, JWT or secret: only counts, times and error causes (and the
causes come from domain errors whose messages are already token-free).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

MAX_ERRORS = 20


class ErrorLog:
    """The last `MAX_ERRORS` errors, each logged once when recorded."""

    def __init__(self) -> None:
        self._errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_ERRORS)
        self.total = 0

    def record(self, cause: str) -> None:
        self.total += 1
        log.warning("%s", cause)
        self._errors.append({"time": _iso(time.time()), "cause": cause})

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self._errors)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_status(
    sections: dict[str, Callable[[], Any]],
    merged: Sequence[Callable[[], dict[str, Any]]] = (),
) -> bytes:
    """Render the status document; a failing section reports its error, not the daemon's death.

    `sections` fill one key each; each of `merged` returns several top-level
    keys at once (a component's own snapshot, e.g. `rate_limits` + `requests`).
    """
    doc = status_document(sections, merged)
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


def status_document(
    sections: dict[str, Callable[[], Any]],
    merged: Sequence[Callable[[], dict[str, Any]]] = (),
) -> dict[str, Any]:
    """The status document as a dict (what `build_status` renders, and the metrics read)."""
    doc: dict[str, Any] = {}
    for key, fn in sections.items():
        doc[key] = _safely(key, fn)
    for fn in merged:
        value = _safely(getattr(fn, "__qualname__", "snapshot"), fn)
        doc.update(value if isinstance(value, dict) else {})
    doc["time"] = _iso(time.time())
    return doc


def _safely(name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # status must always render
        log.debug("status section %s failed", name, exc_info=True)
        return {"error": repr(exc)}
