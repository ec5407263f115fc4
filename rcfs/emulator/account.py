"""The emulated account: the call log as a time-ordered store, and its changes.

Owns the calls and recordings after generation: date-window queries (newest
first, filtered like readCompanyCallLog), look-ups by id, the modification
sequence that ISync reports, the admin mutations (add calls, delete a
recording or a record, late-appearing recordings) and recording retention.
Callers pass the wall-clock time in; nothing here sleeps or does I/O.

Deletion follows RingCentral: deleting a recording keeps the call record and
drops its `recording` block (the record counts as modified, so ISync reports
it); deleting a record hides it unless `showDeleted`, where it carries
`"deleted": true`.

Retention stands for RingCentral's: the account keeps only the newest
`retention_count` recordings (it truncates at the newest 100,000) and, with
`retention_s`, none whose call started longer ago than that. A recording
retention removes is deleted exactly as by `delete_recording`, one recording
at a time (a leg's recording counts on its own). It must stay cheap on a
100,000-call account, because `tick` runs on every query and look-up:

- `_cursor` is an index into the start-sorted `_calls` with the invariant "no
  call before it has an existing recording" (existing: not deleted, on a
  record that is not deleted; a late recording not yet visible exists). The
  oldest existing recording is therefore at or after it; both rules only
  ever delete from there and move it forward, over each call once.
- `_live` is the running count of existing recordings, kept by every
  mutation, so the count rule is one comparison when nothing is due.
- `add_calls` may insert a call behind the cursor (a start time in the
  past): a call with recordings pulls the cursor back to itself, which
  re-walks only calls the list insertion has already shifted.

So a `tick` with nothing due is O(1), and one that deletes costs the calls it
steps over (each once over the account's life) plus the deletions. Rules are
applied at once when set, after calls are added, and lazily on `tick`.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from rcfs.emulator.generate import Generator
from rcfs.emulator.model import Call, Extension, Party, Recording
from rcfs.emulator.records import telephony_session_id

log = logging.getLogger(__name__)

_CACHE_SIZE = 16


@dataclass(frozen=True)
class Query:
    """A call-log filter. `recording_types` None = any call; empty = never used.

    A recording filter looks at the top-level recording, or at the legs' when
    the record has none (`Call.listed_recordings`). `phone_digits` matches the
    digits of a `from`/`to` phone number (NANP numbers with or without the
    leading 1); `transports` the record's `transport`.
    """

    date_from_ms: int
    date_to_ms: int
    extension_id: str | None = None
    kinds: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    recording_types: frozenset[str] | None = None
    show_deleted: bool = False
    show_blocked: bool = True
    extension_number: str | None = None
    session_id: str | None = None
    telephony_session_id: str | None = None
    phone_digits: str | None = None
    transports: frozenset[str] | None = None


class Account:
    """Calls sorted by start time, with indexes by call id and recording id."""

    def __init__(self, seed: int, calls: int, days: int, end: float | None = None) -> None:
        started = time.perf_counter()
        self.seed = seed
        self.gen = Generator(seed, contacts=max(50, min(5000, calls // 10)))
        self.account_id = self.gen.account_id
        self.extensions = self.gen.extensions
        self.user = self.gen.user
        self.end_ms = int((time.time() if end is None else end) * 1000)
        self._calls: list[Call] = []
        self._starts: list[int] = []
        self.by_id: dict[str, Call] = {}
        self.recordings: dict[str, Recording] = {}
        self.seq = 0
        self.version = 0
        self._pending: list[Recording] = []
        self._cache: OrderedDict[Query, list[Call]] = OrderedDict()
        # Retention (see the module docstring).
        self.retention_count: int | None = None
        self.retention_s: float | None = None
        self.retention_deleted = 0  # recordings deleted by retention so far
        self.retention_steps = 0  # calls the cursor has examined (work done; tests count it)
        self._cursor = 0
        self._live = 0
        generated = []
        for start in self.gen.start_times(calls, self.end_ms, days):
            call = self.gen.call(start)
            overrun = call.start_ms + call.duration_ms + 30_000 - self.end_ms
            if overrun > 0:  # a call must have ended (and reached the log) by `end`
                call.start_ms -= overrun
                call.modified_ms -= overrun
            generated.append(call)
        generated.sort(key=lambda c: (c.start_ms, c.id))
        self._calls = generated
        self._starts = [c.start_ms for c in generated]
        for call in generated:
            self._index(call)
        log.info(
            "generated account %s: %d calls, %d recordings in %.2f s",
            self.account_id,
            len(self._calls),
            len(self.recordings),
            time.perf_counter() - started,
        )

    def _index(self, call: Call) -> None:
        self.by_id[call.id] = call
        for rec in call.recordings():
            self.recordings[rec.id] = rec
        self._live += len(self._existing(call))

    @staticmethod
    def _existing(call: Call) -> list[Recording]:
        """The call's recordings that still exist, oldest leg first (retention's order)."""
        if call.deleted:
            return []
        return [r for r in call.recordings() if not r.deleted]

    # -- look-ups -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._calls)

    def extension(self, ext_id: str) -> Extension | None:
        for ext in self.extensions:
            if ext.id == ext_id:
                return ext
        return None

    def call(self, call_id: str, *, include_deleted: bool = False) -> Call | None:
        call = self.by_id.get(call_id)
        if call is None or (call.deleted and not include_deleted):
            return None
        return call

    def recording(self, recording_id: str, now: float) -> Recording | None:
        """A recording that exists and is visible now (not deleted, not late, record not gone)."""
        self.tick(now)
        rec = self.recordings.get(recording_id)
        if rec is None or not rec.visible(now) or rec.call.deleted:
            return None
        return rec

    def visible_recordings(self, now: float) -> list[Recording]:
        self.tick(now)
        return [r for r in self.recordings.values() if r.visible(now) and not r.call.deleted]

    # -- queries --------------------------------------------------------------

    def query(self, q: Query, now: float) -> list[Call]:
        """Calls with date_from <= startTime < date_to matching `q`, newest first.

        Results are cached per query until the account changes, so paging
        through a large window costs one scan.
        """
        self.tick(now)
        cached = self._cache.get(q)
        if cached is not None:
            self._cache.move_to_end(q)
            return cached
        lo = bisect.bisect_left(self._starts, q.date_from_ms)
        hi = bisect.bisect_left(self._starts, q.date_to_ms)
        result = [c for c in reversed(self._calls[lo:hi]) if self._matches(c, q, now)]
        self._cache[q] = result
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    @staticmethod
    def _matches(call: Call, q: Query, now: float) -> bool:
        if call.deleted and not q.show_deleted:
            return False
        if q.extension_id is not None and call.ext.id != q.extension_id:
            return False
        if q.kinds is not None and call.kind not in q.kinds:
            return False
        if q.directions is not None and call.direction not in q.directions:
            return False
        if q.recording_types is not None and not any(
            rec.visible(now) and rec.type in q.recording_types for rec in call.listed_recordings()
        ):
            return False
        if not q.show_blocked and call.blocked:
            return False
        if q.transports is not None and call.transport not in q.transports:
            return False
        if q.extension_number is not None and call.ext.number != q.extension_number:
            return False
        if q.session_id is not None and str(call.session_id) != q.session_id:
            return False
        if q.telephony_session_id is not None and telephony_session_id(call) != q.telephony_session_id:
            return False
        return q.phone_digits is None or _phone_matches(call, q.phone_digits)

    def newest(self, q: Query, count: int, now: float) -> list[Call]:
        return self.query(q, now)[:count]

    def changes_since(self, seq: int, now: float) -> list[Call]:
        """Calls modified after sequence number `seq`, oldest change first."""
        self.tick(now)
        if seq >= self.seq:
            return []
        changed = [c for c in self._calls if c.seq > seq]
        changed.sort(key=lambda c: c.seq)
        return changed

    # -- mutations ------------------------------------------------------------

    def _touch(self, call: Call, now: float) -> None:
        self.seq += 1
        call.seq = self.seq
        call.modified_ms = max(call.modified_ms, int(now * 1000))
        self.version += 1
        self._cache.clear()

    def tick(self, now: float) -> None:
        """Bring the account up to `now`: late recordings whose time has come
        become visible (and count as a change); retention deletes what is due."""
        if self._pending and self._pending[0].visible_at <= now:
            due = [r for r in self._pending if r.visible_at <= now]
            self._pending = [r for r in self._pending if r.visible_at > now]
            for rec in due:
                rec.call.rec_touched = True
                self._touch(rec.call, rec.visible_at)
                log.debug("recording %s of call %s appeared", rec.id, rec.call.id)
        self._retain(now)

    # -- retention ------------------------------------------------------------

    @property
    def retention_cursor(self) -> int:
        """Index into the start-sorted calls before which no recording exists."""
        return self._cursor

    @property
    def live_recordings(self) -> int:
        """Recordings that exist: not deleted, on a record that is not deleted."""
        return self._live

    def set_retention(self, count: int | None, duration_s: float | None, now: float) -> None:
        """Set both rules (None = off) and apply them at once."""
        if count is not None and count < 0:
            raise ValueError("retention count must be >= 0")
        if duration_s is not None and duration_s <= 0:
            raise ValueError("retention duration must be positive")
        self.retention_count = count
        self.retention_s = duration_s
        log.info("retention: count %s, duration %s s", count, duration_s)
        self._retain(now)

    def retention_info(self) -> dict[str, int | float | None]:
        """The admin API's view: {"count", "duration_s", "deleted"} (None = rule off)."""
        seconds: int | float | None = self.retention_s
        if isinstance(seconds, float) and seconds.is_integer():
            seconds = int(seconds)
        return {"count": self.retention_count, "duration_s": seconds, "deleted": self.retention_deleted}

    def _retain(self, now: float) -> None:
        """Delete what the rules say is gone by `now`, oldest first, from the cursor on."""
        calls = self._calls
        before = self.retention_deleted
        if self.retention_s is not None:
            cutoff_ms = (now - self.retention_s) * 1000
            while self._cursor < len(calls) and calls[self._cursor].start_ms < cutoff_ms:
                call = calls[self._cursor]
                # Gone when its age passed the limit, however late we notice.
                expired_at = call.start_ms / 1000 + self.retention_s
                for rec in self._existing(call):
                    self._retire(rec, expired_at)
                self._cursor += 1
                self.retention_steps += 1
        if self.retention_count is not None:
            while self._live > self.retention_count and self._cursor < len(calls):
                # The invariant guarantees an existing recording at or after the cursor.
                call = calls[self._cursor]
                existing = self._existing(call)
                excess = self._live - self.retention_count
                for rec in existing[:excess]:
                    self._retire(rec, now)
                if len(existing) <= excess:
                    self._cursor += 1
                self.retention_steps += 1
        if self.retention_deleted != before:
            log.debug(
                "retention deleted %d recordings (%d so far)",
                self.retention_deleted - before,
                self.retention_deleted,
            )

    def _retire(self, rec: Recording, at: float) -> None:
        self.delete_recording(rec.id, at)
        self.retention_deleted += 1

    def add_calls(
        self,
        count: int,
        now: float,
        *,
        start: float | None = None,
        recorded: bool | None = True,
        duration: int | None = None,
        direction: str | None = None,
        extension: Extension | None = None,
        late: float = 0.0,
        leg_only: bool | None = None,
    ) -> list[Call]:
        """Add `count` calls starting at `start` (default now), one second apart going back."""
        start_ms = int((now if start is None else start) * 1000)
        added = []
        for i in range(count):
            call = self.gen.call(
                start_ms - i * 1000,
                recorded=recorded,
                duration=duration,
                direction=direction,
                extension=extension,
                leg_only=leg_only,
            )
            for rec in call.recordings():
                if late > 0:
                    rec.visible_at = now + late
                    self._pending.append(rec)
            self._insert(call)
            self._touch(call, now)
            added.append(call)
        self._pending.sort(key=lambda r: r.visible_at)
        self._retain(now)
        return added

    def _insert(self, call: Call) -> None:
        pos = bisect.bisect_right(self._starts, call.start_ms)
        self._starts.insert(pos, call.start_ms)
        self._calls.insert(pos, call)
        self._index(call)
        if pos < self._cursor:  # behind the retention cursor: keep its invariant
            self._cursor = pos if self._existing(call) else self._cursor + 1

    def delete_recording(self, recording_id: str, now: float) -> bool:
        rec = self.recordings.get(recording_id)
        if rec is None or rec.deleted:
            return False
        rec.deleted = True
        rec.call.rec_touched = True
        if not rec.call.deleted:
            self._live -= 1
        if rec in self._pending:
            self._pending.remove(rec)
        self._touch(rec.call, now)
        return True

    def delete_call(self, call_id: str, now: float) -> bool:
        call = self.by_id.get(call_id)
        if call is None or call.deleted:
            return False
        self._live -= len(self._existing(call))
        call.deleted = True
        self._touch(call, now)
        return True

    def calls(self) -> Iterable[Call]:
        return iter(self._calls)


def digits(text: str) -> str:
    return "".join(c for c in text if "0" <= c <= "9")


def _phone_matches(call: Call, wanted: str) -> bool:
    """`phoneNumber`: calls from/to this number. Only external calls show phone
    numbers (the remote party's and the extension's own direct number)."""
    if not wanted or not isinstance(call.remote, Party):
        return False
    for number in (call.remote.phone, call.ext.phone):
        have = digits(number or "")
        if have and (have == wanted or have == "1" + wanted or "1" + have == wanted):
            return True
    return False
