"""The mountpoint: what can be mounted on (`check_mountpoint`, with a one-line
reason), whether rcfs is mounted there, and detaching a dead mount.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
from pathlib import Path

from rcfs.errors import ConfigError
from rcfs.registry import FSTYPE, mount_at, real_mountpoint

log = logging.getLogger(__name__)

BDI = "/sys/class/bdi"


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


def set_read_ahead(mountpoint: str, size: int, *, bdi_root: str = BDI,
                   mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Let the kernel read `size` bytes ahead on the rcfs mount at `mountpoint` (0: leave
    it); True if it was set.

    A FUSE mount's backing device reads 128 KiB ahead by default, and no read
    the kernel sends the daemon is larger, whatever size the reader asks for:
    a 1 MiB read is eight round trips. With 1 MiB the kernel sends one
    (pyfuse3's libfuse allows 1 MiB requests), which doubled the rate of a big
    file read after a remount here. Set it once the kernel has had the reply to
    FUSE_INIT, which lowers it to the reply's own 128 KiB. The mount's device
    comes from mountinfo, not a stat, which would be a request to this very
    daemon. Setting it needs root; without, the kernel's default stays and the
    mount works as before.
    """
    if size <= 0:
        return False
    entry = mount_at(mountpoint, mountinfo)
    if entry is None or entry.fstype != FSTYPE:
        log.info("read-ahead: no rcfs mount at %s in mountinfo; the kernel's default stays",
                 mountpoint)
        return False
    path = os.path.join(bdi_root, entry.dev, "read_ahead_kb")
    kib = -(-size // 4096) * 4  # whole pages (at least one): the kernel keeps it in pages
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(str(kib))
    except OSError as exc:
        denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        log.log(logging.DEBUG if denied and os.geteuid() != 0 else logging.INFO,
                "read-ahead: cannot set %s (%s); the kernel's default stays", path,
                exc.strerror or exc)
        return False
    log.debug("read-ahead: %d KiB on %s", kib, mountpoint)
    return True
