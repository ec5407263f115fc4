"""`rcfs verify`: every cached and archived recording checked against its digest.

Works on a `ContentManager` (its store, its record of what was checked and of
what was found damaged); it is the manager's `verify`, kept apart because it
is a batch job beside the read path. Reading each file and hashing it runs in
worker threads, one file at a time. Must not import httpx or pyfuse3.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from rcfs.errors import RcfsError

from .types import INTERACTIVE, ContentRef

if TYPE_CHECKING:
    from .manager import ContentManager

log = logging.getLogger(__name__)


async def verify_all(
    manager: ContentManager, refs: Callable[[str], ContentRef | None], *, repair: bool
) -> dict[str, Any]:
    """Damaged entries are taken out of service (never served as good); with `repair`,
    those that still exist upstream are downloaded again, and so are those an open
    found damaged earlier. `refs(recording_id)` gives what the index knows (None:
    not indexed). Returns the report (`checked`, `intact`, `no_digest`, `damaged`,
    `repaired`, `unrepairable`, `missing`)."""
    store = manager._store
    cached, archived = await trio.to_thread.run_sync(store.keys)
    ids = sorted(set(cached) | set(archived) | manager._unrepaired)
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
            if rid in manager._unrepaired:  # found damaged earlier: repair it now, if asked
                await _repair(manager, ref, report, repair)
            else:
                report["missing"] += 1
            continue
        os.close(found.fd)
        report["checked"] += 1
        if found.sealed is not None:  # sealed only if it matched (or nothing was on record)
            manager._sealed[rid] = found.sealed
        if ref.digest is None:
            report["no_digest"] += 1
            manager._verified.add(rid)
            manager._report(rid, found.size, final=True, digest=found.digest)
        elif found.digest == ref.digest:
            report["intact"] += 1
            manager._verified.add(rid)
        else:
            assert found.digest is not None
            await manager._take_out_damaged(ref, found.digest, raise_if_gone=False)
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
            manager.repaired += 1
            manager._unrepaired.discard(rid)
