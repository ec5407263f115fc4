"""`--cache-min-free`: the cache evicts early so a small disk never fills up under reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import FAST, mounted, require_fuse, run_emulator, wait_for
from .faultkit import read_file, rec_id, recordings

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_the_cache_keeps_its_disk_free(tmp_path: Path) -> None:
    require_fuse()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(small)],
                   check=True, timeout=30)
    try:
        with run_emulator("--seed", "61", "--calls", "80", "--days", "10", "--rate-limits", FAST) as emu, \
             mounted(emu, tmp_path, "--cache-dir", str(small / "c"), "--cache-size", "1G",
                     "--cache-min-free", "2M") as m:
            files = [f for f in recordings(m.path) if f.stat().st_size < 1_500_000][:15]
            assert sum(f.stat().st_size for f in files) > 6 << 20  # more than the disk holds
            for f in files:
                assert read_file(f) == emu.content(rec_id(f))
                wait_for(lambda: m.status()["downloads"]["active"] == 0, 30, "the commit")
                assert free(small) >= (2 << 20) - (64 << 10), free(small)
            assert "disk is full" not in m.log_text()
            assert m.status()["cache"]["min_free"] == 2 << 20
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False, timeout=30)
