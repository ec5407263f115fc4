"""The `reading` and `ttfb` sections of scripts/bench.py: bytes through rcfs against
local disk, a minimal passthrough, plain keep-alive HTTP and rclone mount.

- reading: the same recordings (one big file, many small ones) read through
  rcfs uncached, warm and after a remount; local disk warm; curl and httpx
  over keep-alive connections; the passthrough (passthrough.py) after a
  remount and warm; `rclone mount :http:` uncached, warm and remounted; and
  the daemon's CPU seconds per GB in each mode.
- ttfb: open + first read() of an uncached small file through rcfs, interleaved
  with a keep-alive httpx GET of the same recording and a curl on a new
  connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from . import procs
from .report import Row, fmt_rate, fmt_s, mbps, median

BUF = 1 << 20


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


def read_pass(bench: Any, system: str, mode: str, root: Path, pid: int | None = None) -> None:
    for name, rels in bench.sets().items():
        cpu0 = procs.cpu_seconds(pid) if pid else 0.0
        secs, nbytes = read_files([root / p for p in rels])
        cpu = (procs.cpu_seconds(pid) - cpu0) if pid else None
        bench.sample(f"read.{system}.{mode}.{name}", {"s": secs, "bytes": nbytes, "cpu_s": cpu})


def run(bench: Any) -> None:
    s, emu = bench.s, bench.emu
    assert emu is not None
    bench.log("reading: local disk")
    read_files([bench.local / p for p in bench.small_rel + bench.big_rel])  # into the page cache
    for _ in range(s.local_passes):
        read_pass(bench, "local", "warm", bench.local)

    bench.log("reading: plain HTTP (curl, httpx)")
    token = emu.token()
    for name, rels in bench.sets().items():
        cfg = bench.work / f"curl-{name}.cfg"
        cfg.write_text(f'header = "Authorization: Bearer {token}"\n' + "".join(
            f'url = "{emu.media_url(bench.id_of[p])}"\noutput = "/dev/null"\n' for p in rels))
        # The same downloads kept on disk, as rcfs keeps them (into the scratch
        # directory, on the disk of rcfs's cache): the page cache the new bytes take
        # is part of their cost (see the README).
        kept = bench.work / f"curl-{name}"
        cfg_disk = bench.work / f"curl-{name}-disk.cfg"
        cfg_disk.write_text(f'header = "Authorization: Bearer {token}"\n' + "".join(
            f'url = "{emu.media_url(bench.id_of[p])}"\noutput = "{kept}/{i}"\n'
            for i, p in enumerate(rels)))
        for _ in range(s.http_passes):
            nbytes = sum(os.path.getsize(bench.local / p) for p in rels)
            secs = timed(f"curl -sf --config {cfg}")
            bench.sample(f"read.curl.uncached.{name}", {"s": secs, "bytes": nbytes})
            kept.mkdir()
            secs = timed(f"curl -sf --config {cfg_disk}")
            bench.sample(f"read.curl-disk.uncached.{name}", {"s": secs, "bytes": nbytes})
            shutil.rmtree(kept)
    with httpx.Client(timeout=120, trust_env=False,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(s.http_passes):
            for name, rels in bench.sets().items():
                start, nbytes = time.perf_counter(), 0
                for p in rels:
                    with client.stream("GET", emu.media_url(bench.id_of[p])) as resp:
                        resp.raise_for_status()
                        for chunk in resp.iter_raw(BUF):
                            nbytes += len(chunk)
                bench.sample(f"read.httpx.uncached.{name}",
                            {"s": time.perf_counter() - start, "bytes": nbytes})

    for cycle in range(s.uncached_cycles):
        bench.log(f"reading: rcfs cycle {cycle + 1}/{s.uncached_cycles} (uncached, warm, remounted)")
        home, mp = bench.home(), bench.work / "mnt-rcfs"
        with procs.rcfs_mount(emu, home, mp, "40d") as m:
            procs.wait_read_ahead(mp)
            read_pass(bench, "rcfs", "uncached", mp, m.pid)
            for _ in range(s.warm_passes):
                read_pass(bench, "rcfs", "warm", mp, m.pid)
        for _ in range(s.remounts_per_cycle):
            with procs.rcfs_mount(emu, home, mp, "40d") as m:
                procs.wait_read_ahead(mp)
                read_pass(bench, "rcfs", "remount", mp, m.pid)
        shutil.rmtree(home, ignore_errors=True)

    bench.log("reading: minimal pyfuse3 passthrough")
    for _ in range(s.passthrough_cycles):
        with procs.passthrough_mount(bench.local, bench.work / "mnt-pt") as m:
            read_pass(bench, "passthrough", "remount", m.path, m.pid)
            read_pass(bench, "passthrough", "warm", m.path, m.pid)

    bench.log(f"reading: rclone mount ({procs.rclone_version()})")
    with procs.rclone_serve(bench.local) as url:
        for cycle in range(s.rclone_cycles):
            cache = bench.work / f"rclone-cache{cycle}"
            with procs.rclone_mount(url, bench.work / "mnt-rclone", cache) as m:
                read_pass(bench, "rclone", "uncached", m.path, m.pid)
                read_pass(bench, "rclone", "warm", m.path, m.pid)
            with procs.rclone_mount(url, bench.work / "mnt-rclone", cache) as m:
                read_pass(bench, "rclone", "remount", m.path, m.pid)
            shutil.rmtree(cache, ignore_errors=True)
    reading_rows(bench)


def rate(bench: Any, system: str, mode: str, name: str) -> float:
    runs = bench.r.samples.get(f"read.{system}.{mode}.{name}", [])
    return median([mbps(x["bytes"], x["s"]) for x in runs])


def reading_rows(bench: Any) -> None:
    d = bench.r.meta["data"]
    label = {"big": f"1 file of {d['big_file_bytes'] / 1e6:.0f} MB",
             "small": f"{d['small_files']:,} files of {d['small_bytes'] / d['small_files'] / 1e3:.0f} KB"}
    sec = "Reading (MB/s, median)"
    for name in ("big", "small"):
        rc, loc = rate(bench, "rcfs", "warm", name), rate(bench, "local", "warm", name)
        bench.r.add(Row(sec, f"warm re-read, {label[name]}", fmt_rate(rc), f"local disk {fmt_rate(loc)}",
                       rc / loc, "≥ 0.9x local", rc / loc >= 0.9))
    for name in ("big", "small"):
        rc = rate(bench, "rcfs", "remount", name)
        pt, rcl = rate(bench, "passthrough", "remount", name), rate(bench, "rclone", "remount", name)
        bench.r.add(Row(sec, f"after remount (rcfs cache), {label[name]}", fmt_rate(rc),
                       f"passthrough {fmt_rate(pt)}", rc / pt, "≥ 0.8x passthrough", rc / pt >= 0.8))
        bench.r.add(Row(sec, f"after remount (rcfs cache), {label[name]}", fmt_rate(rc),
                       f"rclone (vfs cache) {fmt_rate(rcl)}", rc / rcl, "≥ 1x rclone", rc / rcl >= 1.0))
    for name in ("big", "small"):
        rc = rate(bench, "rcfs", "uncached", name)
        curl, hx = rate(bench, "curl", "uncached", name), rate(bench, "httpx", "uncached", name)
        best = max(curl, hx)
        rcl = rate(bench, "rclone", "uncached", name)
        bench.r.add(Row(sec, f"uncached, {label[name]}", fmt_rate(rc),
                       f"HTTP: curl {fmt_rate(curl)}, httpx {fmt_rate(hx)} (rclone {fmt_rate(rcl)})",
                       rc / best, "≥ 0.8x best plain HTTP", rc / best >= 0.8))
    for name in ("big", "small"):
        rc, disk = rate(bench, "rcfs", "uncached", name), rate(bench, "curl-disk", "uncached", name)
        bench.r.add(Row(sec, f"(info) uncached, {label[name]}", fmt_rate(rc),
                       f"curl saving each file to disk {fmt_rate(disk)}", rc / disk))
    for name in ("big", "small"):
        pt = rate(bench, "passthrough", "warm", name)
        rcl = rate(bench, "rclone", "warm", name)
        rc = rate(bench, "rcfs", "warm", name)
        bench.r.add(Row(sec, f"(info) warm re-read, peers, {label[name]}", fmt_rate(rc),
                       f"passthrough {fmt_rate(pt)}, rclone {fmt_rate(rcl)}"))
    sec = "CPU (daemon user+sys s per GB read, median)"
    for mode, ref in (("warm", "passthrough warm"), ("remount", "passthrough after remount"),
                      ("uncached", "rclone uncached")):
        for name in ("big", "small"):
            rc = cpu_per_gb(bench, "rcfs", mode, name)
            peer = "rclone" if mode == "uncached" else "passthrough"
            other = cpu_per_gb(bench, peer, mode, name)
            bench.r.add(Row(sec, f"{mode}, {label[name]}", f"{rc:.2f} s/GB", f"{ref} {other:.2f} s/GB"))


def cpu_per_gb(bench: Any, system: str, mode: str, name: str) -> float:
    runs = bench.r.samples.get(f"read.{system}.{mode}.{name}", [])
    return median([x["cpu_s"] / (x["bytes"] / 1e9) for x in runs if x.get("cpu_s") is not None])


def ttfb(bench: Any) -> None:
    s, emu = bench.s, bench.emu
    assert emu is not None
    bench.log("ttfb: rcfs open+read vs a keep-alive HTTP GET, interleaved")
    token = emu.token()
    picks = bench.small_rel[:: max(1, len(bench.small_rel) // (s.ttfb_samples + 1))][: s.ttfb_samples + 1]
    home, mp = bench.home(), bench.work / "mnt-rcfs"
    with procs.rcfs_mount(emu, home, mp, "40d") as m, \
            httpx.Client(timeout=60, trust_env=False,
                         headers={"Authorization": f"Bearer {token}"}) as client:
        procs.wait_read_ahead(mp)
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
            with client.stream("GET", emu.media_url(bench.id_of[rel])) as resp:
                it = resp.iter_raw(4096)
                next(it)
                http_s = time.perf_counter() - start
                for _ in it:
                    pass
            curl = subprocess.run(
                ["curl", "-sf", "-o", "/dev/null", "-w", "%{time_starttransfer}", "-H",
                 f"Authorization: Bearer {token}", emu.media_url(bench.id_of[rel])],
                capture_output=True, text=True, check=True)
            if i == 0:
                continue  # warms connections and the token on both sides
            bench.sample("ttfb.rcfs", rcfs_s)
            bench.sample("ttfb.httpx", http_s)
            bench.sample("ttfb.curl_new_connection", float(curl.stdout))
    shutil.rmtree(home, ignore_errors=True)
    rc, hx, cu = (median(bench.r.samples[f"ttfb.{k}"]) for k in ("rcfs", "httpx", "curl_new_connection"))
    bench.r.add(Row("Time to first byte (uncached, median)", "open + first read() of a 240 KB file",
                   fmt_s(rc), f"keep-alive HTTP GET {fmt_s(hx)} (curl, new connection {fmt_s(cu)})",
                   rc / hx, "≤ 1.2x HTTP", rc / hx <= 1.2))
