"""Learned sizes: recordings' exact sizes as downloads find them out.

`set_exact_size` is called while an open() waits for a download's headers, so
it updates memory at once. A size from headers is provisional (`final=False`):
shown, so that fstat() after open() is exact, but never written to the index,
and forgotten (`size_unconfirmed`) if the download fails, so a server that
promised a terabyte and sent less cannot leave a file of that size behind. A
final size (the download committed, or a complete cached file) is persisted
with the content's digest and type: while `run` is running in the mount's
nursery the index write goes to a worker thread (batched; pending sizes are
overlaid on whatever is read from the index meanwhile). A crash loses at most
those pending sizes, learned again at the next open.

Owns the sizes not in the index and their writing; the tree's caches are the
tree's, updated through the `show` callback it passes in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from zoneinfo import ZoneInfo

import trio

from rcfs.index import Index, IndexedRecording
from rcfs.naming import file_name

log = logging.getLogger(__name__)


class LearnedSizes:
    """Sizes learned for recordings of `index`; `show` puts a recording whose
    learned size changed in the tree's caches, `cached` is a recording as the tree
    holds it in memory (the index's, overlaid with what is learned here), or None."""

    def __init__(self, index: Index, tz: ZoneInfo, show: Callable[[IndexedRecording], None],
                 cached: Callable[[str], IndexedRecording | None] = lambda _: None) -> None:
        self._index = index
        self._cached = cached
        self._tz = tz
        self._show = show
        # Learned sizes not yet in the index: recording id -> (size, content type, digest).
        self._pending: dict[str, tuple[int, str | None, str | None]] = {}
        # Sizes response headers named, until the download completes: id -> (size, type).
        self._provisional: dict[str, tuple[int, str | None]] = {}
        self._format_noted: set[str] = set()  # recordings whose format differs, logged
        self._write_behind = False
        self._dirty = trio.Event()

    @property
    def empty(self) -> bool:
        """No size is pending or provisional: `overlay` changes nothing."""
        return not (self._pending or self._provisional)

    def is_provisional(self, recording_id: str) -> bool:
        return recording_id in self._provisional

    def overlay(self, ir: IndexedRecording) -> IndexedRecording:
        """The recording with its learned size if that is not in the index yet."""
        learned = self._pending.get(ir.recording_id)
        if learned is not None:
            size, content_type, digest = learned
            return replace(ir, exact_size=size,
                           content_type=ir.content_type if content_type is None else content_type,
                           digest=ir.digest if digest is None else digest)
        provisional = self._provisional.get(ir.recording_id)
        if provisional is not None:
            size, content_type = provisional
            return replace(ir, exact_size=size,
                           content_type=ir.content_type if content_type is None else content_type)
        return ir

    def learn(
        self, recording_id: str, size: int, content_type: str | None = None, *,
        final: bool = True, digest: str | None = None,
    ) -> None:
        """`Vfs.set_exact_size`: show the size at once; persist a final one."""
        found = None
        if recording_id not in self._pending and recording_id not in self._provisional:
            found = self._cached(recording_id)  # nothing overlays it: the index's own
        if found is None:
            found = self._index.get_recording(recording_id)  # a read: never waits for a writer
        if found is None:
            return
        old = self._pending.get(recording_id)
        if content_type is None and old is not None:
            content_type = old[1]
        if digest is None and old is not None:
            digest = old[2]
        if not final:
            if recording_id not in self._pending and found.exact_size == size:
                return  # already known, and final
            self._provisional[recording_id] = (size, content_type)
        else:
            self._provisional.pop(recording_id, None)
            self._check_format(found, content_type)
        ir = replace(found, exact_size=size,
                     content_type=found.content_type if content_type is None else content_type,
                     digest=found.digest if digest is None else digest)
        self._show(ir)
        if not final:
            return
        if self._write_behind:
            self._pending[recording_id] = (size, content_type, digest)
            self._dirty.set()
        else:
            self._index.set_exact_size(recording_id, size, content_type, digest)

    def _check_format(self, found: IndexedRecording, served: str | None) -> None:
        """A recording served in another format than its name says keeps its name (names
        never change); `user.rc.content_type` has the truth. Said once in the log."""
        if not served or found.recording_id in self._format_noted:
            return
        named_wav = found.recording.is_wav
        served_wav = served.split(";", 1)[0].strip().lower() in (
            "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")
        if named_wav != served_wav:
            self._format_noted.add(found.recording_id)
            log.info("recording %s is %s, not the account's format: it keeps its name %s",
                     found.recording_id, served, file_name(found.recording, self._tz))

    def unconfirm(self, recording_id: str) -> IndexedRecording | None:
        """`Vfs.size_unconfirmed`: forget a provisional size and show the recording
        without it; returns that recording, or None if nothing changed."""
        if self._provisional.pop(recording_id, None) is None:
            return None
        found = self._index.get_recording(recording_id)
        if found is None:
            return None
        ir = self.overlay(found)
        self._show(ir)
        return ir

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write learned sizes to the index from a worker thread until cancelled.

        Belongs in the mount's nursery. Sizes learned while a write runs go in
        the next one. On cancellation (unmount) what is left is written inline.
        """
        self._write_behind = True
        task_status.started()
        try:
            while True:
                await self._dirty.wait()
                self._dirty = trio.Event()
                batch = dict(self._pending)
                try:
                    await trio.to_thread.run_sync(self._index.set_exact_sizes, batch)
                except Exception:  # kept pending: retried with the next size learned
                    log.warning("could not persist %d exact sizes", len(batch), exc_info=True)
                    continue
                for rid, value in batch.items():
                    if self._pending.get(rid) == value:
                        del self._pending[rid]
        finally:
            self._write_behind = False
            if self._pending:
                batch, self._pending = self._pending, {}
                try:
                    self._index.set_exact_sizes(batch)
                except Exception:  # learned again at the next open
                    log.warning("could not persist %d exact sizes", len(batch), exc_info=True)
