"""Which years, months and days exist, and the attributes of their directories.

Day membership is the call start's local date in `tz`, queried as the range
[local midnight, next local midnight). zoneinfo maps a skipped midnight to the
transition instant and a repeated hour to its first occurrence, so in every
zone since 1900 local dates never run backwards and the range is exact (only
the 1867 Alaska date-line change repeats a whole day). Year/month/day
existence is a skip-scan of the index (`Index.next_start`), so no listing
costs more than its size.

While the window is indexed in the background (`backfill.py`), the years and
months it spans are listed at once (`expected_span`), days only as they
become known; `Vfs.day_range` tells the adapter which span of the call log a
lookup or listing of a day needs, and the adapter has it indexed first.

Times: a directory's mtime is its newest (latest-dated) entry's; a day's is
its `calls.json`'s, i.e. the newest start or lastModifiedTime of its records,
so both stay put while the day does not change.

What is inside a day directory is `days.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cachetools import LRUCache

from rcfs.errors import NotFound
from rcfs.index import Index
from rcfs.models import epoch_ms, from_epoch_ms

from .inodes import ROOT_INO, Attrs, Node, dir_ino


class Listings:
    """The year, month and day directories over `index` in zone `tz`, with their
    listing caches (dropped by `forget_day`, `window_indexed` and `clear`)."""

    def __init__(
        self,
        index: Index,
        tz: ZoneInfo,
        attrs: Attrs,
        *,
        keep_deleted: bool,
        expected_span: Callable[[], tuple[int, int] | None],
    ) -> None:
        self._index = index
        self._tz = tz
        self._attrs = attrs
        self._all = keep_deleted
        self._expected = expected_span
        # Directory listings as sorted child numbers, keyed (), (y,), (y, m).
        self._lists: LRUCache[tuple[int, ...], list[int]] = LRUCache(maxsize=4096)
        self._dir_nodes: LRUCache[tuple[int, ...], Node] = LRUCache(maxsize=4096)
        self._day_mtime: LRUCache[date, int] = LRUCache(maxsize=4096)

    def start_of(self, d: date) -> int:
        """Local midnight starting `d`, in epoch ms."""
        return epoch_ms(datetime(d.year, d.month, d.day, tzinfo=self._tz))

    def check_exists(self, kind: str, key: tuple[int, ...], ino: int) -> None:
        """Raise NotFound unless the date directory (or calls.json) `ino`, decoded
        as (`kind`, `key`), is in the tree."""
        if kind == "year":
            ok = key[0] in self.years()
        elif kind == "month":
            ok = key[0] in self.years() and key[1] in self.months(key[0])
        elif kind in ("day", "calls"):
            ok = key[0] in self.years() and key[1] in self.months(key[0]) and (
                key[2] in self.day_list(key[0], key[1]))
        else:
            ok = False
        if not ok:
            raise NotFound(f"no inode {ino}")

    def _scan(self, key: tuple[int, ...], lo: date, hi: date,
              unit: Callable[[date], int], after: Callable[[date], date]) -> list[int]:
        """Distinct `unit(local date)` of recordings between lo and hi (local dates),
        skipping to `after(date)` once a value is found: one seek per value."""
        cached = self._lists.get(key)
        if cached is not None:
            return cached
        found: set[int] = set()
        t = self.start_of(lo)
        end = self.start_of(hi)
        while True:
            s = self._index.next_start(t, include_deleted=self._all)
            if s is None or s >= end:
                break
            local = from_epoch_ms(s).astimezone(self._tz).date()
            if lo <= local < hi:
                found.add(unit(local))
            # s + 1: progress even where a zone's local date would run backwards.
            t = max(self.start_of(after(local)), s + 1)
        out = sorted(found)
        self._lists[key] = out
        return out

    def years(self) -> list[int]:
        cached = self._lists.get(())
        if cached is not None:
            return cached
        bounds = self._index.start_range()
        found: list[int] = []
        if bounds is not None:
            first = from_epoch_ms(bounds[0]).astimezone(self._tz).year
            last = min(from_epoch_ms(bounds[1]).astimezone(self._tz).year, 9998)
            found = self._scan((), date(first, 1, 1), date(last + 1, 1, 1),
                               lambda d: d.year, lambda d: date(min(d.year + 1, 9999), 1, 1))
        expected = self._expected_dates()
        if expected is not None:
            found = sorted(set(found) | set(range(expected[0].year, expected[1].year + 1)))
            self._lists[()] = found
        return found

    def months(self, y: int) -> list[int]:
        found = self._scan((y,), date(y, 1, 1), date(y + 1, 1, 1),
                           lambda d: d.month, _next_month)
        expected = self._expected_dates()
        if expected is None or not expected[0].year <= y <= expected[1].year:
            return found
        lo = expected[0].month if expected[0].year == y else 1
        hi = expected[1].month if expected[1].year == y else 12
        if set(range(lo, hi + 1)) <= set(found):
            return found
        merged = self._lists[(y,)] = sorted(set(found) | set(range(lo, hi + 1)))
        return merged

    def _expected_dates(self) -> tuple[date, date] | None:
        """While the window is being indexed: its first and last local dates, whose
        years and months are shown before their days are known (a lookup of a day
        in them indexes that day at once)."""
        span = self._expected()
        if span is None or span[1] <= span[0]:
            return None
        return (from_epoch_ms(span[0]).astimezone(self._tz).date(),
                from_epoch_ms(span[1] - 1).astimezone(self._tz).date())

    def day_list(self, y: int, m: int) -> list[int]:
        return self._scan((y, m), date(y, m, 1), _next_month(date(y, m, 1)),
                          lambda d: d.day, lambda d: d + timedelta(days=1))

    def mtime_of_day(self, d: date) -> int:
        cached = self._day_mtime.get(d)
        if cached is None:
            newest = self._index.max_mod_between(
                self.start_of(d), self.start_of(d + timedelta(days=1)))
            cached = (newest or 0) * 1_000_000
            self._day_mtime[d] = cached
        return cached

    def dir_node(self, key: tuple[int, ...]) -> Node:
        """The root (key ()), a year (y,), a month (y, m) or a day (y, m, d)."""
        node = self._dir_nodes.get(key)
        if node is not None:
            return node
        if len(key) == 3:
            nlink, mtime = 2, self.mtime_of_day(date(*key))
        else:
            children = (self.years() if not key else self.months(key[0]) if len(key) == 1
                        else self.day_list(*key))
            mtime = self.dir_node((*key, children[-1])).mtime_ns if children else 0
            nlink = 2 + len(children) + (1 if not key else 0)  # root: + hidden .rcfs
        ino = ROOT_INO if not key else dir_ino(*key)
        node = self._attrs.directory(ino, nlink, mtime)
        self._dir_nodes[key] = node
        return node

    def forget_day(self, d: date) -> None:
        """Drop what is cached about day `d` and the directories above it."""
        self._day_mtime.pop(d, None)
        for key in ((), (d.year,), (d.year, d.month), (d.year, d.month, d.day)):
            self._lists.pop(key, None)
            self._dir_nodes.pop(key, None)

    def window_indexed(self, span: tuple[int, int]) -> tuple[set[int], list[tuple[int, str]]]:
        """The window `span` was being indexed and now is: years and months shown
        in advance that have no recordings go. Returns the directory inodes to
        invalidate and the (parent, name) entries that left the tree."""
        lo = from_epoch_ms(span[0]).astimezone(self._tz).date()
        hi = from_epoch_ms(span[1] - 1).astimezone(self._tz).date()
        shown = {y: self.months(y) for y in range(lo.year, hi.year + 1)}
        for key in [k for k in self._lists if len(k) < 2]:
            self._lists.pop(key, None)
        for key in [k for k in self._dir_nodes if len(k) < 3]:
            self._dir_nodes.pop(key, None)
        inos = {ROOT_INO}
        entries: list[tuple[int, str]] = []
        years = set(self.years())
        for y, months in shown.items():
            inos.add(dir_ino(y))
            if y not in years:
                entries.append((ROOT_INO, f"{y:04d}"))
                continue
            real = set(self.months(y))
            entries.extend((dir_ino(y), f"{m:02d}") for m in months if m not in real)
            inos.update(dir_ino(y, m) for m in months)
        return inos, entries

    def clear(self) -> None:
        for cache in (self._lists, self._dir_nodes, self._day_mtime):
            cache.clear()


def _next_month(d: date) -> date:
    return date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
