"""One mount per account state directory, and one per cache directory.

Owns the two lock files a mount holds for the daemon's whole life:
`mount.lock` in the account's state directory (`<state>/accounts/<id>/`) and
`mount.lock` in its cache directory. Each is an exclusive, non-blocking
flock(2) on a descriptor the daemon keeps open (close-on-exec, so no child
inherits it); the kernel drops it when the daemon exits however it exits, so
a `kill -9` never leaves a stale lock to clear. The file holds the holder's
pid and mountpoint, so a refused mount can name it. `mount.serve` takes both
before it opens the index or the content cache.

Why refuse. Two daemons on one state and cache directory share nothing but
the files: neither sees what the other's refresh wrote (each keeps its own
coverage and caches in memory), each downloads every recording itself, and
their two rate limiters spend one account's budget twice, which drew 429s.
Mounts that share a session and a budget (`--redis`) each keep their own
state and cache directory all the same; a second mount of an account on the
same state directory, or of any account on the same cache directory, ends
with one line saying so.

Between mounts. A daemon goes on for a moment after its unmount (it closes
the cache and the index), and `rcfs umount` returns once the mount is gone,
so `rcfs umount /mnt/calls && rcfs mount /mnt/calls` may find the lock still
held. A holder whose mountpoint is not mounted (leaving, or still starting)
is therefore waited for, up to `GRACE_S`; one that is serving its mount is
refused at once.

Where flock(2) is not supported (some network file systems) the mount goes
on unlocked, with a warning.

Must not: import trio, pyfuse3 or httpx (`take` blocks: call it from a
worker thread).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rcfs.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = "mount.lock"
GRACE_S = 10.0
_POLL_S = 0.1
REDIS_HINT = ("several mounts of one account share through --redis URL, each with its own "
              "state and cache directory")


class MountBusy(ConfigError):
    """Another rcfs mount holds the state or cache directory."""


class MountLocks:
    """The locks a mount holds (`take`); `close` releases them (so does the process's end)."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)  # also releases its lock

    def __enter__(self) -> MountLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def take(
    account_state: Path, cache_dir: Path, *, account: str, mountpoint: Path,
    grace: float = GRACE_S,
) -> MountLocks:
    """Lock the account state directory, then the cache directory, or raise MountBusy
    with a one-line reason. May wait up to `grace` seconds (see "Between mounts")."""
    holder = {"pid": os.getpid(), "mountpoint": str(mountpoint), "account": account,
              "since": datetime.now(UTC).isoformat(timespec="seconds")}

    def state_busy(other: dict[str, Any]) -> str:
        return (f"account {account} is already mounted{_where(other)} with the state directory "
                f"{account_state}; unmount it first ({REDIS_HINT})")

    def cache_busy(other: dict[str, Any]) -> str:
        return (f"the cache directory {cache_dir} is already used by another rcfs mount"
                f"{_where(other)}; give each mount its own --cache-dir ({REDIS_HINT})")

    locks = MountLocks()
    deadline = time.monotonic() + grace
    try:
        for path, busy in ((account_state / LOCK_NAME, state_busy), (cache_dir / LOCK_NAME, cache_busy)):
            fd = _lock(path, holder, busy, deadline)
            if fd is not None:
                locks._fds.append(fd)
    except BaseException:
        locks.close()
        raise
    return locks


def _lock(
    path: Path, holder: dict[str, Any], busy: Callable[[dict[str, Any]], str], deadline: float
) -> int | None:
    """The descriptor holding `path`'s lock; None where locks are unsupported."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    log.warning("cannot lock %s (%s): a second mount on it would not be refused",
                                path, exc.strerror)
                    os.close(fd)
                    return None
            other = _read_holder(fd)
            if _serving(other) or time.monotonic() >= deadline:
                raise MountBusy(busy(other))
            time.sleep(_POLL_S)
        _write_holder(fd, holder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd


def _serving(holder: dict[str, Any]) -> bool:
    """Whether the holder's mountpoint is mounted (from /proc: never a stat of a
    FUSE mount, which would hang on a hung daemon)."""
    mountpoint = holder.get("mountpoint")
    if not isinstance(mountpoint, str):
        return False
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            targets = {_unescape(line.split()[1]) for line in f if len(line.split()) > 1}
    except OSError:
        return False
    return os.path.realpath(mountpoint) in targets


def _unescape(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as \040 \011 \012 \134.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    data = (json.dumps(holder) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:  # a full disk: the lock holds all the same, unnamed
        log.debug("cannot write the lock holder: %s", exc.strerror)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        found = json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _where(holder: dict[str, Any]) -> str:
    mountpoint, pid = holder.get("mountpoint"), holder.get("pid")
    if not isinstance(mountpoint, str) or not isinstance(pid, int):
        return ""
    if not mountpoint.isprintable():  # the reason must stay one line
        mountpoint = repr(mountpoint)
    return f" at {mountpoint} (pid {pid})"
