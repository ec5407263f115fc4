"""The mountpoint: what can be mounted on (`check_mountpoint`, with a one-line
reason), whether rcfs is mounted there, and detaching a dead mount.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from rcfs.errors import ConfigError
from rcfs.registry import FSTYPE, mount_at, real_mountpoint


def check_mountpoint(path: Path) -> None:
    """Refuse what cannot be mounted on, with a one-line reason."""
    if not os.path.exists("/dev/fuse"):
        raise ConfigError("FUSE is unavailable: /dev/fuse is missing (load the fuse module)")
    if _automount_point(path):
        # x-systemd.automount: systemd mounts rcfs on top of its autofs trigger, when
        # something first enters it. Listing the trigger from here would wait for the
        # very mount being made (stat, and mount(2) itself, do not trigger it).
        return
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        if exc.errno == 107:  # ENOTCONN
            raise ConfigError(
                f"mountpoint {path} is a dead mount; clear it with: rcfs umount {path}"
            ) from None
        raise ConfigError(f"mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise ConfigError(f"mountpoint {path} is busy: something is already mounted there")
    if any(path.iterdir()):
        raise ConfigError(f"mountpoint {path} is not empty")


def _automount_point(path: Path) -> bool:
    """Whether the topmost mount at `path` is an autofs trigger (from mountinfo: no stat)."""
    entry = mount_at(real_mountpoint(path))
    return entry is not None and entry.fstype == "autofs"


def lazy_unmount(mountpoint: Path) -> bool:
    """Detach a (possibly dead) rcfs mount; True if it is gone afterwards.

    Only while the topmost mount there is rcfs's: under an x-systemd.automount
    mount lies systemd's autofs trigger, which must stay."""
    for cmd in (["fusermount3", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
        if not _rcfs_mounted(mountpoint):
            return True
        try:
            subprocess.run(cmd, check=False, capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            continue
    return not _rcfs_mounted(mountpoint)


def _rcfs_mounted(mountpoint: Path) -> bool:
    entry = mount_at(real_mountpoint(mountpoint))
    return entry is not None and entry.fstype == FSTYPE


def is_mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == target for line in f)
    except OSError:
        return os.path.ismount(mountpoint)
