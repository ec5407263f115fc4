"""Several mounts on one account sharing one session and one budget through Redis.

Three real mounts, each with its own state and cache directory, one emulator
user at heavy=10/1s, one real `redis-server` started by the test (127.0.0.1,
a free port, stopped by PID). Three simultaneous `rsync -a` of the whole tree
must finish byte-exact with zero 429s, the combined Heavy rate within 10% of
the limit, and one JWT login in all. The same with a token that expires
every 3 s (refreshes serialized: no request with a superseded token), and
with Redis killed mid-run and restarted on the same port.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcfs.api.shared.backend import namespace
from rcfs.config import Credentials
from tests.e2e.conftest import EmulatorProc, Mount, mounted, run_emulator, wait_for
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(420)]

LIMITS = "heavy=10/1s,medium=300/1s,light=300/1s,auth=50/1s"
HEAVY_PER_S = 10.0
CALLS = ("--seed", "12", "--calls", "150", "--days", "8")
RID = re.compile(r"_(\d+)\.(mp3|wav)$")


@contextlib.contextmanager
def three_mounts(emu: EmulatorProc, tmp: Path, redis: RedisServer,
                 *extra: str) -> Iterator[list[Mount]]:
    with contextlib.ExitStack() as stack:
        mounts = []
        starters: list[threading.Thread] = []
        results: dict[int, Any] = {}

        def start(i: int) -> None:
            home = tmp / f"m{i}"
            home.mkdir()
            try:
                results[i] = stack.enter_context(
                    mounted(emu, home, "--redis", redis.url, "--since", "10d",
                            "--poll-interval", "3600", *extra, name="mnt"))
            except BaseException as exc:  # reported below
                results[i] = exc

        # Started together, as three machines booting at once would.
        for i in range(3):
            starters.append(threading.Thread(target=start, args=(i,)))
            starters[-1].start()
        for t in starters:
            t.join(180)
        for i in range(3):
            if isinstance(results.get(i), BaseException):
                raise AssertionError(f"mount {i} failed: {results[i]}")
            mounts.append(results[i])
        yield mounts


def wait_indexed(mounts: list[Mount]) -> None:
    for m in mounts:
        wait_for(lambda m=m: (m.status().get("index", {}).get("progress") or {}).get("complete"),
                 120, f"{m.path} indexed")


def rsync_all(mounts: list[Mount], tmp: Path, during: Any = None) -> tuple[float, list[Path]]:
    dests = [tmp / f"copy{i}" for i in range(len(mounts))]
    t0 = time.monotonic()
    procs = [subprocess.Popen(["rsync", "-a", f"{m.path}/", f"{d}/"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for m, d in zip(mounts, dests, strict=True)]
    try:
        if during is not None:
            during()
        for p in procs:
            _out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return time.monotonic() - t0, dests


def check_copies(emu: EmulatorProc, dests: list[Path]) -> int:
    """Every copy byte-exact against the emulator's own content; the number of recordings."""
    names = None
    for d in dests:
        files = sorted(p.relative_to(d) for p in d.rglob("*") if RID.search(p.name))
        assert files, f"nothing copied to {d}"
        if names is None:
            names = files
        assert files == names, f"{d} has other files than the first copy"
        for rel in files:
            m = RID.search(rel.name)
            assert m is not None
            assert (d / rel).read_bytes() == emu.content(m.group(1)), f"{d / rel} differs"
    return len(names or [])


def sent_with_401(mounts: list[Mount]) -> int:
    """Requests answered 401 (a token used after it was superseded), from the DEBUG logs."""
    return sum(len(re.findall(r" -> 401\b", m.log_text())) for m in mounts)


def shared_check(emu: EmulatorProc, mounts: list[Mount], tmp: Path, *,
                 during: Any = None) -> dict[str, Any]:
    wait_indexed(mounts)
    emu.reset_stats()
    elapsed, dests = rsync_all(mounts, tmp, during)
    stats = emu.stats()
    n = check_copies(emu, dests)
    heavy = stats["groups"].get("Heavy", {}).get("requests", 0)
    bound = 1.15 * heavy / HEAVY_PER_S
    result = {"recordings": n, "elapsed": round(elapsed, 2), "heavy": heavy,
              "bound": round(bound, 2), "ratio": round(elapsed / (heavy / HEAVY_PER_S), 3),
              "throttled": stats["throttled"], "getToken": stats["requests"].get("getToken", 0),
              "status_401": sent_with_401(mounts)}
    result["margins"] = [m.status()["rate_limits"]["Heavy"].get("margin_s") for m in mounts]
    print("shared:", json.dumps(result))
    assert heavy >= 3 * n, stats  # every mount downloaded every recording once at least
    return result


