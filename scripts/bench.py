#!/usr/bin/env python3
"""Benchmark rcfs side by side with local disk, plain HTTP, a minimal passthrough and rclone mount.

    .venv/bin/python scripts/bench.py [--quick] [--only SECTION ...] [--out DIR] [--work DIR]

One run measures rcfs against its limits and its peers on the same machine,
so every goal is a ratio against something measured minutes apart, and every
figure is the median of repeated runs. Sections (`--only`, repeatable):

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
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import archive as bench_archive
from bench import procs
from bench import shared as bench_shared
from bench.procs import REAPER, Emulator
from bench.report import Results, Row, fmt_rate, fmt_s, mbps, median

SECTIONS = ("reading", "ttfb", "listing", "backup", "scale", "archive", "shared")
# Generous limits for everything that is not about rate limits: the emulator
# still sends the headers, which rcfs follows (with "off" it would fall back
# to RingCentral's defaults, 10 Heavy requests a minute).
FAST = "heavy=100000/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"
BUF = 1 << 20


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


def read_files(paths: list[Path]) -> tuple[float, int]:
    """Read every file sequentially, whole, with 1 MiB reads: (seconds, bytes)."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while n := os.readv(fd, [view]):
                total += n
        finally:
            os.close(fd)
    return time.perf_counter() - start, total


