"""Injected misbehaviour: 5xx, dropped connections, latency, short-lived tokens,
and the switches for what real accounts do that the default emulator does not
(429 without Retry-After, 503 with it, content redirected to another host,
ISync refused over 250 changes).

Owns the current fault settings (from `--faults` or `PUT /__emulator/faults`)
and the seeded random draws that decide which request fails. Each fault kind
has its own `random.Random` seeded from the emulator seed, so a given seed and
request sequence always fail the same requests, and enabling one fault does
not shift the draws of another. Draws happen only when a rate is non-zero.
"""

from __future__ import annotations

import random
from typing import Any

from rcfs.emulator.config import normalise_faults


class DropConnection(Exception):
    """Raised inside a response to make the server drop the connection mid-body."""


class Faults:
    def __init__(self, seed: int, settings: dict[str, Any] | None = None) -> None:
        self.seed = seed
        self._rng_5xx = random.Random(f"rcfs-emulator-5xx:{seed}")
        self._rng_reset = random.Random(f"rcfs-emulator-reset:{seed}")
        self.settings: dict[str, Any] = normalise_faults(settings or {})

    def update(self, settings: dict[str, Any]) -> None:
        """Replace the settings (keys not given are switched off); reseeds the draws."""
        self.settings = normalise_faults(settings)
        self._rng_5xx.seed(f"rcfs-emulator-5xx:{self.seed}")
        self._rng_reset.seed(f"rcfs-emulator-reset:{self.seed}")

    @property
    def latency(self) -> float:
        return float(self.settings["latency"])

    @property
    def token_ttl(self) -> float | None:
        ttl = self.settings["token_ttl"]
        return None if ttl is None else float(ttl)

    @property
    def no_length(self) -> bool:
        return bool(self.settings["no_length"])

    @property
    def late_recording(self) -> float:
        return float(self.settings["late_recording"])

    @property
    def lie_length(self) -> int | None:
        value = self.settings["lie_length"]
        return None if value is None else int(value)

    @property
    def trickle(self) -> int | None:
        value = self.settings["trickle"]
        return None if value is None else int(value)

    @property
    def stall_after(self) -> int | None:
        value = self.settings["stall_after"]
        return None if value is None else int(value)

    @property
    def no_retry_after(self) -> bool:
        return bool(self.settings["no_retry_after"])

    @property
    def retry_after_503(self) -> int | None:
        value = self.settings["retry_after_503"]
        return None if value is None else int(value)

    @property
    def redirect(self) -> bool:
        return bool(self.settings["redirect"])

    @property
    def isync_limit(self) -> bool:
        return bool(self.settings["isync_limit"])

    def server_error(self) -> bool:
        rate = float(self.settings["5xx"])
        return rate > 0 and self._rng_5xx.random() < rate

    def reset(self) -> float | None:
        """None, or the fraction of the body to send before dropping the connection."""
        rate = float(self.settings["reset"])
        if rate <= 0 or self._rng_reset.random() >= rate:
            return None
        return self._rng_reset.uniform(0.1, 0.9)

    def describe(self) -> dict[str, Any]:
        return dict(self.settings)
