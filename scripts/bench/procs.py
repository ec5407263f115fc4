"""Processes and mounts the benchmark starts, and the promise to end every one of them.

Everything is a direct child started with `subprocess.Popen` and recorded in
`REAPER` before anything can fail; `REAPER.cleanup()` (run by `atexit`, by
SIGTERM/SIGINT/SIGHUP and by the `finally` of every user) unmounts what is
still mounted and terminates, then kills, each child by its PID. Nothing here
ever signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from rcfs.emulator.testing import client_env

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
HERE = Path(__file__).resolve().parent
# Generous limits for everything that is not about rate limits: the emulator
# still sends the headers, which rcfs follows (with "off" it would fall back
# to RingCentral's defaults, 10 Heavy requests a minute).
FAST = "heavy=100000/1s,medium=100000/1s,light=100000/1s,auth=100000/1s"


def iso(dt: datetime) -> str:
    """The call log's time format, for the emulator's `add_calls` and `long`."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Reaper:
    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[Any]] = {}
        self.mounts: set[Path] = set()
        self.scratch: list[Path] = []  # removed last, once nothing is mounted in them
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        import atexit

        atexit.register(self.cleanup)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        print(f"\nbench: {signal.Signals(signum).name}: cleaning up", file=sys.stderr, flush=True)
        self.cleanup()
        os._exit(128 + signum)

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kw)
        self.procs[proc.pid] = proc
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.pop(proc.pid, None)

    def unmount(self, path: Path) -> None:
        if is_mounted(path):
            subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)
        self.mounts.discard(path)

    def cleanup(self) -> None:
        for proc in list(self.procs.values()):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=10)
        for path in list(self.mounts):
            with contextlib.suppress(Exception):
                self.unmount(path)
        if not self.mounts:
            for path in self.scratch:
                shutil.rmtree(path, ignore_errors=True)
            self.scratch.clear()


REAPER = Reaper()


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


# rcfs's default --read-ahead. The passthrough and rclone get it too, like for like:
# every FUSE mount's backing device reads 128 KiB ahead unless told otherwise, and
# that bounds the size of the reads the kernel sends any of them.
READ_AHEAD_KB = 1024


def read_ahead_file(mp: Path) -> Path:
    dev = os.stat(mp).st_dev  # a client's stat: the mount has had FUSE_INIT's reply after it
    return Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")


def set_read_ahead(mp: Path) -> None:
    read_ahead_file(mp).write_text(str(READ_AHEAD_KB))


def wait_read_ahead(mp: Path, timeout: float = 20) -> None:
    """Until rcfs has set its read-ahead (it does once its root answered)."""
    deadline = time.monotonic() + timeout
    while (now := int(read_ahead_file(mp).read_text())) != READ_AHEAD_KB:
        if time.monotonic() > deadline:
            raise RuntimeError(f"rcfs left the read-ahead of {mp} at {now} KiB")
        time.sleep(0.02)


