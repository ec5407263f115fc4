"""Hand-built call-log records shaped like the OpenAPI `CallLogRecord` (Detailed view)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Record = dict[str, Any]
MakeRecord = Callable[..., Record]

BASE = "https://platform.example.test/restapi/v1.0/account/1"
MEDIA = "https://media.example.test/restapi/v1.0/account/1"


def make_record(
    call_id: str = "C1",
    start: str = "2026-11-23T09:30:15.123Z",
    *,
    recording_id: str | None = "4082461004",
    direction: str = "Inbound",
    frm: dict[str, Any] | None = None,
    to: dict[str, Any] | None = None,
    duration: int = 95,
    legs: list[Record] | None = None,
    **extra: Any,
) -> Record:
    rec: Record = {
        "uri": f"{BASE}/call-log/{call_id}?view=Detailed",
        "id": call_id,
        "sessionId": f"S{call_id}",
        "telephonySessionId": f"s-{call_id}",
        "startTime": start,
        "duration": duration,
        "durationMs": duration * 1000,
        "type": "Voice",
        "internalType": "Local",
        "direction": direction,
        "action": "Phone Call",
        "result": "Accepted",
        "from": frm if frm is not None else {"phoneNumber": "+16505550123", "name": "Ann Lee"},
        "to": to if to is not None else {"extensionNumber": "101", "name": "Front Desk"},
        "extension": {"id": 100, "uri": f"{BASE}/extension/100"},
        "lastModifiedTime": start,
    }
    if recording_id is not None:
        rec["recording"] = recording_block(recording_id)
    if legs is not None:
        rec["legs"] = legs
    rec.update(extra)
    return rec


def recording_block(recording_id: str, rtype: str = "Automatic") -> Record:
    return {
        "id": recording_id,
        "uri": f"{BASE}/recording/{recording_id}",
        "type": rtype,
        "contentUri": f"{MEDIA}/recording/{recording_id}/content",
    }
