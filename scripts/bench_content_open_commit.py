"""Micro-benchmarks for ContentManager's commit and cached-open paths (by hand,
not collected by pytest):

    .venv/bin/python scripts/bench_content_open_commit.py [N]

1. Commit of N small downloads (240 KB), 1 and 8 at a time, into a cache that
   grows to N entries: wall time, and time in `Store.commit` per recording for
   the first and last tenth (a commit that scans every key slows as the cache
   grows).
2. open + read (128 KiB reads) + release of N small cached files through
   ContentManager, after a "remount" (a new manager on the same cache): the
   first pass, a second pass over all N, and a pass over 200 recently read.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rcfs.content.store import Store
from tests.content.content_fakes import FakeSource, Plan, running

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
SIZE = 240_000
BLOB = os.urandom(SIZE)


def us(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1e6:7.1f} us, mean {statistics.mean(samples) * 1e6:7.1f} us"


async def commit_phase(directory: Path, workers: int) -> list:  # type: ignore[type-arg]
    source = FakeSource()
    refs = [source.add(str(i), f"uri:{i}", Plan(data=BLOB, chunk=SIZE)) for i in range(N)]
    calls: list[tuple[float, int]] = []  # (seconds, recordings) per store.commit
    real_commit = Store.commit

    def timed_commit(self: Store, *args: object) -> object:
        t0 = time.perf_counter()
        try:
            return real_commit(self, *args)  # type: ignore[arg-type]
        finally:  # before group commits, commit took one recording's fields
            n = len(args[0]) if isinstance(args[0], list) else 1  # type: ignore[arg-type]
            calls.append((time.perf_counter() - t0, n))

    Store.commit = timed_commit  # type: ignore[method-assign,assignment]
    async with running(directory, source) as (manager, _):
        t0 = time.perf_counter()
        send, recv = trio.open_memory_channel[object](0)

        async def worker() -> None:
            async for ref in recv:
                await manager.prefetch(ref)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
            async with send:
                for ref in refs:
                    await send.send(ref)
        wall = time.perf_counter() - t0
    Store.commit = real_commit  # type: ignore[method-assign]
    tenth = max(1, len(calls) // 10)

    def per_rec(part: list[tuple[float, int]]) -> str:
        return f"{sum(t for t, _ in part) / sum(n for _, n in part) * 1e6:7.1f} us/recording"

    print(f"commit {N} x 240 KB, {workers} at a time: {wall:.2f} s wall, {len(calls)} store.commit calls")
    print(f"  store.commit, first tenth {per_rec(calls[:tenth])}, last tenth {per_rec(calls[-tenth:])}")
    return refs


async def bench(directory: Path) -> None:
    await commit_phase(directory / "seq", 1)
    refs = await commit_phase(directory, 8)
    async with running(directory, FakeSource()) as (manager, _):

        async def one(rid: str) -> float:
            t0 = time.perf_counter()
            await manager.open(refs[int(rid)])
            off = 0
            while data := await manager.read(rid, off, 131072):
                off += len(data)
            manager.release(rid)
            return time.perf_counter() - t0

        for label, ids in (
            (f"first pass after remount ({N})", range(N)),
            (f"second pass ({N})", range(N)),
            ("recently read (last 200), again", range(N - 200, N)),
        ):
            t0 = time.perf_counter()
            samples = [await one(str(i)) for i in ids]
            wall = time.perf_counter() - t0
            print(
                f"open+read+release, {label}: {us(samples)};"
                f" {len(samples) * SIZE / wall / 1e6:.0f} MB/s"
            )


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        trio.run(bench, Path(directory))


if __name__ == "__main__":
    main()
