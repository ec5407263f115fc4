"""What each `rcfs` subcommand does, and `main`.

Starting the daemon (`rcfs mount`, `rcfs serve`) is `daemon.py`'s. `main`
also answers mount(8)'s helper call, `rcfs SOURCE MOUNTPOINT -o OPTIONS`, by
translating it into `rcfs mount` (`fstab.py`).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from rcfs.cli import fstab
from rcfs.cli.daemon import cmd_mount, cmd_serve, ignore_late_interrupts, is_interrupt
from rcfs.cli.display import fmt_bytes, format_status, progress_bar
from rcfs.cli.logs import setup_logging
from rcfs.cli.options import EXIT_FAIL, EXIT_OK, build_parser, local_zone
from rcfs.errors import ConfigError, RcfsError
from rcfs.units import count

log = logging.getLogger("rcfs")


def read_status(mountpoint: Path) -> dict[str, Any]:
    """The daemon's status.json, read only from an rcfs mount: on any other file system
    the file (and the control socket it names) may have been planted by anyone."""
    from rcfs import registry

    entry = registry.mount_at(registry.real_mountpoint(mountpoint))
    if entry is not None and entry.fstype != registry.FSTYPE:
        raise ConfigError(f"{mountpoint} is not an rcfs mount ({entry.fstype})")
    if entry is None:
        raise ConfigError(f"{mountpoint} is not an rcfs mount (nothing is mounted there)")
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
    """Unmount an rcfs mount: SIGTERM its daemon if rcfs's own record names a live one,
    else (a dead mount, or one served by a daemon with another state directory) detach it.

    Never signals a pid read from a file in the mount (`.rcfs/status.json` can be
    planted on any other file system), and refuses what is not a `fuse.rcfs` mount.
    """
    from rcfs import registry
    from rcfs.config import state_dir
    from rcfs.mount import lazy_unmount

    mp: Path = args.mountpoint.absolute()
    target = registry.real_mountpoint(mp)
    entry = registry.mount_at(target)
    if entry is None:
        raise ConfigError(f"{mp} is not mounted")
    if entry.fstype != registry.FSTYPE:
        raise ConfigError(f"{mp} is not an rcfs mount ({entry.fstype})")
    try:
        state: Path | None = state_dir()
    except ConfigError:
        state = None  # no record to read: detach the mount below
    daemon, why = (None, "no state directory") if state is None else registry.serving_daemon(
        state, target, entry)

    if not args.lazy and (users := busy_users(target)):
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise RcfsError(f"{mp} is in use by {shown}; close them, or detach anyway "
                        f"with: rcfs umount --lazy {mp}")

    def still_mounted() -> bool:
        now = registry.mount_at(target)
        return now is not None and now.mount_id == entry.mount_id

    if daemon is not None:
        daemon.terminate()
        deadline = time.monotonic() + 15
        while still_mounted() and time.monotonic() < deadline:
            time.sleep(0.05)
    if still_mounted() and not lazy_unmount(mp):  # also --lazy: detach whatever is open
        raise RcfsError(f"could not unmount {mp} (try: fusermount3 -u -z {mp})")
    if daemon is None and state is not None:
        registry.forget(state, target)  # a stale record (its daemon died), if any
    print(f"unmounted {mp}" if daemon is not None else f"unmounted {mp} (detached: {why})")
    return EXIT_OK


def cmd_web(args: argparse.Namespace) -> int:
    """Print a one-time sign-in link to the web player of the daemon serving
    MOUNTPOINT, or, without one, of the one daemon of ours that serves a web player."""
    from rcfs.control import ControlError, request

    if args.mountpoint is not None:
        answer = _control(args.mountpoint, {"cmd": "web"}, 30.0)
    else:
        found: list[dict[str, Any]] = []
        for sock in _our_control_sockets():
            try:
                found.append(request(sock, {"cmd": "web"}, timeout=10.0))
            except ControlError:
                continue  # no web player there, or a stale socket
        if not found:
            raise ConfigError("no running rcfs daemon of yours serves the web player "
                              "(rcfs serve --web HOST:PORT, or rcfs mount ... --web HOST:PORT)")
        if len(found) > 1:
            raise ConfigError(f"{len(found)} rcfs daemons serve a web player; "
                              "name the mount: rcfs web MOUNTPOINT")
        answer = found[0]
    minutes = max(1, int(answer.get("expires_in", 0)) // 60)
    print(answer["url"])
    if sys.stderr.isatty():
        print(f"rcfs: a one-time link, valid for {minutes} min; open it in your browser",
              file=sys.stderr)
    return EXIT_OK


def _our_control_sockets() -> list[Path]:
    """The control sockets of this user's rcfs daemons (state_dir/accounts/*/)."""
    from rcfs.config import state_dir
    from rcfs.control import sockets_in

    try:
        return [sock for acct in sorted((state_dir() / "accounts").iterdir())
                for sock in sockets_in(acct)]
    except OSError:
        return []


