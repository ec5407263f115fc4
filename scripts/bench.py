#!/usr/bin/env python3
"""Benchmark rcfs side by side with local disk, plain HTTP, a minimal passthrough and rclone mount.

    .venv/bin/python scripts/bench.py [--quick] [--only SECTION ...] [--out DIR] [--work DIR]

One run measures rcfs against its limits and its peers on the same machine,
so every goal is a ratio against something measured minutes apart, and every
figure is the median of repeated runs. Sections (`--only`, repeatable), each in
its own module under scripts/bench/ (reading.py: reading and ttfb; listing.py;
scale.py: backup and scale; archive.py; shared.py); this file holds the
shared set-up (the account, and the same bytes on local disk) and the run:

  reading  the same recordings (one ~200 MB file, 2,000 files of ~240 KB) read
           through rcfs uncached / warm / after a remount, vs local disk, a minimal
           pyfuse3 passthrough (scripts/bench/passthrough.py), plain keep-alive
           HTTP (curl, httpx) and `rclone mount :http: --vfs-cache-mode full`;
           also the daemon's CPU seconds per GB
  ttfb     time to the first byte of an uncached file vs a plain HTTP GET
  listing  `ls -l` / `find` of a 2,000-recording day and of the whole tree vs a
           local copy, the passthrough and rclone mount
  backup   `rsync -a` of 300 uncached recordings at heavy=10/1s vs a sequential
           downloader written with RingCentral's Python SDK that sleeps on 429
  scale    an account of 100,000 recordings: index time and requests, peak RSS,
           one day's `ls -l` at 10,000 vs 100,000 recordings
  archive  at heavy=10/2s, `rcfs mount` to the first `ls -l` of the newest day and
           of a day 60 days back, at 10,000 and 100,000 recordings (scripts/bench/
           archive.py); `rcfs mount --archive`: Heavy requests per recording
  shared   one, two and three mounts with `--redis` (a redis-server started here)
           copying at once at heavy=10/1s: combined throughput against the limit,
           429s and logins (scripts/bench/shared.py)

Writes DIR/bench-results.json (rows + raw samples) and DIR/bench-results.md.
Everything runs on loopback against `rcfs emulator` (through
scripts/bench/emulator.py, which can add a 14-hour call). Every mount and
process it starts is unmounted and ended by PID, also on failure or Ctrl-C.
Needs root or FUSE access, fusermount3, rsync, curl; installs rclone with
apt-get if it is missing. The kernel's page cache is never dropped (shared
machine): "after a remount" means a fresh FUSE mount over files the host has
cached, for rcfs, the passthrough and rclone alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import archive as bench_archive
from bench import listing as bench_listing
from bench import procs
from bench import reading as bench_reading
from bench import scale as bench_scale
from bench import shared as bench_shared
from bench.procs import FAST, REAPER, Emulator, iso
from bench.reading import BUF
from bench.report import Results

SECTIONS = ("reading", "ttfb", "listing", "backup", "scale", "archive", "shared")


@dataclass(frozen=True)
class Sizes:
    small: int  # files in the reading day
    small_seconds: int
    big_seconds: int  # 32 kbps: 4,000 bytes a second
    background: int  # generated calls around them
    uncached_cycles: int
    remounts_per_cycle: int
    warm_passes: int
    local_passes: int
    http_passes: int
    passthrough_cycles: int
    rclone_cycles: int
    ttfb_samples: int
    listing_mounts: int
    listing_runs: int
    backup_recordings: int
    backup_limit: int
    backup_runs: int
    scale_calls: int  # ~48% of generated calls carry a recording
    scale_small_calls: int
    scale_index_runs: int
    scale_day: int


FULL = Sizes(
    small=2000, small_seconds=60, big_seconds=50_400, background=200,
    uncached_cycles=3, remounts_per_cycle=2, warm_passes=3, local_passes=5, http_passes=3,
    passthrough_cycles=5, rclone_cycles=3, ttfb_samples=30, listing_mounts=3, listing_runs=7,
    backup_recordings=300, backup_limit=10, backup_runs=3,
    scale_calls=210_000, scale_small_calls=21_000, scale_index_runs=3, scale_day=2000,
)
QUICK = Sizes(
    small=300, small_seconds=60, big_seconds=7_200, background=50,
    uncached_cycles=3, remounts_per_cycle=1, warm_passes=3, local_passes=3, http_passes=3,
    passthrough_cycles=3, rclone_cycles=3, ttfb_samples=10, listing_mounts=3, listing_runs=5,
    backup_recordings=60, backup_limit=10, backup_runs=3,
    scale_calls=21_000, scale_small_calls=2_100, scale_index_runs=3, scale_day=300,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, sizes: Sizes, work: Path, results: Results) -> None:
        self.s = sizes
        self.work = work
        self.r = results
        self.now = datetime.now(UTC).replace(microsecond=0)
        # Outside the 30 generated days, so the reading day holds exactly the calls added.
        self.read_day = (self.now - timedelta(days=35)).replace(hour=12, minute=0, second=0)
        self.big_day = (self.now - timedelta(days=34)).replace(hour=12, minute=0, second=0)
        self.emu: Emulator | None = None
        self._homes = 0

    # -- helpers ---------------------------------------------------------------

    def home(self) -> Path:
        self._homes += 1
        path = self.work / f"home{self._homes}"
        path.mkdir(parents=True)
        return path

    @staticmethod
    def log(msg: str) -> None:
        log(msg)

    def sample(self, key: str, value: Any) -> None:
        self.r.samples.setdefault(key, []).append(value)

    @staticmethod
    def day_rel(dt: datetime) -> str:
        return dt.strftime("%Y/%m/%d")

    # -- setup: the account, and the same bytes on local disk -----------------------

    def setup(self, stack: Any) -> None:
        if self.emu is not None:
            return
        s = self.s
        log("setup: emulator, calls, local copy")
        self.emu = stack.enter_context(procs.emulator(
            "--seed", "7", "--calls", str(s.background), "--days", "30", "--rate-limits", FAST,
            long=[f"{iso(self.big_day)}:{s.big_seconds}"]))
        emu = self.emu
        records = emu.add_calls(s.small, iso(self.read_day), s.small_seconds)
        self.small_ids = {r["recording"]["id"] for r in records if r.get("recording")}
        self.local = self.work / "local"
        mp = self.work / "mnt-setup"
        with procs.rcfs_mount(emu, self.work / "home-setup", mp, "40d") as m:
            rel_files: list[str] = []
            for dirpath, _dirs, files in os.walk(m.path):
                for name in files:
                    rel = os.path.relpath(os.path.join(dirpath, name), m.path)
                    rel_files.append(rel)
            for rel in sorted(rel_files):
                dest = self.local / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if rel.endswith("calls.json"):
                    shutil.copyfile(m.path / rel, dest)
                else:  # the bytes from the emulator's unthrottled admin copy, not through rcfs
                    rid = rel.rsplit("_", 1)[1].split(".")[0]
                    with emu.admin.stream("GET", f"/recordings/{rid}/content") as resp, \
                            open(dest, "wb") as f:
                        resp.raise_for_status()
                        for chunk in resp.iter_raw(BUF):
                            f.write(chunk)
                st = os.stat(m.path / rel)
                os.utime(dest, ns=(st.st_mtime_ns, st.st_mtime_ns))
        day = self.day_rel(self.read_day)
        self.small_rel = sorted(f"{day}/{n}" for n in os.listdir(self.local / day) if n.endswith(".mp3"))
        big_day = self.day_rel(self.big_day)
        self.big_rel = [f"{big_day}/{n}" for n in os.listdir(self.local / big_day)
                        if n.endswith(f"_{emu.long_ids[0]}.mp3")]
        self.id_of = {rel: rel.rsplit("_", 1)[1].split(".")[0] for rel in self.small_rel + self.big_rel}
        big_bytes = sum(os.path.getsize(self.local / p) for p in self.big_rel)
        small_bytes = sum(os.path.getsize(self.local / p) for p in self.small_rel)
        total = sum(1 for _ in self.local.rglob("*.mp3"))
        self.r.meta["data"] = {
            "big_file_bytes": big_bytes, "small_files": len(self.small_rel),
            "small_bytes": small_bytes, "tree_recordings": total,
        }
        log(f"setup: {len(self.small_rel)} small files ({small_bytes / 1e6:.0f} MB), big file "
            f"{big_bytes / 1e6:.0f} MB, {total} recordings in the tree")

    def sets(self) -> dict[str, list[str]]:
        return {"big": self.big_rel, "small": self.small_rel}


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "loadavg": os.getloadavg(),
            "python": platform.python_version(), "date": datetime.now(UTC).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller data and fewer runs (a few minutes)")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--out", type=Path, default=Path("."), help="where bench-results.{json,md} go")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        print("bench: needs /dev/fuse", file=sys.stderr)
        return 1
    for tool in ("fusermount3", "rsync", "curl"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing", file=sys.stderr)
            return 1
    REAPER.install()
    sections = args.only or list(SECTIONS)
    sizes = QUICK if args.quick else FULL
    work = args.work or Path(tempfile.mkdtemp(prefix="rcfs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.keep:
        REAPER.scratch.append(work)
    results = Results(meta={"machine": machine(), "sizes": sizes.__dict__, "sections": sections,
                            "quick": args.quick})
    if any(x in sections for x in ("reading", "listing")):
        procs.ensure_rclone()
        results.meta["machine"]["rclone"] = procs.rclone_version()
    bench = Bench(sizes, work, results)
    started = time.monotonic()
    from contextlib import ExitStack

    try:
        with ExitStack() as stack:
            def with_setup(step: Callable[[], None]) -> Callable[[], None]:
                def run() -> None:
                    bench.setup(stack)
                    step()

                return run

            steps: dict[str, Callable[[], None]] = {
                "reading": with_setup(lambda: bench_reading.run(bench)),
                "ttfb": with_setup(lambda: bench_reading.ttfb(bench)),
                "listing": with_setup(lambda: bench_listing.run(bench)),
                "backup": lambda: bench_scale.backup(bench),
                "scale": lambda: bench_scale.scale(bench),
                "archive": lambda: bench_archive.run(bench),
                "shared": lambda: bench_shared.run(bench),
            }
            for name in SECTIONS:
                if name not in sections:
                    continue
                t0 = time.monotonic()
                try:
                    steps[name]()
                except Exception as exc:
                    traceback.print_exc()
                    results.errors.append(f"{name}: {exc!r}")
                results.meta.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)
    finally:
        REAPER.cleanup()  # unmounts, ends processes, then removes the scratch directory
    results.meta["elapsed_s"] = round(time.monotonic() - started, 1)
    results.meta["loadavg_at_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-results.json").write_text(json.dumps(results.as_json(), indent=1, default=str) + "\n")
    m = results.meta["machine"]
    md = (f"rcfs benchmark, {m['date']}: {m['nproc']} x {m['cpu']}, Linux {m['kernel']}, Python {m['python']}"
          f"{', ' + m['rclone'] if 'rclone' in m else ''}; {results.meta['elapsed_s']:.0f} s"
          f"{' (--quick)' if args.quick else ''}.\n\n" + results.markdown())
    (args.out / "bench-results.md").write_text(md)
    print(md)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
