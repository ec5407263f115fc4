"""What real accounts do that the first emulator did not (issue: real accounts), end to end:
a company that records WAV, a media host that redirects to storage elsewhere, sync refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import FAST, mounted, run_emulator, wait_for
from .faultkit import read_file, rec_id, recordings

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]


def ffprobe(path: Path) -> dict[str, object]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return dict(json.loads(out)["format"])


def test_a_wav_company_gets_wav_names_sizes_and_bytes(tmp_path: Path) -> None:
    with run_emulator("--seed", "51", "--calls", "60", "--days", "10", "--rate-limits", FAST,
                      "--audio-format", "wav") as emu, mounted(emu, tmp_path) as m:
        files = recordings(m.path)
        assert files and all(f.suffix == ".wav" for f in files)
        durations = {r["id"]: r["duration"] for r in emu.admin.get("/recordings").json()["recordings"]}
        for f in files[:5]:
            estimate = f.stat().st_size
            truth = len(emu.content(rec_id(f)))
            assert abs(estimate - truth) <= 0.1 * truth, (f, estimate, truth)
        for f in files[:3]:
            assert read_file(f) == emu.content(rec_id(f))
            fmt = ffprobe(f)
            assert fmt["format_name"] == "wav"
            assert abs(float(str(fmt["duration"])) - durations[rec_id(f)]) <= 1.0
            assert subprocess.run(["getfattr", "-n", "user.rc.content_type", "--only-values", str(f)],
                                  capture_output=True, text=True, timeout=30).stdout == "audio/wav"
        dest = tmp_path / "backup"
        day = files[0].parent
        subprocess.run(["rsync", "-a", f"{day}/", f"{dest}/"], check=True, timeout=120)
        before = emu.content_requests()
        out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{day}/", f"{dest}/"],
                             check=True, timeout=120, capture_output=True, text=True).stdout
        assert out.strip() == "" and emu.content_requests() == before


def test_content_redirected_to_storage_elsewhere_without_the_token(tmp_path: Path) -> None:
    with run_emulator("--seed", "52", "--calls", "30", "--days", "10", "--rate-limits", FAST,
                      "--faults", "redirect=1") as emu, mounted(emu, tmp_path) as m:
        files = recordings(m.path)[:4]
        for f in files:
            assert read_file(f) == emu.content(rec_id(f))
        log = emu.admin.get("/storage/requests").json()["requests"]
        assert len(log) >= len(files)
        for request in log:
            headers = {k.lower() for k in request["headers"]}
            assert "authorization" not in headers, request
            assert "access_token" not in json.dumps(request["query"]), request
        assert emu.stats()["throttled"] == 0


def test_an_isync_over_250_changes_starts_a_full_sync(tmp_path: Path) -> None:
    with run_emulator("--seed", "53", "--calls", "800", "--days", "20", "--rate-limits", FAST,
                      "--faults", "isync_limit=1") as emu, mounted(emu, tmp_path) as m:
        before = emu.stats()["requests"].get("syncAccountCallLog", 0)
        ids = [r["id"] for r in emu.admin.get("/recordings").json()["recordings"]][:260]
        assert len(ids) == 260
        for rid in ids:  # 260 changes to old calls: more than one ISync may return
            emu.admin.delete(f"/recordings/{rid}").raise_for_status()
        r = m.rcfs("refresh", str(m.path), check=False)
        assert r.returncode == 0, r.stderr
        syncs = emu.stats()["requests"]["syncAccountCallLog"] - before
        assert syncs == 2  # the refused ISync, then an FSync for a fresh token
        assert "sync token refused" in m.log_text()
        r = m.rcfs("refresh", str(m.path), check=False)  # and the new token works
        assert r.returncode == 0, r.stderr
        wait_for(lambda: m.status()["refresh"]["failures"] == 0, 5, "no failures")
