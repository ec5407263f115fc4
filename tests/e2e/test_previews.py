"""A file manager opening a day: head reads of every file must not cost a Heavy request each."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import FAST, mounted, run_emulator
from .faultkit import read_file, rec_id, recordings

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]

THUMBNAILER = r"""
import errno, os, sys
refused = ok = 0
for name in sorted(os.listdir(sys.argv[1])):
    if not name.endswith(".mp3"):
        continue
    try:
        fd = os.open(os.path.join(sys.argv[1], name), os.O_RDONLY)
    except OSError as exc:
        assert exc.errno == errno.EAGAIN, exc
        refused += 1
        continue
    try:
        os.read(fd, 65536)  # the head: tags and the first frames, for a thumbnail
        ok += 1
    finally:
        os.close(fd)
print(ok, refused)
"""


def test_head_reads_of_a_500_recording_day_cost_at_most_5_heavy_requests(tmp_path: Path) -> None:
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)
    with run_emulator("--seed", "71", "--calls", "20", "--days", "30", "--rate-limits", FAST) as emu:
        emu.admin.post("/calls", json={"count": 500, "startTime": day.isoformat(), "recorded": True,
                                       "duration": 120, "direction": "Outbound"}).raise_for_status()
        with mounted(emu, tmp_path) as m:
            day_dir = m.path / day.strftime("%Y/%m/%d")
            files = sorted(day_dir.glob("*.mp3"))
            assert len(files) >= 500
            cached = files[:2]  # what was listened to before: previews of these still work
            for f in cached:
                read_file(f)
            emu.reset_stats()
            out = subprocess.run([sys.executable, "-c", THUMBNAILER, str(day_dir)], capture_output=True,
                                 text=True, timeout=240, check=True).stdout.split()
            ok, refused = int(out[0]), int(out[1])
            heavy = emu.stats()["groups"].get("Heavy", {}).get("requests", 0)
            print(f"previews: {ok} served, {refused} refused (EAGAIN), {heavy} Heavy requests")
            assert heavy <= 5
            assert ok >= 2 and refused >= 490
            assert m.status()["previews"]["refused"] == refused
            # Whole reads by another process (a copy, a player) are not affected.
            for f in files[-3:]:
                assert read_file(f) == emu.content(rec_id(f))
            assert "as a file manager's previews do" in m.log_text()


def test_copying_a_day_is_never_mistaken_for_previews(tmp_path: Path) -> None:
    with run_emulator("--seed", "72", "--calls", "120", "--days", "5", "--rate-limits", FAST) as emu, \
         mounted(emu, tmp_path) as m:
        day = max((f.parent for f in recordings(m.path)), key=lambda d: len(list(d.glob("*.mp3"))))
        dest = tmp_path / "copy"
        subprocess.run(["cp", "-r", str(day), str(dest)], check=True, timeout=240)
        for f in sorted(day.glob("*.mp3")):
            assert (dest / f.name).read_bytes() == emu.content(rec_id(f))
        assert m.status()["previews"]["refused"] == 0
