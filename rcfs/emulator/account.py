"""The emulated account: the call log as a time-ordered store, and its changes.

Owns the calls and recordings after generation: date-window queries (newest
first, filtered like readCompanyCallLog), look-ups by id, the modification
sequence that ISync reports, and the admin mutations (add calls, delete a
recording or a record, late-appearing recordings). Callers pass the wall-clock
time in; nothing here sleeps or does I/O.

Deletion follows RingCentral: deleting a recording keeps the call record and
drops its `recording` block (the record counts as modified, so ISync reports
it); deleting a record hides it unless `showDeleted`, where it carries
`"deleted": true`.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from rcfs.emulator.generate import Generator
from rcfs.emulator.model import Call, Extension, Recording

log = logging.getLogger(__name__)

_CACHE_SIZE = 16


@dataclass(frozen=True)
class Query:
    """A call-log filter. `recording_types` None = any call; empty = never used."""

    date_from_ms: int
    date_to_ms: int
    extension_id: str | None = None
    kinds: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    recording_types: frozenset[str] | None = None
    show_deleted: bool = False


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
        if q.recording_types is not None:
            rec = call.recording
            if rec is None or not rec.visible(now) or rec.type not in q.recording_types:
                return False
        return True

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
        """Late recordings whose time has come become visible (and count as a change)."""
        if not self._pending or self._pending[0].visible_at > now:
            return
        due = [r for r in self._pending if r.visible_at <= now]
        self._pending = [r for r in self._pending if r.visible_at > now]
        for rec in due:
            rec.call.rec_touched = True
            self._touch(rec.call, rec.visible_at)
            log.debug("recording %s of call %s appeared", rec.id, rec.call.id)

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
            )
            for rec in call.recordings():
                if late > 0:
                    rec.visible_at = now + late
                    self._pending.append(rec)
            self._insert(call)
            self._touch(call, now)
            added.append(call)
        self._pending.sort(key=lambda r: r.visible_at)
        return added

    def _insert(self, call: Call) -> None:
        pos = bisect.bisect_right(self._starts, call.start_ms)
        self._starts.insert(pos, call.start_ms)
        self._calls.insert(pos, call)
        self._index(call)

    def delete_recording(self, recording_id: str, now: float) -> bool:
        rec = self.recordings.get(recording_id)
        if rec is None or rec.deleted:
            return False
        rec.deleted = True
        rec.call.rec_touched = True
        if rec in self._pending:
            self._pending.remove(rec)
        self._touch(rec.call, now)
        return True

    def delete_call(self, call_id: str, now: float) -> bool:
        call = self.by_id.get(call_id)
        if call is None or call.deleted:
            return False
        call.deleted = True
        self._touch(call, now)
        return True

    def calls(self) -> Iterable[Call]:
        return iter(self._calls)
