"""Freshness and archive end to end: new calls appear, deleted recordings stay,
prefetch fills the cache, remounts fetch only what is new, status tells the truth.

Real mounts against the emulator subprocess (conftest.py's harness: every
mount is unmounted and reaped in `finally`).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import FAST, EmulatorProc, Mount, mounted, run_emulator, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]

CALL_LOG_OPS = ("readCompanyCallLog", "syncAccountCallLog")
# Real-ish limits for the prefetch test: Heavy is the group content uses.
LIMITED = "heavy=20/1s,medium=300/1s,light=300/1s,auth=50/1s"


def recordings(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".mp3", ".wav"))


def rec_id(path: Path) -> str:
    return path.stem.rsplit("_", 1)[1]


def find(root: Path, recording_id: str) -> Path | None:
    return next((p for p in recordings(root) if rec_id(p) == recording_id), None)


def add_call(emu: EmulatorProc, start: datetime) -> tuple[str, Path]:
    """Add one recorded call upstream; its recording id and day directory (UTC)."""
    r = emu.admin.post(
        "/calls", json={"count": 1, "startTime": start.isoformat(), "recorded": True, "duration": 30}
    )
    r.raise_for_status()
    record = r.json()["records"][0]
    rid = str(record["recording"]["id"])
    return rid, Path(start.strftime("%Y/%m/%d"))


def call_log_requests(emu: EmulatorProc) -> int:
    reqs = emu.stats()["requests"]
    return sum(int(reqs.get(op, 0)) for op in CALL_LOG_OPS)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProc]:
    with run_emulator("--seed", "11", "--calls", "60", "--days", "10", "--rate-limits", FAST) as e:
        yield e


@pytest.fixture(scope="module")
def mount(emu: EmulatorProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with mounted(emu, tmp_path_factory.mktemp("fresh")) as m:
        yield m


def test_new_call_appears_after_rcfs_refresh(mount: Mount, emu: EmulatorProc) -> None:
    before = {str(p.relative_to(mount.path)) for p in recordings(mount.path)}
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    # Make the kernel cache the day (if it exists) before the call is added.
    day = mount.path / start.strftime("%Y/%m/%d")
    listed_before = os.listdir(day) if day.exists() else []
    rid, rel_day = add_call(emu, start)
    assert not any(rid in n for n in listed_before)
    r = mount.rcfs("refresh", str(mount.path), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 new recordings" in r.stdout and start.strftime("%Y-%m-%d") in r.stdout, r.stdout
    names = os.listdir(mount.path / rel_day)
    new = [n for n in names if n.endswith(f"_{rid}.mp3")]
    assert len(new) == 1, names
    f = mount.path / rel_day / new[0]
    assert f.read_bytes() == emu.content(rid)
    # Names already shown never change.
    after = {str(p.relative_to(mount.path)) for p in recordings(mount.path)}
    assert before <= after and len(after - before) == 1
    assert mount.status()["index"]["last_sync"] is not None


def test_refresh_fails_with_one_line_reason(mount: Mount, tmp_path: Path) -> None:
    r = mount.rcfs("refresh", str(tmp_path), check=False)
    assert r.returncode != 0 and "not an rcfs mount" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_new_call_appears_after_one_poll_interval(emu: EmulatorProc, tmp_path: Path) -> None:
    with mounted(emu, tmp_path, "--poll-interval", "2") as m:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        rid, rel_day = add_call(emu, start)
        day = m.path / rel_day

        def listed() -> bool:
            return day.exists() and any(n.endswith(f"_{rid}.mp3") for n in os.listdir(day))

        wait_for(listed, 20, f"recording {rid} to appear in {day} by polling")
        st = m.status()
        assert st["refresh"]["refreshes"] >= 1 and st["refresh"]["poll_interval"] == 2


def test_deleted_upstream_read_stays_unread_goes(mount: Mount, emu: EmulatorProc) -> None:
    files = recordings(mount.path)
    kept, dropped, unseen = files[2], files[4], files[6]
    kept_bytes = kept.read_bytes()
    assert kept_bytes == emu.content(rec_id(kept))
    os.stat(dropped)  # the kernel knows the name: its dentry must be invalidated
    for f in (kept, dropped, unseen):
        assert emu.admin.delete(f"/recordings/{rec_id(f)}").status_code == 204

    # A content 404 (no refresh yet): ENOENT, and the file leaves the listing.
    with pytest.raises(OSError) as exc:
        unseen.read_bytes()
    assert exc.value.errno == errno.ENOENT
    wait_for(
        lambda: not unseen.parent.exists() or unseen.name not in os.listdir(unseen.parent),
        20,
        "the 404'd file to leave the listing",
    )

    r = mount.rcfs("refresh", str(mount.path), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 kept" in r.stdout, r.stdout
    # Read before: still listed, readable, marked.
    assert kept.name in os.listdir(kept.parent)
    assert kept.read_bytes() == kept_bytes
    assert os.getxattr(kept, "user.rc.deleted") == b"1"
    day = json.loads((kept.parent / "calls.json").read_bytes())
    mine = [
        rec
        for rec in day
        if rec.get("rcfsPath") == str(kept.relative_to(mount.path))
        or any(leg.get("rcfsPath") == str(kept.relative_to(mount.path)) for leg in rec.get("legs", []))
    ]
    assert mine and all(
        rec.get("rcfsDeleted") is True or any(leg.get("rcfsDeleted") for leg in rec.get("legs", []))
        for rec in mine
    )
    # Never read: gone from the listing, and from the kernel's dentry cache.
    # (its day may have gone with it when it was the day's only recording)
    assert not dropped.parent.exists() or dropped.name not in os.listdir(dropped.parent)
    assert not dropped.exists()
    st = mount.status()
    assert st["index"]["deleted"] >= 3 and st["index"]["deleted_kept"] >= 1
    assert st["cache"]["archived"] >= 1

    # Eviction never drops it; only the user does.
    r = mount.rcfs("cache", "prune", "--deleted", str(mount.path), timeout=60)
    assert r.returncode == 0 and "pruned 1 " in r.stdout, (r.stdout, r.stderr)
    assert kept.name not in os.listdir(kept.parent)
    assert mount.status()["cache"]["archived"] == 0


def test_prefetch_fills_cache_without_429_then_rsync_is_free(tmp_path: Path) -> None:
    with (
        run_emulator("--seed", "12", "--calls", "40", "--days", "8", "--rate-limits", LIMITED) as e,
        mounted(e, tmp_path) as m,
    ):
        files = recordings(m.path)
        r = m.rcfs("prefetch", str(m.path), "--since", "30d", "--wait", "--timeout", "180", timeout=240)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"{len(files)} recordings queued" in r.stdout, r.stdout
        st = m.status()
        pf = st["prefetch"]
        assert pf["total"] == pf["done"] == len(files) and pf["failed"] == 0 and not pf["running"]
        assert st["cache"]["entries"] == len(files)
        stats = e.stats()
        assert stats["throttled"] == 0, stats
        assert stats["requests"]["readCallRecordingContent"] == len(files)
        assert pf["bytes"] == stats["content_bytes"]
        out = m.rcfs("status", str(m.path)).stdout
        assert "prefetch" in out and "100%" in out, out
        # A second prefetch finds nothing to do.
        r = m.rcfs("prefetch", str(m.path), timeout=60)
        assert "0 recordings queued" in r.stdout
        before = e.content_requests()
        subprocess.run(["rsync", "-a", f"{m.path}/", f"{tmp_path}/backup/"], check=True, timeout=120)
        assert e.content_requests() == before
        for f in files[:5]:
            assert (tmp_path / "backup" / f.relative_to(m.path)).read_bytes() == e.content(rec_id(f))


def test_remount_fetches_only_what_is_new(tmp_path: Path) -> None:
    # 2,500 calls in the window: re-reading it all would take 3+ call-log pages.
    with run_emulator("--seed", "13", "--calls", "2500", "--days", "20", "--rate-limits", FAST) as e:
        with mounted(e, tmp_path, name="first") as m:
            first = call_log_requests(e)
            count = len(recordings(m.path))
            assert first >= 3, first
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        rid, rel_day = add_call(e, start)
        e.reset_stats()
        with mounted(e, tmp_path, name="second") as m:
            on_mount = call_log_requests(e)
            assert (m.path / rel_day).exists()
            assert any(n.endswith(f"_{rid}.mp3") for n in os.listdir(m.path / rel_day))
            assert m.status()["index"]["recordings"] == count + 1
            e.reset_stats()
            r = m.rcfs("refresh", str(m.path), timeout=120)
            assert r.returncode == 0, r.stderr
            per_refresh = call_log_requests(e)
        print(f"call-log requests: first mount {first}, remount {on_mount}, refresh {per_refresh}")
        assert on_mount <= 2, on_mount  # one window page (+ nothing proportional)
        assert per_refresh <= 6, per_refresh  # window page + bounded sync


def test_status_numbers_match_the_emulator(tmp_path: Path) -> None:
    with (
        run_emulator("--seed", "14", "--calls", "50", "--days", "10", "--rate-limits", FAST) as e,
        mounted(e, tmp_path) as m,
    ):
        files = recordings(m.path)
        for f in files[:6]:
            f.read_bytes()
        r = m.rcfs("refresh", str(m.path), timeout=120)
        assert r.returncode == 0, r.stderr
        st: dict[str, Any] = m.status()
        ours: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a download's commit may still be landing
            st = m.status()
            theirs = e.stats()
            ours = {g: v["sent"] for g, v in st["requests"].items() if v["sent"]}
            if st["downloads"]["active"] == 0 and ours == {
                g: v["requests"] for g, v in theirs["groups"].items() if v["requests"]
            }:
                break
            time.sleep(0.2)
        theirs = e.stats()
        assert ours == {g: v["requests"] for g, v in theirs["groups"].items() if v["requests"]}
        for g, v in st["requests"].items():
            assert v["throttled_429"] == theirs["groups"].get(g, {}).get("throttled", 0)
        assert st["downloads"]["bytes"] == theirs["content_bytes"]
        assert st["downloads"]["done"] == 6 and st["cache"]["entries"] == 6
        upstream = e.admin.get("/recordings").json()["recordings"]
        assert st["index"]["recordings"] == len(upstream) == len(files)
        for key in ("records", "recordings", "oldest", "newest", "last_sync"):
            assert st["index"][key] is not None, key
        for key in ("bytes", "limit", "entries", "hits", "misses"):
            assert key in st["cache"], key
        for rl in st["rate_limits"].values():
            assert {"limit", "remaining", "window", "paused_until"} <= set(rl)
        for key in ("active", "queued", "done", "bytes"):
            assert key in st["downloads"], key
        assert Path(st["control"]).exists() and (os.stat(st["control"]).st_mode & 0o777) == 0o600
        assert isinstance(st["errors"], list) and st["account"]


def test_reads_go_ahead_of_a_running_prefetch(tmp_path: Path) -> None:
    # Heavy 4 a second: prefetching 20-30 recordings takes 5-7 s.
    with (
        run_emulator(
            "--seed",
            "15",
            "--calls",
            "60",
            "--days",
            "5",
            "--rate-limits",
            "heavy=4/1s,medium=300/1s,light=300/1s,auth=50/1s",
        ) as e,
        mounted(e, tmp_path) as m,
    ):
        files = recordings(m.path)
        assert len(files) >= 20
        r = m.rcfs("prefetch", str(m.path), timeout=60)
        assert r.returncode == 0 and f"{len(files)} recordings queued" in r.stdout, r.stdout
        newest = files[-1]  # the last in the prefetch queue
        t0 = time.monotonic()
        assert newest.read_bytes() == e.content(rec_id(newest))
        elapsed = time.monotonic() - t0
        pf = m.status()["prefetch"]
        print(f"interactive read during prefetch: {elapsed:.2f} s; prefetch {pf}")
        assert pf["running"] and pf["done"] < len(files) - 4, pf
        assert elapsed < 3.0, f"an interactive read waited {elapsed:.1f} s behind the prefetch"
        wait_for(lambda: not m.status()["prefetch"]["running"], 60, "the prefetch to finish")
        assert e.stats()["throttled"] == 0
        assert m.status()["prefetch"]["done"] == len(files)
