"""One download of one recording into a partial file, shared by its readers.

A `Download` is created by the manager's single-flight map and run as a task
in the manager's long-lived nursery; readers only ever wait on it. See
`rcfs.content.manager` for the design essay. This module must not import
httpx or pyfuse3.

What a server may not do. A declared size beyond what the recording's
duration allows (`integrity.max_plausible_size`) is refused before a byte is
written, and so is a body without a length that grows past it. A body that
brings nothing for `STALL_SECONDS`, or less than `MIN_RATE` bytes a second
over `RATE_WINDOW` seconds, is a failed attempt; so is a resume that brought
less than `PROGRESS_RESET` bytes, so a host that trickles or stalls ends in
EIO after the resume policy's attempts, not never. A download nobody wants
any more (no open file, no prefetch or archive waiting) is not resumed after
a failure: it ends, and costs no more requests.

Streaming through. A recording bigger than the cache disk's free space (less
`FREE_RESERVE`) cannot be cached, but a reader can still have it: the
download is then `transient`, with no file: the last `STREAM_WINDOW` bytes are
kept in memory, readers are served from there, and the network read waits
while it is more than half a window ahead of the furthest reader (a player's
pace). Nothing is committed; a reader that falls out of the window, and the
next open, need a new download. A prefetch or the archive, which want the
recording kept, get `CacheFull` instead.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from rcfs.api import Urgency
from rcfs.api.retry import DEFAULT_POLICY, RetryPolicy
from rcfs.errors import BadResponse, CacheFull, RcfsError, TemporaryFailure

from .layout import PARTIAL_FLAGS
from .store import Store
from .types import ContentResponse, ContentSource

log = logging.getLogger(__name__)

# Resuming after a failure in the middle of a body follows the one retry
# policy (its attempt bound and back-off), with one addition: the attempt count
# restarts after every attempt that brought new bytes, so a long download over
# a flaky link is bounded per stall, not per file. Tests swap in a fast policy.
RESUME_POLICY: RetryPolicy = DEFAULT_POLICY

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# No byte for this long: the attempt failed. RCFS_STALL_SECONDS tunes it (and
# the window below) for links that are slow but alive, and for tests.
STALL_SECONDS = float(os.environ.get("RCFS_STALL_SECONDS") or 30.0)
RATE_WINDOW = STALL_SECONDS  # seconds over which MIN_RATE is measured
MIN_RATE = 4096  # bytes a second: real time for 32 kbit/s audio
PROGRESS_RESET = 256 * 1024  # an attempt that brings this much restarts the attempt count
FREE_RESERVE = 64 << 10  # room for the cache's own metadata
STREAM_WINDOW = 32 << 20  # bytes of a streamed-through recording kept in memory


class State(enum.Enum):
    QUEUED = "queued"  # waiting for response headers (rate limiter, back-off)
    ACTIVE = "active"  # receiving the body
    COMMITTING = "committing"
    DONE = "done"  # in the cache
    FAILED = "failed"


@dataclass
class DownloadStats:
    done: int = 0
    failed: int = 0
    bytes: int = 0


class SharedFd:
    """A file descriptor closed when its last holder releases it.

    The download holds one reference, each reader handle one more, so a
    descriptor is never closed (and its number reused) under a reader.
    Closing the last reference of an unlinked partial file happens inline:
    partial files are small enough that freeing them is quick.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._refs = 1

    def acquire(self) -> SharedFd:
        if self._refs <= 0:
            raise RuntimeError("acquire of a closed SharedFd")
        self._refs += 1
        return self

    def release(self) -> None:
        self._refs -= 1
        if self._refs == 0:
            os.close(self.fd)


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of `data` at `offset` (a seam for tests that fake a full disk)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class Download:
    """The single download of one recording; readers wait on its progress."""

    def __init__(
        self, recording_id: str, content_uri: str, priority: Any, partial_path: str,
        *, max_size: int | None = None, wanted: Callable[[], bool] = lambda: True,
        read_by: Callable[[], bool] = lambda: False,
    ) -> None:
        self.recording_id = recording_id
        self.content_uri = content_uri
        self.max_size = max_size  # the most its duration allows (None: unknown)
        self.wanted = wanted  # is anyone still waiting for it?
        self.read_by = read_by  # does a reader (not a prefetch) want it?
        self.transient = False  # streamed through memory, never cached (see the essay)
        self._buf = bytearray()  # transient: bytes [_base, received)
        self._base = 0
        self._read_high = 0  # transient: the furthest a reader has asked for
        self._reader_moved = trio.Event()
        # Raised when a reader joins a download the archive or a prefetch started.
        self.urgency = priority if isinstance(priority, Urgency) else Urgency(priority)
        self.path = partial_path
        self.fd: SharedFd | None = None
        self.received = 0  # bytes [0, received) are in the file, contiguous
        self.total: int | None = None  # exact size, once known
        self.content_type: str | None = None
        self.state = State.QUEUED
        self.error: RcfsError | None = None
        self.cancel_scope = trio.CancelScope()
        # Every byte is in and checked once it commits: cancelling the download (an
        # unmount) lets the commit finish, so a complete download is not fetched
        # again; the manager's aclose bounds the wait through this scope's deadline.
        self.commit_scope = trio.CancelScope(shield=True)
        self.finished = trio.Event()  # the task has ended and cleaned up
        self._changed = trio.Event()
        self._headers_seen = False
        self._free_space: Callable[[], int] | None = None
        self._make_room: Callable[[int], Awaitable[None]] | None = None

    # -- waiting (readers) ---------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_size(self) -> int:
        """The exact size; the partial file exists when this returns."""
        while True:
            if self.error is not None:
                raise self.error
            if self.total is not None and (self.fd is not None or self.transient):
                return self.total
            await self._changed.wait()

    async def wait_bytes(self, end: int) -> None:
        """Until bytes [0, end) have arrived; the download's error if it fails first.

        Bytes that arrived before a failure stay readable: the caller holds its
        own reference to the descriptor, and `received` only counts good bytes.
        """
        while self.received < end:
            if self.error is not None:
                raise self.error
            await self._changed.wait()

    def transient_read(self, offset: int, end: int) -> bytes:
        """Bytes [offset, end) of a streamed-through recording, which have arrived."""
        if offset < self._base:
            raise TemporaryFailure(
                f"recording {self.recording_id} is streamed through without caching (no room on "
                "the cache disk) and this part of it has passed: open it again to read it")
        if end > self._read_high:
            self._read_high = end
            self._reader_moved.set()
            self._reader_moved = trio.Event()
        return bytes(self._buf[offset - self._base:end - self._base])

    async def wait_done(self) -> None:
        while self.state is not State.DONE:
            if self.error is not None:
                raise self.error
            await self._changed.wait()

    # -- running (the download task) -----------------------------------------

    async def run(
        self,
        client: ContentSource,
        store: Store,
        stats: DownloadStats,
        on_size: Callable[[str, int], None],
        commit: Callable[[Download], Awaitable[None]],
        free_space: Callable[[], int] | None = None,
        make_room: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Fetch, verify, commit. Never raises except trio.Cancelled from outside.

        `commit` (the manager's) makes the verified file visible in the cache,
        possibly in one batch with other downloads; it raises if this one failed.
        """
        try:
            with self.cancel_scope:
                try:
                    self.fd = SharedFd(await _create_partial(store, self.path))
                    self._free_space = free_space
                    self._make_room = make_room
                    await self._fetch(client, stats, on_size)
                    if self.transient:
                        self.state = State.DONE
                        stats.done += 1
                        self._notify()
                        log.info("recording %s streamed through (%d bytes), not cached",
                                 self.recording_id, self.received)
                        return
                    self.state = State.COMMITTING
                    assert self.total is not None
                    with self.commit_scope:
                        await commit(self)
                    if self.commit_scope.cancelled_caught:  # closing, and out of time
                        self._fail(TemporaryFailure(
                            f"download of {self.recording_id} not committed: the cache closed"),
                            quiet=True)
                        return
                    self.state = State.DONE
                    stats.done += 1
                    self._notify()
                    log.debug("recording %s cached (%d bytes)", self.recording_id, self.total)
                except trio.Cancelled:
                    cancelled = TemporaryFailure(f"download of {self.recording_id} cancelled")
                    self._fail(cancelled, quiet=True)
                    raise
                except Exception as exc:
                    self._fail(_domain_error(exc, self.recording_id))
        finally:
            if self.state is not State.DONE or self.transient:
                if self.state is not State.DONE:
                    stats.failed += 1
                try:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(store.discard_partial, self.path)
                except OSError as exc:  # never let cleanup crash the mount's nursery
                    log.warning("cannot remove partial file %s: %s", self.path, exc)
            if self.fd is not None:
                self.fd.release()
            self.finished.set()

    def _fail(self, error: RcfsError, *, quiet: bool = False) -> None:
        self.state = State.FAILED
        self.error = error
        self._notify()
        cause = error.__cause__ or error
        if quiet:
            log.info("%s", error)
        else:
            log.warning(
                "download of recording %s failed after %d bytes: %s (cause: %r)",
                self.recording_id, self.received, error, cause,
            )

    async def _fetch(
        self, client: ContentSource, stats: DownloadStats, on_size: Callable[[str, int], None]
    ) -> None:
        """Stream the body into the partial file, resuming after mid-body failures."""
        attempts = 0
        while True:
            before = self.received
            try:
                self.state = State.QUEUED
                async with client.stream_content(
                    self.content_uri, start=self.received, priority=self.urgency
                ) as resp:
                    await self._on_headers(resp, on_size)
                    self.state = State.ACTIVE
                    await self._stream(resp, stats)
                if self.total is None:  # no length: the clean end of the body says it
                    self._learn_size(self.received, on_size)
                elif self.received < self.total:
                    raise TemporaryFailure(
                        f"body ended at byte {self.received} of {self.total}"
                    )
                return
            except TemporaryFailure as exc:
                if not self._headers_seen:
                    raise  # the client's own retries for the request ran already
                if self.total is not None and self.received == self.total:
                    # Every byte the size promised arrived, then the body broke
                    # (a Content-Length larger than the range): resuming at the
                    # end could only get a 416. The file is complete.
                    log.info("recording %s: body broke after its last byte (%s)",
                             self.recording_id, exc)
                    return
                progressed = self.received - before >= PROGRESS_RESET
                attempts = 1 if progressed else attempts + 1
                if attempts >= RESUME_POLICY.max_attempts:
                    raise
                if not self.wanted():
                    raise TemporaryFailure(
                        f"{exc}; nobody is waiting for recording {self.recording_id} any more, "
                        "so it is not resumed") from exc
                delay = RESUME_POLICY.delay(attempts, exc)
                log.info(
                    "download of recording %s interrupted at byte %d (%s); resuming in %.1fs "
                    "(attempt %d of %d)", self.recording_id, self.received, exc, delay,
                    attempts + 1, RESUME_POLICY.max_attempts,
                )
                await trio.sleep(delay)

    async def _stream(self, resp: ContentResponse, stats: DownloadStats) -> None:
        """Append the body, failing the attempt when it stalls or trickles."""
        chunks = resp.iter_chunks().__aiter__()
        window_start, window_bytes = trio.current_time(), 0
        while True:
            if self.transient and await self._wait_for_room():
                window_start, window_bytes = trio.current_time(), 0  # our pause, not theirs
            with trio.move_on_after(STALL_SECONDS) as stalled:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            if stalled.cancelled_caught:
                raise TemporaryFailure(
                    f"no data for {STALL_SECONDS:.0f} s at byte {self.received}")
            self._append(chunk)
            stats.bytes += len(chunk)
            window_bytes += len(chunk)
            now = trio.current_time()
            if now - window_start >= RATE_WINDOW:
                if window_bytes < MIN_RATE * (now - window_start):
                    raise TemporaryFailure(
                        f"too slow: {window_bytes / (now - window_start):.0f} B/s "
                        f"(the least accepted is {MIN_RATE} B/s)")
                window_start, window_bytes = now, 0

    async def _wait_for_room(self) -> bool:
        """Streaming through: hold the network while far enough ahead of the readers.
        True if it waited."""
        waited = False
        while self.received - self._read_high > STREAM_WINDOW // 2:
            if not self.read_by():
                raise TemporaryFailure(
                    f"nobody reads the streamed-through recording {self.recording_id} any more")
            waited = True
            with trio.move_on_after(5):
                await self._reader_moved.wait()
        return waited

    async def _check_room(self, total: int) -> None:
        """Before the first byte: if the cache disk cannot hold `total`, stream it through
        (a reader waits) or refuse (a prefetch or the archive, which want it kept)."""
        if self._free_space is None or self.received or self.transient:
            return
        if self._make_room is not None:
            await self._make_room(total)  # evict from the LRU cache first (--cache-min-free)
        free = self._free_space()  # one statvfs, inline like _make_room's (~2 us; a hop ~0.5 ms)
        if total + FREE_RESERVE <= free:
            return
        if not self.read_by():
            raise CacheFull(
                f"recording {self.recording_id} ({total} bytes) does not fit on the cache disk "
                f"({free} bytes free)")
        log.info("recording %s (%d bytes) is bigger than the cache disk's free space (%d bytes): "
                 "streaming it through without caching", self.recording_id, total, free)
        self.transient = True
        if self.fd is not None:
            self.fd.release()
            self.fd = None
        self._notify()

    async def _on_headers(
        self, resp: ContentResponse, on_size: Callable[[str, int], None]
    ) -> None:
        if resp.start != self.received:
            if resp.start != 0:
                raise BadResponse(
                    f"asked for recording {self.recording_id} from byte {self.received},"
                    f" got a body starting at {resp.start}"
                )
            # 200 instead of 206: restart cleanly. Readers never see the
            # truncated range: `received` drops before the truncation starts.
            log.info(
                "server ignored the range for recording %s: restarting", self.recording_id
            )
            self.received = 0
            if self.transient:
                self._buf.clear()
                self._base = 0
            else:
                assert self.fd is not None
                await trio.to_thread.run_sync(os.ftruncate, self.fd.fd, 0)
        self._headers_seen = True
        self.content_type = resp.content_type or self.content_type
        if resp.total_size is not None and self.max_size is not None and (
                resp.total_size > self.max_size):
            raise BadResponse(
                f"recording {self.recording_id}: the server declared {resp.total_size} bytes, more "
                f"than a recording of its duration can have ({self.max_size}): refused")
        if resp.total_size is not None:
            if self.total is not None and self.total != resp.total_size:
                raise BadResponse(
                    f"recording {self.recording_id} changed size from {self.total}"
                    f" to {resp.total_size} during the download"
                )
            await self._check_room(resp.total_size)
            self._learn_size(resp.total_size, on_size)

    def _learn_size(self, size: int, on_size: Callable[[str, int], None]) -> None:
        if self.total == size:
            return
        self.total = size
        self._notify()
        on_size(self.recording_id, size)  # the manager's _report_size: never raises

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        end = self.received + len(chunk)
        if self.total is not None and end > self.total:
            raise BadResponse(
                f"recording {self.recording_id} is longer than its size {self.total}"
            )
        if self.max_size is not None and end > self.max_size:
            raise BadResponse(
                f"recording {self.recording_id}: the body grew past {self.max_size} bytes, more "
                "than a recording of its duration can have: refused")
        if self.transient:
            self._buf += chunk
            excess = len(self._buf) - STREAM_WINDOW
            if excess > 0:
                del self._buf[:excess]
                self._base += excess
            self.received = end
            self._notify()
            return
        assert self.fd is not None
        # Inline, not through a thread, by measurement on this machine
        # (tests/content/bench_append.py): a 64 KiB pwrite into the page cache
        # takes ~12 us median (16 KiB: ~4 us), a thread hop ~65 us; chunks
        # arrive at network speed, so the trio thread is busy ~1 % of the time.
        # A disk so slow that writeback throttles us would stall reads too.
        write_at(self.fd.fd, chunk, self.received)
        self.received = end
        self._notify()


def _domain_error(exc: Exception, recording_id: str) -> RcfsError:
    """The error readers see: domain errors as they are, disk errors translated."""
    if isinstance(exc, RcfsError):
        return exc
    if (isinstance(exc, OSError) and exc.errno in _DISK_FULL) or (
        isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)
    ):
        err: RcfsError = CacheFull(f"content cache disk is full ({exc}); recording {recording_id}")
    elif isinstance(exc, OSError | sqlite3.Error):
        err = TemporaryFailure(f"content cache I/O error for recording {recording_id}: {exc}")
    else:
        log.error("unexpected error downloading recording %s", recording_id, exc_info=exc)
        err = TemporaryFailure(f"unexpected error downloading recording {recording_id}: {exc!r}")
    err.__cause__ = exc
    return err


async def _create_partial(store: Store, path: str) -> int:
    """The partial file: a spare renamed (layout.py, "Spare files"), else created
    inline: a thread hop around the O_CREAT cost ~0.7 ms of every uncached open's
    ~5 ms (appends are inline for the same reason, see `_append`). The rare path
    (the cache directory removed under the mount: recreate it) runs in a thread."""
    fd = store.take_spare(path)
    if fd is not None:
        return fd
    try:
        return os.open(path, PARTIAL_FLAGS, 0o600)
    except FileNotFoundError:
        return await trio.to_thread.run_sync(store.create_partial, path)