def test_three_mounts_share_one_budget_and_one_login(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, run_emulator(*CALLS, "--rate-limits", LIMITS) as emu, \
            three_mounts(emu, tmp_path, redis) as mounts:
        logins = emu.stats()["requests"].get("getToken", 0)
        assert logins == 1, f"{logins} getToken requests for three mounts (one JWT login wanted)"
        r = shared_check(emu, mounts, tmp_path)
        assert r["throttled"] == 0, r
        assert r["elapsed"] <= r["bound"], r
        assert r["getToken"] == 0, r  # the copies needed no other login or refresh
        st = [m.status() for m in mounts]
        assert sum(s["auth"]["logins"] for s in st) == 1
        block = st[0]["redis"]
        assert block["connected"] and block["peers_seen"] == 3, block
        assert "@" not in block["url"] and block["url"].startswith("redis://127.0.0.1:")
        assert block["session"]["present"] and block["session"]["logins"] == 1
        holders = [s["redis"]["session"]["holder_is_me"] for s in st]
        assert holders.count(True) == 1, holders
        assert block["budget"]["Heavy"]["limit"] == 10, block["budget"]
        assert {p["label"] for p in block["peers"]} == {str(m.path) for m in mounts}
        for s in st:
            assert s["rate_limits"]["Heavy"]["budget"] == "shared"


def test_short_lived_tokens_refresh_one_at_a_time(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, \
            run_emulator(*CALLS, "--rate-limits", LIMITS, "--faults", "token_ttl=3s") as emu, \
            three_mounts(emu, tmp_path, redis) as mounts:
        r = shared_check(emu, mounts, tmp_path)
        # The mounts go on refreshing (every ~2.4 s), and status shows the session as of
        # the last heartbeat, the mounts' own counts live: the two agree once a
        # heartbeat has followed the last refresh, and must then.
        deadline = time.monotonic() + 15
        while True:
            st = [m.status() for m in mounts]
            session = st[0]["redis"]["session"]
            refreshes = sum(s["auth"]["refreshes"] for s in st)
            if session["refreshes"] == refreshes or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        logins = sum(s["auth"]["logins"] for s in st)
        print("token_ttl=3s:", json.dumps({"refreshes": refreshes, "logins": logins,
                                           "401": r["status_401"]}))
        assert r["throttled"] == 0, r
        assert r["elapsed"] <= r["bound"], r
        assert r["elapsed"] / 3.0 - 2 <= refreshes, (r, refreshes)  # a refresh every ~2.4 s
        # One refresh per token lifetime for all three, not one per mount.
        assert refreshes <= r["elapsed"] / 2.0 + 2, (r, refreshes)
        assert logins == 1 and session["logins"] == 1, (logins, session)
        assert session["refreshes"] == refreshes
        # No request ever went out with a superseded (or expired) token.
        assert r["status_401"] == 0, r
        assert all(s["redis"]["session"]["this_process"]["refused_401"] == 0 for s in st)
        # Never a token in a log line, a status document or Redis in clear.
        creds = Credentials(server_url=emu.info["server_url"], client_id=emu.info["client_id"],
                            client_secret=emu.info["client_secret"], jwt=emu.info["jwt"],
                            media_url=emu.info["media_url"])
        dump = redis.command("HGETALL", f"{namespace(creds)}:session").decode("latin-1")
        assert "blob" in dump
        texts = [m.log_text() for m in mounts] + [json.dumps(s) for s in st] + [dump]
        secrets = [*emu.admin.get("/tokens").json()["tokens"], emu.info["jwt"],
                   emu.info["client_secret"]]
        assert len(secrets) > 2 * refreshes
        for secret in secrets:
            assert not any(secret in text for text in texts)


def test_redis_killed_mid_run_and_restarted(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, run_emulator(*CALLS, "--rate-limits", LIMITS) as emu, \
            three_mounts(emu, tmp_path, redis) as mounts:
        seen: dict[str, Any] = {}

        def outage() -> None:
            time.sleep(4)
            redis.kill()
            # All three notice and fall back; status says so.
            wait_for(lambda: all(not m.status()["redis"]["connected"] for m in mounts), 20,
                     "every mount to notice the lost Redis")
            seen["lost"] = mounts[0].status()["redis"]
            time.sleep(3)
            redis.start()
            wait_for(lambda: all(m.status()["redis"]["connected"] for m in mounts), 30,
                     "every mount to reconnect")
            seen["back"] = mounts[0].status()["redis"]

        r = shared_check(emu, mounts, tmp_path, during=outage)
        lost, back = seen["lost"], seen["back"]
        assert lost["fallback"]["active"] and lost["fallback"]["limits"]["Heavy"] == 3, lost
        assert lost["error"], lost
        assert back["reconnects"] >= 1 and not back["fallback"]["active"], back
        assert r["throttled"] == 0, r  # no 429 storm: not a single one
        assert r["getToken"] == 0, r  # the session survived the outage
        # No hang: the copies go on at close to the limit (the outage costs a window).
        assert r["elapsed"] <= r["bound"] + 5, r
        # Cached files still read while Redis is down (nothing is asked of it for them).
        redis.kill()
        wait_for(lambda: not mounts[1].status()["redis"]["connected"], 20, "mount to notice")
        some = next(p for p in (tmp_path / "copy1").rglob("*.mp3"))
        rel = some.relative_to(tmp_path / "copy1")
        assert (mounts[1].path / rel).read_bytes() == some.read_bytes()
        redis.start()


def test_unreachable_redis_fails_the_mount_with_one_line(tmp_path: Path) -> None:
    from tests.e2e.conftest import rcfs_env, require_fuse
    from tests.redis_server import free_port

    require_fuse()
    with run_emulator(*CALLS, "--rate-limits", LIMITS) as emu:
        mp = tmp_path / "mnt"
        mp.mkdir()
        env = rcfs_env(emu, tmp_path)
        env["RCFS_REDIS_URL"] = f"redis://:hunter2pw@127.0.0.1:{free_port()}/0"
        r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(mp)],
                           env=env, capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert lines[0].startswith("rcfs: cannot reach Redis at redis://127.0.0.1:"), lines[0]
        assert "hunter2pw" not in r.stderr
        assert not any(mp.iterdir())
