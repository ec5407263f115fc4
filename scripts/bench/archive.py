"""The `archive` section of scripts/bench.py: real-account scale at a real rate limit.

- Time to the first listing: `rcfs mount` (daemonizing, as a user runs it) at
  heavy=10/2s on a 90-day account of ~10,000 and ~100,000 recordings, until
  `ls -l` of the newest day has answered, and then of a day 60 days back
  (read on demand); against the rate limit's bound for indexing the whole
  window (its call-log pages at 5 a second), which is what a mount that
  indexes before serving would take.
- The archive: `rcfs mount --archive` of ~300 recordings at heavy=10/1s until
  nothing is pending; Heavy requests per recording (index, sync and content
  included) and elapsed time against the bound (those requests at 10 a second).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import procs
from .report import Row, fmt_s, median

HEAVY_10_2S = "heavy=10/2s,medium=100000/1s,light=100000/1s,auth=100000/1s"


def _status(mp: Path) -> dict[str, Any]:
    return dict(json.loads((mp / ".rcfs" / "status.json").read_bytes()))


def _wait(cond: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def _daemon_mount(emu: procs.Emulator, home: Path, mp: Path, *extra: str) -> float:
    """`rcfs mount` (daemonizing); seconds until it returned. The caller unmounts."""
    mp.mkdir(parents=True, exist_ok=True)
    procs.REAPER.mounts.add(mp)
    start = time.perf_counter()
    subprocess.run([procs.PY, "-m", "rcfs", "mount", str(mp), "--tz", "UTC", "--log-level", "WARNING",
                    "--log-file", str(home / "mount.log"), *extra],
                   env=procs.rcfs_env(emu, home), check=True, capture_output=True, timeout=600,
                   cwd=procs.REPO)
    return time.perf_counter() - start


def _umount(emu: procs.Emulator, home: Path, mp: Path) -> None:
    subprocess.run([procs.PY, "-m", "rcfs", "umount", str(mp)], env=procs.rcfs_env(emu, home),
                   capture_output=True, timeout=60, check=False, cwd=procs.REPO)
    procs.REAPER.unmount(mp)


def first_listing(bench: Any, calls: int, label: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    args = ("--seed", "21", "--calls", str(calls), "--days", "90", "--rate-limits", HEAVY_10_2S)
    with procs.emulator(*args) as emu:
        recordings = len(emu.admin.get("/recordings").json()["recordings"])
        home, mp = bench.home(), bench.work / f"mnt-first-{label}"
        start = time.perf_counter()
        mount_s = _daemon_mount(emu, home, mp, "--since", "90d")
        try:
            subprocess.run(["ls", "-l", str(mp / now.strftime("%Y/%m/%d"))], check=True,
                           stdout=subprocess.DEVNULL)
            newest_s = time.perf_counter() - start
            t0 = time.perf_counter()
            subprocess.run(["ls", "-l", str(mp / (now - timedelta(days=60)).strftime("%Y/%m/%d"))],
                           check=True, stdout=subprocess.DEVNULL)
            old_s = time.perf_counter() - t0
            full_s = newest_s + old_s + _wait(lambda: _status(mp)["index"]["progress"]["complete"],
                                              1800, "the index")
            st = _status(mp)
            pages = emu.stats()["requests"].get("readCompanyCallLog", 0)
            rss = procs.peak_rss_mb(int(st["pid"]))
        finally:
            _umount(emu, home, mp)
            shutil.rmtree(home, ignore_errors=True)
    return {"recordings": recordings, "mount_s": mount_s, "newest_day_s": newest_s,
            "day_60_back_s": old_s, "index_complete_s": full_s, "call_log_pages": pages,
            "rss_peak_mb": rss}


def archive_cost(bench: Any, runs: int) -> list[dict[str, Any]]:
    out = []
    rates = "heavy=10/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"
    for run in range(runs):
        with procs.emulator("--seed", str(30 + run), "--calls", "640", "--days", "85",
                            "--rate-limits", rates) as emu:
            recordings = len(emu.admin.get("/recordings").json()["recordings"])
            home, mp = bench.home(), bench.work / "mnt-archive"
            start = time.perf_counter()
            _daemon_mount(emu, home, mp, "--since", "90d", "--archive")
            try:
                _wait(lambda mp=mp, n=recordings: _status(mp)["archive"]["pending"] == 0
                      and _status(mp)["archive"]["done"] >= n, 600, "the archive")
                elapsed = time.perf_counter() - start
                st = emu.stats()
            finally:
                _umount(emu, home, mp)
                shutil.rmtree(home, ignore_errors=True)
        heavy = st["groups"].get("Heavy", {}).get("requests", 0)
        out.append({"recordings": recordings, "elapsed_s": elapsed, "heavy_requests": heavy,
                    "content_requests": st["requests"].get("readCallRecordingContent", 0),
                    "throttled_429": st["throttled"], "stats": st})
        bench.log(f"archive: run {run + 1}: {recordings} recordings in {elapsed:.1f} s, "
                  f"{heavy} Heavy requests, {st['throttled']} 429s")
    return out


def run(bench: Any) -> None:
    s = bench.s
    first = {}
    for label, calls in (("10k", s.scale_small_calls), ("100k", s.scale_calls)):
        bench.log(f"archive: time to the first listing, {calls:,} calls at heavy=10/2s")
        first[label] = first_listing(bench, calls, label)
    bench.r.samples["archive.first_listing"] = first
    sec = "Real-account scale at heavy=10/2s (`rcfs mount` until `ls -l` answers)"
    for f in first.values():
        bound = f["call_log_pages"] / 5.0  # indexing the whole window at the rate limit
        bench.r.add(Row(sec, f"newest day listed, {f['recordings']:,} recordings", fmt_s(f["newest_day_s"]),
                        f"indexing all first: {fmt_s(bound)} at the rate limit "
                        f"({f['call_log_pages']} pages)", f["newest_day_s"] / bound, "< 15 s",
                        f["newest_day_s"] < 15))
        bench.r.add(Row(sec, f"a day 60 days back, right after, {f['recordings']:,} recordings",
                        fmt_s(f["day_60_back_s"]), f"mount returned in {fmt_s(f['mount_s'])}",
                        None, "< 15 s", f["mount_s"] + f["day_60_back_s"] < 15))
        bench.r.add(Row(sec, f"whole index in the background, {f['recordings']:,} recordings",
                        fmt_s(f["index_complete_s"]), f"bound {fmt_s(bound)}",
                        f["index_complete_s"] / bound, note="peak RSS "
                        f"{f['rss_peak_mb']:.0f} MB"))
    runs = archive_cost(bench, 1 if s.small < 1000 else 3)
    bench.r.samples["archive.cost"] = runs
    sec = f"Archive: `rcfs mount --archive` of ~{runs[0]['recordings']} recordings at heavy=10/1s"
    rpr = max(x["heavy_requests"] / max(1, x["recordings"]) for x in runs)
    bench.r.add(Row(sec, "Heavy requests per recording, index included (worst run)", f"{rpr:.3f}",
                    "1 per recording", rpr, "≤ 1.02", rpr <= 1.02))
    el = median([x["elapsed_s"] / (x["heavy_requests"] / 10.0) for x in runs])
    bench.r.add(Row(sec, "elapsed / bound (`rcfs mount` to all archived)", f"{el:.2f}x",
                    "its Heavy requests / 10 per s", el, "≤ 1.1x bound", el <= 1.1))
    t429 = max(x["throttled_429"] for x in runs)
    bench.r.add(Row(sec, "429 responses (worst run)", str(t429), "", None, "0", t429 == 0))
