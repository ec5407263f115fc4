"""Seeded synthesis of a plausible RingCentral account.

Owns every random choice about the account's *content*: extensions and their
numbers, external contacts (plain E.164, formatted `(866)123-4567`, masked
`+3351234XXXX`, names sometimes absent), and calls (direction, result,
duration, recording, legs). One `random.Random` per generator, seeded from the
account seed, so the same seed gives the same account; calls added later via
the admin API continue the same stream. No I/O, no clock: times are passed in.

Two traits of real accounts are drawn from streams of their own, so that they
do not shift the main stream (an existing seed keeps its calls, ids, times and
recordings): some generated multi-leg calls carry their recording only on their
legs (no top-level `recording` block; the master leg keeps it, `LEG_ONLY_RATE`
of them), and some missed inbound calls came from a blocked number (result
`Blocked`, duration 0, `BLOCKED_RATE` of them).
"""

from __future__ import annotations

import math
import random
import string

from rcfs.emulator.model import (
    AUTOMATIC,
    BLOCKED,
    FAX,
    INBOUND,
    ON_DEMAND,
    OUTBOUND,
    VOICE,
    Call,
    Extension,
    Leg,
    Party,
    Recording,
    Remote,
)

FIRST = (
    "Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
    "Yolanda", "Zoe", "Omar", "Priya", "Kenji", "Lucia"
)  # fmt: skip
LAST = (
    "Anderson", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito",
    "Johnson", "Kowalski", "Lopez", "Martin", "Nguyen", "O'Brien", "Patel", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Ueda", "Vargas", "Weber", "Young"
)  # fmt: skip
COMPANIES = (
    "ACME CORP", "GLOBEX", "INITECH", "UMBRELLA INC", "HOOLI", "STARK IND", "WAYNE ENT",
    "WIRELESS CALLER", "TOLL FREE CALL", "UNKNOWN NAME",
)  # fmt: skip
LOCATIONS = (
    ("650", "San Mateo, CA"), ("408", "San Jose, CA"), ("415", "San Francisco, CA"),
    ("510", "Oakland, CA"), ("212", "New York, NY"), ("312", "Chicago, IL"),
    ("206", "Seattle, WA"), ("512", "Austin, TX"), ("617", "Boston, MA"), ("303", "Denver, CO"),
)  # fmt: skip
TOLL_FREE = ("800", "833", "844", "855", "866", "877", "888")
FOREIGN = ("+44", "+33", "+49", "+34", "+81", "+61")
# Relative call volume per UTC hour: a US-Pacific business day (16:00-01:00 UTC).
HOUR_WEIGHT = [0.9, 0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.1,
               0.2, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0, 0.7, 1.0, 1.0, 1.0, 1.0]  # fmt: skip
ID_ALPHABET = string.ascii_letters + string.digits
# Of the generated calls with legs, the fraction whose recording exists only on
# the legs; of the missed inbound calls from outside, the fraction from blocked numbers.
LEG_ONLY_RATE = 0.4
BLOCKED_RATE = 0.15


