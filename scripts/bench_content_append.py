"""Measurements behind two decisions in rcfs.content (run by hand, not by pytest).

    .venv/bin/python scripts/bench_content_append.py

1. Appending a downloaded chunk to the partial file: inline os.pwrite on the
   trio thread vs trio.to_thread.run_sync(os.pwrite).
2. Read latency of ContentManager.read: a complete cached file (inline pread)
   vs the same pread through a thread hop, and a read of a growing file.
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
from tests.content.content_fakes import FakeSource, Plan, payload, running

N = 2000


def report(label: str, samples: list[float]) -> None:
    samples.sort()
    print(
        f"{label:<46} median {statistics.median(samples) * 1e6:7.1f} us"
        f"  p99 {samples[int(len(samples) * 0.99)] * 1e6:7.1f} us"
    )


async def bench_append(directory: str) -> None:
    for chunk_size in (16 * 1024, 64 * 1024):
        chunk = os.urandom(chunk_size)
        for mode in ("inline", "thread"):
            fd = os.open(os.path.join(directory, f"{mode}.part"), os.O_RDWR | os.O_CREAT, 0o600)
            samples = []
            for i in range(N):
                t0 = time.perf_counter()
                if mode == "inline":
                    os.pwrite(fd, chunk, i * chunk_size)
                else:
                    await trio.to_thread.run_sync(os.pwrite, fd, chunk, i * chunk_size)
                samples.append(time.perf_counter() - t0)
            os.close(fd)
            os.unlink(os.path.join(directory, f"{mode}.part"))
            report(f"append {chunk_size // 1024} KiB chunk, {mode}", samples)


async def bench_read(directory: str) -> None:
    size = 8 * 1024 * 1024
    request = 128 * 1024
    source = FakeSource()
    ref = source.add("1", "uri:1", Plan(data=payload(size), chunk=64 * 1024))
    async with running(Path(directory) / "cache", source) as (manager, _):
        await manager.prefetch(ref)
        await manager.open(ref)
        handle_fd = manager._handles["1"].fd
        assert handle_fd is not None
        for mode in ("inline (ContentManager.read)", "thread hop (same pread)"):
            samples = []
            for i in range(N):
                offset = (i * request) % size
                t0 = time.perf_counter()
                if mode.startswith("inline"):
                    await manager.read("1", offset, request)
                else:
                    await trio.to_thread.run_sync(os.pread, handle_fd.fd, request, offset)
                samples.append(time.perf_counter() - t0)
            report(f"read 128 KiB of a cached file, {mode}", samples)
        manager.release("1")

        # A reader following a download: time from "byte arrived" to read return
        # is bounded by the chunk wake-up; measure a read of arrived bytes.
        ref2 = source.add("2", "uri:2", Plan(data=payload(size, 2), chunk=64 * 1024))
        source.plans["uri:2"].gate_at = size // 2
        await manager.open(ref2)
        await manager.read("2", size // 2 - request, request)
        samples = []
        for i in range(N):
            offset = (i * request) % (size // 2 - request)
            t0 = time.perf_counter()
            await manager.read("2", offset, request)
            samples.append(time.perf_counter() - t0)
        report("read 128 KiB of a growing file (arrived)", samples)
        source.plans["uri:2"].gate.set()
        manager.release("2")


async def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        await bench_append(directory)
        await bench_read(directory)


if __name__ == "__main__":
    trio.run(main)
