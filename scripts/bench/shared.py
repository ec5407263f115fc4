"""The `shared` section of scripts/bench.py: mounts sharing one budget through Redis.

One emulator user at heavy=10/1s, one `redis-server` started here (127.0.0.1,
a free port, stopped by PID), and one, two and three mounts (`rcfs mount
--redis`), each with its own state and cache directory, each copying the
whole tree with `rsync -a` at the same time. The figure is the combined
content throughput against the limit: Heavy requests sent while the copies
ran, per second, divided by 10. One mount alone is the reference: sharing
should cost nothing (the same ratio), and never a 429.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import procs
from .report import Row, median

RATES = "heavy=10/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"
LIMIT_PER_S = 10.0


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing (apt-get install redis-server; scripts/setup does)")
    port = procs.free_port()
    data = work / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = procs.REAPER.spawn(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
         "no", "--dir", str(data), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        procs.REAPER.stop(proc)


def _status(mp: Path) -> dict[str, Any]:
    return dict(json.loads((mp / ".rcfs" / "status.json").read_bytes()))


def one_run(bench: Any, mounts: int, calls: int, seed: int) -> dict[str, Any]:
    with procs.emulator("--seed", str(seed), "--calls", str(calls), "--days", "8",
                        "--rate-limits", RATES) as emu, \
            redis_server(bench.work / f"redis-{mounts}-{seed}") as url, \
            contextlib.ExitStack() as stack:
        mps = []
        for i in range(mounts):
            home, mp = bench.home(), bench.work / f"mnt-shared-{mounts}-{seed}-{i}"
            stack.enter_context(procs.rcfs_mount(emu, home, mp, "10d", "--redis", url,
                                                 "--poll-interval", "3600"))
            mps.append(mp)
        for mp in mps:
            procs.wait_indexed(mp, 300)
        logins = emu.stats()["requests"].get("getToken", 0)
        emu.reset_stats()
        dests = [bench.work / f"copy-{mounts}-{seed}-{i}" for i in range(mounts)]
        start = time.perf_counter()
        rs = [subprocess.Popen(["rsync", "-a", f"{mp}/", f"{d}/"]) for mp, d in zip(mps, dests, strict=True)]
        for p in rs:
            if p.wait(1800) != 0:
                raise RuntimeError(f"rsync exited with {p.returncode}")
        elapsed = time.perf_counter() - start
        st = emu.stats()
        peers = _status(mps[0])["redis"]["peers_seen"]
        for d in dests:
            shutil.rmtree(d, ignore_errors=True)
    heavy = st["groups"].get("Heavy", {}).get("requests", 0)
    rate = heavy / elapsed
    return {"mounts": mounts, "elapsed_s": elapsed, "heavy_requests": heavy,
            "rate_per_s": rate, "ratio_to_limit": rate / LIMIT_PER_S,
            "throttled_429": st["throttled"], "logins": logins, "peers": peers}


def run(bench: Any) -> None:
    calls = 150 if bench.s.small < 1000 else 400
    runs = 1 if bench.s.small < 1000 else 3
    results: dict[int, list[dict[str, Any]]] = {}
    for mounts in (1, 2, 3):
        results[mounts] = []
        for r in range(runs):
            bench.log(f"shared: {mounts} mount(s) through one Redis, run {r + 1} of {runs}")
            res = one_run(bench, mounts, calls, 40 + r)
            bench.log(f"shared: {mounts} mount(s): {res['heavy_requests']} Heavy requests in "
                      f"{res['elapsed_s']:.1f} s ({res['rate_per_s']:.2f}/s), "
                      f"{res['throttled_429']} 429s, {res['logins']} login(s)")
            results[mounts].append(res)
    bench.r.samples["shared"] = results
    sec = "Several mounts sharing one budget through Redis (`rsync -a` on each, heavy=10/1s)"
    alone = median([x["ratio_to_limit"] for x in results[1]])
    for mounts in (1, 2, 3):
        ratio = median([x["ratio_to_limit"] for x in results[mounts]])
        worst429 = max(x["throttled_429"] for x in results[mounts])
        logins = max(x["logins"] for x in results[mounts])
        what = "one mount alone" if mounts == 1 else f"{mounts} mounts sharing"
        bench.r.add(Row(sec, f"combined throughput / limit, {what}",
                        f"{ratio * LIMIT_PER_S:.2f}/s ({ratio:.2f}x the limit)",
                        "the limit, 10/s" if mounts == 1 else f"one mount alone {alone:.2f}x",
                        ratio if mounts == 1 else ratio / alone,
                        "≥ 0.9x the limit" if mounts == 1 else "≥ 0.95x alone",
                        ratio >= 0.9 if mounts == 1 else ratio >= 0.95 * alone,
                        note=f"429s {worst429}, logins {logins}"))
    worst = max(x["throttled_429"] for xs in results.values() for x in xs)
    bench.r.add(Row(sec, "429 responses (worst run, any number of mounts)", str(worst), "", None,
                    "0", worst == 0))
    logins = max(x["logins"] for xs in results.values() for x in xs)
    bench.r.add(Row(sec, "JWT logins at start (most in a run)", str(logins), "1 for all mounts",
                    None, "1", logins == 1))
