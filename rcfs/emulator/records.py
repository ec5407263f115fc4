"""Rendering the account as RingCentral JSON (CallLogRecord, recording blocks, time stamps).

Owns the wire shape of records: which fields appear in the Simple and Detailed
views, absolute `uri`s on the platform host and `contentUri`s on the media
host. Pure functions of (call, urls, now); no state, no I/O.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from rcfs.emulator.model import FAX, INBOUND, Call, Extension, Leg, Party, Recording, Remote

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The instants `iso` can render (years 0001..9999), in epoch ms.
MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def iso(ms: int) -> str:
    """Epoch milliseconds -> '2026-11-23T09:30:15.123Z' (RingCentral's format).

    Clamped to years 0001..9999, so that any instant a client can name renders."""
    ms = min(MAX_MS, max(MIN_MS, ms))
    dt = _EPOCH + timedelta(milliseconds=ms)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{ms % 1000:03d}Z"
    )


def parse_iso(text: str) -> int:
    """ISO 8601 date or date-time (zone optional, UTC assumed) -> epoch ms. ValueError if bad.

    The zone: the spec asks for "ISO 8601 format including timezone" but does
    not say what a value without one gets; the emulator reads it as UTC (the
    lenient reading, and what its tests' `dateFrom=2000-01-01` rely on).
    """
    value = text.strip()
    if not value or len(value) > 40:
        raise ValueError(text)
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - _EPOCH
    except (OverflowError, TypeError) as err:  # e.g. year 1 at +14:00
        raise ValueError(text) from err
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def telephony_session_id(call: Call) -> str:
    digest = hashlib.blake2b(f"{call.session_id}".encode(), digest_size=12).hexdigest()
    return f"s-a{digest[:12]}z{digest[12:]}"


class Renderer:
    """Builds record dicts with absolute URIs for one emulator's platform and media URLs."""

    def __init__(
        self,
        account_id: str,
        server_url: str,
        media_url: str,
        patches: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.account_id = account_id
        self.api = f"{server_url}/restapi/v1.0/account/{account_id}"
        self.media = f"{media_url}/restapi/v1.0/account/{account_id}"
        # Chaos knob (PUT /__emulator/calls/{id}/patch): call id -> a JSON merge
        # patch (RFC 7386) applied to every rendering of that record.
        self.patches: dict[str, dict[str, Any]] = {} if patches is None else patches

    def extension_uri(self, ext: Extension) -> str:
        return f"{self.api}/extension/{ext.id}"

    def recording_uri(self, recording_id: str) -> str:
        return f"{self.api}/recording/{recording_id}"

    def content_uri(self, recording_id: str) -> str:
        return f"{self.media}/recording/{recording_id}/content"

    def recording_block(self, rec: Recording) -> dict[str, Any]:
        return {
            "uri": self.recording_uri(rec.id),
            "id": rec.id,
            "type": rec.type,
            "contentUri": self.content_uri(rec.id),
        }

    def recording_metadata(self, rec: Recording, content_type: str) -> dict[str, Any]:
        """GetCallRecordingResponse."""
        return {
            "id": rec.id,
            "contentUri": self.content_uri(rec.id),
            "contentType": content_type,
            "duration": rec.duration,
        }

    @staticmethod
    def party(remote: Remote | Extension, *, own_phone: bool = False) -> dict[str, Any]:
        if isinstance(remote, Extension):
            out: dict[str, Any] = {}
            if own_phone:
                out["phoneNumber"] = remote.phone
            out["extensionNumber"] = remote.number
            out["extensionId"] = remote.id
            out["name"] = remote.name
            return out
        party: Party = remote
        out = {}
        if party.phone is not None:
            out["phoneNumber"] = party.phone
        if party.name is not None:
            out["name"] = party.name
        if party.location is not None:
            out["location"] = party.location
        return out

    def _parties(
        self, direction: str, ext: Extension, remote: Remote
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        external = not isinstance(remote, Extension)
        mine = self.party(ext, own_phone=external)
        theirs = self.party(remote)
        return (theirs, mine) if direction == INBOUND else (mine, theirs)

    def record(
        self,
        call: Call,
        now: float,
        *,
        detailed: bool = False,
        extension_level: bool = False,
    ) -> dict[str, Any]:
        """A CallLogRecord as readCompanyCallLog (or readUserCallLog) returns it."""
        base = self.extension_uri(call.ext) if extension_level else self.api
        frm, to = self._parties(call.direction, call.ext, call.remote)
        fax = call.kind == FAX
        out: dict[str, Any] = {
            "uri": f"{base}/call-log/{call.id}?view={'Detailed' if detailed else 'Simple'}",
            "id": call.id,
            "sessionId": str(call.session_id),
            "telephonySessionId": telephony_session_id(call),
            "startTime": iso(call.start_ms),
            "duration": call.duration,
            "durationMs": call.duration_ms,
            "type": call.kind,
            "internalType": "Usual" if call.internal else "Local",
            "direction": call.direction,
            "action": _action(call.direction, fax),
            "result": call.result,
            "to": to,
            "from": frm,
            "extension": {"uri": self.extension_uri(call.ext), "id": int(call.ext.id)},
        }
        rec = call.recording
        if rec is not None and rec.visible(now):
            out["recording"] = self.recording_block(rec)
        if call.short_recording:
            out["shortRecording"] = True
        if call.deleted:
            out["deleted"] = True
        if detailed:
            out["transport"] = call.transport
            out["lastModifiedTime"] = iso(call.modified_ms)
            out["billing"] = {"costIncluded": 0.0, "costPurchased": 0.0}
            out["legs"] = [self._leg(call, leg, now) for leg in self._legs(call)]
        patch = self.patches.get(call.id)
        if patch is not None:
            out = merge_patch(out, patch)
        return out

    @staticmethod
    def _legs(call: Call) -> tuple[Leg, ...]:
        if call.legs:
            return call.legs
        return (
            Leg(
                "Accept" if call.direction == INBOUND else "RingDirectly",
                _action(call.direction, call.kind == FAX),
                call.direction,
                0,
                call.duration,
                call.ext,
                call.remote,
                call.result,
                master=True,
                recording=call.recording,
            ),
        )

    def _leg(self, call: Call, leg: Leg, now: float) -> dict[str, Any]:
        frm, to = self._parties(leg.direction, leg.ext, leg.remote)
        start_ms = call.start_ms + leg.offset * 1000
        out: dict[str, Any] = {
            "startTime": iso(start_ms),
            "duration": leg.duration,
            "durationMs": leg.duration * 1000,
            "type": call.kind,
            "internalType": "Usual" if isinstance(leg.remote, Extension) else "Local",
            "direction": leg.direction,
            "action": leg.action,
            "result": leg.result,
            "to": to,
            "from": frm,
            "extension": {"uri": self.extension_uri(leg.ext), "id": int(leg.ext.id)},
            "telephonySessionId": telephony_session_id(call),
            "legType": leg.leg_type,
            "transport": "PSTN" if leg.master and not call.internal else "VoIP",
        }
        if leg.master:
            out["master"] = True
        if leg.recording is not None and leg.recording.visible(now):
            out["recording"] = self.recording_block(leg.recording)
        return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _action(direction: str, fax: bool) -> str:
    if fax:
        return "Incoming Fax" if direction == INBOUND else "Outgoing Fax"
    return "Phone Call" if direction == INBOUND else "VoIP Call"
