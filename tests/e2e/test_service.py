"""rcfs as a system service: mount(8) and fstab, sd_notify, an offline start.

Real tools only: `mount -t fuse.rcfs` runs /sbin/mount.fuse3, which runs
`rcfs SOURCE MOUNTPOINT -o OPTIONS` through /bin/sh; a plain `umount` ends
the daemon. mount(8) drops the caller's PATH (and HOME, SHELL, LD_*), so the
`rcfs` that `-t fuse.rcfs` runs is the one on /bin/sh's default PATH: the
/usr/local/bin link `scripts/setup` makes as root. That case runs when the
link leads to this checkout's rcfs (CI: always); the same helper call is also
made through `mount -t fuse 'PATH/TO/rcfs#rcfs'` (mount.fuse3's own syntax
for a helper by path) and by running mount.fuse3 directly with a PATH that
finds this rcfs, neither of which depends on the link.

Every mount is unmounted and every process reaped in `finally`; every wait
is bounded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rcfs.emulator.testing import client_env
from rcfs.registry import record_path

from .conftest import (
    FAST,
    EmulatorProc,
    is_mounted,
    mounted,
    rcfs_env,
    require_fuse,
    run_emulator,
    unmount,
    wait_for,
)

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(300)]

VENV_RCFS = Path(sys.executable).parent / "rcfs"
SH_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs a command as a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so that the
# daemon `rcfs` leaves behind when its parent returns is re-parented to it and its
# exit status can be read: prints {"rc", "out"} for the command, then
# {"pid", "status"} for every orphan it reaps, until none is left.
SUBREAPER = r"""
import ctypes, json, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": r.returncode, "out": r.stdout + r.stderr}), flush=True)
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    print(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def recordings(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".mp3", ".wav"))


