"""Run `rcfs emulator` in this process, plus calls longer than the admin API allows.

    python scripts/bench/emulator.py [emulator options] [--long ISO_START:SECONDS ...]

Prints the emulator's JSON info line, then (once the long calls are added) a
second line `{"long": [recordingId, ...]}`; serves until SIGTERM/SIGINT.
The admin API caps `duration` at 4 h (57.6 MB at the emulator's 32 kbps);
the benchmark wants one ~200 MB recording, i.e. a 14-hour call, so this
wrapper adds it through the emulator's own `Account.add_calls`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import datetime

import trio

from rcfs.emulator.server import Emulator, config_from_args


def _parse_long(text: str) -> tuple[float, int]:
    start, _, seconds = text.rpartition(":")
    return datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp(), int(seconds)


async def _serve(argv: list[str], longs: list[tuple[float, int]]) -> None:
    config, _level = config_from_args(argv)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            emu = Emulator(config)
            info = await nursery.start(emu.run)
            sys.stdout.write(json.dumps(info) + "\n")
            assert emu.state is not None
            added: list[str] = []
            for start, seconds in longs:
                for call in emu.state.account.add_calls(1, time.time(), start=start, duration=seconds):
                    added += [rec.id for rec in call.recordings()]
            sys.stdout.write(json.dumps({"long": added}) + "\n")
            sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def main() -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--long", action="append", default=[])
    args, rest = p.parse_known_args()
    trio.run(_serve, rest, [_parse_long(x) for x in args.long])
    return 0


if __name__ == "__main__":
    sys.exit(main())
