"""The mount's lifecycle: log in, index, serve, poll, unmount.

`mount.py` owns the long-lived nursery (STYLE.md): the content manager's
downloads, the rest of the index (`backfill.py`), the archive
(`archive.py`), the refresher (`freshness.py`), the prefetcher
(`prefetch.py`), the control socket (`control.py`), kernel invalidations and
the signal watcher all run in it, and it is cancelled when the FUSE main
loop ends. Before the index is opened, the daemon takes the account's and the
cache directory's mount locks (`mountlock.py`: a second mount is refused) and
checks the index (`index/check.py`: a damaged one is moved aside and rebuilt).
Before the tree is served, only the newest part of the call log
is indexed (`Backfill.prefill`, a couple of seconds at most). The lifecycle is
`pyfuse3.init → pyfuse3.main → pyfuse3.close`; `close(unmount=False)` on the
error path, followed by a lazy unmount so no dead mount is left behind.

The daemon reports readiness through `Notifier`: the foreground CLI prints it,
the daemonizing parent reads it from a pipe (see `cli.py`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyfuse3
import trio

from rcfs import mountlock
from rcfs.api import RingCentralClient, default_token_path
from rcfs.archive import Archiver
from rcfs.backfill import Backfill
from rcfs.config import Credentials, cache_root, ensure_private_dir, state_dir
from rcfs.content import ContentManager, ContentRef
from rcfs.control import ControlServer, Handler, remove_stale, socket_path
from rcfs.errors import ConfigError
from rcfs.freshness import Freshness
from rcfs.fuse_ops import DeferredInvalidation, Operations
from rcfs.index import Index, UpsertResult
from rcfs.metrics import StatusCollector, serve_metrics
from rcfs.prefetch import Prefetcher
from rcfs.registry import real_mountpoint, register, unregister
from rcfs.status import ErrorLog, status_document
from rcfs.vfs import Vfs

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
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    keep_deleted: bool = True
    state_dir: Path | None = None
    archive: bool = False
    retention_days: float = 90.0
    metrics: tuple[str, int] | None = None  # serve Prometheus metrics on (host, port)


class Notifier:
    """Where progress and readiness go: stderr in the foreground, a pipe when daemonized."""

    def __init__(self, fd: int | None = None, *, verbose: bool = True) -> None:
        self._fd = fd
        self._verbose = verbose

    def _send(self, line: str) -> None:
        if self._fd is not None:
            try:
                os.write(self._fd, (line + "\n").encode())
            except OSError:
                self._fd = None  # the parent went away; keep serving
        elif self._verbose:
            print(line.split(" ", 1)[1] if " " in line else line, file=sys.stderr, flush=True)

    def progress(self, text: str) -> None:
        self._send("progress " + text)

    def ready(self, text: str) -> None:
        self._send("ready " + text)
        self._close()

    def failed(self, reason: str) -> None:
        self._send("error " + reason)
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_mountpoint(path: Path) -> None:
    """Refuse what cannot be mounted on, with a one-line reason."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        if exc.errno == 107:  # ENOTCONN
            raise ConfigError(
                f"mountpoint {path} is a dead mount; clear it with: rcfs umount {path}"
            ) from None
        raise ConfigError(f"mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise ConfigError(f"mountpoint {path} is busy: something is already mounted there")
    if any(path.iterdir()):
        raise ConfigError(f"mountpoint {path} is not empty")
    if not os.path.exists("/dev/fuse"):
        raise ConfigError("FUSE is unavailable: /dev/fuse is missing (load the fuse module)")


def _account_dir_name(account_id: str) -> str:
    return "".join(c for c in account_id if c.isalnum() or c in "-.") or "account"


async def serve(opts: MountOptions, creds: Credentials, notifier: Notifier) -> None:
    """Log in, index, mount and serve until unmounted or signalled."""
    errors = ErrorLog()
    started = datetime.now(UTC)
    root_state = ensure_private_dir(opts.state_dir or state_dir())
    token_path = default_token_path(creds, root_state)
    async with RingCentralClient.open(creds, token_path=token_path) as client:
        await client.login()
        account = str((await client.account_info()).get("id", "account"))
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
                notifier.progress(f"indexing the call log since {opts.since.date().isoformat()}")
                await backfill.prefill(progress=notifier.progress)
                await _serve_tree(opts, client, index, backfill, cache_dir, acct_state, account,
                                  errors, started, notifier)
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
) -> None:
    content: ContentManager | None = None
    fresh: Freshness | None = None
    prefetcher: Prefetcher | None = None
    archiver: Archiver | None = None
    control_path = socket_path(acct_state)

    metrics_url: str | None = None

    def status_doc() -> dict[str, Any]:
        sections: dict[str, Callable[[], Any]] = {
            "account": lambda: account,
            "mountpoint": lambda: str(opts.mountpoint),
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
    kernel = DeferredInvalidation()

    async def on_page(result: UpsertResult) -> None:
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
        )
        fresh = Freshness(client=client, index=index, vfs=vfs, content=content, errors=errors,
                          keep_deleted=opts.keep_deleted, poll_interval=opts.poll_interval,
                          on_new_recordings=on_new)
        prefetcher = Prefetcher(index, content)
        archiver = Archiver(index, content, errors, enabled=opts.archive,
                            retention_days=opts.retention_days, budget_per_min=heavy_per_min)
        ops = Operations(vfs, content, errors, index=backfill)
        mounted_at = real_mountpoint(opts.mountpoint)  # now: once mounted, it would stat our own root
        if opts.metrics is not None:  # before mounting: a bad address fails the mount at once
            collector = StatusCollector(status_doc, fuse=ops.counters,
                                        operations=client.operation_counts)
            metrics_url = await _start_metrics(nursery, opts.metrics, collector)
        try:
            pyfuse3.init(ops, str(opts.mountpoint), fuse_options)
        except RuntimeError as exc:
            raise ConfigError(f"cannot mount on {opts.mountpoint}: {exc}") from None
        clean = False
        record: Path | None = None
        try:
            nursery.start_soon(_watch_signals, fresh, content)
            await nursery.start(kernel.run)
            backfill.on_page, backfill.on_complete = on_page, on_indexed
            await nursery.start(backfill.run)
            await nursery.start(archiver.run)
            await nursery.start(fresh.run)
            await nursery.start(prefetcher.run)
            remove_stale(acct_state)
            commands = _commands(fresh, prefetcher, status, content, index)
            await nursery.start(ControlServer(control_path, commands).run)
            progress = backfill.snapshot()
            indexed = ("" if progress["complete"] else
                       f" ({progress['days_indexed']} of {progress['days_total']} days indexed; "
                       "the rest follows in the background)")
            # rcfs umount signals only the daemon recorded here (registry.py), never a pid
            # read from a file in the mount.
            record = await trio.to_thread.run_sync(register, opts.state_dir or state_dir(), mounted_at)
            notifier.ready(f"serving {index.stats().get('recordings', 0)} recordings at "
                           f"{opts.mountpoint}{indexed}")
            await pyfuse3.main()
            clean = True
        finally:
            unregister(record)
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await content.aclose()
            pyfuse3.close(unmount=clean)
            if not clean:
                lazy_unmount(opts.mountpoint)


