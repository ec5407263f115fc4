"""Real mounts against the emulator: fixtures that always unmount and reap.

Each mount runs `python -m rcfs mount --foreground` as a direct child, so the
fixture can reap it; a daemonized mount is tested separately. Everything the
fixtures start is ended by PID in `finally`, and a leftover mount is detached.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rcfs.emulator.testing import client_env

REQUIRE_FUSE = os.environ.get("RCFS_REQUIRE_FUSE") == "1"

# Generous but real limits: the emulator sends rate-limit headers, which rcfs
# follows (with "off" it sends none and rcfs keeps RingCentral's defaults).
FAST = "heavy=300/1s,medium=300/1s,light=300/1s,auth=50/1s"


def _fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    return None


def require_fuse() -> None:
    reason = _fuse_unavailable()
    if reason is None:
        return
    if REQUIRE_FUSE:
        pytest.fail(f"FUSE tests must run here (RCFS_REQUIRE_FUSE=1): {reason}")
    print(f"SKIPPED FUSE test: {reason}", file=sys.stderr)
    pytest.skip(reason)


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class EmulatorProc:
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = httpx.Client(base_url=self.info["server_url"] + "/__emulator", timeout=30)

    def stats(self) -> dict[str, Any]:
        return dict(self.admin.get("/stats").json())

    def reset_stats(self) -> None:
        self.admin.post("/stats/reset").raise_for_status()

    def content(self, recording_id: str) -> bytes:
        r = self.admin.get(f"/recordings/{recording_id}/content")
        r.raise_for_status()
        return r.content

    def content_requests(self) -> int:
        return int(self.stats()["requests"].get("readCallRecordingContent", 0))


@contextlib.contextmanager
def run_emulator(*args: str) -> Iterator[EmulatorProc]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcfs", "emulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"emulator exited ({proc.wait(10)}) without printing its JSON line")
        emu = EmulatorProc(proc, json.loads(line))
        yield emu
        emu.admin.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes] | None
    env: dict[str, str]
    log: Path

    def rcfs(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rcfs", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=check,
        )

    def status(self) -> dict[str, Any]:
        return dict(json.loads((self.path / ".rcfs" / "status.json").read_bytes()))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def rcfs_env(emu: EmulatorProc, home: Path) -> dict[str, str]:
    return client_env(emu.info, home)


def unmount(path: Path, proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a mount however it is: SIGTERM the daemon, reap it, detach leftovers."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def mounted(emu: EmulatorProc, tmp: Path, *args: str, name: str = "mnt") -> Iterator[Mount]:
    require_fuse()
    mp = tmp / name
    mp.mkdir()
    env = rcfs_env(emu, tmp)
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcfs", "mount", str(mp), "--foreground", "--tz", "UTC",
         "--since", "40d", "--log-file", str(log), "--log-level", "DEBUG", *args],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not is_mounted(mp):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                logged = log.read_text() if log.exists() else ""
                raise AssertionError(f"rcfs mount exited {proc.returncode}: {err}\n{logged}")
            if time.monotonic() > deadline:
                raise AssertionError("rcfs mount did not serve within 120 s")
            time.sleep(0.05)
        yield Mount(mp, proc, env, log)
    finally:
        unmount(mp, proc)
        assert not is_mounted(mp), f"{mp} still mounted after cleanup"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProc]:
    with run_emulator("--seed", "7", "--calls", "120", "--days", "20", "--rate-limits", FAST) as emu:
        yield emu
