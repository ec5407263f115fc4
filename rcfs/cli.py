"""The `rcfs` command line: argument parsing, logging set-up, daemonizing.

Every failure a user can cause (bad option, missing credentials, busy
mountpoint, refused login) ends as one line on stderr and a non-zero exit,
never a traceback. `rcfs mount` without `--foreground` starts the daemon as a
detached child (`python -m rcfs mount --foreground --ready-fd N`) and waits
on a pipe until it serves the tree or says why it cannot; forking a running
trio process is not safe, so the child is a fresh interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rcfs import __version__
from rcfs.errors import ConfigError, RcfsError

log = logging.getLogger("rcfs")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


# -- option parsing ------------------------------------------------------------

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 500M, 10G, 1048576)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_since(text: str) -> datetime:
    m = re.fullmatch(r"(\d+)d", text.strip())
    try:
        if m:
            return datetime.now(UTC) - timedelta(days=int(m.group(1)))
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r} (examples: 2026-09-01, 2026-09-01T08:00:00+00:00, 30d)"
        ) from None


def parse_until(text: str) -> datetime:
    """Like parse_since, but a bare date means the end of that day (inclusive)."""
    value = parse_since(text)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        value += timedelta(days=1)
    return value


def parse_tz(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text!r} (an IANA name such as Europe/Paris)"
        ) from None


def parse_umask(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid umask {text!r} (octal, e.g. 022)") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"invalid umask {text!r} (octal, 000 to 777)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def local_zone() -> ZoneInfo:
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        link = os.readlink("/etc/localtime")
        return ZoneInfo(link.split("zoneinfo/", 1)[1])
    except (OSError, IndexError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        return ZoneInfo(Path("/etc/timezone").read_text().strip())
    except (OSError, ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"rcfs: error: {message}\n")


def _add_mount_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint", type=Path, help="an empty directory to mount on")
    p.add_argument("--foreground", "-f", action="store_true",
                   help="stay in the foreground, log to stderr, unmount on Ctrl-C")
    p.add_argument("--tz", type=parse_tz, default=None,
                   help="time zone of the year/month/day tree and file names "
                        "(IANA name; default: this machine's zone)")
    p.add_argument("--since", type=parse_since, default=None,
                   help="oldest call to show: a date, an ISO time or Nd (default: 90d)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where downloaded recordings are kept (default: $XDG_CACHE_HOME/rcfs/ACCOUNT)")
    p.add_argument("--cache-size", type=parse_size, default=parse_size("10G"),
                   help="content cache bound, least recently used evicted first (default: 10G)")
    p.add_argument("--poll-interval", type=positive_float, default=300.0, metavar="SECONDS",
                   help="how often to look for new calls (default: 300)")
    p.add_argument("--keep-deleted", action=argparse.BooleanOptionalAction, default=True,
                   help="keep recordings deleted upstream visible and readable while their "
                        "content is cached, marked user.rc.deleted=1 (default: on)")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users see the mount (needs user_allow_other in /etc/fuse.conf)")
    p.add_argument("--uid", type=int, default=None, help="owner of every file (default: you)")
    p.add_argument("--gid", type=int, default=None, help="group of every file (default: yours)")
    p.add_argument("--umask", type=parse_umask, default=0o022,
                   help="mask applied to 0555 dirs / 0444 files (default: 022)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                   help="log verbosity (default: INFO)")
    p.add_argument("--log-file", type=Path, default=None,
                   help="log here (default: stderr in the foreground, "
                        "$XDG_STATE_HOME/rcfs/mount.log as a daemon)")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rcfs", description="RingCentral call recordings as a read-only file system.")
    parser.add_argument("--version", action="version", version=f"rcfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("mount", help="mount the account's recordings",
                       description="Mount the account's call recordings, by date, read-only. "
                                   "Credentials come from RC_SERVER_URL, RC_APP_CLIENT_ID, "
                                   "RC_APP_CLIENT_SECRET, RC_USER_JWT (or config.toml).")
    _add_mount_options(p)

    p = sub.add_parser("umount", help="unmount (also clears a dead mount)")
    p.add_argument("mountpoint", type=Path)

    p = sub.add_parser("status", help="index, cache, rate limits, downloads, recent errors")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--json", action="store_true", help="print .rcfs/status.json as is")

    p = sub.add_parser("refresh", help="look for new calls now, wait, print what changed")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--timeout", type=positive_float, default=300.0,
                   help="how long to wait for the refresh to finish (default: 300)")

    p = sub.add_parser("prefetch", help="download recordings into the cache in the background",
                       description="Queue the uncached recordings of calls that started in "
                                   "[--since, --until) for download at background priority, "
                                   "within the rate limits; progress shows in rcfs status.")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--since", type=parse_since, default=None,
                   help="oldest call: a date, an ISO time or Nd (default: all indexed)")
    p.add_argument("--until", type=parse_until, default=None,
                   help="newest call: a date (inclusive), an ISO time or Nd (default: now)")
    p.add_argument("--wait", action="store_true",
                   help="wait until the prefetch is done, showing progress")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="with --wait: give up after this many seconds")

    p = sub.add_parser("cache", help="manage the content cache of a mount")
    cache_sub = p.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    p = cache_sub.add_parser("prune", help="remove cached content",
                             description="Remove the archived content of recordings deleted "
                                         "upstream; they leave the tree. Eviction never does this.")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--deleted", action="store_true", required=True,
                   help="recordings deleted upstream (the only kind pruned by hand)")

    p = sub.add_parser("emulator", add_help=False,
                       help="run the local RingCentral emulator (see rcfs emulator --help)")
    p.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("demo", help="emulator + mount in one command, in the foreground")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--calls", type=int, default=300, help="calls in the demo account (default: 300)")
    p.add_argument("--seed", type=int, default=1, help="seed of the demo account (default: 1)")
    p.add_argument("--tz", type=parse_tz, default=None, help="time zone of the tree")
    p.add_argument("--log-level", default="WARNING", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


# -- logging -------------------------------------------------------------------


class _Redactor(logging.Filter):
    """Last line of defence: blank out known secrets should one reach a log record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            msg = record.getMessage()
            if any(s in msg for s in self._secrets):
                for s in self._secrets:
                    msg = msg.replace(s, "***")
                record.msg, record.args = msg, None
        return True


