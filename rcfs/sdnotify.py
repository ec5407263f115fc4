"""The sd_notify protocol: telling systemd that a `Type=notify` service is ready.

Owns: sending `READY=1`, `STATUS=...`, `STOPPING=1` (and `MAINPID=`) to the
socket systemd names in `NOTIFY_SOCKET`. The protocol is one datagram of
newline-separated `KEY=VALUE` lines on an AF_UNIX SOCK_DGRAM socket; an
address starting with `@` is in the abstract namespace (the `@` stands for
the leading NUL byte). It is a few lines, so rcfs speaks it itself rather
than depending on libsystemd or a wrapper package.

A notification is a courtesy, never a reason to fail: an unreachable socket
is logged once at DEBUG and the daemon goes on. Must not: block (the socket
is non-blocking; a full queue drops the message), or import trio or pyfuse3.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | None:
    """The socket address for `value` ("@name": abstract namespace; else a path)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd 254+): not spoken here


class SdNotify:
    """One service manager's notification socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._target = _address(address)
        self._sock: socket.socket | None = None
        self._warned = False
        if self._target is None:
            log.warning("%s=%r is not an AF_UNIX address: not notifying the service manager",
                        ENV, address)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SdNotify | None:
        """The socket named by NOTIFY_SOCKET, or None when not run by a service manager."""
        value = (os.environ if env is None else env).get(ENV, "")
        return cls(value) if value else None

    def send(self, **fields: str | int) -> bool:
        """Send one notification, e.g. `send(READY=1, STATUS="serving")`; True if sent."""
        if self._target is None or not fields:
            return False
        # A value is one line: STATUS is free text, and a newline would start a new key.
        lines = [f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items()]
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._target)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.debug("cannot notify the service manager at %s: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
