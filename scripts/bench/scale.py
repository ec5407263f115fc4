"""The `backup` and `scale` sections of scripts/bench.py.

- backup: `rsync -a` of uncached recordings at a tight Heavy limit, against
  the limit's bound and a sequential downloader written with RingCentral's
  Python SDK that sleeps on 429 (sdk_backup.py): elapsed time, 429s, Heavy
  requests per recording.
- scale: accounts of ~10,000 and ~100,000 recordings: time and call-log
  requests to index, the daemon's peak RSS, `ls -l` of one big day at both
  sizes, `find` of the whole tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import timedelta
from typing import Any

from . import procs
from .reading import timed
from .report import Row, fmt_s, median


def backup(bench: Any) -> None:
    s = bench.s
    limit = s.backup_limit
    rates = f"heavy={limit}/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"
    bench.log(f"backup: {s.backup_recordings} recordings at heavy={limit}/1s, rsync vs SDK")
    day_dt = (bench.now - timedelta(days=20)).replace(hour=12, minute=0, second=0)  # no other calls
    with procs.emulator("--seed", "9", "--calls", "20", "--days", "10", "--rate-limits", rates) as emu:
        emu.add_calls(s.backup_recordings, procs.iso(day_dt), 60)
        day = bench.day_rel(day_dt)
        bound = s.backup_recordings / limit
        for run in range(s.backup_runs):
            home = bench.home()
            mp, dest = bench.work / "mnt-backup", home / "dest"
            with procs.rcfs_mount(emu, home, mp, "40d") as m:
                time.sleep(2.5)  # let the mount's call-log requests leave the window
                emu.reset_stats()
                start = time.perf_counter()
                subprocess.run(["rsync", "-a", f"{m.path}/{day}/", f"{dest}/"], check=True)
                elapsed = time.perf_counter() - start
                st = emu.stats()
            files = [p for p in dest.iterdir() if p.suffix == ".mp3"]
            content = st["requests"].get("readCallRecordingContent", 0)
            bench.sample("backup.rcfs", {
                "elapsed_s": elapsed, "recordings": len(files),
                "bytes": sum(p.stat().st_size for p in files), "content_requests": content,
                "heavy_requests": st["groups"].get("Heavy", {}).get("requests", 0),
                "throttled_429": st["throttled"], "stats": st})
            shutil.rmtree(home, ignore_errors=True)
            bench.log(f"backup: rcfs run {run + 1}: {elapsed:.1f} s, {len(files)} files, "
                f"{content} content requests, {st['throttled']} 429s")
            sdk_dest = bench.work / "sdk-dest"
            sdk_dest.mkdir()
            time.sleep(2.5)
            emu.reset_stats()
            env = procs.rcfs_env(emu, bench.work)
            window = (procs.iso(day_dt - timedelta(hours=12)), procs.iso(day_dt + timedelta(hours=1)))
            out = subprocess.run([procs.PY, str(procs.HERE / "sdk_backup.py"), str(sdk_dest), *window],
                                 env=env, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            st = emu.stats()
            res.update(stats=st, content_requests=st["requests"].get("readCallRecordingContent", 0),
                       emulator_429=st["throttled"])
            bench.sample("backup.sdk", res)
            shutil.rmtree(sdk_dest, ignore_errors=True)
            bench.log(f"backup: SDK run {run + 1}: {res['elapsed_s']:.1f} s, {res['recordings']} files, "
                f"{res['emulator_429']} 429s")
    runs, sdk = bench.r.samples["backup.rcfs"], bench.r.samples["backup.sdk"]
    el = median([x["elapsed_s"] for x in runs])
    sdk_el = median([x["elapsed_s"] for x in sdk])
    n = s.backup_recordings
    sec = f"Backup: `rsync -a` of {n} uncached recordings at heavy={limit}/1s (median of {len(runs)})"
    bench.r.add(Row(sec, "elapsed / bound", fmt_s(el), f"bound {n}/{limit} per s = {fmt_s(bound)}",
                   el / bound, "≤ 1.1x bound", el / bound <= 1.1))
    t429 = max(x["throttled_429"] for x in runs)
    bench.r.add(Row(sec, "429 responses (worst run)", str(t429),
                   f"SDK script {median([x['emulator_429'] for x in sdk]):.0f}", None, "0", t429 == 0))
    rpr = max(x["heavy_requests"] / max(1, x["recordings"]) for x in runs)
    sdk_rpr = median([x["stats"]["groups"].get("Heavy", {}).get("requests", 0) / max(1, x["recordings"])
                      for x in sdk])
    bench.r.add(Row(sec, "Heavy requests per recording (worst run)", f"{rpr:.3f}",
                   f"SDK {sdk_rpr:.3f} (incl. its 429s)", None, "≤ 1.02", rpr <= 1.02))
    bench.r.add(Row(sec, "elapsed vs the SDK script", fmt_s(el), f"SDK (sleeps on 429) {fmt_s(sdk_el)}",
                   el / sdk_el, "< 1x SDK", el < sdk_el))


def scale(bench: Any) -> None:
    s = bench.s
    day_dt = (bench.now - timedelta(days=75)).replace(hour=12, minute=0, second=0)
    day = bench.day_rel(day_dt)
    out: dict[str, dict[str, Any]] = {}
    for label, calls in (("small", s.scale_small_calls), ("large", s.scale_calls)):
        bench.log(f"scale: account of {calls:,} calls + a day of {s.scale_day:,} recordings")
        args = ("--seed", "5", "--calls", str(calls), "--days", "60", "--rate-limits", procs.FAST)
        with procs.emulator(*args) as emu:
            emu.add_calls(s.scale_day, procs.iso(day_dt), 60)
            recordings = len(emu.admin.get("/recordings").json()["recordings"])
            runs = s.scale_index_runs if label == "large" else 1
            info: dict[str, Any] = {"recordings": recordings, "index": []}
            for i in range(runs):
                home = bench.home()
                emu.reset_stats()
                with procs.rcfs_mount(emu, home, bench.work / "mnt-scale", "89d") as m:
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
    bench.r.samples["scale"] = out
    big, small = out["large"], out["small"]
    sec = f"Scale: {big['recordings']:,} recordings"
    idx = median([x["s"] for x in big["index"]])
    pages = median([x["call_log_requests"] for x in big["index"]])
    ideal = -(-big["recordings"] // 1000)
    bench.r.add(Row(sec, "index on first mount (to index complete; served earlier)", fmt_s(idx),
                   f"{small['recordings']:,} recordings: {fmt_s(small['index'][0]['s'])}"))
    bench.r.add(Row(sec, "call-log requests to index", f"{pages:.0f}",
                   f"{ideal} pages at perPage=1000", pages / ideal,
                   note="the emulator caps view=Detailed at 250 per page"))
    rss = big["rss_peak_mb"]
    bench.r.add(Row(sec, "daemon peak RSS (VmHWM) after index + `find` of the whole tree", f"{rss:.0f} MB",
                   f"after index only {median([x['rss_mb'] for x in big['index']]):.0f} MB; "
                   f"{small['recordings']:,} recordings: {small['rss_peak_mb']:.0f} MB",
                   None, "≤ 150 MB", rss <= 150))
    a, b = median(big["ls_day"]), median(small["ls_day"])
    bench.r.add(Row(sec, f"`ls -l` of a day of {s.scale_day:,} recordings", fmt_s(a),
                   f"at {small['recordings']:,} recordings {fmt_s(b)}", a / b, "≤ 1.2x", a / b <= 1.2))
    bench.r.add(Row(sec, "same, first after mount", fmt_s(big["ls_day_cold"]),
                   f"at {small['recordings']:,} recordings {fmt_s(small['ls_day_cold'])}",
                   big["ls_day_cold"] / small["ls_day_cold"]))
    if "find_tree" in big:
        bench.r.add(Row(sec, "`find -type f | wc -l` of the whole tree", fmt_s(big["find_tree"]["s"]),
                       f"{big['find_tree']['files']:,} files"))