class Generator:
    """Makes extensions, contacts and calls from one seeded random stream."""

    def __init__(self, seed: int, contacts: int = 200) -> None:
        self.rng = random.Random(f"rcfs-emulator-account:{seed}")
        self._leg_only_rng = random.Random(f"rcfs-emulator-leg-only:{seed}")
        self._blocked_rng = random.Random(f"rcfs-emulator-blocked:{seed}")
        rng = self.rng
        self.account_id = str(rng.randrange(100_000_000, 999_999_999))
        self.extensions = self._extensions(8 + rng.randrange(5))
        self.contacts = [self._contact() for _ in range(max(20, contacts))]
        self.next_session = rng.randrange(4_000_000_000, 4_900_000_000)
        self.next_recording = rng.randrange(4_000_000_000, 4_900_000_000)
        self._hour_cum = list(_cumulative(HOUR_WEIGHT))

    @property
    def user(self) -> Extension:
        """The extension the JWT belongs to (the admin, ext 101)."""
        return self.extensions[0]

    # -- parties --------------------------------------------------------------

    def _extensions(self, count: int) -> list[Extension]:
        rng = self.rng
        base = rng.randrange(100_000_000, 900_000_000)
        names = rng.sample([f"{f} {last}" for f in FIRST for last in LAST], count)
        out = []
        for i in range(count):
            area = rng.choice(LOCATIONS)[0]
            out.append(
                Extension(
                    id=str(base + 1000 * i + rng.randrange(1000)),
                    number=str(101 + i),
                    name=names[i],
                    phone=f"+1{area}555{rng.randrange(10_000):04d}",
                )
            )
        return out

    def _contact(self) -> Party:
        rng = self.rng
        roll = rng.random()
        location: str | None = None
        if roll < 0.82:
            area, location = rng.choice(LOCATIONS)
            phone = f"+1{area}{rng.randrange(200, 1000)}{rng.randrange(10_000):04d}"
            if rng.random() < 0.25:
                location = None
        elif roll < 0.88:
            phone = (
                f"({rng.choice(TOLL_FREE)}){rng.randrange(200, 1000)}-{rng.randrange(10_000):04d}"
            )
        elif roll < 0.94:
            phone = rng.choice(FOREIGN) + "".join(rng.choice("0123456789") for _ in range(9))
        else:
            phone = rng.choice(FOREIGN) + f"{rng.randrange(1000, 10_000)}XXXX"
        name_roll = rng.random()
        if name_roll < 0.3:
            name: str | None = f"{rng.choice(LAST).upper()} {rng.choice(FIRST).upper()}"
        elif name_roll < 0.45:
            name = rng.choice(COMPANIES)
        else:
            name = None
        return Party(phone=phone, name=name, location=location)

    # -- ids ------------------------------------------------------------------

    def call_id(self) -> str:
        # 88 random bits: a collision is not a practical concern.
        value = self.rng.getrandbits(88)
        chars = []
        for _ in range(15):
            value, digit = divmod(value, 62)
            chars.append(ID_ALPHABET[digit])
        return "".join(chars)

    def session_id(self) -> int:
        self.next_session += self.rng.randrange(1, 4000)
        return self.next_session

    def recording_id(self) -> str:
        self.next_recording += self.rng.randrange(1, 3000)
        return str(self.next_recording)

    # -- calls ----------------------------------------------------------------

    def start_times(self, count: int, end_ms: int, days: int) -> list[int]:
        """`count` start times over `days` ending at `end_ms`, busier in business hours."""
        rng = self.rng
        span_days = max(1, days)
        day0 = end_ms // 86_400_000
        out = []
        for _ in range(count):
            day = day0 - rng.randrange(span_days)
            hour = _pick(self._hour_cum, rng.random())
            ms = ((day * 24 + hour) * 3600 + rng.randrange(3600)) * 1000 + rng.randrange(1000)
            if ms > end_ms - 60_000:  # in the future: take the same hour a day earlier
                ms -= 86_400_000
            if ms < end_ms - span_days * 86_400_000:
                ms = end_ms - rng.randrange(60_000, span_days * 86_400_000)
            out.append(ms)
        out.sort()
        return out

    def duration(self) -> int:
        """Answered-call duration: log-normal around 3 minutes, 30 s .. 1 h."""
        seconds = math.exp(self.rng.gauss(math.log(180.0), 0.9))
        return int(min(3600.0, max(30.0, seconds)))

    def call(
        self,
        start_ms: int,
        *,
        recorded: bool | None = None,
        duration: int | None = None,
        direction: str | None = None,
        extension: Extension | None = None,
        leg_only: bool | None = None,
    ) -> Call:
        """One call starting at `start_ms`; keyword arguments force choices (admin API).

        `leg_only=True` forces a recorded multi-leg call whose recording exists
        only on its legs; None leaves it to the seeded draw when `recorded` is
        None too (generated history), so admin-added recorded calls keep their
        top-level recording unless asked.
        """
        if leg_only:
            recorded = True
        rng = self.rng
        ext = extension or (self.user if rng.random() < 0.25 else rng.choice(self.extensions))
        kind = FAX if recorded is None and direction is None and rng.random() < 0.02 else VOICE
        if direction is None:
            direction = INBOUND if rng.random() < 0.55 else OUTBOUND
        remote: Remote
        if kind == VOICE and rng.random() < 0.08 and len(self.extensions) > 1:
            remote = rng.choice([e for e in self.extensions if e is not ext])
        else:
            remote = rng.choice(self.contacts)
        answered = recorded or (rng.random() < 0.8)
        if kind == FAX:
            result = "Received" if direction == INBOUND else "Sent"
            seconds = rng.randrange(30, 300)
        elif answered:
            result = "Accepted" if direction == INBOUND else "Call connected"
            seconds = self.duration()
        else:
            if direction == INBOUND:
                result = rng.choice(("Missed", "Missed", "Voicemail"))
            else:
                result = rng.choice(("No Answer", "No Answer", "Busy"))
            seconds = rng.randrange(0, 40)
        if duration is not None:
            seconds = duration
        call = Call(
            id=self.call_id(),
            session_id=self.session_id(),
            start_ms=start_ms,
            duration_ms=seconds * 1000 + rng.randrange(1000),
            kind=kind,
            direction=direction,
            ext=ext,
            remote=remote,
            result=result,
            modified_ms=start_ms + seconds * 1000 + rng.randrange(15_000, 30_000),
        )
        if kind != VOICE or not answered:
            if (
                recorded is None and kind == VOICE and direction == INBOUND and not call.internal
                and self._blocked_rng.random() < BLOCKED_RATE
            ):
                call.result = BLOCKED
                call.duration_ms = 0
            return call
        generated = recorded is None
        if recorded is None:
            recorded = rng.random() < 0.6
        if recorded:
            rtype = ON_DEMAND if rng.random() < 0.2 else AUTOMATIC
            call.recording = Recording(self.recording_id(), rtype, call.duration, call)
            if leg_only or (direction == INBOUND and not call.internal and rng.random() < 0.15):
                self._add_legs(call)
                if leg_only or (
                    leg_only is None and generated and self._leg_only_rng.random() < LEG_ONLY_RATE
                ):
                    call.recording = None  # the master leg keeps it
        elif duration is None and rng.random() < 0.05:
            call.short_recording = True
            call.duration_ms = rng.randrange(2000, 25_000)
        return call

    def _add_legs(self, call: Call) -> None:
        """A transferred or forwarded call: a master leg plus one more, maybe recorded."""
        rng = self.rng
        others = [e for e in self.extensions if e is not call.ext]
        target = rng.choice(others) if others else call.ext
        total = call.duration
        master = Leg(
            "Accept", "Phone Call", call.direction, 0, total, call.ext, call.remote,
            call.result, master=True, recording=call.recording,
        )  # fmt: skip
        if rng.random() < 0.6:
            offset = int(total * rng.uniform(0.2, 0.6))
            second = Leg(
                "TransferCall", "Transfer", OUTBOUND, offset, total - offset, call.ext,
                target, "Call connected",
            )  # fmt: skip
            if rng.random() < 0.5 and second.duration >= 30:
                second.recording = Recording(self.recording_id(), AUTOMATIC, second.duration, call)
        else:
            second = Leg(
                "FindMe", "FindMe", OUTBOUND, 0, rng.randrange(5, 25), call.ext,
                Party(phone=target.phone, name=target.name, location=None), "Stopped",
            )  # fmt: skip
        call.legs = (master, second)


def _cumulative(weights: list[float]) -> list[float]:
    total = sum(weights)
    acc = 0.0
    out = []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def _pick(cumulative: list[float], x: float) -> int:
    for i, c in enumerate(cumulative):
        if x < c:
            return i
    return len(cumulative) - 1
