"""One download of one recording into a partial file, shared by its readers.

A `Download` is created by the manager's single-flight map and run as a task
in the manager's long-lived nursery; readers only ever wait on it. See
`rcfs.content.manager` for the design essay. This module must not import
httpx or pyfuse3.
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

from .store import Store
from .types import ContentResponse, ContentSource

log = logging.getLogger(__name__)

# Resuming after a failure in the middle of a body follows the one retry
# policy (its attempt bound and back-off), with one addition: the attempt count
# restarts after every attempt that brought new bytes, so a long download over
# a flaky link is bounded per stall, not per file. Tests swap in a fast policy.
RESUME_POLICY: RetryPolicy = DEFAULT_POLICY

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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
        self, recording_id: str, content_uri: str, priority: Any, partial_path: str
    ) -> None:
        self.recording_id = recording_id
        self.content_uri = content_uri
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
        self.finished = trio.Event()  # the task has ended and cleaned up
        self._changed = trio.Event()
        self._headers_seen = False

    # -- waiting (readers) ---------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_size(self) -> int:
        """The exact size; the partial file exists when this returns."""
        while True:
            if self.error is not None:
                raise self.error
            if self.total is not None and self.fd is not None:
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
    ) -> None:
        """Fetch, verify, commit. Never raises except trio.Cancelled from outside.

        `commit` (the manager's) makes the verified file visible in the cache,
        possibly in one batch with other downloads; it raises if this one failed.
        """
        try:
            with self.cancel_scope:
                try:
                    fd = await trio.to_thread.run_sync(store.create_partial, self.path)
                    self.fd = SharedFd(fd)
                    await self._fetch(client, stats, on_size)
                    self.state = State.COMMITTING
                    assert self.total is not None
                    await commit(self)
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
                    async for chunk in resp.iter_chunks():
                        self._append(chunk)
                        stats.bytes += len(chunk)
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
                attempts = 1 if self.received > before else attempts + 1
                if attempts >= RESUME_POLICY.max_attempts:
                    raise
                delay = RESUME_POLICY.delay(attempts, exc)
                log.info(
                    "download of recording %s interrupted at byte %d (%s); resuming in %.1fs",
                    self.recording_id, self.received, exc, delay,
                )
                await trio.sleep(delay)

    async def _on_headers(
        self, resp: ContentResponse, on_size: Callable[[str, int], None]
    ) -> None:
        assert self.fd is not None
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
            await trio.to_thread.run_sync(os.ftruncate, self.fd.fd, 0)
        self._headers_seen = True
        self.content_type = resp.content_type or self.content_type
        if resp.total_size is not None:
            if self.total is not None and self.total != resp.total_size:
                raise BadResponse(
                    f"recording {self.recording_id} changed size from {self.total}"
                    f" to {resp.total_size} during the download"
                )
            self._learn_size(resp.total_size, on_size)

    def _learn_size(self, size: int, on_size: Callable[[str, int], None]) -> None:
        if self.total == size:
            return
        self.total = size
        self._notify()
        on_size(self.recording_id, size)  # the manager's _report_size: never raises

    def _append(self, chunk: bytes) -> None:
        assert self.fd is not None
        if not chunk:
            return
        end = self.received + len(chunk)
        if self.total is not None and end > self.total:
            raise BadResponse(
                f"recording {self.recording_id} is longer than its size {self.total}"
            )
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
