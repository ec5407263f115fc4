"""Cached bytes checked against their digests: at a recording's first open in a
mount (`Verifier`), and every cached and archived recording at once (`rcfs
verify`, `verify_all`).

Integrity. Each commit takes the file's digest (BLAKE2b-512, `integrity.py`),
which the index keeps (the manager's essay, "Integrity"). The first open of
a cached entry in a mount checks it before serving a byte: a file that still
matches its seal for the digest the index holds (`ContentRef.digest`;
seals.py) is opened inline at once (`Verifier.open_sealed`); any other is
read and hashed in a thread and compared with that digest
(`Verifier.lookup_checked`): a damaged entry is moved to `damaged/`
(`Store.quarantine`), reported (`on_damaged`), and fetched again, or, gone
upstream, answered with `Damaged` (EIO).

`verify_all` does the same for every entry; it works on a `ContentManager`
(its store, its verifier and its book of seals) and is kept a function
because it is a batch job beside the read path. Reading each file and
hashing it runs in worker threads, one file at a time. Must not import httpx
or pyfuse3.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from rcfs.errors import Damaged, RcfsError

from .bookkeeping import CacheBook
from .download import SharedFd
from .seals import trust_key
from .store import Found, Store
from .types import INTERACTIVE, ContentRef, call_back

if TYPE_CHECKING:
    from .manager import ContentManager

log = logging.getLogger(__name__)


class Verifier:
    """What was checked in this mount, and what was found damaged; see the module docstring."""

    def __init__(
        self, store: Store, book: CacheBook, on_damaged: Callable[[str, str], None] | None
    ) -> None:
        self._store = store
        self._book = book  # its seals; a damaged entry leaves it
        self._on_damaged = on_damaged
        self.verified: set[str] = set()  # entries whose digest was checked in this mount
        self.unrepaired: set[str] = set()  # damaged, taken out, not fetched again yet
        self.damaged = 0
        self.repaired = 0

    def committed(self, rid: str) -> None:
        """A download of `rid` was committed: its digest was taken just now."""
        self.verified.add(rid)
        self.unrepaired.discard(rid)

    async def lookup_checked(self, ref: ContentRef) -> Found | None:
        """The cached entry, its digest checked against the index's at its first
        open in this mount; None if absent, or damaged and fetchable again.
        Raises Damaged if it is damaged and gone upstream."""
        rid = ref.recording_id
        check = rid not in self.verified
        found = await trio.to_thread.run_sync(
            functools.partial(self._store.lookup, rid, digest=check, expect=ref.digest))
        if found is None or found.digest is None:
            return found
        if found.sealed is not None:
            self._book.sealed[rid] = found.sealed
        if ref.digest is not None and found.digest != ref.digest:
            os.close(found.fd)
            await self.take_out_damaged(ref, found.digest)
            return None
        self.verified.add(rid)
        if ref.digest is None:  # cached before digests were kept: this one is the first
            log.debug("recording %s: no digest on record; taking %s", rid, found.digest[:16])
        return found

    def open_sealed(self, ref: ContentRef) -> tuple[SharedFd, int] | None:
        """The entry opened, if its file still matches its seal for the digest the
        index holds (seals.py); None to look it up and hash it in a thread instead.

        Inline on the trio thread, by measurement: an open and an fstat of a
        cache file took ~4 us here, a thread hop 60 to 300 us (the latter on a
        busy machine); and this runs once per recording per mount (later opens
        find the idle descriptor)."""
        rid = ref.recording_id
        sealed = self._book.sealed
        entry = sealed.get(rid)
        if entry is None or ref.digest is None:
            return None
        path, key = entry
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            del sealed[rid]
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or trust_key(st, ref.digest) != key:
            os.close(fd)
            del sealed[rid]  # changed at rest, or moved: hashed in full next
            return None
        self.verified.add(rid)
        return SharedFd(fd), st.st_size

    async def take_out_damaged(self, ref: ContentRef, got: str, *, raise_if_gone: bool = True) -> str:
        """Quarantine a damaged entry; raises Damaged (if asked) when it cannot be fetched again."""
        rid = ref.recording_id
        self._book.sealed.pop(rid, None)
        where = await trio.to_thread.run_sync(self._store.quarantine, rid)
        self._book.forget(rid)
        self._book.unarchive(rid)
        self.verified.discard(rid)
        self.unrepaired.add(rid)
        self.damaged += 1
        message = (f"recording {rid}: cached bytes do not match the digest taken when it was "
                   f"downloaded (blake2b {got[:16]}..., expected {str(ref.digest)[:16]}...); "
                   f"moved aside to {where or 'nowhere (the file was gone)'}"
                   + ("; it was deleted upstream and cannot be fetched again" if ref.gone
                      else "; fetching it again"))
        if self._on_damaged is not None:
            call_back(self._on_damaged, rid, message)
        else:
            log.error("%s", message)
        if ref.gone and raise_if_gone:
            raise Damaged(message)
        return message


async def verify_all(
    manager: ContentManager, refs: Callable[[str], ContentRef | None], *, repair: bool
) -> dict[str, Any]:
    """Damaged entries are taken out of service (never served as good); with `repair`,
    those that still exist upstream are downloaded again, and so are those an open
    found damaged earlier. `refs(recording_id)` gives what the index knows (None:
    not indexed). Returns the report (`checked`, `intact`, `no_digest`, `damaged`,
    `repaired`, `unrepairable`, `missing`)."""
    store = manager._store
    verifier = manager._verifier
    cached, archived = await trio.to_thread.run_sync(store.keys)
    ids = sorted(set(cached) | set(archived) | verifier.unrepaired)
    report: dict[str, Any] = {"checked": 0, "intact": 0, "no_digest": 0, "damaged": [],
                              "repaired": 0, "unrepairable": [], "missing": 0}
    for rid in ids:
        ref = refs(rid) or ContentRef(rid, "", gone=True)
        try:
            found = await trio.to_thread.run_sync(
                functools.partial(store.lookup, rid, digest=True, expect=ref.digest))
        except OSError as exc:
            log.warning("verify: cannot read recording %s: %s", rid, exc)
            found = None
        if found is None:
            if rid in verifier.unrepaired:  # found damaged earlier: repair it now, if asked
                await _repair(manager, ref, report, repair)
            else:
                report["missing"] += 1
            continue
        os.close(found.fd)
        report["checked"] += 1
        if found.sealed is not None:  # sealed only if it matched (or nothing was on record)
            manager._book.sealed[rid] = found.sealed
        if ref.digest is None:
            report["no_digest"] += 1
            verifier.verified.add(rid)
            manager._report(rid, found.size, final=True, digest=found.digest)
        elif found.digest == ref.digest:
            report["intact"] += 1
            verifier.verified.add(rid)
        else:
            assert found.digest is not None
            await verifier.take_out_damaged(ref, found.digest, raise_if_gone=False)
            await _repair(manager, ref, report, repair)
    return report


async def _repair(manager: ContentManager, ref: ContentRef, report: dict[str, Any],
                  repair: bool) -> None:
    """A damaged entry, out of service: fetch it again if asked and possible."""
    rid = ref.recording_id
    report["damaged"].append(rid)
    if ref.gone or not ref.content_uri:
        report["unrepairable"].append(rid)
    elif repair:
        try:
            await manager.prefetch(ref, INTERACTIVE)
        except RcfsError as exc:
            log.warning("verify: recording %s could not be fetched again: %s", rid, exc)
            report["unrepairable"].append(rid)
        else:
            report["repaired"] += 1
            manager._verifier.repaired += 1
            manager._verifier.unrepaired.discard(rid)
