"""`--metrics HOST:PORT`: Prometheus text format from a real mount, agreeing with the emulator."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import FAST, mounted, run_emulator, wait_for
from .faultkit import read_file, recordings

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(180)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = httpx.get(url, timeout=10, trust_env=False)
    r.raise_for_status()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_metrics_match_the_emulator(tmp_path: Path) -> None:
    port = free_port()
    with (run_emulator("--seed", "41", "--calls", "60", "--days", "10", "--rate-limits", FAST) as emu,
          mounted(emu, tmp_path, "--metrics", f"127.0.0.1:{port}") as m):
        url = m.status()["metrics"]["url"]
        assert url == f"http://127.0.0.1:{port}/metrics"
        files = recordings(m.path)[:5]
        for f in files:
            read_file(f)
        wait_for(lambda: m.status()["downloads"]["active"] == 0, 30, "downloads to end")
        metrics = scrape(url)
        heavy = emu.stats()["groups"]["Heavy"]["requests"]
        assert metrics["rcfs_requests_total"][(("group", "Heavy"),)] == heavy
        by_op = metrics["rcfs_operation_requests_total"]
        assert by_op[(("group", "Heavy"), ("operation", "readCallRecordingContent"))] == \
            emu.stats()["requests"]["readCallRecordingContent"]
        assert metrics["rcfs_cache_misses_total"][()] >= len(files)
        assert metrics["rcfs_fuse_requests_total"][(("operation", "open"),)] >= len(files)
        assert metrics["rcfs_index_recordings"][()] == m.status()["index"]["recordings"]
        assert metrics["rcfs_last_sync_age_seconds"][()] < 600
        assert metrics["rcfs_up"][()] == 1


def test_a_bad_metrics_address_fails_the_mount_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with run_emulator("--seed", "42", "--calls", "5", "--days", "5", "--rate-limits", FAST) as emu:
            with pytest.raises(AssertionError) as err, mounted(emu, tmp_path, "--metrics",
                                                               f"127.0.0.1:{port}"):
                pass
            message = str(err.value)
            assert "exited 1" in message and "cannot serve metrics on 127.0.0.1" in message