def wait_mounted(path: Path, proc: subprocess.Popen[Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before mounting {path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not mount {path} within {timeout} s")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or (proc.poll() is not None and not sel.select(0)):
                raise RuntimeError("the emulator did not print its info line")
            if sel.select(left):
                chunk = os.read(fd, 1)
                if not chunk:
                    raise RuntimeError("the emulator closed stdout")
                data += chunk
    return data


# -- the emulator -------------------------------------------------------------


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    info: dict[str, str]
    long_ids: list[str]
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = httpx.Client(base_url=self.info["server_url"] + "/__emulator", timeout=120,
                                  trust_env=False)

    def stats(self) -> dict[str, Any]:
        return dict(self.admin.get("/stats").json())

    def reset_stats(self) -> None:
        self.admin.post("/stats/reset").raise_for_status()

    def add_calls(self, count: int, start: str, duration: int) -> list[dict[str, Any]]:
        # Outbound: only inbound calls may carry a second recording on a leg,
        # so `count` calls give exactly `count` recordings.
        r = self.admin.post("/calls", json={"count": count, "startTime": start, "recorded": True,
                                            "duration": duration, "direction": "Outbound"})
        r.raise_for_status()
        return list(r.json()["records"])

    def set_rate_limits(self, limits: dict[str, str]) -> None:
        self.admin.put("/rate-limits", json=limits).raise_for_status()

    def token(self) -> str:
        r = httpx.post(
            self.info["server_url"] + "/restapi/oauth/token",
            auth=(self.info["client_id"], self.info["client_secret"]),
            data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": self.info["jwt"]},
            trust_env=False,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def media_url(self, recording_id: str) -> str:
        return f"{self.info['media_url']}/restapi/v1.0/account/~/recording/{recording_id}/content"

    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def emulator(*args: str, long: Sequence[str] = ()) -> Iterator[Emulator]:
    argv = [PY, str(HERE / "emulator.py"), "--host", "127.0.0.1", "--port", "0", *args]
    for item in long:
        argv += ["--long", item]
    proc = REAPER.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    emu = None
    try:
        info = json.loads(_read_line(proc, 120))
        extra = json.loads(_read_line(proc, 120))
        emu = Emulator(proc, info, extra["long"])
        yield emu
    finally:
        if emu is not None:
            emu.admin.close()
        REAPER.stop(proc)


# -- rcfs ------------------------------------------------------------------------


@dataclass
class RcfsMount:
    path: Path
    proc: subprocess.Popen[bytes]
    home: Path
    mount_seconds: float

    @property
    def pid(self) -> int:
        return self.proc.pid


def rcfs_env(emu: Emulator, home: Path) -> dict[str, str]:
    return client_env(emu.info, home)


@contextlib.contextmanager
def rcfs_mount(emu: Emulator, home: Path, mp: Path, since: str, *extra: str,
               timeout: float = 600) -> Iterator[RcfsMount]:
    """`python -m rcfs mount --foreground` as a child; unmounted and reaped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    mp.mkdir(parents=True, exist_ok=True)
    log = home / "mount.log"
    REAPER.mounts.add(mp)
    started = time.monotonic()
    proc = REAPER.spawn(
        [PY, "-m", "rcfs", "mount", str(mp), "--foreground", "--tz", "UTC", "--since", since,
         "--log-file", str(log), "--log-level", "WARNING", *extra],
        env=rcfs_env(emu, home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )
    try:
        wait_mounted(mp, proc, timeout, "rcfs mount")
        yield RcfsMount(mp, proc, home, time.monotonic() - started)
    finally:
        REAPER.stop(proc)
        REAPER.unmount(mp)


def wait_indexed(mp: Path, timeout: float = 1800) -> float:
    """Seconds until the mount's status says its index is complete."""
    start = time.monotonic()
    while True:
        st = json.loads((mp / ".rcfs" / "status.json").read_bytes())
        if st["index"]["progress"]["complete"]:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the index of {mp} was not complete after {timeout} s")
        time.sleep(0.05)


# -- the minimal passthrough and rclone -----------------------------------------


@dataclass
class Mounted:
    path: Path
    proc: subprocess.Popen[Any]

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def passthrough_mount(source: Path, mp: Path) -> Iterator[Mounted]:
    mp.mkdir(parents=True, exist_ok=True)
    REAPER.mounts.add(mp)
    proc = REAPER.spawn([PY, str(HERE / "passthrough.py"), str(source), str(mp)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_mounted(mp, proc, 60, "passthrough")
        set_read_ahead(mp)
        yield Mounted(mp, proc)
    finally:
        REAPER.stop(proc)
        REAPER.unmount(mp)


def ensure_rclone() -> str:
    found = shutil.which("rclone")
    if found:
        return found
    print("bench: installing rclone (apt-get install -y rclone)", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "rclone"], check=False, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = shutil.which("rclone")
    if not found:
        subprocess.run(["apt-get", "update"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "rclone"], check=True, env=env, capture_output=True)
        found = shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone is not installed and apt-get could not install it")
    return found


def rclone_version() -> str:
    out = subprocess.run(["rclone", "version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "?"


@contextlib.contextmanager
def rclone_serve(root: Path) -> Iterator[str]:
    """`rclone serve http ROOT` on loopback (Go: Range, keep-alive, HTML listings)."""
    port = free_port()
    proc = REAPER.spawn(["rclone", "serve", "http", str(root), "--addr", f"127.0.0.1:{port}",
                         "--read-only", "--config", "/dev/null"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=2, trust_env=False)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("rclone serve http did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        REAPER.stop(proc)


@contextlib.contextmanager
def rclone_mount(url: str, mp: Path, cache_dir: Path) -> Iterator[Mounted]:
    """`rclone mount :http:` with the full VFS cache, read-only, default timeouts."""
    mp.mkdir(parents=True, exist_ok=True)
    REAPER.mounts.add(mp)
    proc = REAPER.spawn(
        ["rclone", "mount", ":http:", str(mp), "--http-url", url, "--vfs-cache-mode", "full",
         "--cache-dir", str(cache_dir), "--read-only", "--config", "/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_mounted(mp, proc, 60, "rclone mount")
        set_read_ahead(mp)
        yield Mounted(mp, proc)
    finally:
        REAPER.stop(proc)
        REAPER.unmount(mp)


# -- /proc ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
