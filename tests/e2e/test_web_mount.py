"""The web player wired into the real daemon (issue: the web player): `rcfs mount
--web`, `rcfs serve --web`, sign-in through `rcfs web`, and `rcfs umount` refusing
a busy mount (naming who holds it) unless --lazy."""

from __future__ import annotations

import contextlib
import html
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from .conftest import EmulatorProc, is_mounted, mounted, rcfs_env, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(180)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign_in(url: str) -> httpx.Client:
    base = url.split("/signin", 1)[0]
    http = httpx.Client(base_url=base, trust_env=False, timeout=30)
    r = http.get(url)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    assert http.cookies, "no session cookie"
    return http


def first_audio_link(http: httpx.Client) -> tuple[str, str]:
    """(day path, audio URL) of the first recording of the newest day listed."""
    home = http.get("/")
    assert home.status_code == 200
    days = re.findall(r'href="(/day/\d{4}/\d\d/\d\d)"', home.text)
    assert days, home.text[:2000]
    day = http.get(days[0])
    assert day.status_code == 200
    audio = [html.unescape(m) for m in re.findall(r'<audio [^>]*src="([^"]+)"', day.text)]
    assert audio, day.text[:2000]
    return days[0].removeprefix("/day/"), audio[0]


def test_mount_with_web_serves_the_mounts_bytes_with_range(emulator: EmulatorProc,
                                                          tmp_path: Path) -> None:
    port = free_port()
    with mounted(emulator, tmp_path, "--web", f"127.0.0.1:{port}") as m:
        assert m.status()["web"]["url"] == f"http://127.0.0.1:{port}/"
        # Nobody gets in without signing in.
        anon = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=30)
        assert anon.status_code == 401
        url = m.rcfs("web", str(m.path)).stdout.strip()
        assert url.startswith(f"http://127.0.0.1:{port}/signin?")
        with contextlib.closing(sign_in(url)) as http:
            day, audio = first_audio_link(http)
            name = urllib.parse.unquote(audio.split("?", 1)[0].rsplit("/", 1)[1])
            path = m.path / day / name
            recording_id = os.getxattr(path, "user.rc.recording_id").decode()
            data = emulator.content(recording_id)
            r = http.get(audio, headers={"Range": "bytes=1000-1999"})
            assert r.status_code == 206, r.text
            assert r.content == data[1000:2000]
            assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
            # The same bytes through the mount, and the signed link works without the cookie.
            assert path.read_bytes() == data
            r = httpx.get(http.base_url.join(audio), trust_env=False, timeout=30)
            assert r.status_code == 200 and r.content == data
            # A used sign-in link does not work twice.
            assert httpx.get(url, trust_env=False, timeout=30).status_code != 303
        shown = m.rcfs("status", str(m.path)).stdout
        assert f"web player  http://127.0.0.1:{port}/" in shown
        assert "signin?" not in m.log_text()  # the one-time link is printed, never logged
        for token in (emulator.info["jwt"], emulator.info["client_secret"]):
            assert token not in m.log_text()


def test_web_without_the_web_player_says_how_to_enable_it(emulator: EmulatorProc,
                                                         tmp_path: Path) -> None:
    with mounted(emulator, tmp_path) as m:
        r = m.rcfs("web", str(m.path), check=False)
        assert r.returncode == 1
        assert "--web HOST:PORT" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_serve_runs_the_daemon_without_fuse_and_web_finds_it(emulator: EmulatorProc,
                                                            tmp_path: Path) -> None:
    port = free_port()
    env = rcfs_env(emulator, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcfs", "serve", "--web", f"127.0.0.1:{port}", "--tz", "UTC",
         "--since", "40d"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        def sign_in_url() -> str:
            r = subprocess.run([sys.executable, "-m", "rcfs", "web"], env=env,
                               capture_output=True, text=True, timeout=30)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return r.stdout.strip() if r.returncode == 0 else ""

        wait_for(lambda: sign_in_url() != "", 60, "rcfs web to find the rcfs serve daemon")
        with contextlib.closing(sign_in(sign_in_url())) as http:
            _day, audio = first_audio_link(http)
            r = http.get(audio, headers={"Range": "bytes=0-99"})
            assert r.status_code == 206 and len(r.content) == 100
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "sign in with: rcfs web" in err
        assert "signin?" not in err  # the one-time link is never logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_with_nothing_to_serve_is_one_line(emulator: EmulatorProc, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "rcfs", "serve"], env=rcfs_env(emulator, tmp_path),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith("rcfs: rcfs serve needs something to serve")


def test_umount_refuses_a_busy_mount_naming_the_process_unless_lazy(emulator: EmulatorProc,
                                                                    tmp_path: Path) -> None:
    with mounted(emulator, tmp_path) as m:
        f = next(p for p in m.path.rglob("*.mp3"))
        holder = subprocess.Popen([sys.executable, "-c",
                                   "import sys, time; f = open(sys.argv[1], 'rb'); f.read(10); "
                                   "print('open', flush=True); time.sleep(120)", str(f)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "open\n"
            r = m.rcfs("umount", str(m.path), check=False)
            assert r.returncode == 1
            assert f"({holder.pid})" in r.stderr and "--lazy" in r.stderr
            assert is_mounted(m.path)
            r = m.rcfs("umount", "--lazy", str(m.path), check=False)
            assert r.returncode == 0, r.stderr
            wait_for(lambda: not is_mounted(m.path), 20, "the lazy unmount")
        finally:
            holder.kill()
            holder.wait(10)
        assert m.proc is not None
        deadline = time.monotonic() + 30
        while m.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.proc.poll() is not None, "the daemon did not exit after umount --lazy"
