"""Whether RingCentral answers: a mount that starts without the network, and reconnecting.

Owns: finding the account at start (`log_in`: from RingCentral, or offline
from what the last mount of the same credentials recorded), the offline state
(`Link`, `status.json` `connection`) and the background reconnect, and what
on-demand indexing does while offline (`OfflineAware`).

Why. rcfs is started at boot (fstab, systemd), often before the network is
up. A mount that has an index from an earlier mount can serve it at once:
cached recordings read, listings come from the index. So when RingCentral
cannot be reached (a transport failure, 5xx or 429 after the retries, or no
answer within `START_ONLINE_SECONDS`) and an index exists, the account id
comes from `<state>/account-ids/<credentials fingerprint>.json` (written at
every online start), the tree is served, and `Link.reconnect` logs in again
with growing pauses; the first request that goes through (a page, a refresh)
ends the offline state. Refused credentials (AuthError) still fail the mount
with one line, and so does a first mount without the network: it has
nothing to serve.

Must not: import pyfuse3, or touch the tree.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from rcfs.api import Priority, RingCentralClient
from rcfs.api.auth import fingerprint
from rcfs.backfill import Backfill
from rcfs.config import Credentials, remember_account, remembered_account
from rcfs.errors import AuthError, RcfsError, TemporaryFailure
from rcfs.status import ErrorLog

log = logging.getLogger(__name__)

# With an index from an earlier mount, the start waits this long for RingCentral
# before it serves that index offline (a boot before the network is up); a first
# mount has nothing else to serve, so it waits for the client's retries and fails.
START_ONLINE_SECONDS = 10.0
RECONNECT_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)  # between reconnect attempts, then the last


class Link:
    """Whether RingCentral has answered since an offline start (`status.json` `connection`).

    Offline, the tree is served from the index, on-demand indexing of a day is
    skipped (the listing is what the index has, not a wait for requests that
    cannot succeed), and `reconnect` logs in again with growing pauses. Any
    request that goes through (a call-log page, a refresh) ends it at once.
    """

    def __init__(self) -> None:
        self.online = True
        self.error: str | None = None
        self.offline_since: float | None = None
        self.attempts = 0
        self.next_attempt: float | None = None
        self._back = trio.Event()

    def lost(self, cause: str) -> None:
        if self.online:
            self.online, self.offline_since, self._back = False, time.time(), trio.Event()
        self.error = cause

    def reached(self) -> None:
        """A request went through: online (again)."""
        if not self.online:
            since = self.offline_since or time.time()
            log.info("RingCentral answers again: back online after %.0f s offline",
                     time.time() - since)
            self.online, self.error, self.next_attempt = True, None, None
            self._back.set()

    def snapshot(self) -> dict[str, Any]:
        def iso(ts: float | None) -> str | None:
            return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(
                timespec="seconds")

        return {"online": self.online, "error": self.error,
                "offline_since": iso(self.offline_since), "reconnect_attempts": self.attempts,
                "next_attempt": iso(self.next_attempt)}

    async def reconnect(
        self, client: RingCentralClient, errors: ErrorLog, on_back: Callable[[bool], None], *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """While offline: log in and read the account again, with growing pauses.

        Then `on_back(True)`; or `on_back(False)` if another request (a refresh, a
        call-log page) got through first."""
        task_status.started()
        while not self.online:
            delay = RECONNECT_DELAYS[min(self.attempts, len(RECONNECT_DELAYS) - 1)]
            self.next_attempt = time.time() + delay
            with trio.move_on_after(delay):
                await self._back.wait()
            if self.online:
                on_back(False)
                return
            self.attempts += 1
            try:
                await client.login()
                await client.account_info(priority=Priority.BACKGROUND)
            except RcfsError as exc:
                # Refused credentials keep the mount serving what it has; retried all the same.
                cause = str(exc) if isinstance(exc, AuthError) else f"cannot reach RingCentral ({exc})"
                if cause != self.error:
                    errors.record(f"offline: {cause}; trying again")
                self.error = cause
                log.info("offline: %s; attempt %d, next in %.0f s", cause, self.attempts,
                         RECONNECT_DELAYS[min(self.attempts, len(RECONNECT_DELAYS) - 1)])
                continue
            self.reached()
            on_back(True)


class OfflineAware:
    """The progressive indexer as the FUSE adapter sees it: while offline, a day not
    indexed yet lists what the index has instead of waiting on requests that fail."""

    def __init__(self, backfill: Backfill, link: Link) -> None:
        self._backfill = backfill
        self._link = link

    def complete(self) -> bool:
        return not self._link.online or self._backfill.complete()

    async def ensure(self, lo_ms: int, hi_ms: int) -> None:
        if self._link.online:
            await self._backfill.ensure(lo_ms, hi_ms)


async def log_in(
    client: RingCentralClient, creds: Credentials, root_state: Path, link: Link,
    index_of: Callable[[str], Path], start_timeout: float = math.inf,
) -> str:
    """The account id, from RingCentral; or, when it cannot be reached and an earlier
    mount of these credentials left an index, the id that mount recorded (`link` goes
    offline). A first mount without the network fails with the reason."""
    fp = fingerprint(creds)
    known = await trio.to_thread.run_sync(remembered_account, root_state, fp)
    has_index = known is not None and index_of(known).exists()
    bound = START_ONLINE_SECONDS if has_index else start_timeout
    try:
        # With an index to serve, a boot without the network must not wait for every
        # retry (a dead link costs the connect timeout per attempt): the reconnect
        # task goes on in the background. Without one, a person waits at most
        # `start_timeout` (--start-timeout) for a server that never answers.
        with trio.fail_after(bound):
            await client.login()
            account = str((await client.account_info()).get("id", "account"))
    except (TemporaryFailure, trio.TooSlowError) as exc:
        last = getattr(client, "last_failure", None)
        cause = (f"no answer within {bound:.0f} s" + (f"; last: {last}" if last else "")
                 if isinstance(exc, trio.TooSlowError) else str(exc))
        if not has_index or known is None:
            raise RcfsError(f"cannot reach RingCentral ({cause}); there is no index of an "
                            "earlier mount to serve, so the first mount needs the network") from None
        link.lost(f"cannot reach RingCentral ({cause})")  # the caller records it
        return known
    await trio.to_thread.run_sync(remember_account, root_state, fp, account)
    return account
