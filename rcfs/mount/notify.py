"""How the daemon says what it is doing: progress and readiness (`Notifier`) to the
foreground terminal, to a daemonizing parent through a pipe (cli/daemon.py)
and to systemd through sd_notify (`sdnotify.py`); `announce` says ready only
once the tree answers, then keeps systemd's STATUS= line current.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from rcfs.archive import summary_line
from rcfs.connection import Link
from rcfs.sdnotify import SdNotify
from rcfs.units import count, fmt_duration

log = logging.getLogger(__name__)


class Notifier:
    """Where progress and readiness go: stderr in the foreground, a pipe when daemonized,
    and systemd (sd_notify: READY=1, STATUS=, STOPPING=1) when it runs the foreground
    process as a Type=notify service."""

    def __init__(
        self, fd: int | None = None, *, verbose: bool = True, systemd: SdNotify | None = None,
    ) -> None:
        self._fd = fd
        self._verbose = verbose
        self._systemd = systemd
        self._stopping = False
        self.served = False  # the tree was served (ready was said)
        self.mounted = False  # the kernel has the mount (a Ctrl-C now unmounts it cleanly)

    def _send(self, line: str) -> None:
        if self._fd is not None:
            try:
                os.write(self._fd, (line + "\n").encode())
            except OSError:
                self._fd = None  # the parent went away; keep serving
        elif self._verbose:
            print(line.split(" ", 1)[1] if " " in line else line, file=sys.stderr, flush=True)

    def progress(self, text: str) -> None:
        self._send("progress " + text)
        self.status(text)

    def status(self, text: str) -> None:
        """A status line for the service manager only (`systemctl status` shows it)."""
        if self._systemd is not None:
            self._systemd.send(STATUS=text)

    def ready(self, text: str) -> None:
        self.served = True
        self._send("ready " + text)
        self._close()
        if self._systemd is not None:
            self._systemd.send(READY=1, STATUS=text)

    @property
    def speaks_systemd(self) -> bool:
        return self._systemd is not None

    def stopping(self) -> None:
        if self._systemd is not None and not self._stopping:
            self._stopping = True
            self._systemd.send(STOPPING=1, STATUS="unmounting")

    def failed(self, reason: str) -> None:
        if self._fd is not None:  # in the foreground the caller prints it, once
            self._send("error " + reason)
        self._close()
        self.status(f"failed: {reason}")

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


NOTIFY_STATUS_SECONDS = 30.0  # STATUS= to systemd while indexing or archiving


def logs_to_terminal() -> bool:
    """Whether the log goes to stderr (a foreground mount without --log-file)."""
    return any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__)
               for h in logging.getLogger().handlers)


async def announce(mountpoint: Path, notifier: Notifier, summary: Callable[[], str],
                   on_answered: Callable[[], object] = lambda: None) -> None:
    """Say the mount is ready once its tree answers; then keep systemd's STATUS current.

    `on_answered` runs before that, once the kernel has had FUSE_INIT's reply (the
    listing needed it): what the reply would reset, such as the read-ahead, is set there."""
    # Ready (to systemd, to a daemonizing parent, to mount(8)) only once the tree is
    # listable: list its root through the kernel as any client would, answered by
    # the FUSE main loop that runs beside this task.
    # From a child process, never a thread of ours: killed (-9) while a thread of its
    # own waits in the kernel on its own mount, a daemon could never exit (the request
    # waits for an answer only it could give), leaving a mount that hangs every reader.
    probe = await trio.run_process(
        [sys.executable, "-I", "-S", "-c", "import os, sys; os.listdir(sys.argv[1])",
         os.fspath(mountpoint)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, capture_stderr=True, check=False)
    if probe.returncode != 0:
        said = probe.stderr.decode(errors="replace").strip().splitlines()
        log.warning("listing %s once mounted failed: %s", mountpoint, said[-1] if said else "?")
    try:
        on_answered()
    except Exception as exc:  # a best-effort tweak never keeps the mount from being ready
        log.warning("after the first listing: %r", exc)

    def line() -> str:
        try:
            return summary()
        except Exception as exc:  # e.g. a damaged index: the mount goes on all the same
            log.debug("no status line: %r", exc)
            return "serving"

    last = line()
    notifier.ready(f"mounted {mountpoint}: {last}")
    if not notifier.speaks_systemd:
        return
    while True:
        await trio.sleep(NOTIFY_STATUS_SECONDS)
        text = line()
        if text != last:
            notifier.status(text)
            last = text


def status_summary(stats: dict[str, Any], progress: dict[str, Any], archive: dict[str, Any],
                   link: Link) -> str:
    """One line for systemd's STATUS=: what is served, offline or not, index and archive."""
    parts = [f"serving {count(stats.get('recordings', 0), 'recording')}"]
    if not link.online:
        parts.append(f"offline, retrying: {link.error}")
    if progress.get("complete"):
        parts.append("call log indexed")
    else:
        eta = progress.get("eta_s")
        parts.append(f"indexed {progress.get('days_indexed', 0)} of "
                     f"{progress.get('days_total', 0)} days"
                     + (f", about {fmt_duration(eta)} left" if eta else ""))
    if archive.get("enabled"):
        parts.append("archive: " + summary_line(archive))
    return "; ".join(parts)
