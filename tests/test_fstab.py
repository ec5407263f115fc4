"""mount(8)'s helper call, sd_notify and the service plumbing, without mounting.

The real `mount -t fuse.rcfs` and systemd-style runs are in tests/e2e/test_service.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rcfs.cli import fstab
from rcfs.cli.options import _add_mount_options, build_parser
from rcfs.config import remember_account, remembered_account
from rcfs.errors import ConfigError
from rcfs.registry import MountEntry
from rcfs.sdnotify import SdNotify


def mount_help_options() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            mount = action.choices["mount"]
            return {o for a in mount._actions for o in a.option_strings
                    if o.startswith("--") and a.help != argparse.SUPPRESS and o != "--help"}
    raise AssertionError("no subcommands")


def test_every_long_mount_option_is_an_o_key() -> None:
    keys = fstab.mount_keys()
    assert {k.option for k in keys.values()} == mount_help_options()
    assert keys["cache_size"] == fstab.Key("--cache-size", True)
    assert keys["allow_other"] == fstab.Key("--allow-other", False)
    assert keys["no_keep_deleted"] == fstab.Key("--no-keep-deleted", False)
    assert keys["config"].takes_value and "ready_fd" not in keys and "help" not in keys


def test_a_new_mount_option_is_a_new_key_with_no_list_to_update() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    _add_mount_options(parser)
    parser.add_argument("--frobnicate-level", default=None)
    parser.add_argument("--frobnicate", action="store_true")
    keys = fstab.mount_keys(parser)
    assert fstab.translate(["frobnicate_level=5%", "frobnicate"], keys) == [
        "--frobnicate-level", "5%", "--frobnicate"]
    assert "cache_min_free" in fstab.mount_keys()  # added to rcfs mount by another change


def test_mount_fuse3_command_line_becomes_rcfs_mount() -> None:
    # As measured: mount(8) + mount.fuse3 pass rw first and dev,suid last.
    argv = ["rcfs", "/mnt/calls", "-o",
            "rw,noatime,relatime,since=90d,tz=Europe/Berlin,cache_size=50G,allow_other,"
            "config=/etc/rcfs/calls.toml,no_keep_deleted,archive,metrics=:9468,exec,suid,dev,dev,suid"]
    assert fstab.is_helper_call(argv)
    assert fstab.to_mount_argv(argv) == [
        "mount", "/mnt/calls", "--since", "90d", "--tz", "Europe/Berlin", "--cache-size", "50G",
        "--allow-other", "--config", "/etc/rcfs/calls.toml", "--no-keep-deleted", "--archive",
        "--metrics", ":9468"]
    # What parses as `rcfs mount` is valid: the values are checked by the mount parser.
    args = build_parser().parse_args(fstab.to_mount_argv(argv))
    assert args.command == "mount" and args.cache_size == 50 * 1024**3 and args.allow_other
    assert args.keep_deleted is False and args.metrics == ("127.0.0.1", 9468)


@pytest.mark.parametrize("argv, expected", [
    (["", "/mnt", "-o", "rw"], ["mount", "/mnt"]),  # mount -t fuse 'rcfs#' (empty source)
    (["/mnt", "-o", "tz=UTC"], ["mount", "/mnt", "--tz", "UTC"]),
    (["rcfs", "/mnt", "-otz=UTC,cache-size=1G"], ["mount", "/mnt", "--tz", "UTC", "--cache-size", "1G"]),
    (["mount", "/mnt", "-o", "since=3d"], ["mount", "/mnt", "--since", "3d"]),
    (["rcfs", "/mnt", "-o", 'log_file="/var/log/a,b.log",uid=0'],
     ["mount", "/mnt", "--log-file", "/var/log/a,b.log", "--uid", "0"]),
    (["rcfs", "/mnt", "-o", r"log_file=/x\,y"], ["mount", "/mnt", "--log-file", "/x,y"]),
    (["rcfs", "/mnt", "-n", "-o", "ro,_netdev,nofail,noauto,auto,user,users,defaults,"
      "x-systemd.automount,x-systemd.requires=network-online.target,comment=systemd.x,"
      "nodev,nosuid,noexec,sync,async,dirsync,lazytime,nodiratime,default_permissions"],
     ["mount", "/mnt"]),
    (["rcfs", "/mnt", "-o", "foreground"], ["mount", "/mnt", "--foreground"]),
    (["rcfs", "/mnt", "-o", "tz=UTC", "-f"], ["mount", "/mnt", "--tz", "UTC", "--foreground"]),
])
def test_helper_forms(argv: list[str], expected: list[str]) -> None:
    assert fstab.is_helper_call(argv)
    assert fstab.to_mount_argv(argv) == expected


@pytest.mark.parametrize("argv", [
    ["mount", "/mnt"], ["status", "/mnt"], ["umount", "/mnt", "-o", "x"], ["mnt"], [], ["--version"],
    ["emulator", "--port", "0"],
])
def test_not_helper_calls(argv: list[str]) -> None:
    assert not fstab.is_helper_call(argv)


@pytest.mark.parametrize("argv, needle", [
    (["rcfs", "/mnt", "-o", "cache_sise=5G"], "unknown mount option 'cache_sise'; did you mean cache_size?"),
    (["rcfs", "/mnt", "-o", "setuid=bob"], "unknown mount option 'setuid'"),
    (["rcfs", "/mnt", "-o", "allow_other=1"], "takes no value"),
    (["rcfs", "/mnt", "-o", "since"], "needs a value"),
    (["rcfs", "/mnt", "-o", 'tz="UTC'], "quote is not closed"),
    (["rcfs", "/mnt", "-o"], "-o needs"),
    (["-o", "tz=UTC"], "got 0 arguments"),
    (["a", "b", "/mnt", "-o", "tz=UTC"], "got 3 arguments"),
    (["rcfs", "/mnt", "-o", "tz=UTC", "--log-level", "DEBUG"], "unknown argument '--log-level'"),
    (["rcfs", "/mnt", "-o", "ready_fd=3"], "unknown mount option 'ready_fd'"),
])
def test_helper_errors_are_one_line(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        fstab.to_mount_argv(argv)
    assert needle in str(err.value) and "\n" not in str(err.value)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rcfs", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_unknown_key_exits_1_with_one_line(tmp_path: Path) -> None:
    r = run("rcfs", str(tmp_path), "-o", "rw,since=3d,bogus=1,dev,suid")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "rcfs: unknown mount option 'bogus' (every long option of rcfs mount is a key: "
        "cache_size=10G, allow_other; see rcfs mount --help)"]


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = run("rcfs", str(tmp_path / "mnt"), "-o", f"config={tmp_path}/nope.toml", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"rcfs: the config file {tmp_path}/nope.toml does not exist (config=, --config)"]


def test_config_option_supplies_the_credentials(tmp_path: Path) -> None:
    """config= is read (here: its refusal of emulator credentials for a real server shows
    it was), with no RC_* variable set."""
    (tmp_path / "mnt").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text('RC_APP_CLIENT_ID = "a"\nRC_APP_CLIENT_SECRET = "b-secret"\n'
                   'RC_USER_JWT = "rcfs-emulator-jwt.x"\n')
    cfg.chmod(0o600)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = run("rcfs", str(tmp_path / "mnt"), "-o", f"config={cfg}", env=env)
    assert r.returncode == 1 and "refusing emulator credentials" in r.stderr, r.stderr


# -- sd_notify ---------------------------------------------------------------------


def test_sd_notify_to_a_path_and_to_the_abstract_namespace(tmp_path: Path) -> None:
    for address in (str(tmp_path / "n.sock"), f"@rcfs-test-{os.getpid()}-{id(tmp_path)}"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
            server.settimeout(5)
            notify = SdNotify.from_env({"NOTIFY_SOCKET": address})
            assert notify is not None
            assert notify.send(READY=1, STATUS="serving\n12 recordings")
            assert server.recv(4096) == b"READY=1\nSTATUS=serving 12 recordings"
            notify.close()


def test_sd_notify_is_never_fatal(tmp_path: Path) -> None:
    assert SdNotify.from_env({}) is None
    assert not SdNotify(str(tmp_path / "nobody-listens")).send(READY=1)
    assert not SdNotify("vsock:2:1234").send(READY=1)


# -- state and mountpoints ----------------------------------------------------------


def test_account_id_is_remembered_privately(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert remembered_account(state, "fp1") is None
    remember_account(state, "fp1", "123456")
    assert remembered_account(state, "fp1") == "123456"
    assert remembered_account(state, "fp2") is None
    path = state / "account-ids" / "fp1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.write_text("not json")
    assert remembered_account(state, "fp1") is None


def test_an_automount_point_is_mounted_over_never_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x-systemd.automount: the mountpoint is systemd's autofs trigger. Listing it from
    the mount helper would wait for the very mount being made."""
    from rcfs.mount import mountpoint as mount

    mp = tmp_path / "mnt"
    mp.mkdir()
    (mp / "something").write_text("x")  # stands for what listing a trigger would do
    with pytest.raises(ConfigError, match="not empty"):
        mount.check_mountpoint(mp)

    def autofs(path: str, mountinfo: str = "") -> MountEntry | None:
        return MountEntry(1, "0:99", path, "autofs", "systemd-1") if path == str(mp) else None

    monkeypatch.setattr(mount, "mount_at", autofs)
    monkeypatch.setattr(Path, "iterdir", lambda self: pytest.fail(f"listed {self}"))
    mount.check_mountpoint(mp)


def test_directories_without_home_or_xdg_variables() -> None:
    """systemd starts services without HOME (unless User=); mount.fuse3 with setuid= may
    leave it empty: the password database's home is used, and relative XDG paths are
    ignored (XDG spec)."""
    import pwd

    from rcfs.config import _xdg, config_dir

    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    for env in ({}, {"HOME": ""}, {"HOME": "relative/home"}):
        assert _xdg("XDG_STATE_HOME", ".local/state", env) == home / ".local/state"
        assert config_dir(env) == home / ".config" / "rcfs"
    assert _xdg("XDG_CACHE_HOME", ".cache", {"HOME": "/h", "XDG_CACHE_HOME": "rel"}) == Path("/h/.cache")
    assert _xdg("XDG_CACHE_HOME", ".cache", {"HOME": "/h", "XDG_CACHE_HOME": "/c"}) == Path("/c")
