"""Logging set-up for the daemon and the commands, with a last-line secret redactor.

Owns opening the log file safely. A log path often sits in a shared, sticky
directory (`/tmp/rcfs.log`), where another user can plant a symbolic link to
a file of ours, or a file of theirs that we would fill with our account's
details. So the file is opened with O_NOFOLLOW (a symbolic link is refused),
a file owned by another user or with other hard links is refused, and a file
of ours that others may read or write is made 0600 (with a note in the log).
A missing directory is refused rather than created: the only directory rcfs
creates for a log is its own state directory (`config.state_dir`, 0700).
Every refusal is one `ConfigError` line and leaves the target untouched.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from rcfs.errors import ConfigError

log = logging.getLogger("rcfs")


class _Redactor(logging.Filter):
    """Last line of defence: blank out known secrets should one reach a log record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            msg = record.getMessage()
            if any(s in msg for s in self._secrets):
                for s in self._secrets:
                    msg = msg.replace(s, "***")
                record.msg, record.args = msg, None
        return True


def open_log_file(path: Path) -> tuple[TextIO, int | None]:
    """Open `path` for appending, 0600, refusing what another user may have planted.

    Returns the stream and, if the file was open to others and has been made
    0600, its former mode (for the caller to note once logging works).
    """
    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"cannot write the log file {path}: {reason}")

    # O_NONBLOCK: a planted FIFO must not hang the open (cleared below for a regular file).
    flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
             | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise refuse(_why_not(path, exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse("not a regular file")
        if st.st_uid != os.geteuid():
            raise refuse(f"it belongs to another user (uid {st.st_uid})")
        if st.st_nlink != 1:
            raise refuse(f"it has {st.st_nlink} hard links (a log file must have one)")
        old_mode = None
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
            old_mode = stat.S_IMODE(st.st_mode)
        os.set_blocking(fd, True)
    except ConfigError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise refuse(str(exc.strerror)) from None
    return os.fdopen(fd, "a", buffering=1), old_mode


def _why_not(path: Path, exc: OSError) -> str:
    """The reason `path` could not be opened, in words (the kernel says EACCES or ENXIO
    for some of the cases it refuses because of O_NOFOLLOW or O_NONBLOCK)."""
    try:
        mode: int | None = os.lstat(path).st_mode
    except OSError:
        mode = None
    if exc.errno == errno.ELOOP or (mode is not None and stat.S_ISLNK(mode)):
        return "it is a symbolic link (give the path of the file itself)"
    if mode is None and exc.errno == errno.ENOENT and not os.path.lexists(path.parent):
        return f"the directory {path.parent} does not exist"
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file"
    return str(exc.strerror)


def setup_logging(level: str, log_file: Path | None, secrets: list[str] | None = None) -> None:
    handler: logging.Handler
    old_mode = None
    if log_file is not None:
        stream, old_mode = open_log_file(log_file)
        handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redactor(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx/httpcore at DEBUG print every header exchange; keep them at INFO at most.
    for noisy in ("httpcore", "hpack", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    if old_mode is not None:
        log.warning("the log file %s was open to other users (mode %03o); it is now 0600",
                    log_file, old_mode)
