"""Running the emulator: three Hypercorn servers on trio, and the `rcfs emulator` command.

Owns process-level concerns: building the platform app (API + admin), the
media app and the storage host over one shared `EmulatorState`, binding their
ports, reporting the info dict once all listen (`task_status.started(info)`,
one JSON line on stdout for the command), applying the configured retention
rules and audio format to the new account, answering unknown paths (404
CMN-102) and methods (405 with `Allow`), and stopping cleanly on cancellation
or SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from rcfs.emulator.account import Account
from rcfs.emulator.admin import Admin
from rcfs.emulator.audio import prepare_loops
from rcfs.emulator.auth import make_credentials
from rcfs.emulator.config import (
    EmulatorConfig,
    parse_audio_format,
    parse_faults,
    parse_rate_limits,
    parse_retention_count,
    parse_retention_duration,
)
from rcfs.emulator.errors import api_error
from rcfs.emulator.faults import DropConnection, Faults
from rcfs.emulator.media import Media, StorageHost
from rcfs.emulator.platform import Platform
from rcfs.emulator.ratelimit import RateLimiter
from rcfs.emulator.state import EmulatorState

log = logging.getLogger(__name__)

STORAGE_HOST = "127.0.0.1"  # the storage host is loopback whatever --host says


def _only_drops(exc: BaseException | None) -> bool:
    if isinstance(exc, DropConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_drops(e) for e in exc.exceptions)
    return False


class _QuietDrops(logging.Filter):
    """Hypercorn logs an app exception with a traceback; a reset fault is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _only_drops(record.exc_info[1]))


_http_log = logging.getLogger("rcfs.emulator.http")
_http_log.addFilter(_QuietDrops())


def _allowed(request: Request) -> list[str]:
    """Every method some route of this app accepts for the request's path (HEAD with GET)."""
    methods: set[str] = set()
    app = request.scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and isinstance(route, Route) and route.methods:
            methods |= route.methods
    return sorted(methods)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        # RFC 9110: a 405 carries Allow, the methods the resource supports.
        allow = _allowed(request)
        if not allow:  # Starlette's own list, for the one route it tried
            listed = (getattr(exc, "headers", None) or {}).get("Allow", "")
            allow = [m.strip() for m in listed.split(",") if m.strip()]
        return api_error(405, "CMN-405", "Method not allowed", headers={"Allow": ", ".join(allow)})
    return api_error(404, "CMN-102", f"Resource not found: {request.url.path}")


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    config = HypercornConfig()
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    config.bind = [f"{bind_host}:{port}"]
    config.accesslog = None
    config.errorlog = _http_log
    config.include_server_header = False
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30.0
    return config


def _url(bind: str) -> str:
    return bind if bind.startswith("http") else f"http://{bind}"