def busy_users(mountpoint: Path | str) -> list[str]:
    """"name (pid)" of each process with a file, working directory or root under
    `mountpoint` (what fuser -m finds), from /proc; none for a dead mount."""
    try:
        dev = os.stat(mountpoint).st_dev
    except OSError:
        return []  # a dead mount: nothing can be using it
    prefix = os.fspath(mountpoint).rstrip("/") + "/"

    def under_mount(link: Path) -> bool:
        try:
            target = os.readlink(link)
            # the mount itself, not the directory under it (a shell's cwd there)
            return (target + "/").startswith(prefix) and os.stat(link).st_dev == dev
        except OSError:
            return False

    found: list[str] = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            links = [pid_dir / "cwd", pid_dir / "root", *(pid_dir / "fd").iterdir()]
        except OSError:
            continue  # gone, or not ours to look at
        if any(under_mount(link) for link in links):
            try:
                name = (pid_dir / "comm").read_text().strip()
            except OSError:
                name = "?"
            found.append(f"{name} ({pid_dir.name})")
    return found


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
    print(f"prefetch: {count(queued, 'recording')} queued; progress: rcfs status {args.mountpoint}")
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
          f"{pf.get('failed', 0)} failed, {fmt_bytes(pf.get('bytes', 0))}")
    return EXIT_OK if not pf.get("failed") else EXIT_FAIL


def cmd_cache(args: argparse.Namespace) -> int:
    if args.cache_command == "prune":
        result = _control(args.mountpoint, {"cmd": "prune_deleted"}, 300)
        print(f"pruned {count(result.get('removed', 0), 'recording')} deleted upstream "
              f"({fmt_bytes(result.get('bytes', 0))})")
        return EXIT_OK
    raise AssertionError(args.cache_command)


def cmd_verify(args: argparse.Namespace) -> int:
    print(f"verify: reading every cached recording of {args.mountpoint}...", file=sys.stderr)
    r = _control(args.mountpoint, {"cmd": "verify", "repair": args.repair},
                 args.timeout if args.timeout is not None else 7 * 86400)
    damaged, unrepairable = r.get("damaged") or [], r.get("unrepairable") or []
    print(f"verified {count(r.get('checked', 0), 'recording')}: {r.get('intact', 0)} intact, "
          f"{len(damaged)} damaged, {r.get('repaired', 0)} repaired, "
          f"{r.get('no_digest', 0)} without a digest on record (digest taken now)")
    for rid in damaged:
        fate = ("cannot be fetched again (deleted upstream)" if rid in unrepairable
                else "fetched again" if args.repair else "taken out of service (--repair fetches it again)")
        print(f"  damaged: recording {rid}: {fate}")
    return EXIT_OK if not damaged or (args.repair and not unrepairable) else EXIT_FAIL


# Real rate limiting with RingCentral's headers and penalties, but budgets six
# times the defaults, so that exploring the demo tree is not a wait. (With
# "off" the emulator sends no headers and rcfs would keep the real defaults.)
DEMO_RATE_LIMITS = "heavy=60/60s,medium=240/60s,light=300/60s,auth=30/60s"


def cmd_demo(args: argparse.Namespace) -> int:

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
        ignore_late_interrupts()
    except BaseException as exc:
        ignore_late_interrupts()
        if not is_interrupt(exc):
            raise
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
    if fstab.is_helper_call(argv):  # mount -t fuse.rcfs: `rcfs SOURCE MOUNTPOINT -o OPTIONS`
        try:
            argv = fstab.to_mount_argv(argv)
        except RcfsError as exc:
            print(f"rcfs: {exc}", file=sys.stderr)
            return EXIT_FAIL
    args = build_parser().parse_args(argv)
    try:
        if args.command == "mount":
            # The daemon child is re-run with these same arguments.
            child_argv = [a for a in argv]
            return cmd_mount(args, child_argv)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "web":
            return cmd_web(args)
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
        if args.command == "verify":
            return cmd_verify(args)
        if args.command == "demo":
            return cmd_demo(args)
    except RcfsError as exc:
        print(f"rcfs: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL
    raise AssertionError(args.command)
