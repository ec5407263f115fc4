"""File and directory names of the tree, as pure functions of a recording.

Owns: `file_name` (DESIGN.md "The tree":
`HHMMSS_<dir>_<from>_to_<to>_<recordingId>.<ext>`), `day_of` and the day
directory path. The same recording and zone always give the same name; the
recording id makes names unique within a day.

Must not: do I/O, read the clock, or consult the index. Freezing a name once
shown is the index's job (it keeps the naming fields of the first sighting).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from zoneinfo import ZoneInfo

from rcfs.models import Party, Recording

MAX_NAME_BYTES = 200
UNKNOWN = "unknown"
# Ids longer than this are shortened (with a hash) so parties keep some room.
_MAX_ID_CHARS = 64
_ID_OK = re.compile(r"[A-Za-z0-9-]+")
_ID_BAD = re.compile(r"[^A-Za-z0-9-]")
_EXT_BAD = re.compile(r"[^A-Za-z0-9]")
_PHONE_BAD = re.compile(r"[^0-9X]")


def file_name(rec: Recording, tz: ZoneInfo) -> str:
    """The recording's file name: ASCII, no '/', NUL or controls, at most 200 bytes."""
    local = rec.start_time.astimezone(tz)
    direction = "in" if rec.is_inbound else "out"
    rid = safe_recording_id(rec.recording_id)
    ext = "wav" if rec.is_wav else "mp3"
    frm = party_label(rec.from_party)
    to = party_label(rec.to_party)
    fixed = len(f"{local:%H%M%S}_{direction}__to__{rid}.{ext}")
    frm, to = _fit(frm, to, MAX_NAME_BYTES - fixed)
    return f"{local:%H%M%S}_{direction}_{frm}_to_{to}_{rid}.{ext}"


def day_of(rec: Recording, tz: ZoneInfo) -> date:
    """The local date (in `tz`) of the call's start: the recording's day directory."""
    return rec.start_time.astimezone(tz).date()


def day_path(day: date) -> str:
    """`YYYY/MM/DD`, the day directory's path relative to the mount root."""
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


def party_label(party: Party) -> str:
    """Extension number if internal, else the reduced phone number, else 'unknown'."""
    if party.extension_number:
        ext = _EXT_BAD.sub("", party.extension_number)
        if ext:
            return ext
    if party.phone_number:
        phone = reduce_phone(party.phone_number)
        if phone.strip("+"):
            return phone
    return UNKNOWN


def reduce_phone(number: str) -> str:
    """`(866)123-4567` → `8661234567`; `+3351234XXXX` stays; '+' only in front."""
    text = number.strip()
    plus = "+" if text.startswith("+") else ""
    return plus + _PHONE_BAD.sub("", text)


def safe_recording_id(recording_id: str) -> str:
    """The id reduced to [A-Za-z0-9-]; an id that needed changes gets a hash suffix.

    Ids are normally digits and pass unchanged. Any other id is reduced and
    suffixed with `--` and 8 hex digits of its SHA-1, so two ids that reduce
    alike still give distinct names. An id passes unchanged only if it has no
    `--`, so no passed id can equal a reduced one.
    """
    if (_ID_OK.fullmatch(recording_id) and len(recording_id) <= _MAX_ID_CHARS
            and "--" not in recording_id):
        return recording_id
    digest = hashlib.sha1(recording_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    reduced = _ID_BAD.sub("", recording_id)[: _MAX_ID_CHARS - 10]
    return f"{reduced}--{digest}"


def _fit(frm: str, to: str, budget: int) -> tuple[str, str]:
    """Truncate the two party labels (all ASCII) to fit `budget` characters together."""
    if len(frm) + len(to) <= budget:
        return frm, to
    half = budget // 2
    if len(frm) <= half:
        return frm, to[: budget - len(frm)]
    if len(to) <= budget - half:
        return frm[: budget - len(to)], to
    return frm[:half], to[: budget - half]
