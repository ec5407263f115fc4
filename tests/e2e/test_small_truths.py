"""Small untruths a new user noticed (issue: new users), on a real mount."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import FAST, mounted, run_emulator
from .faultkit import read_file, recordings

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(120)]


def test_ls_a_lists_dot_and_dotdot_and_content_type_is_learned(tmp_path: Path) -> None:
    with run_emulator("--seed", "81", "--calls", "20", "--days", "5", "--rate-limits", FAST) as emu, \
         mounted(emu, tmp_path) as m:
        f = recordings(m.path)[0]
        for d in (m.path, f.parent, f.parent.parent):
            out = subprocess.run(["ls", "-a", str(d)], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.split()
            assert out[:2] == [".", ".."], (d, out)
        assert subprocess.run(["ls", "-la", str(f.parent)], capture_output=True, timeout=30).returncode == 0
        read_file(f)
        value = subprocess.run(["getfattr", "-n", "user.rc.content_type", "--only-values", str(f)],
                               capture_output=True, text=True, timeout=30)
        import time

        deadline = time.monotonic() + 10
        while value.stdout != "audio/mpeg" and time.monotonic() < deadline:  # after the commit
            time.sleep(0.1)
            value = subprocess.run(["getfattr", "-n", "user.rc.content_type", "--only-values", str(f)],
                                   capture_output=True, text=True, timeout=30)
        assert value.stdout == "audio/mpeg"
        out = m.rcfs("status", str(m.path)).stdout
        assert "last sync 20" in out and (" ago)" in out or "(now)" in out)  # local, with its age
        assert "T" not in out.split("last sync ", 1)[1].split()[0]