class Emulator:
    """A running stand-in for RingCentral: `await nursery.start(Emulator(cfg).run)`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        # Validate option strings now, so a bad spec fails before any port is bound.
        self._limits = parse_rate_limits(self.config.rate_limits)
        self._faults = parse_faults(self.config.faults)
        self._retention_count = parse_retention_count(self.config.retention_count)
        self._retention_s = parse_retention_duration(self.config.retention)
        self._audio_format = parse_audio_format(self.config.audio_format)
        self.info: dict[str, str] = {}
        self.storage_url = ""
        self.state: EmulatorState | None = None

    def _build_state(self) -> EmulatorState:
        cfg = self.config
        account = Account(cfg.seed, cfg.calls, cfg.days, end=cfg.epoch)
        account.set_retention(self._retention_count, self._retention_s, time.time())
        credentials = make_credentials(cfg.seed, account.account_id, account.user.id)
        prepare_loops()  # encode the MP3 and WAV loops now, off the event loop
        state = EmulatorState(
            account,
            credentials,
            RateLimiter(self._limits),
            Faults(cfg.seed, self._faults),
            cfg.seed,
        )
        state.audio_format = self._audio_format
        return state

    def apps(self, state: EmulatorState) -> tuple[Starlette, Starlette]:
        handlers: dict[Any, Any] = {404: _not_found, 405: _not_found}
        platform = Starlette(
            routes=[*Platform(state).routes(), *Admin(state).routes()],
            exception_handlers=handlers,
        )
        media = Starlette(routes=Media(state).routes(), exception_handlers=handlers)
        return platform, media

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(info)` once every port listens.

        Three servers: the platform and the media host on `host`, and the
        storage host (the target of the `redirect` fault) always on 127.0.0.1.
        Its URL is `GET /__emulator/storage/requests`'s `url` (and
        `self.storage_url`), not in `info`, whose keys are a contract."""
        state = self.state = await trio.to_thread.run_sync(
            self._build_state, abandon_on_cancel=True
        )
        platform, media = self.apps(state)
        cfg = self.config
        async with trio.open_nursery() as nursery:
            platform_binds = await nursery.start(
                partial(serve, cast(Any, platform), _hypercorn_config(cfg.host, cfg.port))
            )
            media_binds = await nursery.start(
                partial(serve, cast(Any, media), _hypercorn_config(cfg.host, cfg.media_port))
            )
            storage_binds = await nursery.start(
                partial(serve, cast(Any, StorageHost(state)), _hypercorn_config(STORAGE_HOST, 0))
            )
            state.storage.url = self.storage_url = _url(storage_binds[0])
            state.set_urls(_url(platform_binds[0]), _url(media_binds[0]))
            self.info = state.info()
            log.info(
                "emulator for account %s: platform %s, media %s",
                state.account.account_id,
                state.server_url,
                state.media_url,
            )
            task_status.started(dict(self.info))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit status 2
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rcfs emulator",
        description="A local stand-in for the RingCentral API.",
        epilog="Retention (also PUT /__emulator/retention) deletes recordings as RingCentral "
        "does: the record stays, its recording block goes, and ISync reports the change.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="platform port (0: any free port)")
    p.add_argument("--media-port", type=int, default=0, help="media port (0: any free port)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--calls", type=int, default=200, help="call-log records to generate")
    p.add_argument("--days", type=int, default=30, help="days of history, ending now")
    p.add_argument("--rate-limits", default="real", help="real | off | heavy=10/2s,auth=5/2s,...")
    p.add_argument(
        "--faults",
        default="",
        help="5xx=0.05,reset=0.05,latency=200ms,token_ttl=30s,no_length=1,late_recording=60s,"
        "lie_length=N,trickle=N,stall_after=N,no_retry_after=1,retry_after_503=N,redirect=1,"
        "isync_limit=1",
    )
    p.add_argument(
        "--retention-count",
        type=int,
        default=None,
        metavar="N",
        help="keep only the newest N recordings (by call start); older ones are deleted, "
        "at start and whenever new calls arrive (RingCentral keeps 100000)",
    )
    p.add_argument(
        "--retention",
        default=None,
        metavar="DURATION",
        help="delete recordings whose call started longer ago than DURATION "
        "(e.g. 90s, 10m, 2h), as time passes",
    )
    p.add_argument(
        "--audio-format",
        default="mp3",
        metavar="mp3|wav|mixed",
        help="the company's recording format: MP3 (audio/mpeg), WAV (audio/wav, 8 kHz "
        "16-bit mono), or mixed (a seeded quarter WAV); also PUT /__emulator/audio-format",
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(argv: list[str]) -> tuple[EmulatorConfig, str]:
    """Parse the command line; raises _UsageError (one line) on bad input."""
    args = _parser().parse_args(argv)
    for name in ("port", "media_port"):
        if not 0 <= getattr(args, name) <= 65535:
            raise _UsageError(f"--{name.replace('_', '-')} must be 0..65535")
    if args.calls < 0 or args.calls > 5_000_000:
        raise _UsageError("--calls must be 0..5000000")
    if args.days < 1 or args.days > 3650:
        raise _UsageError("--days must be 1..3650")
    if args.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _UsageError(f"invalid --log-level {args.log_level!r}")
    try:
        parse_rate_limits(args.rate_limits)
        parse_faults(args.faults)
        parse_retention_count(args.retention_count)
        parse_retention_duration(args.retention)
        audio_format = parse_audio_format(args.audio_format)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        media_port=args.media_port,
        seed=args.seed,
        calls=args.calls,
        days=args.days,
        rate_limits=args.rate_limits,
        faults=args.faults,
        retention_count=args.retention_count,
        retention=args.retention,
        audio_format=audio_format,
    )
    return config, args.log_level.upper()


async def _serve_until_signal(config: EmulatorConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("signal %d: stopping", signum)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            info = await nursery.start(Emulator(config).run)
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """`rcfs emulator ...`: print the info JSON line, serve until SIGINT/SIGTERM."""
    try:
        config, level = config_from_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except _UsageError as err:
        print(f"rcfs emulator: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(_serve_until_signal, config)
    except OSError as err:  # e.g. the port is taken
        print(f"rcfs emulator: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
