"""File managers, thumbnailers and indexers: previews must not drain the Heavy budget.

Owns the decision, per open of a recording that is not cached, whether it is
a preview: a file manager showing a day reads the head of every file for
thumbnails, audio tags and content sniffing, and for rcfs each such open is
a Heavy download (10 a minute by default). A process is taken for a preview
scanner when

- its name is a known thumbnailer or indexer (`SCANNERS`: tumbler, the GNOME
  and KDE thumbnailers, ffmpegthumbnailer, baloo, tracker/localsearch), or
- it has opened `HEAD_OPENS` uncached recordings of one day in the last
  `WINDOW` seconds and read no more than their head (`HEAD_BYTES`) from any
  of them before closing it: the pattern of a preview, where `cp`, `rsync`,
  players and checksum tools read whole files.

A scanner's uncached opens go at background priority, `ALLOWANCE` a minute;
beyond that they answer EAGAIN ("try again later") at once, without a
request, and the file manager shows a plain icon. Cached recordings are
always served, so previews of what has been listened to or archived still
work. The trade-off: a person running `head` or `file` over a day of
uncached recordings gets EAGAIN after the first few too (the log says so
once per process); `rcfs prefetch` (or archive mode) first, and everything
is served from the cache.

Must not: import pyfuse3 or httpx. Process names come from /proc (a quick
read of a small procfs file, only for uncached opens).
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache

log = logging.getLogger(__name__)

WINDOW = 60.0  # seconds of history per process
HEAD_OPENS = 3  # head-only reads of one day that make a process a scanner
HEAD_BYTES = 256 * 1024  # reading no more than this (of a longer file) is a head read
ALLOWANCE = 1  # uncached opens a minute a scanner may still make
SCANNER_FOR = 600.0  # seconds a process stays a scanner after its last sign
# /proc/PID/comm (15 characters at most) of known thumbnailers and indexers.
# File managers themselves are not listed: they also copy files, which must
# not be refused; their own sniffing is caught by the head-read pattern.
SCANNERS = (
    "tumblerd", "tumbler", "gnome-desktop-t", "gnome-thumbnail", "totem-video-thu",
    "ffmpegthumbnail", "gst-thumbnailer", "evince-thumbnai", "kio_thumbnail", "baloo_file",
    "baloo_file_extr", "tracker-miner-f", "tracker-extract", "localsearch-3", "localsearch-ext",
)


@dataclass
class _Open:
    when: float
    day: int
    size: int
    read: int = 0
    closed: bool = False


@dataclass
class _Process:
    opens: collections.deque[_Open] = field(default_factory=collections.deque)
    scanner_until: float = 0.0
    allowed: collections.deque[float] = field(default_factory=collections.deque)
    told: bool = False
    name: str | None = None  # /proc/PID/comm, read once


class PreviewGuard:
    """Per-process bookkeeping of uncached opens and how much of them was read."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic,
        comm: Callable[[int], str | None] | None = None,
    ) -> None:
        self._clock = clock
        self._comm = comm or process_name
        self._procs: dict[int, _Process] = {}
        self._by_handle: dict[int, _Open] = {}
        self.refused = 0  # opens answered EAGAIN
        self.throttled = 0  # opens let through at background priority

    def decide(self, pid: int, day: int) -> str:
        """'interactive', 'background' (a scanner within its allowance) or 'refuse',
        for an uncached open by `pid` in the day directory `day`."""
        now = self._clock()
        proc = self._procs.setdefault(pid, _Process())
        self._trim(proc, now)
        if proc.scanner_until < now and not self._is_scanner(pid, proc, day):
            return "interactive"
        proc.scanner_until = now + SCANNER_FOR
        while proc.allowed and proc.allowed[0] < now - 60.0:
            proc.allowed.popleft()
        if len(proc.allowed) < ALLOWANCE:
            proc.allowed.append(now)
            self.throttled += 1
            return "background"
        self.refused += 1
        if not proc.told:
            proc.told = True
            log.info("process %d (%s) reads the heads of many uncached recordings, as a file "
                     "manager's previews do: its uncached opens answer EAGAIN beyond %d a minute "
                     "(cached recordings are served)", pid, self._comm(pid) or "?", ALLOWANCE)
        return "refuse"

    def opened(self, pid: int, day: int, fh: int, size: int) -> None:
        """An uncached recording was opened (file handle `fh`)."""
        entry = _Open(self._clock(), day, size)
        self._procs.setdefault(pid, _Process()).opens.append(entry)
        self._by_handle[fh] = entry

    def read(self, fh: int, end: int) -> None:
        entry = self._by_handle.get(fh)
        if entry is not None and end > entry.read:
            entry.read = end

    def released(self, fh: int) -> None:
        entry = self._by_handle.pop(fh, None)
        if entry is not None:
            entry.closed = True

    def snapshot(self) -> dict[str, int]:
        return {"refused": self.refused, "throttled": self.throttled,
                "scanners": sum(p.scanner_until > self._clock() for p in self._procs.values())}

    def _is_scanner(self, pid: int, proc: _Process, day: int) -> bool:
        if proc.name is None:
            proc.name = self._comm(pid) or ""
        if any(proc.name.startswith(s) for s in SCANNERS):
            return True
        # One pass, ended by the first file of the day read past its head: a reader
        # (cat, rsync, a player) stops it at once, where two lists of every open
        # in the window cost a sequential copy of 1,500 files 10% of the daemon.
        heads = 0
        for o in proc.opens:
            if o.day != day:
                continue
            if o.read >= min(o.size, HEAD_BYTES + 1):
                return False
            if o.closed and o.read <= HEAD_BYTES < o.size:
                heads += 1
        return heads >= HEAD_OPENS

    def _trim(self, proc: _Process, now: float) -> None:
        while proc.opens and proc.opens[0].when < now - WINDOW:
            proc.opens.popleft()
        if len(self._procs) > 4096:  # forget idle processes
            for pid in [p for p, st in self._procs.items()
                        if not st.opens and st.scanner_until < now][:2048]:
                del self._procs[pid]


# Thread -> process, for a few seconds: a reader's opens come one after another
# from the same thread, and /proc/TID/status costs ~0.1 ms of each uncached open
# (2% of it). A thread id comes round again only once the kernel has gone
# through the pid space (pid_max), which a machine forking hard can do within
# seconds: a remembered thread of another process must still be one of its tasks.
_TGIDS: TTLCache[int, int] = TTLCache(maxsize=1024, ttl=5.0)


def thread_group(tid: int) -> int:
    """The process (thread group) of the thread behind a FUSE request: FUSE names the
    thread, and a multi-threaded thumbnailer is one process."""
    tgid = _TGIDS.get(tid)
    if tgid is not None and (tgid == tid or os.path.exists(f"/proc/{tgid}/task/{tid}")):
        return tgid
    try:
        with open(f"/proc/{tid}/status", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    tgid = _TGIDS[tid] = int(line.split(":", 1)[1])
                    return tgid
    except (OSError, ValueError):
        pass
    return tid


def process_name(pid: int) -> str | None:
    """A process's short name (/proc/PID/comm), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


_TICKS = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that `process_start` counts in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS)


def running_since(pid: int, ticks: int) -> bool:
    """Whether process `pid` runs and already ran at `ticks` (`boot_ticks()`): not a
    later process that reuses the id."""
    start = process_start(pid)
    return start is not None and start <= ticks + 1


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22): with
    its id, what tells it from a later process that reuses the id. None when it is
    gone (or a zombie: it reads nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
    try:
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None
