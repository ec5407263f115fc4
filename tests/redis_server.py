"""A real `redis-server` for tests: 127.0.0.1, a free port, started by the test itself.

Never a system service: the server runs as a child of the test (no persistence,
no config file), is stopped by its PID in `finally`, and can be killed and
started again on the same port (`kill()`, `start()`) to test a lost Redis.
Skips the test when `redis-server` is not installed (Debian: `apt-get install
redis-server`; `scripts/setup` installs it), unless RCFS_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE = os.environ.get("RCFS_REQUIRE_REDIS") == "1" or os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes",
             "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not answer within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL (a crash: nothing saved), by PID, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (RESP), the reply's raw bytes: for inspecting keys."""
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"".join(parts))
            time.sleep(0.05)
            return s.recv(1 << 20)


def redis_available() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server; scripts/setup does)"
    return None


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    reason = redis_available()
    if reason is not None:
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)
    workdir = tmp / "redis"
    workdir.mkdir(exist_ok=True)
    server = RedisServer(free_port(), workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
