"""Starting the daemon: `rcfs mount` and `rcfs serve`.

`rcfs mount` without `--foreground` starts the daemon as a detached child
(`python -m rcfs mount --foreground --ready-fd N`) and waits on a pipe until
it serves the tree or says why it cannot; forking a running trio process is
not safe, so the child is a fresh interpreter. A Ctrl-C (or SIGTERM) while it
waits stops the child too. In the foreground, the daemon's last word is one
line (`_run_mount`), and systemd's Type=notify is spoken to the foreground
process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from rcfs.cli.logs import setup_logging
from rcfs.cli.options import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, local_zone
from rcfs.errors import ConfigError, RcfsError, found_in

log = logging.getLogger("rcfs")


def _mount_options(args: argparse.Namespace) -> Any:
    """MountOptions from `rcfs mount`'s or `rcfs serve`'s arguments (serve has no
    mountpoint, ownership or --allow-other)."""
    from rcfs.mount import MountOptions, default_since

    fuse = args.command != "serve"
    uid, gid = getattr(args, "uid", None), getattr(args, "gid", None)
    return MountOptions(
        mountpoint=args.mountpoint.absolute() if fuse else Path("."),
        tz=args.tz or local_zone(),
        since=args.since or default_since(),
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        poll_interval=args.poll_interval,
        keep_deleted=args.keep_deleted,
        archive=args.archive,
        retention_days=args.retention,
        metrics=args.metrics,
        cache_min_free=args.cache_min_free,
        start_timeout=args.start_timeout,
        allow_other=getattr(args, "allow_other", False),
        read_ahead=getattr(args, "read_ahead", 0),
        uid=os.getuid() if uid is None else uid,
        gid=os.getgid() if gid is None else gid,
        umask=getattr(args, "umask", 0o022),
        web=args.web,
        fuse=fuse,
        redis_url=getattr(args, "redis", None),
    )


def cmd_mount(args: argparse.Namespace, argv: list[str]) -> int:
    from rcfs.config import load_credentials, state_dir
    from rcfs.mount import check_mountpoint

    opts = _mount_options(args)
    check_mountpoint(opts.mountpoint)
    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"the config file {args.config} does not exist (config=, --config)")
    creds = load_credentials(config_file=args.config)
    if not args.foreground:
        return _daemonize(argv, args)
    log_file = args.log_file
    try:
        if log_file is None and args.ready_fd is not None:
            log_file = state_dir() / "mount.log"
        setup_logging(args.log_level, log_file, [creds.jwt, creds.client_secret])
    except ConfigError as exc:
        if args.ready_fd is not None:  # the daemon: tell the waiting parent why
            from rcfs.mount import Notifier

            Notifier(args.ready_fd).failed(str(exc))
        raise
    return _run_mount(opts, creds, args.ready_fd)


def cmd_serve(args: argparse.Namespace) -> int:
    """`rcfs serve`: the daemon without a FUSE mount, in the foreground."""
    from rcfs.config import load_credentials

    opts = _mount_options(args)
    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"the config file {args.config} does not exist (--config)")
    creds = load_credentials(config_file=args.config)
    if opts.web is None and opts.metrics is None and not opts.archive:
        raise ConfigError("rcfs serve needs something to serve: --web HOST:PORT, "
                          "--metrics HOST:PORT or --archive")
    setup_logging(args.log_level, args.log_file, [creds.jwt, creds.client_secret])
    return _run_mount(opts, creds, None)


def _run_mount(opts: Any, creds: Any, ready_fd: int | None) -> int:

    from rcfs.mount import Notifier, logs_to_terminal, serve
    from rcfs.sdnotify import SdNotify

    # systemd's Type=notify speaks to the foreground process (the daemon child of a
    # daemonizing `rcfs mount` is not the unit's main process: its parent notifies).
    notifier = Notifier(ready_fd, systemd=SdNotify.from_env() if ready_fd is None else None)
    try:
        trio.run(serve, opts, creds, notifier)
        ignore_late_interrupts()
    except BaseException as exc:  # the daemon's last word, as one line
        ignore_late_interrupts()
        if is_interrupt(exc):
            if notifier.served or notifier.mounted:  # mounted, then unmounted cleanly
                return EXIT_OK
            # Ctrl-C before the tree was served: the mount did not happen.
            log.info("interrupted before the tree was served")
            notifier.failed("interrupted before the tree was served")
            if ready_fd is None:
                print("rcfs: interrupted before the tree was served; nothing is mounted",
                      file=sys.stderr)
            return EXIT_INTERRUPTED
        cause = _domain_error(exc)
        if cause is None:
            if not isinstance(exc, Exception | BaseExceptionGroup):
                raise
            log.critical("internal error", exc_info=exc)
            message = f"internal error: {exc!r} (the log has the traceback)"
        else:
            message = str(cause)
            if ready_fd is not None or not logs_to_terminal():  # else printed just below
                log.error("%s", cause)
        notifier.failed(message)
        if ready_fd is None:
            print(f"rcfs: {message}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def ignore_late_interrupts() -> None:
    """The mount is gone: a Ctrl-C that arrives now (a second press) must not turn
    the clean exit into a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when trio delivered it inside an ExceptionGroup (beside Cancelled)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = exc.exceptions
        return any(is_interrupt(e) for e in leaves) and all(
            is_interrupt(e) or isinstance(e, trio.Cancelled) for e in leaves)
    return isinstance(exc, KeyboardInterrupt)


def _domain_error(exc: BaseException) -> RcfsError | None:
    """The RcfsError behind `exc`, also when trio wrapped it in an ExceptionGroup."""
    return found_in(exc, RcfsError)


def _daemonize(argv: list[str], args: argparse.Namespace) -> int:
    """Start the daemon as a detached child and wait until it serves or fails."""
    from rcfs.sdnotify import ENV as NOTIFY_ENV
    from rcfs.sdnotify import SdNotify

    read_fd, write_fd = os.pipe()
    child_argv = [sys.executable, "-m", "rcfs", *argv, "--foreground", "--ready-fd", str(write_fd)]
    child_env = dict(os.environ)
    systemd = SdNotify(child_env.pop(NOTIFY_ENV)) if child_env.get(NOTIFY_ENV) else None
    proc = subprocess.Popen(
        child_argv,
        env=child_env,
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    os.close(write_fd)
    interactive = sys.stderr.isatty()
    # Ctrl-C (or a SIGTERM) while waiting stops the daemon too: it is ours until it serves.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with os.fdopen(read_fd, "r") as pipe:
            for line in pipe:
                kind, _, text = line.rstrip("\n").partition(" ")
                if kind == "ready":
                    if systemd is not None:  # a Type=notify unit: the daemon is its main process now
                        systemd.send(MAINPID=proc.pid, READY=1, STATUS=text)
                    return EXIT_OK
                if kind == "error":
                    print(f"rcfs: {text}", file=sys.stderr)
                    proc.wait(timeout=30)
                    return EXIT_FAIL
                if kind == "progress" and interactive:
                    print(f"rcfs: {text}", file=sys.stderr)
    except KeyboardInterrupt:
        _stop_child(proc)
        print("rcfs: interrupted: the mount was stopped before it was served; nothing is mounted",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = proc.wait()
    print(f"rcfs: the mount process exited ({code}) before serving; see its log", file=sys.stderr)
    return EXIT_FAIL


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """End a daemon that was not serving yet (it unmounts if it got that far)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
