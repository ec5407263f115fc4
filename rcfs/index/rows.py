"""The index's row types: what its queries return.

Owns the value objects built from rows (`IndexedRecording`, `StoredRecord`,
`UpsertResult`) and the one place a `recordings` row becomes a `Recording`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcfs.models import Party, Recording, from_epoch_ms

# Nominal rates for size estimates until the exact size is known: MP3 at
# 32 kbit/s, and WAV as RingCentral records it, 8 kHz 16-bit mono PCM after a
# 44-byte header (the sample rate is not in the call log or the metadata).
ESTIMATE_BYTES_PER_SECOND = 4000
WAV_BYTES_PER_SECOND = 16_000
WAV_HEADER_BYTES = 44

REC_COLUMNS = (
    "id, recording_id, call_id, start_ms, direction, from_phone, from_ext, from_name, "
    "to_phone, to_ext, to_name, session_id, telephony_session_id, recording_type, "
    "name_content_type, duration, content_uri, content_type, exact_size, deleted, deleted_at, "
    "kept, stored, digest"
)
# Which recordings a listing shows: with keep_deleted (include_deleted=True)
# everything but those deleted upstream whose content is not kept (kept=0);
# without it, only recordings that exist upstream.
VISIBLE = {True: "kept IS NOT 0", False: "deleted=0"}


@dataclass(frozen=True)
class IndexedRecording:
    """A recording as indexed. `recording` carries the naming fields of the first
    sighting (its `content_type` is the one the name was made with); `content_type`
    here is the latest known one (learned from a content response)."""

    rowid: int
    recording: Recording
    content_type: str | None
    exact_size: int | None
    deleted: bool
    deleted_at_ms: int | None
    # For a recording deleted upstream: True once its content is archived
    # (kept), False once known not to be (it leaves the listing), None while
    # undecided or when not deleted.
    kept: bool | None = None
    # Its content is in the permanent archive store (archive mode, or kept).
    stored: bool = False
    # BLAKE2b (hex) of the content as downloaded, once it has been.
    digest: str | None = None

    @property
    def recording_id(self) -> str:
        return self.recording.recording_id

    @property
    def content_uri(self) -> str:
        return self.recording.content_uri

    @property
    def start_ms(self) -> int:
        return self.recording.start_ms

    @property
    def duration(self) -> int:
        return self.recording.duration

    @property
    def size_exact(self) -> bool:
        return self.exact_size is not None

    @property
    def size(self) -> int:
        """The exact size if known, else an estimate from the duration and format."""
        if self.exact_size is not None:
            return self.exact_size
        if self.recording.is_wav:
            return WAV_HEADER_BYTES + self.recording.duration * WAV_BYTES_PER_SECOND
        return self.recording.duration * ESTIMATE_BYTES_PER_SECOND


@dataclass(frozen=True)
class StoredRecord:
    """A call-log record as last seen; `start_ms` frozen at the first sighting."""

    call_id: str
    start_ms: int
    mod_ms: int
    raw: dict[str, Any]


@dataclass(frozen=True)
class UpsertResult:
    added_recordings: tuple[str, ...]
    # Frozen start of every record or recording added or changed: the vfs maps
    # them to the day directories to invalidate.
    changed_starts_ms: frozenset[int]
    bad_records: tuple[str, ...]


def indexed(row: tuple[Any, ...]) -> IndexedRecording:
    (rowid, rid, call_id, start_ms, direction, fph, fext, fname, tph, text, tname, session_id,
     tsid, rtype, name_ctype, duration, uri, ctype, exact, deleted, deleted_at, kept, stored,
     digest) = row
    rec = Recording(
        recording_id=rid,
        content_uri=uri,
        recording_type=rtype,
        content_type=name_ctype,
        call_id=call_id,
        session_id=session_id,
        telephony_session_id=tsid,
        direction=direction,
        from_party=Party(fph, fext, fname),
        to_party=Party(tph, text, tname),
        start_time=from_epoch_ms(start_ms),
        duration=duration,
    )
    return IndexedRecording(rowid, rec, ctype, exact, bool(deleted), deleted_at,
                            None if kept is None else bool(kept), bool(stored), digest)
