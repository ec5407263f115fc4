"""The emulated account's data: extensions, parties, calls, legs, recordings.

Plain mutable records with `__slots__` (an account may hold 200,000 calls), no
behaviour beyond trivial predicates. `generate` creates them, `account` stores
and queries them, `records` renders them as RingCentral JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

INBOUND = "Inbound"
OUTBOUND = "Outbound"
VOICE = "Voice"
FAX = "Fax"
AUTOMATIC = "Automatic"
ON_DEMAND = "OnDemand"
BLOCKED = "Blocked"  # the result of a call from/to a blocked number (showBlocked=false hides it)


@dataclass(slots=True)
class Extension:
    """A user of the account: internal id, short number, name, direct number (E.164)."""

    id: str
    number: str
    name: str
    phone: str


@dataclass(slots=True)
class Party:
    """An external party. Any field may be absent, and `phone` may be formatted or masked."""

    phone: str | None
    name: str | None
    location: str | None


Remote = Extension | Party


@dataclass(slots=True, eq=False)
class Recording:
    """One recording; `visible_at` (epoch s) delays its appearance (late_recording fault)."""

    id: str
    type: str
    duration: int
    call: Call
    visible_at: float = 0.0
    deleted: bool = False

    def visible(self, now: float) -> bool:
        return not self.deleted and now >= self.visible_at


@dataclass(slots=True, eq=False)
class Leg:
    """A leg of a multi-leg call (Detailed view); may carry its own recording."""

    leg_type: str
    action: str
    direction: str
    offset: int  # seconds after the call's start
    duration: int
    ext: Extension
    remote: Remote
    result: str
    master: bool = False
    recording: Recording | None = None


@dataclass(slots=True, eq=False)
class Call:
    """One call-log record. `seq` orders modifications for ISync (0 = generated history)."""

    id: str
    session_id: int
    start_ms: int
    duration_ms: int
    kind: str
    direction: str
    ext: Extension
    remote: Remote
    result: str
    modified_ms: int
    recording: Recording | None = None
    legs: tuple[Leg, ...] = ()
    short_recording: bool = False
    seq: int = 0
    deleted: bool = False
    # The recording block changed (appeared late or was deleted): ISync reports
    # the record whatever recording filter the client passes.
    rec_touched: bool = False

    @property
    def duration(self) -> int:
        return self.duration_ms // 1000

    @property
    def internal(self) -> bool:
        return isinstance(self.remote, Extension)

    @property
    def transport(self) -> str:
        """The record's `transport` (CallTransportEnum): an internal call is VoIP."""
        return "VoIP" if self.internal else "PSTN"

    @property
    def blocked(self) -> bool:
        return self.result == BLOCKED

    def listed_recordings(self) -> list[Recording]:
        """What a recording filter (`recordingType`, `withRecording`) looks at: the
        top-level recording, or, on a record without one whose legs carry
        recordings (a recording that exists only on legs), the legs' recordings."""
        if self.recording is not None:
            return [self.recording]
        return [leg.recording for leg in self.legs if leg.recording is not None]

    def recordings(self) -> list[Recording]:
        """The top-level recording and any recordings carried by legs, each once."""
        out: list[Recording] = []
        if self.recording is not None:
            out.append(self.recording)
        for leg in self.legs:
            if leg.recording is not None and leg.recording not in out:
                out.append(leg.recording)
        return out
