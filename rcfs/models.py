"""Call-log records turned into the recordings rcfs shows as files.

Owns: the frozen `Party` and `Recording` value types and the one parser from a
raw `CallLogRecord` (API-NOTES.md) to the recordings it carries, with its
validation. A malformed record raises `BadResponse` with a one-line message;
callers skip and log it.

Must not: do I/O, read the clock, name files (naming.py does) or know about
the index or FUSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rcfs.errors import BadResponse

# Bounds of what a call record may say, so that every later computation
# (zone conversion, size estimates, st_size) stays in range.
_MIN_YEAR, _MAX_YEAR = 2, 9998
MAX_DURATION = 10**7  # seconds (~115 days)

INBOUND = "Inbound"
OUTBOUND = "Outbound"
_DIRECTIONS = (INBOUND, OUTBOUND)


@dataclass(frozen=True)
class Party:
    """One side of a call as the call log describes it; every field may be absent."""

    phone_number: str | None = None
    extension_number: str | None = None
    name: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str) -> Party:
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise BadResponse(f"{where}: expected an object, got {type(obj).__name__}")
        return cls(
            phone_number=_opt_str(obj, "phoneNumber", where),
            extension_number=_opt_str(obj, "extensionNumber", where),
            name=_opt_str(obj, "name", where),
        )

    @property
    def is_internal(self) -> bool:
        return bool(self.extension_number)

    def display(self) -> str:
        """The party's number as the call log gave it (extension first), or ''."""
        return self.extension_number or self.phone_number or ""


@dataclass(frozen=True)
class Recording:
    """One recording of a call: one file in the tree."""

    recording_id: str
    content_uri: str
    recording_type: str
    content_type: str | None
    call_id: str
    session_id: str
    telephony_session_id: str | None
    direction: str
    from_party: Party
    to_party: Party
    start_time: datetime
    duration: int

    @property
    def start_ms(self) -> int:
        """Start as integer milliseconds since the epoch (the index's time unit)."""
        return epoch_ms(self.start_time)

    @property
    def is_inbound(self) -> bool:
        return self.direction == INBOUND

    @property
    def is_wav(self) -> bool:
        if not self.content_type:
            return False
        base = self.content_type.split(";", 1)[0].strip().lower()
        return base in ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")


def epoch_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, exact (no float rounding)."""
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def from_epoch_ms(ms: int) -> datetime:
    """The aware UTC datetime of `ms` milliseconds since the epoch."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)


def parse_time(value: object, where: str) -> datetime:
    """An ISO 8601 time from the API as an aware UTC datetime (naive means UTC)."""
    if not isinstance(value, str) or not value:
        raise BadResponse(f"{where}: expected an ISO 8601 time, got {_short(value)}")
    try:
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        dt = dt.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadResponse(f"{where}: unparsable time {_short(value)}") from None
    # A day of margin each side: naming and the tree convert to any zone.
    if not _MIN_YEAR <= dt.year <= _MAX_YEAR:
        raise BadResponse(f"{where}: time out of range {_short(value)}")
    return dt