async def _start_metrics(
    nursery: trio.Nursery, where: tuple[str, int], collector: StatusCollector
) -> str:
    host, port = where
    try:
        url: str = await nursery.start(serve_metrics, host, port, collector)
    except (OSError, BaseExceptionGroup) as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {cause.strerror or cause}") from None
    return url


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind `exc`, also inside the ExceptionGroups a server's nursery raises."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _os_error(inner)) is not None:
                return found
    return None


def _commands(
    fresh: Freshness, prefetcher: Prefetcher, status: Callable[[], bytes],
    content: ContentManager, index: Index,
) -> dict[str, Handler]:
    """The control socket's commands (see control.py for the protocol)."""

    async def refresh(msg: dict[str, Any]) -> dict[str, Any]:
        return await fresh.refresh()

    async def prefetch(msg: dict[str, Any]) -> dict[str, Any]:
        since, until = _time_arg(msg, "since"), _time_arg(msg, "until")
        return {"queued": await prefetcher.queue(since, until)}

    async def prune_deleted(msg: dict[str, Any]) -> dict[str, Any]:
        return await fresh.prune_deleted()

    async def get_status(msg: dict[str, Any]) -> dict[str, Any]:
        return {"status": json.loads(status())}

    async def verify(msg: dict[str, Any]) -> dict[str, Any]:
        def ref_of(recording_id: str) -> ContentRef | None:
            ir = index.get_recording(recording_id)
            return None if ir is None else ContentRef.of(ir)

        return await content.verify(ref_of, repair=bool(msg.get("repair")))

    return {"refresh": refresh, "prefetch": prefetch, "prune_deleted": prune_deleted,
            "status": get_status, "verify": verify}


def _time_arg(msg: dict[str, Any], key: str) -> datetime | None:
    value = msg.get(key)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: not an ISO 8601 time: {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def _watch_signals(fresh: Freshness, content: ContentManager) -> None:
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
            log.info("received %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            # pyfuse3.main() returns only when every handler has; closing the
            # content manager fails the reads still waiting for a download.
            await content.aclose()
            # Keep receiving until the mount's nursery cancels this task: a
            # second Ctrl-C must not escape as a KeyboardInterrupt mid-unmount.


def lazy_unmount(mountpoint: Path) -> bool:
    """Detach a (possibly dead) FUSE mount; True if it is gone afterwards."""
    for cmd in (["fusermount3", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        try:
            subprocess.run(cmd, check=False, capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if not is_mounted(mountpoint):
            return True
    return not is_mounted(mountpoint)


def is_mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == target for line in f)
    except OSError:
        return os.path.ismount(mountpoint)


def default_since(days: int = 90) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
