"""Which rcfs daemon serves which mountpoint: rcfs's own record, never a file in the mount.

`rcfs umount` signals the daemon serving a mount, and must never signal
anything else. The pid in `MOUNTPOINT/.rcfs/status.json` cannot tell it
which process that is: on a file system that is not rcfs (any tmpfs,
/dev/shm) whoever can write there plants that file. So:

- the mount's type comes from /proc/self/mountinfo (`mount_at`): rcfs mounts
  with `fsname=rcfs,subtype=rcfs`, so its type is `fuse.rcfs`;
- the daemon records itself in the user's private state directory once the
  tree is served (`register`): `<state>/mounts/<blake2b of the mountpoint's
  real path>.json`, 0600 in a 0700 directory, with its pid, uid, the
  process's start time in clock ticks since boot (field 22 of
  /proc/PID/stat, which a later process reusing the pid does not share),
  the mountpoint and the mount's device number; it removes the record at
  unmount (`unregister`);
- a record is believed only if the process it names is alive, started at
  the recorded tick, belongs to this user, runs rcfs (/proc/PID/cmdline),
  and the record's mountpoint and device are those of the mount in question
  (`serving_daemon`). A daemon killed with -9 leaves its record behind; a
  stale record is never believed, and is removed (`forget`).

Nothing here unmounts, and the one signal sent is `Daemon.terminate`, which
`cli.commands.cmd_umount` calls: through a pidfd opened before the checks,
so that a process that takes the pid after them cannot receive it.
Reads of procfs and the state directory are quick local reads; the daemon
calls `register` from a worker thread all the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rcfs.config import ensure_private_dir
from rcfs.errors import ConfigError

log = logging.getLogger(__name__)

FSTYPE = "fuse.rcfs"
_MAX_RECORD = 64 * 1024


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    dev: str  # "major:minor"
    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_at(path: str, mountinfo: str = "/proc/self/mountinfo") -> MountEntry | None:
    """The topmost mount whose mountpoint is exactly `path` (a real path), if any."""
    found = None
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                try:
                    sep = fields.index("-", 6)
                    entry = MountEntry(int(fields[0]), fields[2], _unescape(fields[4]),
                                       fields[sep + 1], _unescape(fields[sep + 2]))
                except (ValueError, IndexError):
                    continue
                if entry.mountpoint == path:
                    found = entry  # later lines are mounted on top of earlier ones
    except OSError:
        return None
    return found


def real_mountpoint(path: Path) -> str:
    """The path as /proc/self/mountinfo names it (symbolic links resolved).

    Resolving a path stats its last component, which for a mountpoint is a
    request to the FUSE daemon: a hung daemon would hang `rcfs umount`, and
    the daemon itself, once mounted, would wait on its own main loop (call it
    before mounting there). So the parent is resolved first, and a mountpoint
    found under it is taken as it is (a mountpoint is never a symbolic link).
    """
    path = Path(path).absolute()
    under_parent = os.path.join(os.path.realpath(path.parent), path.name)
    if path.name not in ("", "..") and mount_at(under_parent) is not None:
        return under_parent
    return os.path.realpath(path)


def record_path(state: Path, mountpoint: str) -> Path:
    digest = hashlib.blake2b(os.fsencode(mountpoint), digest_size=16).hexdigest()
    return state / "mounts" / f"{digest}.json"


@dataclass(frozen=True)
class ProcInfo:
    start_ticks: int
    uids: tuple[int, ...]  # real, effective, saved, filesystem
    argv: tuple[str, ...]


def proc_info(pid: int) -> ProcInfo | None:
    """What /proc says of `pid`, or None if there is no such process (or it is a zombie)."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            raw_stat = f.read().decode("ascii", "replace")
        with open(f"{base}/status", "rb") as f:
            status = f.read().decode("utf-8", "replace")
        with open(f"{base}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold anything.
    rest = raw_stat[raw_stat.rfind(")") + 2:].split()
    uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
    try:
        state, start_ticks = rest[0], int(rest[19])  # fields 3 and 22
        uids = tuple(int(u) for u in uid_line.split()[1:])
    except (IndexError, ValueError):
        return None
    if state in ("Z", "X") or not uids:
        return None
    argv = tuple(os.fsdecode(a) for a in cmdline.split(b"\0") if a)
    return ProcInfo(start_ticks, uids, argv)


def looks_like_rcfs(argv: tuple[str, ...]) -> bool:
    """`rcfs ...` (the console script under its interpreter) or `python -m rcfs ...`."""
    head = argv[:3]
    if any(os.path.basename(a) == "rcfs" for a in head):
        return True
    return any(a == "-m" and b == "rcfs" for a, b in itertools.pairwise(argv))


def register(state: Path, mountpoint: str) -> Path | None:
    """Record this process as the daemon serving `mountpoint` (call it once mounted).

    Returns the record's path, or None if it could not be written: the mount
    still works, and `rcfs umount` then detaches it without signalling.
    """
    me = proc_info(os.getpid())
    entry = mount_at(mountpoint)
    path = record_path(state, mountpoint)
    record = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "start_ticks": me.start_ticks if me else None,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "mountpoint": mountpoint,
        "dev": entry.dev if entry is not None and entry.fstype == FSTYPE else None,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ensure_private_dir(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except (OSError, ConfigError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.warning("cannot record this mount in %s (%s): rcfs umount will detach it "
                    "without signalling this process", path.parent, exc)
        return None
    return path


def unregister(path: Path | None) -> None:
    """Remove this process's record, unless a later daemon has replaced it."""
    if path is None:
        return
    record = _read_record(path)
    if record is not None and record.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(path)


def forget(state: Path, mountpoint: str) -> None:
    """Remove the record of `mountpoint` (stale: its daemon is gone)."""
    with contextlib.suppress(OSError):
        os.unlink(record_path(state, mountpoint))


def _read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path` if it is a regular file of this user's; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > _MAX_RECORD:
            return None
        data = json.loads(os.read(fd, _MAX_RECORD))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


@dataclass
class Daemon:
    """A verified daemon, held by a pidfd opened before it was verified."""

    pid: int
    pidfd: int | None  # None where the kernel has no pidfd_open (Linux < 5.3)

    def terminate(self) -> None:
        """SIGTERM it. Through the pidfd, a process that took the pid since cannot get it."""
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
            else:
                os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def serving_daemon(state: Path, mountpoint: str, entry: MountEntry) -> tuple[Daemon | None, str]:
    """The live rcfs daemon recorded as serving `entry`, or None and why not."""
    record = _read_record(record_path(state, mountpoint))
    if record is None:
        return None, "no record of this mount"
    pid = record.get("pid")
    ticks = record.get("start_ticks")
    if type(pid) is not int or pid <= 1 or type(ticks) is not int:
        return None, "a malformed record"
    if record.get("mountpoint") != mountpoint:
        return None, "a record of another mountpoint"
    if record.get("dev") != entry.dev:
        return None, "a record of an earlier mount"
    gone = f"its daemon (pid {pid}) is gone"
    try:
        daemon = Daemon(pid, os.pidfd_open(pid))
    except ProcessLookupError:
        return None, gone
    except OSError:
        daemon = Daemon(pid, None)
    info = proc_info(pid)
    why = (gone if info is None
           else f"pid {pid} is now another process" if info.start_ticks != ticks
           else f"pid {pid} belongs to another user"
           if record.get("uid") != os.getuid() or any(u != os.getuid() for u in info.uids)
           else f"pid {pid} is not rcfs" if not looks_like_rcfs(info.argv)
           else "")
    if why:
        daemon.close()
        return None, why
    return daemon, f"daemon pid {pid}"
