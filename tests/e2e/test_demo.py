"""The README's first command: `rcfs demo MOUNTPOINT` serves a demo account and
stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import is_mounted, require_fuse, unmount, wait_for


@pytest.mark.timeout(240)
def test_the_readmes_demo_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "calls"
    mp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "rcfs", "demo", str(mp), "--tz", "UTC"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: is_mounted(mp) or proc.poll() is not None, 120, "the demo to mount")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        wait_for(lambda: any(mp.rglob("*.mp3")), 60, "the demo's recordings")
        files = sorted(mp.rglob("*.mp3"))
        assert len(files) >= 50, len(files)  # "about 130 recordings over 30 days"
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration,format_name", "-of", "json",
             str(files[-1])], capture_output=True, text=True, timeout=60, check=True)
        fmt = json.loads(probe.stdout)["format"]
        assert fmt["format_name"] == "mp3" and float(fmt["duration"]) > 0
        assert len(files[-1].read_bytes()) == files[-1].stat().st_size
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "rcfs demo: unmounted" in err, err
        assert not is_mounted(mp)
    finally:
        unmount(mp, proc)
        assert not is_mounted(mp)
