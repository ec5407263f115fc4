"""The daemon's lifecycle (`serve`): log in, index, serve, poll, unmount; see the
package's docstring (rcfs/mount/__init__.py) for the whole story."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyfuse3
import trio

from rcfs import mountlock
from rcfs.api import RingCentralClient, default_token_path
from rcfs.api.retry import retry_observer
from rcfs.archive import Archiver
from rcfs.backfill import Backfill
from rcfs.config import Credentials, cache_root, ensure_private_dir, state_dir
from rcfs.connection import Link, OfflineAware, log_in
from rcfs.content import ContentManager
from rcfs.control import ControlServer, remove_stale, socket_path
from rcfs.errors import ConfigError, RcfsError, found_in
from rcfs.freshness import Freshness
from rcfs.fuse_ops import DeferredInvalidation, Operations
from rcfs.index import Index, UpsertResult
from rcfs.metrics import StatusCollector, serve_metrics
from rcfs.prefetch import Prefetcher
from rcfs.previews import PreviewGuard
from rcfs.registry import real_mountpoint, register, unregister
from rcfs.status import ErrorLog, status_document
from rcfs.units import count
from rcfs.vfs import Vfs
from rcfs.web import WebApp, serve_web

from .commands import control_commands
from .mountpoint import lazy_unmount, set_read_ahead
from .notify import Notifier, announce, logs_to_terminal, status_summary

log = logging.getLogger(__name__)


@dataclass
class MountOptions:
    mountpoint: Path
    tz: ZoneInfo
    since: datetime
    cache_dir: Path | None = None
    cache_size: int = 10 * 1024**3
    poll_interval: float = 300.0
    allow_other: bool = False
    read_ahead: int = 1 << 20  # bytes the kernel reads ahead on the mount (0: its default)
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    keep_deleted: bool = True
    state_dir: Path | None = None
    archive: bool = False
    retention_days: float = 90.0
    metrics: tuple[str, int] | None = None  # serve Prometheus metrics on (host, port)
    cache_min_free: int | float = 0.05  # bytes, or a share of the cache's disk
    start_timeout: float = 45.0  # seconds a first start waits for RingCentral
    web: tuple[str, int] | None = None  # serve the web player on (host, port)
    redis_url: str | None = None  # share session and budget (--redis; None: RCFS_REDIS_URL/config)
    fuse: bool = True  # False: `rcfs serve`, the daemon without a FUSE mount


def _account_dir_name(account_id: str) -> str:
    return "".join(c for c in account_id if c.isalnum() or c in "-.") or "account"


async def serve(opts: MountOptions, creds: Credentials, notifier: Notifier) -> None:
    """Log in, index, mount and serve until unmounted or signalled."""
    errors = ErrorLog()
    started = datetime.now(UTC)
    root_state = ensure_private_dir(opts.state_dir or state_dir())
    token_path = default_token_path(creds, root_state)
    link = Link()
    async with RingCentralClient.open(creds, token_path=token_path, redis_url=opts.redis_url,
                                      redis_label=str(opts.mountpoint)) as client:
        # Until the tree is served, say on the terminal what rcfs waits for.
        notifier.progress(f"connecting to {creds.server_url}")
        # Retries are logged; where the log is not on the terminal, say them there too.
        observing = retry_observer.set(None if logs_to_terminal() else notifier.progress)
        try:
            account = await log_in(client, creds, root_state, link, index_of=lambda a: (
                root_state / "accounts" / _account_dir_name(a) / "index.sqlite"),
                start_timeout=opts.start_timeout)
        finally:
            retry_observer.reset(observing)
        if not link.online:
            errors.record(f"offline: {link.error}; serving the index of the last mount and "
                          "trying again in the background")
        acct_state = ensure_private_dir(root_state / "accounts" / _account_dir_name(account))
        cache_dir = ensure_private_dir(
            opts.cache_dir or cache_root() / _account_dir_name(account)
        )
        # One mount per state and per cache directory (mountlock.py): held until the
        # daemon exits, taken before the index or the cache is touched; may wait a
        # moment for a daemon that has just unmounted.
        locks = await trio.to_thread.run_sync(functools.partial(
            mountlock.take, acct_state, cache_dir, account=account, mountpoint=opts.mountpoint,
        ), abandon_on_cancel=True)
        with locks:
            # A damaged index is moved aside and rebuilt (index/check.py); the check
            # reads the whole file (about a second at 100,000 recordings): in a thread.
            index = await trio.to_thread.run_sync(functools.partial(
                Index.open_checked, acct_state / "index.sqlite", on_error=errors.record))
            try:
                backfill = Backfill(client, index, since=opts.since, tz=opts.tz,
                                    archive_first=opts.archive)
                if not link.online and not index.coverage:  # e.g. a damaged index, moved aside
                    raise RcfsError(f"cannot reach RingCentral ({link.error}) and the index of "
                                    "the last mount is empty: nothing to serve until it answers")
                if link.online:
                    notifier.progress(
                        f"indexing the call log since {opts.since.date().isoformat()}")
                    if not await backfill.prefill(progress=notifier.progress,
                                                  tolerate_failure=bool(index.coverage)):
                        link.lost(backfill.error or "indexing failed")
                        errors.record(f"{backfill.error}; serving the index of the last mount "
                                      "and trying again in the background")
                else:
                    backfill.error = f"offline: {link.error}"
                await _serve_tree(opts, client, index, backfill, cache_dir, acct_state, account,
                                  errors, started, notifier, link)
            finally:
                index.close()


async def _serve_tree(
    opts: MountOptions,
    client: RingCentralClient,
    index: Index,
    backfill: Backfill,
    cache_dir: Path,
    acct_state: Path,
    account: str,
    errors: ErrorLog,
    started: datetime,
    notifier: Notifier,
    link: Link,
) -> None:
    content: ContentManager | None = None
    fresh: Freshness | None = None
    prefetcher: Prefetcher | None = None
    archiver: Archiver | None = None
    control_path = socket_path(acct_state)

    metrics_url: str | None = None
    previews = PreviewGuard()  # file managers' previews (previews.py)
    web: WebApp | None = None

    def status_doc() -> dict[str, Any]:
        sections: dict[str, Callable[[], Any]] = {
            "account": lambda: account,
            "mountpoint": lambda: str(opts.mountpoint) if opts.fuse else None,
            "pid": os.getpid,
            "started": lambda: started.isoformat(timespec="seconds"),
            "control": lambda: str(control_path),
            "keep_deleted": lambda: opts.keep_deleted,
            "index": lambda: {**index.stats(), "progress": backfill.snapshot()},
            "archive": lambda: archiver.snapshot() if archiver else None,
            "refresh": lambda: fresh.snapshot() if fresh else None,
            "prefetch": lambda: prefetcher.snapshot() if prefetcher else None,
            "errors": errors.snapshot,
            "metrics": lambda: {"url": metrics_url},
            "web": lambda: web.snapshot() if web is not None else {"url": None},
            "previews": previews.snapshot,
            "connection": link.snapshot,
        }
        return status_document(
            sections, [client.snapshot, lambda: content.snapshot() if content else {}])

    def status() -> bytes:
        return (json.dumps(status_doc(), indent=2, sort_keys=True, default=str) + "\n").encode()

    def on_gone(recording_id: str) -> None:
        if fresh is not None:
            fresh.gone(recording_id)

    def on_stored(recording_ids: list[str]) -> None:
        if archiver is not None:
            archiver.stored(recording_ids)

    def on_finished(recording_id: str) -> None:
        if fresh is not None:
            fresh.download_finished(recording_id)
        ino = vfs.size_unconfirmed(recording_id)  # a failed download's promised size goes
        if ino is not None:
            kernel.submit([ino])

    def on_damaged(recording_id: str, message: str) -> None:
        errors.record(message)
        if archiver is not None:
            archiver.unstored([recording_id])

    def on_new() -> None:
        if archiver is not None:
            archiver.notify()

    def heavy_per_min() -> float:
        heavy = client.snapshot()["rate_limits"].get("Heavy") or {}
        return 60.0 * heavy.get("limit", 10) / max(1e-3, heavy.get("window", 60.0))

    vfs = Vfs(index, opts.tz, uid=opts.uid, gid=opts.gid, umask=opts.umask,
              status_provider=status, keep_deleted=opts.keep_deleted,
              expected_span=backfill.incomplete_span)
    kernel = DeferredInvalidation(enabled=opts.fuse)

    async def on_page(result: UpsertResult) -> None:
        link.reached()
        if result.changed_starts_ms:
            kernel.submit(vfs.invalidate(result.changed_starts_ms))
        if result.added_recordings:
            on_new()

    window = (backfill.lo, backfill.hi)

    async def on_indexed() -> None:
        kernel.submit(*vfs.window_indexed(window))

    fuse_options = {"fsname=rcfs", "subtype=rcfs", "ro", "default_permissions", "noatime"}
    if opts.allow_other:
        fuse_options.add("allow_other")

    async with trio.open_nursery() as nursery:
        await nursery.start(vfs.run)  # writes learned exact sizes to the index, in batches
        content = await ContentManager.create(
            cache_dir=cache_dir,
            size_limit=opts.cache_size,
            client=client,
            nursery=nursery,
            on_exact_size=vfs.set_exact_size,
            on_gone=on_gone,
            permanent=opts.archive,
            on_stored=on_stored,
            on_finished=on_finished,
            on_damaged=on_damaged,
            min_free=opts.cache_min_free,
        )
        fresh = Freshness(client=client, index=index, vfs=vfs, content=content, errors=errors,
                          keep_deleted=opts.keep_deleted, poll_interval=opts.poll_interval,
                          on_new_recordings=on_new)
        prefetcher = Prefetcher(index, content)
        archiver = Archiver(index, content, errors, enabled=opts.archive,
                            retention_days=opts.retention_days, budget_per_min=heavy_per_min)
        ops = Operations(vfs, content, errors, index=OfflineAware(backfill, link),
                         previews=previews)
        content.fuse_readers = ops.readers  # a killed reader's download ends sooner
        if opts.metrics is not None:  # before mounting: a bad address fails the mount at once
            collector = StatusCollector(status_doc, fuse=ops.counters,
                                        operations=client.operation_counts)
            metrics_url = await _start_metrics(nursery, opts.metrics, collector)
        if opts.web is not None:  # the same: a port in use fails at once, with one line
            web = WebApp(vfs=vfs, index=index, content=content, errors=errors,
                         on_demand=OfflineAware(backfill, link), keep_deleted=opts.keep_deleted)
            await _start_server(nursery, "the web player", opts.web, serve_web, web)

        async def start_workers() -> None:
            """Indexing, archive, refreshes, prefetch, reconnecting, the control socket."""
            assert fresh is not None and prefetcher is not None and archiver is not None
            assert content is not None
            backfill.on_page, backfill.on_complete = on_page, on_indexed
            await nursery.start(backfill.run)
            await nursery.start(archiver.run)
            await nursery.start(fresh.run)
            await nursery.start(prefetcher.run)
            if not link.online:
                await nursery.start(link.reconnect, client, errors,
                                    functools.partial(_back_online, fresh, backfill))
            remove_stale(acct_state)
            commands = control_commands(fresh, prefetcher, status, content, index, link, web)
            await nursery.start(ControlServer(control_path, commands).run)

        if not opts.fuse:
            await _serve_without_fuse(nursery, notifier, content, index, control_path, web,
                                      start_workers)
            return
        mounted_at = real_mountpoint(opts.mountpoint)  # now: once mounted, it would stat our own root
        try:
            pyfuse3.init(ops, str(opts.mountpoint), fuse_options)
        except RuntimeError as exc:
            raise ConfigError(f"cannot mount on {opts.mountpoint}: {exc}") from None
        notifier.mounted = True
        clean = False
        record: Path | None = None
        try:
            signalled = trio.Event()
            nursery.start_soon(_watch_signals, fresh, content, notifier, signalled)
            await nursery.start(kernel.run)
            await start_workers()
            # rcfs umount signals only the daemon recorded here (registry.py), never a pid
            # read from a file in the mount.
            record = await trio.to_thread.run_sync(register, opts.state_dir or state_dir(), mounted_at)

            def summary() -> str:
                archive = archiver.snapshot() if archiver is not None else {}
                return status_summary(index.stats(), backfill.snapshot(), archive, link)

            nursery.start_soon(announce, opts.mountpoint, notifier, summary,
                               functools.partial(set_read_ahead, mounted_at, opts.read_ahead))
            await pyfuse3.main()
            clean = True
            if signalled.is_set():
                log.info("%s was unmounted", opts.mountpoint)
            else:  # fusermount3 -u, umount, or the kernel: not us
                log.info("%s was unmounted from outside (fusermount3 -u or umount)", opts.mountpoint)
        finally:
            notifier.stopping()
            unregister(record)
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await content.aclose()
            pyfuse3.close(unmount=clean)
            if not clean:
                lazy_unmount(opts.mountpoint)


async def _serve_without_fuse(
    nursery: trio.Nursery, notifier: Notifier, content: ContentManager, index: Index,
    control_path: Path, web: WebApp | None, start_workers: Callable[[], Awaitable[None]],
) -> None:
    """`rcfs serve`: the daemon (index, cache, archive, refreshes, control socket, web
    player, metrics) without a FUSE mount, until SIGINT or SIGTERM."""
    try:
        await start_workers()
        where = f" at {web.snapshot()['url']}; sign in with: rcfs web" if web is not None else ""
        notifier.ready(f"serving {count(index.stats().get('recordings', 0), 'recording')}{where} "
                       f"(control socket {control_path})")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
    finally:
        notifier.stopping()
        nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await content.aclose()


def _back_online(fresh: Freshness, backfill: Backfill, reconnected: bool) -> None:
    """After an offline start: look for what is new at once, unless a refresh just did
    (the background indexing retries on its own schedule and clears its own error)."""
    if backfill.error is not None and backfill.error.startswith("offline:"):
        backfill.error = None
    if reconnected:
        fresh.request()


async def _start_metrics(
    nursery: trio.Nursery, where: tuple[str, int], collector: StatusCollector
) -> str:
    host, port = where
    return await _start_server(nursery, "metrics", where, functools.partial(
        serve_metrics, host, port, collector))


async def _start_server(
    nursery: trio.Nursery, what: str, where: tuple[str, int],
    serve: Callable[..., Awaitable[None]], *args: Any,
) -> str:
    """Start a server task of the daemon; a port that cannot be bound is one line."""
    host, port = where
    call = serve if not args else functools.partial(serve, *args, host, port)
    try:
        url: str = await nursery.start(call)
    except (OSError, BaseExceptionGroup) as exc:
        cause = found_in(exc, OSError)  # also inside the ExceptionGroups a server's nursery raises
        if cause is None:
            raise
        raise ConfigError(f"cannot serve {what} on {host}:{port}: {cause.strerror or cause}") from None
    return url


async def _watch_signals(
    fresh: Freshness, content: ContentManager, notifier: Notifier, signalled: trio.Event
) -> None:
    unmounting = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                fresh.request()  # several signals during a refresh coalesce into one more
                continue
            if unmounting:
                log.info("received %s: already unmounting", signal.Signals(signum).name)
                continue
            unmounting = True
            signalled.set()
            log.info("received %s: unmounting", signal.Signals(signum).name)
            notifier.stopping()
            pyfuse3.terminate()
            # pyfuse3.main() returns only when every handler has; closing the
            # content manager fails the reads still waiting for a download.
            await content.aclose()
            # Keep receiving until the mount's nursery cancels this task: a
            # second Ctrl-C must not escape as a KeyboardInterrupt mid-unmount.


def default_since(days: int = 90) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
