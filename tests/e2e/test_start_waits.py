"""What a new user sees while rcfs waits at start (issue: new users): it says what it
waits for within a second or two, gives up in bounded time with a reason that says
something, and Ctrl-C stops a mount that is not served yet."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import FAST, is_mounted, require_fuse, run_emulator

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(180)]


def env_for(tmp: Path, server: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "RINGCENTRAL_"))}
    env.update(RC_SERVER_URL=server, RC_MEDIA_URL=server, RC_APP_CLIENT_ID="id",
               RC_APP_CLIENT_SECRET="secret", RC_USER_JWT="jwt", XDG_STATE_HOME=str(tmp / "state"),
               XDG_CACHE_HOME=str(tmp / "cache"), XDG_CONFIG_HOME=str(tmp / "config"))
    return env


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", ["closed port", "never answers"])
def test_start_says_what_it_waits_for_and_gives_up_with_a_reason(tmp_path: Path, kind: str) -> None:
    require_fuse()
    listener = None
    if kind == "closed port":
        port = closed_port()
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts (the kernel does), never answers
        port = listener.getsockname()[1]
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcfs", "mount", str(mp), "--foreground", "--start-timeout", "8"],
        env=env_for(tmp_path, f"http://127.0.0.1:{port}"), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[tuple[float, str]] = []
        t0 = time.monotonic()

        def collect() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append((time.monotonic() - t0, line.rstrip("\n")))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        code = proc.wait(60)
        took = time.monotonic() - t0
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if listener is not None:
            listener.close()
    text = "\n".join(f"{t:5.1f} {line}" for t, line in lines)
    assert code == 1, text
    assert took < 30, text  # bounded: --start-timeout 8, plus the start of Python
    assert lines and lines[0][0] < 3 and "connecting to http://127.0.0.1" in lines[0][1], text
    last = lines[-1][1]
    assert last.startswith("rcfs: cannot reach RingCentral"), text
    reason = "connection refused" if kind == "closed port" else "no answer"
    assert reason in last, text
    assert not last.rstrip().endswith(":"), text  # never an empty reason
    if kind == "closed port":  # each retry is said as it happens
        assert any("retrying in" in line for _, line in lines), text


def test_ctrl_c_stops_a_backgrounding_mount_before_it_is_served(tmp_path: Path) -> None:
    """Ctrl-C in the terminal while `rcfs mount` waits: the daemon stops too, and says so."""
    require_fuse()
    with run_emulator("--seed", "91", "--calls", "200", "--days", "10", "--rate-limits", FAST,
                      "--faults", "latency=3s") as emu:
        from rcfs.emulator.testing import client_env

        mp = tmp_path / "mnt"
        mp.mkdir()
        pid, fd = pty.fork()
        if pid == 0:  # the child: rcfs mount on a terminal
            env = client_env(emu.info, tmp_path)
            os.execve(sys.executable, [sys.executable, "-m", "rcfs", "mount", str(mp)], env)
        output = b""
        try:
            deadline = time.monotonic() + 30
            while b"connecting to" not in output and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    output += os.read(fd, 4096)
            assert b"connecting to" in output, output
            os.write(fd, b"\x03")  # Ctrl-C, through the terminal
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    try:
                        chunk = os.read(fd, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    output += chunk
            _, status = os.waitpid(pid, 0)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 130, output
        assert b"interrupted" in output and b"nothing is mounted" in output, output
        time.sleep(5)  # the daemon would have mounted by now: it must not
        assert not is_mounted(mp)