def timed(argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


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

    def read_pass(self, system: str, mode: str, root: Path, pid: int | None = None) -> None:
        for name, rels in self.sets().items():
            cpu0 = procs.cpu_seconds(pid) if pid else 0.0
            secs, nbytes = read_files([root / p for p in rels])
            cpu = (procs.cpu_seconds(pid) - cpu0) if pid else None
            self.sample(f"read.{system}.{mode}.{name}", {"s": secs, "bytes": nbytes, "cpu_s": cpu})

    # -- 1. reading ---------------------------------------------------------------

    def reading(self) -> None:
        s, emu = self.s, self.emu
        assert emu is not None
        log("reading: local disk")
        read_files([self.local / p for p in self.small_rel + self.big_rel])  # into the page cache
        for _ in range(s.local_passes):
            self.read_pass("local", "warm", self.local)

        log("reading: plain HTTP (curl, httpx)")
        token = emu.token()
        for name, rels in self.sets().items():
            cfg = self.work / f"curl-{name}.cfg"
            cfg.write_text(f'header = "Authorization: Bearer {token}"\n' + "".join(
                f'url = "{emu.media_url(self.id_of[p])}"\noutput = "/dev/null"\n' for p in rels))
            for _ in range(s.http_passes):
                nbytes = sum(os.path.getsize(self.local / p) for p in rels)
                secs = timed(f"curl -sf --config {cfg}")
                self.sample(f"read.curl.uncached.{name}", {"s": secs, "bytes": nbytes})
        with httpx.Client(timeout=120, trust_env=False,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(s.http_passes):
                for name, rels in self.sets().items():
                    start, nbytes = time.perf_counter(), 0
                    for p in rels:
                        with client.stream("GET", emu.media_url(self.id_of[p])) as resp:
                            resp.raise_for_status()
                            for chunk in resp.iter_raw(BUF):
                                nbytes += len(chunk)
                    self.sample(f"read.httpx.uncached.{name}",
                                {"s": time.perf_counter() - start, "bytes": nbytes})

        for cycle in range(s.uncached_cycles):
            log(f"reading: rcfs cycle {cycle + 1}/{s.uncached_cycles} (uncached, warm, remounted)")
            home, mp = self.home(), self.work / "mnt-rcfs"
            with procs.rcfs_mount(emu, home, mp, "40d") as m:
                self.read_pass("rcfs", "uncached", mp, m.pid)
                for _ in range(s.warm_passes):
                    self.read_pass("rcfs", "warm", mp, m.pid)
            for _ in range(s.remounts_per_cycle):
                with procs.rcfs_mount(emu, home, mp, "40d") as m:
                    self.read_pass("rcfs", "remount", mp, m.pid)
            shutil.rmtree(home, ignore_errors=True)

        log("reading: minimal pyfuse3 passthrough")
        for _ in range(s.passthrough_cycles):
            with procs.passthrough_mount(self.local, self.work / "mnt-pt") as m:
                self.read_pass("passthrough", "remount", m.path, m.pid)
                self.read_pass("passthrough", "warm", m.path, m.pid)

        log(f"reading: rclone mount ({procs.rclone_version()})")
        with procs.rclone_serve(self.local) as url:
            for cycle in range(s.rclone_cycles):
                cache = self.work / f"rclone-cache{cycle}"
                with procs.rclone_mount(url, self.work / "mnt-rclone", cache) as m:
                    self.read_pass("rclone", "uncached", m.path, m.pid)
                    self.read_pass("rclone", "warm", m.path, m.pid)
                with procs.rclone_mount(url, self.work / "mnt-rclone", cache) as m:
                    self.read_pass("rclone", "remount", m.path, m.pid)
                shutil.rmtree(cache, ignore_errors=True)
        self.reading_rows()

    def rate(self, system: str, mode: str, name: str) -> float:
        runs = self.r.samples.get(f"read.{system}.{mode}.{name}", [])
        return median([mbps(x["bytes"], x["s"]) for x in runs])

    def reading_rows(self) -> None:
        d = self.r.meta["data"]
        label = {"big": f"1 file of {d['big_file_bytes'] / 1e6:.0f} MB",
                 "small": f"{d['small_files']:,} files of {d['small_bytes'] / d['small_files'] / 1e3:.0f} KB"}
        sec = "Reading (MB/s, median)"
        for name in ("big", "small"):
            rc, loc = self.rate("rcfs", "warm", name), self.rate("local", "warm", name)
            self.r.add(Row(sec, f"warm re-read, {label[name]}", fmt_rate(rc), f"local disk {fmt_rate(loc)}",
                           rc / loc, "≥ 0.9x local", rc / loc >= 0.9))
        for name in ("big", "small"):
            rc = self.rate("rcfs", "remount", name)
            pt, rcl = self.rate("passthrough", "remount", name), self.rate("rclone", "remount", name)
            self.r.add(Row(sec, f"after remount (rcfs cache), {label[name]}", fmt_rate(rc),
                           f"passthrough {fmt_rate(pt)}", rc / pt, "≥ 0.8x passthrough", rc / pt >= 0.8))
            self.r.add(Row(sec, f"after remount (rcfs cache), {label[name]}", fmt_rate(rc),
                           f"rclone (vfs cache) {fmt_rate(rcl)}", rc / rcl, "≥ 1x rclone", rc / rcl >= 1.0))
        for name in ("big", "small"):
            rc = self.rate("rcfs", "uncached", name)
            curl, hx = self.rate("curl", "uncached", name), self.rate("httpx", "uncached", name)
            best = max(curl, hx)
            rcl = self.rate("rclone", "uncached", name)
            self.r.add(Row(sec, f"uncached, {label[name]}", fmt_rate(rc),
                           f"HTTP: curl {fmt_rate(curl)}, httpx {fmt_rate(hx)} (rclone {fmt_rate(rcl)})",
                           rc / best, "≥ 0.8x best plain HTTP", rc / best >= 0.8))
        for name in ("big", "small"):
            pt = self.rate("passthrough", "warm", name)
            rcl = self.rate("rclone", "warm", name)
            rc = self.rate("rcfs", "warm", name)
            self.r.add(Row(sec, f"(info) warm re-read, peers, {label[name]}", fmt_rate(rc),
                           f"passthrough {fmt_rate(pt)}, rclone {fmt_rate(rcl)}"))
        sec = "CPU (daemon user+sys s per GB read, median)"
        for mode, ref in (("warm", "passthrough warm"), ("remount", "passthrough after remount"),
                          ("uncached", "rclone uncached")):
            for name in ("big", "small"):
                rc = self.cpu_per_gb("rcfs", mode, name)
                peer = "rclone" if mode == "uncached" else "passthrough"
                other = self.cpu_per_gb(peer, mode, name)
                self.r.add(Row(sec, f"{mode}, {label[name]}", f"{rc:.2f} s/GB", f"{ref} {other:.2f} s/GB"))

    def cpu_per_gb(self, system: str, mode: str, name: str) -> float:
        runs = self.r.samples.get(f"read.{system}.{mode}.{name}", [])
        return median([x["cpu_s"] / (x["bytes"] / 1e9) for x in runs if x.get("cpu_s") is not None])

    # -- 2. time to first byte ---------------------------------------------------------

    def ttfb(self) -> None:
        s, emu = self.s, self.emu
        assert emu is not None
        log("ttfb: rcfs open+read vs a keep-alive HTTP GET, interleaved")
        token = emu.token()
        picks = self.small_rel[:: max(1, len(self.small_rel) // (s.ttfb_samples + 1))][: s.ttfb_samples + 1]
        home, mp = self.home(), self.work / "mnt-rcfs"
        with procs.rcfs_mount(emu, home, mp, "40d") as m, \
                httpx.Client(timeout=60, trust_env=False,
                             headers={"Authorization": f"Bearer {token}"}) as client:
            for i, rel in enumerate(picks):
                start = time.perf_counter()
                fd = os.open(m.path / rel, os.O_RDONLY)
                try:
                    os.read(fd, 4096)
                    rcfs_s = time.perf_counter() - start
                    while os.read(fd, BUF):
                        pass
                finally:
                    os.close(fd)
                start = time.perf_counter()
                with client.stream("GET", emu.media_url(self.id_of[rel])) as resp:
                    it = resp.iter_raw(4096)
                    next(it)
                    http_s = time.perf_counter() - start
                    for _ in it:
                        pass
                curl = subprocess.run(
                    ["curl", "-sf", "-o", "/dev/null", "-w", "%{time_starttransfer}", "-H",
                     f"Authorization: Bearer {token}", emu.media_url(self.id_of[rel])],
                    capture_output=True, text=True, check=True)
                if i == 0:
                    continue  # warms connections and the token on both sides
                self.sample("ttfb.rcfs", rcfs_s)
                self.sample("ttfb.httpx", http_s)
                self.sample("ttfb.curl_new_connection", float(curl.stdout))
        shutil.rmtree(home, ignore_errors=True)
        rc, hx, cu = (median(self.r.samples[f"ttfb.{k}"]) for k in ("rcfs", "httpx", "curl_new_connection"))
        self.r.add(Row("Time to first byte (uncached, median)", "open + first read() of a 240 KB file",
                       fmt_s(rc), f"keep-alive HTTP GET {fmt_s(hx)} (curl, new connection {fmt_s(cu)})",
                       rc / hx, "≤ 1.2x HTTP", rc / hx <= 1.2))

    # -- 3. listing ---------------------------------------------------------------------

    def listing(self) -> None:
        s, emu = self.s, self.emu
        assert emu is not None
        day = self.day_rel(self.read_day)
        commands = {
            "ls_day": "ls -l {root}/" + day,
            "find_day": "find {root}/" + day + " -type f | wc -l",
            "ls_tree": "ls -lR {root}",
            "find_tree": "find {root} -type f | wc -l",
        }

        def run(system: str, root: Path) -> None:
            for i, (key, cmd) in enumerate(commands.items()):
                for j in range(s.listing_runs):
                    t = timed(cmd.format(root=root))
                    self.sample(f"list.{system}.{key}.{'cold' if i == 0 and j == 0 else 'warm'}", t)

        log("listing: local, passthrough, rcfs, rclone")
        for _ in range(s.listing_mounts):
            run("local", self.local)
        for _ in range(s.listing_mounts):
            with procs.passthrough_mount(self.local, self.work / "mnt-pt") as pt_m:
                run("passthrough", pt_m.path)
        home = self.home()
        for _ in range(s.listing_mounts):
            with procs.rcfs_mount(emu, home, self.work / "mnt-rcfs", "40d") as rc_m:
                run("rcfs", rc_m.path)
        with procs.rclone_serve(self.local) as url:
            for i in range(s.listing_mounts):
                with procs.rclone_mount(url, self.work / "mnt-rclone", self.work / f"rclone-l{i}") as rcl_m:
                    run("rclone", rcl_m.path)
        sec = "Listing (seconds, median)"
        n = self.r.meta["data"]["small_files"]

        def med(system: str, key: str, kind: str = "warm") -> float:
            xs = self.r.samples.get(f"list.{system}.{key}.{kind}", [])
            if kind == "warm" and not xs:
                return float("nan")
            return median(xs)

        rc, loc, rcl, pt = (med(x, "ls_day") for x in ("rcfs", "local", "rclone", "passthrough"))
        self.r.add(Row(sec, f"`ls -l` of a day of {n:,} recordings", fmt_s(rc),
                       f"local {fmt_s(loc)}; passthrough {fmt_s(pt)}", rc / loc, "≤ 3x local", rc / loc <= 3))
        self.r.add(Row(sec, f"`ls -l` of a day of {n:,} recordings", fmt_s(rc), f"rclone {fmt_s(rcl)}",
                       rc / rcl, "≤ 1x rclone", rc / rcl <= 1))
        rcc, rclc = med("rcfs", "ls_day", "cold"), med("rclone", "ls_day", "cold")
        self.r.add(Row(sec, "`ls -l` of the day, first after mount", fmt_s(rcc),
                       f"rclone {fmt_s(rclc)}; local {fmt_s(med('local', 'ls_day', 'cold'))}",
                       rcc / rclc, "≤ 1x rclone", rcc / rclc <= 1))
        total = self.r.meta["data"]["tree_recordings"]
        for key, what in (("find_day", "`find -type f | wc -l` of the day"),
                          ("ls_tree", f"`ls -lR` of the whole tree ({total:,} recordings)"),
                          ("find_tree", "`find -type f | wc -l` of the whole tree")):
            rc, loc, rcl, pt = (med(x, key) for x in ("rcfs", "local", "rclone", "passthrough"))
            self.r.add(Row(sec, what, fmt_s(rc),
                           f"local {fmt_s(loc)}; passthrough {fmt_s(pt)}; rclone {fmt_s(rcl)}", rc / loc))

    # -- 4. backup at the rate limit ----------------------------------------------------

    def backup(self) -> None:
        s = self.s
        limit = s.backup_limit
        rates = f"heavy={limit}/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"
        log(f"backup: {s.backup_recordings} recordings at heavy={limit}/1s, rsync vs SDK")
        day_dt = (self.now - timedelta(days=20)).replace(hour=12, minute=0, second=0)  # no other calls
        with procs.emulator("--seed", "9", "--calls", "20", "--days", "10", "--rate-limits", rates) as emu:
            emu.add_calls(s.backup_recordings, iso(day_dt), 60)
            day = self.day_rel(day_dt)
            bound = s.backup_recordings / limit
            for run in range(s.backup_runs):
                home = self.home()
                mp, dest = self.work / "mnt-backup", home / "dest"
                with procs.rcfs_mount(emu, home, mp, "40d") as m:
                    time.sleep(2.5)  # let the mount's call-log requests leave the window
                    emu.reset_stats()
                    start = time.perf_counter()
                    subprocess.run(["rsync", "-a", f"{m.path}/{day}/", f"{dest}/"], check=True)
                    elapsed = time.perf_counter() - start
                    st = emu.stats()
                files = [p for p in dest.iterdir() if p.suffix == ".mp3"]
                content = st["requests"].get("readCallRecordingContent", 0)
                self.sample("backup.rcfs", {
                    "elapsed_s": elapsed, "recordings": len(files),
                    "bytes": sum(p.stat().st_size for p in files), "content_requests": content,
                    "heavy_requests": st["groups"].get("Heavy", {}).get("requests", 0),
                    "throttled_429": st["throttled"], "stats": st})
                shutil.rmtree(home, ignore_errors=True)
                log(f"backup: rcfs run {run + 1}: {elapsed:.1f} s, {len(files)} files, "
                    f"{content} content requests, {st['throttled']} 429s")
                sdk_dest = self.work / "sdk-dest"
                sdk_dest.mkdir()
                time.sleep(2.5)
                emu.reset_stats()
                env = procs.rcfs_env(emu, self.work)
                window = (iso(day_dt - timedelta(hours=12)), iso(day_dt + timedelta(hours=1)))
                out = subprocess.run([procs.PY, str(procs.HERE / "sdk_backup.py"), str(sdk_dest), *window],
                                     env=env, capture_output=True, text=True, check=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                st = emu.stats()
                res.update(stats=st, content_requests=st["requests"].get("readCallRecordingContent", 0),
                           emulator_429=st["throttled"])
                self.sample("backup.sdk", res)
                shutil.rmtree(sdk_dest, ignore_errors=True)
                log(f"backup: SDK run {run + 1}: {res['elapsed_s']:.1f} s, {res['recordings']} files, "
                    f"{res['emulator_429']} 429s")
        runs, sdk = self.r.samples["backup.rcfs"], self.r.samples["backup.sdk"]
        el = median([x["elapsed_s"] for x in runs])
        sdk_el = median([x["elapsed_s"] for x in sdk])
        n = s.backup_recordings
        sec = f"Backup: `rsync -a` of {n} uncached recordings at heavy={limit}/1s (median of {len(runs)})"
        self.r.add(Row(sec, "elapsed / bound", fmt_s(el), f"bound {n}/{limit} per s = {fmt_s(bound)}",
                       el / bound, "≤ 1.1x bound", el / bound <= 1.1))
        t429 = max(x["throttled_429"] for x in runs)
        self.r.add(Row(sec, "429 responses (worst run)", str(t429),
                       f"SDK script {median([x['emulator_429'] for x in sdk]):.0f}", None, "0", t429 == 0))
        rpr = max(x["heavy_requests"] / max(1, x["recordings"]) for x in runs)
        sdk_rpr = median([x["stats"]["groups"].get("Heavy", {}).get("requests", 0) / max(1, x["recordings"])
                          for x in sdk])
        self.r.add(Row(sec, "Heavy requests per recording (worst run)", f"{rpr:.3f}",
                       f"SDK {sdk_rpr:.3f} (incl. its 429s)", None, "≤ 1.02", rpr <= 1.02))
        self.r.add(Row(sec, "elapsed vs the SDK script", fmt_s(el), f"SDK (sleeps on 429) {fmt_s(sdk_el)}",
                       el / sdk_el, "< 1x SDK", el < sdk_el))

    # -- 5. scale ----------------------------------------------------------------------

    def scale(self) -> None:
        s = self.s
        day_dt = (self.now - timedelta(days=75)).replace(hour=12, minute=0, second=0)
        day = self.day_rel(day_dt)
        out: dict[str, dict[str, Any]] = {}
        for label, calls in (("small", s.scale_small_calls), ("large", s.scale_calls)):
            log(f"scale: account of {calls:,} calls + a day of {s.scale_day:,} recordings")
            args = ("--seed", "5", "--calls", str(calls), "--days", "60", "--rate-limits", FAST)
            with procs.emulator(*args) as emu:
                emu.add_calls(s.scale_day, iso(day_dt), 60)
                recordings = len(emu.admin.get("/recordings").json()["recordings"])
                runs = s.scale_index_runs if label == "large" else 1
                info: dict[str, Any] = {"recordings": recordings, "index": []}
                for i in range(runs):
                    home = self.home()
                    emu.reset_stats()
                    with procs.rcfs_mount(emu, home, self.work / "mnt-scale", "89d") as m:
                        indexed = m.mount_seconds + procs.wait_indexed(m.path)
                        st = emu.stats()["requests"]
                        pages = st.get("readCompanyCallLog", 0) + st.get("readUserCallLog", 0)
                        info["index"].append({"s": indexed, "mounted_s": m.mount_seconds,
                                              "call_log_requests": pages,
                                              "rss_mb": procs.peak_rss_mb(m.pid)})
                        if i == runs - 1:
                            root = m.path
                            info["ls_day_cold"] = timed(f"ls -l {root}/{day}")
                            info["ls_day"] = [timed(f"ls -l {root}/{day}") for _ in range(s.listing_runs)]
                            if label == "large":
                                start = time.perf_counter()
                                found = int(subprocess.run(f"find {root} -type f | wc -l", shell=True,
                                                           capture_output=True, text=True).stdout)
                                info["find_tree"] = {"s": time.perf_counter() - start, "files": found}
                            info["rss_peak_mb"] = procs.peak_rss_mb(m.pid)
                    shutil.rmtree(home, ignore_errors=True)
                out[label] = info
        self.r.samples["scale"] = out
        big, small = out["large"], out["small"]
        sec = f"Scale: {big['recordings']:,} recordings"
        idx = median([x["s"] for x in big["index"]])
        pages = median([x["call_log_requests"] for x in big["index"]])
        ideal = -(-big["recordings"] // 1000)
        self.r.add(Row(sec, "index on first mount (to index complete; served earlier)", fmt_s(idx),
                       f"{small['recordings']:,} recordings: {fmt_s(small['index'][0]['s'])}"))
        self.r.add(Row(sec, "call-log requests to index", f"{pages:.0f}",
                       f"{ideal} pages at perPage=1000", pages / ideal,
                       note="the emulator caps view=Detailed at 250 per page"))
        rss = big["rss_peak_mb"]
        self.r.add(Row(sec, "daemon peak RSS (VmHWM) after index + `find` of the whole tree", f"{rss:.0f} MB",
                       f"after index only {median([x['rss_mb'] for x in big['index']]):.0f} MB; "
                       f"{small['recordings']:,} recordings: {small['rss_peak_mb']:.0f} MB",
                       None, "≤ 150 MB", rss <= 150))
        a, b = median(big["ls_day"]), median(small["ls_day"])
        self.r.add(Row(sec, f"`ls -l` of a day of {s.scale_day:,} recordings", fmt_s(a),
                       f"at {small['recordings']:,} recordings {fmt_s(b)}", a / b, "≤ 1.2x", a / b <= 1.2))
        self.r.add(Row(sec, "same, first after mount", fmt_s(big["ls_day_cold"]),
                       f"at {small['recordings']:,} recordings {fmt_s(small['ls_day_cold'])}",
                       big["ls_day_cold"] / small["ls_day_cold"]))
        if "find_tree" in big:
            self.r.add(Row(sec, "`find -type f | wc -l` of the whole tree", fmt_s(big["find_tree"]["s"]),
                           f"{big['find_tree']['files']:,} files"))


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
                "reading": with_setup(bench.reading),
                "ttfb": with_setup(bench.ttfb),
                "listing": with_setup(bench.listing),
                "backup": bench.backup,
                "scale": bench.scale,
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