def recordings_from_record(record: dict[str, Any]) -> list[Recording]:
    """The recordings a call-log record carries: its own, then each leg's.

    Deduplicated by recording id (a leg often repeats the call's recording).
    A leg's recording uses the leg's parties, direction and duration where
    present, falling back to the call's; every recording of a call keeps the
    call's start, so all of them land in the call's day. Recordings flagged
    `shortRecording` (not retrievable) are skipped. Raises `BadResponse`.
    """
    if not isinstance(record, dict):
        raise BadResponse(f"call-log record: expected an object, got {type(record).__name__}")
    call_id = _id_str(record.get("id"), "call-log record id")
    where = f"call-log record {_printable(call_id)}"
    start = parse_time(record.get("startTime"), f"{where} startTime")
    direction = record.get("direction")
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        got = _short(direction)
        raise BadResponse(f"{where}: direction must be Inbound or Outbound, got {got}")
    session_id = _opt_id(record, "sessionId", where) or ""
    tsid = _opt_str(record, "telephonySessionId", where)
    from_party = Party.from_json(record.get("from"), f"{where} from")
    to_party = Party.from_json(record.get("to"), f"{where} to")
    duration = _duration(record, where)

    out: list[Recording] = []
    seen: set[str] = set()

    def add(holder: dict[str, Any], hwhere: str, direction: str, fp: Party, tp: Party,
            dur: int, tsid: str | None) -> None:
        rec = holder.get("recording")
        if rec is None or holder.get("shortRecording") is True:
            return
        if not isinstance(rec, dict):
            raise BadResponse(f"{hwhere} recording: expected an object, got {type(rec).__name__}")
        rid = _id_str(rec.get("id"), f"{hwhere} recording id")
        if rid in seen:
            return
        content_uri = rec.get("contentUri")
        if not isinstance(content_uri, str) or not content_uri:
            raise BadResponse(f"{hwhere} recording {_printable(rid)}: missing contentUri")
        seen.add(rid)
        out.append(Recording(
            recording_id=rid,
            content_uri=content_uri,
            recording_type=_opt_str(rec, "type", hwhere) or "",
            content_type=_opt_str(rec, "contentType", hwhere),
            call_id=call_id,
            session_id=session_id,
            telephony_session_id=tsid,
            direction=direction,
            from_party=fp,
            to_party=tp,
            start_time=start,
            duration=dur,
        ))

    add(record, where, direction, from_party, to_party, duration, tsid)
    legs = record.get("legs")
    if legs is not None and not isinstance(legs, list):
        raise BadResponse(f"{where} legs: expected a list, got {type(legs).__name__}")
    for n, leg in enumerate(legs or ()):
        lwhere = f"{where} leg {n}"
        if not isinstance(leg, dict):
            raise BadResponse(f"{lwhere}: expected an object, got {type(leg).__name__}")
        if leg.get("recording") is None:
            continue
        ldir = leg.get("direction")
        add(
            leg,
            lwhere,
            ldir if isinstance(ldir, str) and ldir in _DIRECTIONS else direction,
            Party.from_json(leg["from"], f"{lwhere} from") if leg.get("from") else from_party,
            Party.from_json(leg["to"], f"{lwhere} to") if leg.get("to") else to_party,
            _duration(leg, lwhere) if leg.get("duration") is not None else duration,
            _opt_str(leg, "telephonySessionId", lwhere) or tsid,
        )
    return out


def record_start_ms(record: object) -> int | None:
    """A record's start in epoch ms, or None when it has no usable one (never raises)."""
    if not isinstance(record, dict):
        return None
    try:
        return epoch_ms(parse_time(record.get("startTime"), "startTime"))
    except (BadResponse, TypeError, ValueError, OverflowError):
        return None


def record_call_id(record: object) -> str | None:
    """The record's id if it has a usable one (for log lines about bad records)."""
    if isinstance(record, dict):
        value = record.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def _printable(text: str) -> str:
    """An id as it may appear in a one-line message: as is if plain, else escaped."""
    return text if text.isprintable() and len(text) <= 40 else _short(text)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _id_str(value: object, where: str) -> str:
    # The schema says string; accept integers too (some SDK fixtures use them).
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadResponse(f"{where}: expected a string id, got {_short(value)}")
    text = str(value)
    if not text:
        raise BadResponse(f"{where}: empty id")
    return text


def _opt_id(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return _id_str(value, f"{where} {key}")


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResponse(f"{where} {key}: expected a string, got {_short(value)}")
    return value


def _duration(obj: dict[str, Any], where: str) -> int:
    value = obj.get("duration")
    if value is None:
        return 0
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 <= value <= MAX_DURATION):  # also refuses nan and infinities
        raise BadResponse(f"{where} duration: expected seconds, got {_short(value)}")
    return int(value)
