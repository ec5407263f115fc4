#!/usr/bin/env python3
"""Benchmark the API client's Heavy-group limiter against the in-process emulator.

Runs the emulator on 127.0.0.1:0 with `heavy=LIMIT/WINDOWs`, lists the call log,
then downloads N recordings concurrently and prints the elapsed time, the
theoretical bound (N / LIMIT * WINDOW), their ratio (utilisation: 1.0 means
the whole budget was used) and the number of 429s the emulator answered.

    .venv/bin/python scripts/bench_ratelimit.py [--requests 100] [--limit 10] [--window 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trio

from rcfs.api import Priority, RingCentralClient
from rcfs.config import Credentials
from rcfs.emulator import EmulatorConfig
from rcfs.emulator.testing import open_emulator


async def bench(requests: int, limit: int, window: float) -> dict[str, float | int]:
    cfg = EmulatorConfig(calls=max(2 * requests + 50, 200), seed=11, rate_limits=f"heavy={limit}/{window:g}s")
    async with open_emulator(cfg) as emu:
        info = emu.info
        creds = Credentials(
            info["server_url"],
            info["client_id"],
            info["client_secret"],
            info["jwt"],
            info["media_url"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            async with (
                httpx.AsyncClient(base_url=info["server_url"], trust_env=False) as admin,
                RingCentralClient.open(creds, Path(tmp) / "token.json") as client,
            ):
                now = datetime.now(UTC)
                uris: list[str] = []
                async for page in client.iter_call_log(now - timedelta(days=400), now):
                    uris += [r["recording"]["contentUri"] for r in page if r.get("recording")]
                if len(uris) < requests:
                    raise SystemExit(f"only {len(uris)} recordings")
                await trio.sleep(window + 0.5)  # let the listing's request leave the window
                await admin.post("/__emulator/stats/reset")
                nbytes = 0

                async def fetch(uri: str) -> None:
                    nonlocal nbytes
                    async with client.stream_content(uri, priority=Priority.BACKGROUND) as r:
                        async for chunk in r.iter_chunks():
                            nbytes += len(chunk)

                start = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for uri in uris[:requests]:
                        nursery.start_soon(fetch, uri)
                elapsed = trio.current_time() - start
                stats = (await admin.get("/__emulator/stats")).json()
    bound = requests / limit * window
    return {
        "requests": requests,
        "elapsed_s": round(elapsed, 2),
        "bound_s": bound,
        "ratio": round(elapsed / bound, 3),
        "throttled_429": stats["throttled"],
        "content_requests": stats["requests"].get("readCallRecordingContent", 0),
        "bytes": nbytes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    result = trio.run(bench, args.requests, args.limit, args.window)
    print(
        f"elapsed {result['elapsed_s']:.2f}s, bound {result['bound_s']:.2f}s, "
        f"ratio {result['ratio']:.3f}, 429s {result['throttled_429']}"
    )
    print(json.dumps(result))
    return 0 if result["throttled_429"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
