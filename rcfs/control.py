"""The daemon's control channel: a unix socket speaking JSON lines.

Owns: the socket (its path, permissions and lifetime), the wire protocol and
the client helper the CLI uses. What a command does belongs to its handler
(mount/commands.py wires `refresh`, `prefetch`, `prune_deleted`, `status`).

Protocol. The client connects, writes one JSON object per line,
`{"cmd": "refresh"}`, and reads one JSON object per line back, in order:
`{"ok": true, ...result}` or `{"ok": false, "error": "one-line reason"}`.
A command's answer comes when it is done (`refresh` waits for the refresh;
`prefetch` answers at once with the number queued). Several requests may share
a connection.

Security. The socket lives in the account's state directory (0700) and is
chmod 0600 right after bind; on top of that, a peer whose SO_PEERCRED uid is
not ours (or root's) is refused. A path too long for a unix socket (108 bytes)
falls back to a 0700 directory of ours under the runtime dir or /tmp. The path
is advertised in status.json ("control"), so clients never guess it.

Must not: import pyfuse3 or httpx.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from rcfs.errors import RcfsError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_LINE = 64 * 1024
_SUN_PATH_MAX = 107


class ControlError(RcfsError):
    """The control channel failed, or the daemon answered with an error."""


def socket_path(state_dir: Path, pid: int | None = None) -> Path:
    """Where this daemon's socket goes: `<state_dir>/control.<pid>.sock`, or a
    short private path when that is too long for a unix socket."""
    pid = os.getpid() if pid is None else pid
    path = state_dir / f"control.{pid}.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    base = _short_base()
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700, parents=True)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RcfsError(f"{base} is not a private directory of ours: cannot place the control socket")
    return base / f"{_short_prefix(state_dir)}.{pid}.sock"


def _short_base() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/rcfs-{os.getuid()}")


def _short_prefix(state_dir: Path) -> str:
    return "rcfs-" + hashlib.blake2b(os.fsencode(state_dir), digest_size=6).hexdigest()


def sockets_in(state_dir: Path) -> list[Path]:
    """The control sockets of the daemons of `state_dir` (an account's state directory),
    also those placed under the short private path."""
    found = list(state_dir.glob("control.*.sock"))
    with contextlib.suppress(OSError):
        found += _short_base().glob(f"{_short_prefix(state_dir)}.*.sock")
    return sorted(found)


def remove_stale(state_dir: Path) -> None:
    """Remove sockets left by daemons that are gone (their pid is not running)."""
    for entry in sockets_in(state_dir):
        try:
            pid = int(entry.name.split(".")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControlServer:
    """Serves `handlers` (command name → async handler) on the unix socket at `path`."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            await sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o600)  # the 0700 directory covers the moment before
            sock.listen(16)
            listener = trio.SocketListener(sock)
        except BaseException:
            sock.close()
            raise
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve, [listener])
                task_status.started()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            if not _peer_allowed(stream):
                log.warning("control: refused a connection from another user")
                return
            buf = b""
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    answer = await self._dispatch(line)
                    try:
                        await stream.send_all(json.dumps(answer).encode() + b"\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                if len(buf) > MAX_LINE:
                    await stream.send_all(b'{"ok": false, "error": "request line too long"}\n')
                    return

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a "cmd"'}
        handler = self._handlers.get(msg["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {msg['cmd']!r}"}
        try:
            result = await handler(msg)
        except RcfsError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control command %s failed", msg["cmd"])
            return {"ok": False, "error": f"internal error: {exc!r}"}
        return {"ok": True, **result}


def _peer_allowed(stream: trio.SocketStream) -> bool:
    try:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


def request(path: str | Path, msg: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Send one command and return its result (synchronous: for the CLI).

    Raises ControlError with a one-line reason: no daemon, timeout, or the
    daemon's own error message.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(path))
            sock.sendall(json.dumps(msg).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError("the rcfs daemon closed the control connection without answering")
                buf += chunk
    except TimeoutError:
        raise ControlError(f"no answer from the rcfs daemon within {timeout:.0f} s") from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError("the rcfs daemon is not listening on its control socket") from None
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise ControlError("the rcfs daemon sent an unreadable answer") from None
    if not isinstance(answer, dict):
        raise ControlError("the rcfs daemon sent an unreadable answer")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error") or "the rcfs daemon reported a failure"))
    answer.pop("ok", None)
    return answer