def listdir_within(path: Path, seconds: float) -> list[str]:
    """os.listdir, failing the test (not hanging it) if the mount does not answer."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(os.listdir, path).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def write_config(emu: EmulatorProc, path: Path) -> Path:
    keys = [("RC_SERVER_URL", "server_url"), ("RC_MEDIA_URL", "media_url"),
            ("RC_APP_CLIENT_ID", "client_id"), ("RC_APP_CLIENT_SECRET", "client_secret"),
            ("RC_USER_JWT", "jwt")]
    path.write_text("".join(f'{k} = "{emu.info[v]}"\n' for k, v in keys))
    path.chmod(0o600)
    return path


def no_credentials_env(emu: EmulatorProc, home: Path) -> dict[str, str]:
    """The test's environment with its state under `home` and no RC_* credentials:
    the mount must take them from config=."""
    return {k: v for k, v in rcfs_env(emu, home).items() if not k.startswith("RC_")}


def daemon_alive(pid: int, mountpoint: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return os.fsencode(mountpoint) in cmdline


def system_rcfs_is_ours() -> bool:
    found = next((Path(d) / "rcfs" for d in SH_DEFAULT_PATH.split(":")
                  if os.access(Path(d) / "rcfs", os.X_OK)), None)
    return found is not None and found.resolve() == VENV_RCFS.resolve()


def helper_command(how: str, mp: Path, options: str, bindir: Path) -> tuple[list[str], dict[str, str]]:
    """The command that mounts `mp` with `options` the `how` way, and extra environment."""
    if how == "mount -t fuse.rcfs":
        if not system_rcfs_is_ours():
            pytest.skip(f"{SH_DEFAULT_PATH} has no rcfs of this checkout "
                        f"(run scripts/setup as root: it links {VENV_RCFS} into /usr/local/bin)")
        return ["mount", "-t", "fuse.rcfs", "rcfs", str(mp), "-o", options], {}
    if how == "mount -t fuse rcfs#":
        return ["mount", "-t", "fuse", f"{VENV_RCFS}#rcfs", str(mp), "-o", options], {}
    # mount.fuse3 itself, as mount(8) runs it for -t fuse.rcfs, with a PATH that finds
    # this checkout's rcfs (mount.fuse3 keeps the caller's PATH; mount(8) would not).
    bindir.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (bindir / "rcfs").symlink_to(VENV_RCFS)
    path = f"{bindir}:{os.environ.get('PATH', SH_DEFAULT_PATH)}"
    return ["/sbin/mount.fuse3", "rcfs", str(mp), "-o", options, "-t", "fuse.rcfs"], {"PATH": path}


@pytest.mark.parametrize("how", ["mount -t fuse.rcfs", "mount -t fuse rcfs#", "mount.fuse3"])
def test_mount_helper_options_and_plain_umount(how: str, emulator: EmulatorProc, tmp_path: Path) -> None:
    """`mount ... -o since=,tz=,log_file=,config=,...` serves the tree with those options
    (fstab's and systemd's own options ignored); a plain `umount` ends the daemon: it
    exits 0 and removes its registry record."""
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    log_file = tmp_path / "daemon.log"
    config = write_config(emulator, tmp_path / "creds.toml")
    env = no_credentials_env(emulator, tmp_path)
    options = (f"since=12d,tz=Asia/Kolkata,log_file={log_file},config={config},cache_size=50M,"
               "poll_interval=600,_netdev,nofail,x-systemd.automount,x-systemd.idle-timeout=0,noatime")
    cmd, extra = helper_command(how, mp, options, tmp_path / "bin")
    wrapper = subprocess.Popen([sys.executable, "-c", SUBREAPER, *cmd], env={**env, **extra},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    try:
        assert wrapper.stdout is not None
        started = time.monotonic()
        first = json.loads(wrapper.stdout.readline() or '{"rc": "no output"}')
        assert first["rc"] == 0, first
        assert time.monotonic() - started < 90
        assert is_mounted(mp), "the helper returned before the tree was mounted"
        # Served and listable the moment mount(8) returns.
        years = listdir_within(mp, 30)
        assert years and all(y.isdigit() for y in years), years
        status = json.loads((mp / ".rcfs" / "status.json").read_bytes())
        pid = int(status["pid"])
        # since=12d: the window starts 12 days ago.
        since = datetime.fromisoformat(status["index"]["progress"]["since"].replace("Z", "+00:00"))
        assert abs(since - (datetime.now(UTC) - timedelta(days=12))) < timedelta(minutes=5)
        # tz=Asia/Kolkata: a name's HHMMSS and its day are the call's start in that zone.
        files = recordings(mp)
        assert files
        start = datetime.fromisoformat(
            os.getxattr(files[0], "user.rc.start_time").decode().replace("Z", "+00:00"))
        local = start.astimezone(ZoneInfo("Asia/Kolkata"))
        assert files[0].name.startswith(local.strftime("%H%M%S_")), (files[0], local)
        assert files[0].parent.relative_to(mp).parts == (f"{local:%Y}", f"{local:%m}", f"{local:%d}")
        # log_file= and config= (no RC_* variable in the environment).
        assert log_file.exists() and "indexed" in log_file.read_text()
        record = record_path(tmp_path / "state" / "rcfs", os.path.realpath(mp))
        assert record.exists()

        r = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        reaped = json.loads(wrapper.stdout.readline() or "{}")
        assert reaped.get("pid") == pid and reaped.get("status") == 0, reaped
        assert not daemon_alive(pid, mp)
        assert not record.exists(), "the daemon left its registry record behind"
        assert "was unmounted" in log_file.read_text()
        assert wrapper.wait(30) == 0
    finally:
        if is_mounted(mp):
            subprocess.run(["umount", "-l", str(mp)], check=False, capture_output=True)
        if pid is not None and daemon_alive(pid, mp):
            os.kill(pid, signal.SIGTERM)
        if wrapper.poll() is None:
            wrapper.kill()
        wrapper.wait(30)
        assert not is_mounted(mp)


def test_unknown_option_fails_with_one_line(emulator: EmulatorProc, tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = rcfs_env(emulator, tmp_path)
    for cmd in (["mount", "-t", "fuse", f"{VENV_RCFS}#rcfs", str(mp), "-o", "since=3d,cache_sise=5G"],
                [str(VENV_RCFS), "rcfs", str(mp), "-o", "rw,since=3d,cache_sise=5G,dev,suid"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (cmd, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "unknown mount option 'cache_sise'" in lines[0] and "cache_size" in lines[0]
        assert not is_mounted(mp)


# -- systemd: sd_notify ------------------------------------------------------------


@contextlib.contextmanager
def notify_socket(tmp: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(tmp / "notify.sock"))
        yield sock
    finally:
        sock.close()


def receive(sock: socket.socket, timeout: float) -> dict[str, str] | None:
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return None
    return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)


def test_sd_notify_ready_only_when_listable_then_stopping(emulator: EmulatorProc, tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "mount.log"
    with notify_socket(tmp_path) as sock:
        env = {**rcfs_env(emulator, tmp_path), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "rcfs", "mount", str(mp), "--foreground", "--tz", "UTC",
             "--since", "40d", "--log-file", str(log)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            before: list[dict[str, str]] = []
            ready = None
            deadline = time.monotonic() + 120
            while ready is None:
                assert time.monotonic() < deadline, f"no READY=1 in 120 s; got {before}"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                msg = receive(sock, 1.0)
                if msg is None:
                    continue
                if msg.get("READY") == "1":
                    # At this very moment the tree must answer.
                    assert is_mounted(mp)
                    years = listdir_within(mp, 10)
                    ready = msg
                else:
                    before.append(msg)
            assert years and all(y.isdigit() for y in years), years
            day = recordings(mp)[0].parent
            assert any(n.endswith(".mp3") for n in listdir_within(day, 10))
            assert "serving" in ready.get("STATUS", ""), ready
            assert any("index" in m.get("STATUS", "") for m in before), before
            assert not any("STOPPING" in m or "READY" in m for m in before)

            proc.send_signal(signal.SIGTERM)
            stopping = None
            deadline = time.monotonic() + 30
            while stopping is None and time.monotonic() < deadline:
                msg = receive(sock, 1.0)
                if msg is not None and msg.get("STOPPING") == "1":
                    stopping = msg
                assert msg is None or msg.get("READY") is None, "READY=1 sent twice"
            assert stopping is not None, "no STOPPING=1 after SIGTERM"
            assert proc.wait(30) == 0
            assert not is_mounted(mp)
        finally:
            unmount(mp, proc)


def test_sd_notify_from_a_daemonizing_mount_names_the_daemon(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    """Type=notify with a daemonizing `rcfs mount`: the parent hands over with MAINPID."""
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    with notify_socket(tmp_path) as sock:
        env = {**rcfs_env(emulator, tmp_path), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        try:
            r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(mp), "--since", "40d"],
                               env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            msg = receive(sock, 10)
            assert msg is not None and msg.get("READY") == "1", msg
            pid = json.loads((mp / ".rcfs" / "status.json").read_bytes())["pid"]
            assert msg.get("MAINPID") == str(pid)
            assert receive(sock, 0.5) is None, "the daemon itself must not notify"
        finally:
            subprocess.run([sys.executable, "-m", "rcfs", "umount", str(mp)], env=env,
                           capture_output=True, timeout=60)
            if is_mounted(mp):
                subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)
        assert not is_mounted(mp)


# -- offline start -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offline_start_serves_the_index_then_reconnects(tmp_path: Path) -> None:
    """No network at start: a mount with an earlier index comes up from it (listings,
    cached files), says so in its status, and connects when the server is back."""
    require_fuse()
    ports = ["--port", str(free_port()), "--media-port", str(free_port())]
    account = ["--seed", "23", "--calls", "40", "--days", "8", "--rate-limits", FAST, *ports]
    with run_emulator(*account) as emu:
        env_emu = emu
        with mounted(emu, tmp_path) as m:
            files = recordings(m.path)
            assert len(files) > 5
            cached = files[-1]
            cached_bytes = cached.read_bytes()
            assert cached_bytes == emu.content(cached.stem.rsplit("_", 1)[1])
            day = cached.parent.relative_to(m.path)
            listing = sorted(os.listdir(m.path / day))
            uncached_rel = files[0].relative_to(m.path)  # nothing else was read
    # The emulator is gone: its ports refuse connections.
    started = time.monotonic()
    with mounted(env_emu, tmp_path, name="again") as m:
        assert time.monotonic() - started < 60, "the offline start waited too long"
        assert sorted(listdir_within(m.path / day, 30)) == listing
        assert (m.path / day / cached.name).read_bytes() == cached_bytes
        status = m.status()
        assert status["connection"]["online"] is False, status["connection"]
        assert any("offline" in e["cause"] for e in status["errors"]), status["errors"]
        assert (status["index"]["progress"]["error"] or "").startswith("offline"), status["index"]
        assert "OFFLINE" in m.rcfs("status", str(m.path)).stdout
        # An uncached recording cannot be fetched: an error, not a hang.
        t0 = time.monotonic()
        with pytest.raises(OSError) as failed:
            (m.path / uncached_rel).read_bytes()
        assert failed.value.errno in (errno.EIO, errno.EACCES), failed.value
        assert time.monotonic() - t0 < 120

        # The server comes back on the same ports: rcfs connects again.
        with run_emulator(*account):
            r = m.rcfs("refresh", str(m.path), timeout=180, check=False)
            assert r.returncode == 0, r.stderr
            wait_for(lambda: m.status()["connection"]["online"], 30, "the mount to be online")
            assert (m.path / uncached_rel).read_bytes()


def test_first_mount_without_the_network_fails_with_one_line(tmp_path: Path) -> None:
    require_fuse()
    mp = tmp_path / "mnt"
    mp.mkdir()
    port = free_port()
    info: dict[str, Any] = {"server_url": f"http://127.0.0.1:{port}",
                            "media_url": f"http://127.0.0.1:{port}", "client_id": "id",
                            "client_secret": "secret-value-x", "jwt": "jwt-value-that-is-long"}
    env = client_env(info, tmp_path)
    r = subprocess.run([sys.executable, "-m", "rcfs", "mount", str(mp), "--since", "3d"],
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot reach RingCentral" in lines[0] and "first mount needs the network" in lines[0]
    assert not is_mounted(mp)