def setup_logging(level: str, log_file: Path | None, secrets: list[str] | None = None) -> None:
    handler: logging.Handler
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write the log file {log_file}: {exc.strerror}") from None
        handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redactor(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx/httpcore at DEBUG print every header exchange; keep them at INFO at most.
    for noisy in ("httpcore", "hpack", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


# -- commands ------------------------------------------------------------------


def _mount_options(args: argparse.Namespace) -> Any:
    from rcfs.mount import MountOptions, default_since

    return MountOptions(
        mountpoint=args.mountpoint.absolute(),
        tz=args.tz or local_zone(),
        since=args.since or default_since(),
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        poll_interval=args.poll_interval,
        keep_deleted=args.keep_deleted,
        allow_other=args.allow_other,
        uid=os.getuid() if args.uid is None else args.uid,
        gid=os.getgid() if args.gid is None else args.gid,
        umask=args.umask,
    )


def cmd_mount(args: argparse.Namespace, argv: list[str]) -> int:
    from rcfs.config import load_credentials, state_dir
    from rcfs.mount import check_mountpoint

    opts = _mount_options(args)
    check_mountpoint(opts.mountpoint)
    creds = load_credentials()
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


def _run_mount(opts: Any, creds: Any, ready_fd: int | None) -> int:
    import trio

    from rcfs.mount import Notifier, serve

    notifier = Notifier(ready_fd)
    try:
        trio.run(serve, opts, creds, notifier)
    except RcfsError as exc:
        log.error("%s", exc)
        notifier.failed(str(exc))
        if ready_fd is None:
            print(f"rcfs: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _daemonize(argv: list[str], args: argparse.Namespace) -> int:
    """Start the daemon as a detached child and wait until it serves or fails."""
    read_fd, write_fd = os.pipe()
    child_argv = [sys.executable, "-m", "rcfs", *argv, "--foreground", "--ready-fd", str(write_fd)]
    proc = subprocess.Popen(
        child_argv,
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    os.close(write_fd)
    interactive = sys.stderr.isatty()
    with os.fdopen(read_fd, "r") as pipe:
        for line in pipe:
            kind, _, text = line.rstrip("\n").partition(" ")
            if kind == "ready":
                return EXIT_OK
            if kind == "error":
                print(f"rcfs: {text}", file=sys.stderr)
                proc.wait(timeout=30)
                return EXIT_FAIL
            if kind == "progress" and interactive:
                print(f"rcfs: {text}", file=sys.stderr)
    code = proc.wait()
    print(f"rcfs: the mount process exited ({code}) before serving; see its log", file=sys.stderr)
    return EXIT_FAIL


def read_status(mountpoint: Path) -> dict[str, Any]:
    path = mountpoint / ".rcfs" / "status.json"
    try:
        return dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        raise ConfigError(f"{mountpoint} is not an rcfs mount") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise ConfigError(
                f"{mountpoint} is a dead mount; clear it with: rcfs umount {mountpoint}"
            ) from None
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON") from None


def cmd_umount(args: argparse.Namespace) -> int:
    from rcfs.mount import _is_mounted, lazy_unmount

    mp: Path = args.mountpoint.absolute()
    if not _is_mounted(mp):
        raise ConfigError(f"{mp} is not mounted")
    pid = None
    with contextlib.suppress(ConfigError):  # a dead or foreign mount: detach it below
        pid = int(read_status(mp).get("pid", 0)) or None
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
        deadline = time.monotonic() + 15
        while pid is not None and _is_mounted(mp) and time.monotonic() < deadline:
            time.sleep(0.05)
    if _is_mounted(mp) and not lazy_unmount(mp):
        raise RcfsError(f"could not unmount {mp} (try: fusermount3 -u -z {mp})")
    print(f"unmounted {mp}")
    return EXIT_OK


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def progress_bar(done: int, total: int, width: int = 30) -> str:
    frac = 1.0 if total <= 0 else min(1.0, done / total)
    filled = round(frac * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}%"


def format_status(st: dict[str, Any]) -> str:
    idx, cache, dl = st.get("index", {}), st.get("cache", {}), st.get("downloads", {})
    lines = [
        f"account     {st.get('account', '?')}  (call log: {st.get('call_log_scope', 'company')})",
        f"index       {idx.get('recordings', 0)} recordings in {idx.get('records', 0)} calls, "
        f"{idx.get('oldest') or '-'} .. {idx.get('newest') or '-'}",
        f"            {idx.get('deleted', 0)} deleted upstream ({idx.get('deleted_kept', 0)} kept"
        f"{'' if st.get('keep_deleted', True) else ', --no-keep-deleted'}); "
        f"last sync {idx.get('last_sync') or '-'}",
        f"cache       {_fmt_bytes(cache.get('bytes', 0))} of {_fmt_bytes(cache.get('limit', 0))}, "
        f"{cache.get('entries', 0)} recordings; {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses",
        f"archive     {cache.get('archived', 0)} recordings deleted upstream, "
        f"{_fmt_bytes(cache.get('archived_bytes', 0))} (never evicted; rcfs cache prune --deleted)",
        f"downloads   {dl.get('active', 0)} active, {dl.get('queued', 0)} queued, "
        f"{dl.get('done', 0)} done, {dl.get('failed', 0)} failed, {_fmt_bytes(dl.get('bytes', 0))}",
    ]
    ref = st.get("refresh") or {}
    if ref:
        last = ref.get("last") or {}
        summary = (f"last {last.get('time')}: {last.get('new_recordings', 0)} new, "
                   f"{last.get('deleted', 0)} deleted" if last else "none yet")
        lines.append(f"refresh     every {ref.get('poll_interval', 0):g} s, {ref.get('refreshes', 0)} done"
                     f"{', running' if ref.get('running') else ''}; {summary}")
    pf = st.get("prefetch") or {}
    if pf.get("total"):
        finished = pf.get("done", 0) + pf.get("failed", 0)
        state = "running" if pf.get("running") else "done"
        lines.append(f"prefetch    {progress_bar(finished, pf['total'])} {finished}/{pf['total']} "
                     f"({pf.get('failed', 0)} failed, {_fmt_bytes(pf.get('bytes', 0))}), {state}")
    lines.append("rate limits")
    reqs = st.get("requests", {})
    for group, rl in sorted(st.get("rate_limits", {}).items()):
        r = reqs.get(group, {})
        paused = f", paused until {rl['paused_until']}" if rl.get("paused_until") else ""
        lines.append(
            f"  {group:<8} {rl.get('remaining', '?')}/{rl.get('limit', '?')}"
            f" per {rl.get('window', '?')} s{paused}; "
            f"sent {r.get('sent', 0)}, 429s {r.get('throttled_429', 0)}, errors {r.get('errors', 0)}; "
            f"queued {rl.get('queued', 0)}, in flight {rl.get('in_flight', 0)}"
        )
    errs = st.get("errors", [])
    lines.append(f"errors      {len(errs)} recent" + (":" if errs else ""))
    lines.extend(f"  {e.get('time', '')} {e.get('cause', '')}" for e in errs[-5:])
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    st = read_status(args.mountpoint)
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else format_status(st))
    return EXIT_OK


def _control(mountpoint: Path, msg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one command to the daemon serving `mountpoint` (control.py)."""
    from rcfs.control import request

    path = read_status(mountpoint).get("control")
    if not path:
        raise ConfigError(f"{mountpoint}: the daemon advertises no control socket (an older rcfs?)")
    return request(path, msg, timeout=timeout)


def cmd_refresh(args: argparse.Namespace) -> int:
    result = _control(args.mountpoint, {"cmd": "refresh"}, args.timeout)
    days = result.get("changed_days") or []
    print(f"refreshed in {result.get('seconds', 0):.1f} s: {result.get('new_recordings', 0)} new "
          f"recordings, {result.get('deleted', 0)} deleted upstream "
          f"({result.get('deleted_kept', 0)} kept), {len(days)} days changed"
          + (": " + " ".join(days) if days else ""))
    return EXIT_OK


def cmd_prefetch(args: argparse.Namespace) -> int:
    msg: dict[str, Any] = {"cmd": "prefetch"}
    if args.since is not None:
        msg["since"] = args.since.isoformat()
    if args.until is not None:
        msg["until"] = args.until.isoformat()
    queued = int(_control(args.mountpoint, msg, 60)["queued"])
    print(f"prefetch: {queued} recordings queued; progress: rcfs status {args.mountpoint}")
    if not args.wait:
        return EXIT_OK
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    tty = sys.stdout.isatty()
    while True:
        pf = read_status(args.mountpoint).get("prefetch") or {}
        finished = pf.get("done", 0) + pf.get("failed", 0)
        if tty:
            print(f"\r{progress_bar(finished, pf.get('total', 0))} {finished}/{pf.get('total', 0)}",
                  end="", flush=True)
        if not pf.get("running"):
            break
        if deadline is not None and time.monotonic() > deadline:
            raise RcfsError(f"prefetch still running after {args.timeout:.0f} s (see rcfs status)")
        time.sleep(0.5)
    if tty:
        print()
    print(f"prefetch: {pf.get('done', 0)} of {pf.get('total', 0)} cached, "
          f"{pf.get('failed', 0)} failed, {_fmt_bytes(pf.get('bytes', 0))}")
    return EXIT_OK if not pf.get("failed") else EXIT_FAIL


def cmd_cache(args: argparse.Namespace) -> int:
    if args.cache_command == "prune":
        result = _control(args.mountpoint, {"cmd": "prune_deleted"}, 300)
        print(f"pruned {result.get('removed', 0)} recordings deleted upstream "
              f"({_fmt_bytes(result.get('bytes', 0))})")
        return EXIT_OK
    raise AssertionError(args.cache_command)


# Real rate limiting with RingCentral's headers and penalties, but budgets six
# times the defaults, so that exploring the demo tree is not a wait. (With
# "off" the emulator sends no headers and rcfs would keep the real defaults.)
DEMO_RATE_LIMITS = "heavy=60/60s,medium=240/60s,light=300/60s,auth=30/60s"


def cmd_demo(args: argparse.Namespace) -> int:
    import trio

    from rcfs.mount import Notifier, check_mountpoint, default_since

    mp = args.mountpoint.absolute()
    check_mountpoint(mp)
    setup_logging(args.log_level, None)
    tmp = Path(tempfile.mkdtemp(prefix="rcfs-demo-"))
    os.chmod(tmp, 0o700)
    tz = args.tz or local_zone()

    async def run() -> None:
        from rcfs.config import Credentials
        from rcfs.emulator import Emulator, EmulatorConfig
        from rcfs.mount import MountOptions, serve

        async with trio.open_nursery() as nursery:
            emulator = Emulator(
                EmulatorConfig(seed=args.seed, calls=args.calls, days=30, rate_limits=DEMO_RATE_LIMITS)
            )
            info = await nursery.start(emulator.run)
            creds = Credentials(
                server_url=info["server_url"], media_url=info["media_url"],
                client_id=info["client_id"], client_secret=info["client_secret"], jwt=info["jwt"],
            )
            opts = MountOptions(mountpoint=mp, tz=tz, since=default_since(31),
                                cache_dir=tmp / "cache", state_dir=tmp / "state", poll_interval=60)
            print(f"rcfs demo: emulator at {info['server_url']}; mounting {mp} (Ctrl-C to stop)",
                  file=sys.stderr)
            await serve(opts, creds, Notifier(None))
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print("rcfs demo: unmounted", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from rcfs.emulator import main as emulator_main

        return emulator_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "mount":
            # The daemon child is re-run with these same arguments.
            child_argv = [a for a in argv]
            return cmd_mount(args, child_argv)
        if args.command == "umount":
            return cmd_umount(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "refresh":
            return cmd_refresh(args)
        if args.command == "prefetch":
            return cmd_prefetch(args)
        if args.command == "cache":
            return cmd_cache(args)
        if args.command == "demo":
            return cmd_demo(args)
    except RcfsError as exc:
        print(f"rcfs: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL
    raise AssertionError(args.command)
