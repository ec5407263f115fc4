"""The `listing` section of scripts/bench.py: `ls -l` and `find` of a big day and of
the whole tree through rcfs, against a local copy, the minimal passthrough and
rclone mount (first after mount and warm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import procs
from .reading import timed
from .report import Row, fmt_s, median


def run(bench: Any) -> None:
    s, emu = bench.s, bench.emu
    assert emu is not None
    day = bench.day_rel(bench.read_day)
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
                bench.sample(f"list.{system}.{key}.{'cold' if i == 0 and j == 0 else 'warm'}", t)

    bench.log("listing: local, passthrough, rcfs, rclone")
    for _ in range(s.listing_mounts):
        run("local", bench.local)
    for _ in range(s.listing_mounts):
        with procs.passthrough_mount(bench.local, bench.work / "mnt-pt") as pt_m:
            run("passthrough", pt_m.path)
    home = bench.home()
    for _ in range(s.listing_mounts):
        with procs.rcfs_mount(emu, home, bench.work / "mnt-rcfs", "40d") as rc_m:
            run("rcfs", rc_m.path)
    with procs.rclone_serve(bench.local) as url:
        for i in range(s.listing_mounts):
            with procs.rclone_mount(url, bench.work / "mnt-rclone", bench.work / f"rclone-l{i}") as rcl_m:
                run("rclone", rcl_m.path)
    sec = "Listing (seconds, median)"
    n = bench.r.meta["data"]["small_files"]

    def med(system: str, key: str, kind: str = "warm") -> float:
        xs = bench.r.samples.get(f"list.{system}.{key}.{kind}", [])
        if kind == "warm" and not xs:
            return float("nan")
        return median(xs)

    rc, loc, rcl, pt = (med(x, "ls_day") for x in ("rcfs", "local", "rclone", "passthrough"))
    bench.r.add(Row(sec, f"`ls -l` of a day of {n:,} recordings", fmt_s(rc),
                   f"local {fmt_s(loc)}; passthrough {fmt_s(pt)}", rc / loc, "≤ 3x local", rc / loc <= 3))
    bench.r.add(Row(sec, f"`ls -l` of a day of {n:,} recordings", fmt_s(rc), f"rclone {fmt_s(rcl)}",
                   rc / rcl, "≤ 1x rclone", rc / rcl <= 1))
    rcc, rclc = med("rcfs", "ls_day", "cold"), med("rclone", "ls_day", "cold")
    bench.r.add(Row(sec, "`ls -l` of the day, first after mount", fmt_s(rcc),
                   f"rclone {fmt_s(rclc)}; local {fmt_s(med('local', 'ls_day', 'cold'))}",
                   rcc / rclc, "≤ 1x rclone", rcc / rclc <= 1))
    total = bench.r.meta["data"]["tree_recordings"]
    for key, what in (("find_day", "`find -type f | wc -l` of the day"),
                      ("ls_tree", f"`ls -lR` of the whole tree ({total:,} recordings)"),
                      ("find_tree", "`find -type f | wc -l` of the whole tree")):
        rc, loc, rcl, pt = (med(x, key) for x in ("rcfs", "local", "rclone", "passthrough"))
        bench.r.add(Row(sec, what, fmt_s(rc),
                       f"local {fmt_s(loc)}; passthrough {fmt_s(pt)}; rclone {fmt_s(rcl)}", rc / loc))
