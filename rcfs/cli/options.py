"""Command-line grammar: the parser, its option types and their one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rcfs import __version__

log = logging.getLogger("rcfs")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 500M, 10G, 1048576)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_free(text: str) -> int | float:
    """A size (`2G`) or a share of the file system (`5%`, a float fraction)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text)
    if m:
        share = float(m.group(1)) / 100
        if not 0 <= share < 1:
            raise argparse.ArgumentTypeError(f"invalid share {text!r} (0% to 99%)")
        return share
    return parse_size(text)


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


READ_AHEAD_MAX = 64 << 20


def parse_read_ahead(text: str) -> int:
    """A read-ahead size: 0 (the kernel's own), else 4K to 64M, rounded up to whole
    4 KiB pages (the kernel keeps it in pages: 1 to 3 KiB would turn it off)."""
    size = parse_size(text)
    if size == 0:
        return 0
    if not 4096 <= size <= READ_AHEAD_MAX:
        raise argparse.ArgumentTypeError(
            f"invalid read-ahead {text!r} (0 for the kernel's own, else 4K to 64M)")
    return -(-size // 4096) * 4096


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT (loopback) for a server rcfs runs."""
    m = re.fullmatch(r"\s*(?:\[([0-9A-Fa-f:.]+)\]|([^:\s]*)):(\d{1,5})\s*", text)
    if not m or not 0 <= int(m.group(3)) <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid address {text!r} (examples: 127.0.0.1:9468, :9468, [::1]:9468)")
    host = m.group(1) or m.group(2) or "127.0.0.1"
    return host, int(m.group(3))


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


def _add_mount_options(p: argparse.ArgumentParser, *, fuse: bool = True) -> None:
    """`rcfs mount`'s options; without `fuse`, those of `rcfs serve` (no mountpoint)."""
    if fuse:
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
    p.add_argument("--cache-min-free", type=parse_free, default=0.05, metavar="SIZE",
                   help="evict from the cache early to keep this much of its disk free: a size "
                        "(2G) or a share (5%%); the archive is never evicted (default: 5%%)")
    p.add_argument("--start-timeout", type=positive_float, default=45.0, metavar="SECONDS",
                   help="how long a first mount waits for RingCentral before giving up "
                        "(default: 45; a remount with an index starts offline after 10 s)")
    p.add_argument("--poll-interval", type=positive_float, default=300.0, metavar="SECONDS",
                   help="how often to look for new calls (default: 300)")
    p.add_argument("--keep-deleted", action=argparse.BooleanOptionalAction, default=True,
                   help="keep recordings deleted upstream visible and readable while their "
                        "content is cached, marked user.rc.deleted=1 (default: on)")
    p.add_argument("--archive", action="store_true",
                   help="download every recording into the archive store, oldest first, "
                        "before RingCentral deletes it; kept for ever, outside --cache-size")
    p.add_argument("--retention", type=positive_float, default=90.0, metavar="DAYS",
                   help="days RingCentral keeps recordings on this account, for the archive's "
                        "at-risk figure (default: 90; HIPAA accounts: 30)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="share one RingCentral session and one rate budget with every rcfs on "
                        "these credentials and this Redis or Valkey (redis://, rediss://, "
                        "unix://; default: $RCFS_REDIS_URL, else redis_url in config.toml)")
    p.add_argument("--metrics", type=parse_listen, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics "
                        "(HOST defaults to 127.0.0.1: ':9468')")
    p.add_argument("--web", type=parse_listen, default=None, metavar="HOST:PORT",
                   help="serve the web player at http://HOST:PORT/ (HOST defaults to 127.0.0.1; "
                        "sign in with: rcfs web MOUNTPOINT)")
    if fuse:
        p.add_argument("--allow-other", action="store_true",
                       help="let other users see the mount (needs user_allow_other in "
                            "/etc/fuse.conf)")
        p.add_argument("--read-ahead", type=parse_read_ahead, default=1 << 20, metavar="SIZE",
                       help="how far the kernel reads ahead of a reader on this mount, which "
                            "bounds the size of its reads; needs root (0: the kernel's own, "
                            "128K; default: 1M)")
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
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="read the credentials from FILE (config.toml's format; the environment "
                        "still wins, key by key; default: $XDG_CONFIG_HOME/rcfs/config.toml)")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rcfs", description="RingCentral call recordings as a read-only file system.")
    parser.add_argument("--version", action="version", version=f"rcfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("mount", help="mount the account's recordings",
                       description="Mount the account's call recordings, by date, read-only. "
                                   "Credentials come from RC_SERVER_URL, RC_APP_CLIENT_ID, "
                                   "RC_APP_CLIENT_SECRET, RC_USER_JWT (or config.toml). "
                                   "As mount(8)'s helper (fstab, systemd): mount -t fuse.rcfs "
                                   "rcfs MOUNTPOINT -o since=90d,cache_size=50G,allow_other,... "
                                   "where every long option below is an -o key.")
    _add_mount_options(p)

    p = sub.add_parser("serve", help="the daemon without a FUSE mount: the web player, metrics, "
                                      "the archive",
                       description="Run rcfs's daemon (index, cache, archive, refreshes) without "
                                   "mounting, in the foreground, for machines without FUSE: "
                                   "rcfs serve --web 127.0.0.1:8080. Sign in with: rcfs web.")
    _add_mount_options(p, fuse=False)

    p = sub.add_parser("web", help="print a one-time sign-in link for the web player",
                       description="Ask the daemon serving MOUNTPOINT (or the one `rcfs serve` "
                                   "when no MOUNTPOINT is given) for a one-time sign-in link to "
                                   "its web player; only the user who runs it can get one.")
    p.add_argument("mountpoint", type=Path, nargs="?", default=None)

    p = sub.add_parser("umount", help="unmount (also clears a dead mount)",
                       description="Unmount an rcfs mount. Refuses while processes have files "
                                   "open there (naming them), unless --lazy.")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--lazy", action="store_true",
                   help="unmount even while files are open there (their reads fail)")

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

    p = sub.add_parser("verify", help="check every cached recording against its digest",
                       description="Read every cached and archived recording and compare it "
                                   "with the BLAKE2b digest taken when it was downloaded. "
                                   "Damaged ones are taken out of service (never served as "
                                   "good) and moved aside; with --repair, those that still "
                                   "exist upstream are downloaded again.")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--repair", action="store_true",
                   help="download damaged recordings again when they still exist upstream")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="give up waiting after this many seconds (default: wait until done)")

    p = sub.add_parser("emulator", add_help=False,
                       help="run the local RingCentral emulator (see rcfs emulator --help)")
    p.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("demo", help="emulator + mount in one command, in the foreground")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--calls", type=int, default=300,
                   help="calls in the demo account's call log, of which about 45%% carry a "
                        "recording (default: 300, about 130 recordings)")
    p.add_argument("--seed", type=int, default=1, help="seed of the demo account (default: 1)")
    p.add_argument("--tz", type=parse_tz, default=None, help="time zone of the tree")
    p.add_argument("--log-level", default="WARNING", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser
