"""The control socket: JSON lines in and out, errors as one line, private socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from rcfs.control import ControlError, ControlServer, remove_stale, request, socket_path
from rcfs.errors import RcfsError


async def test_round_trip_errors_and_permissions(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    async def echo(msg: dict[str, Any]) -> dict[str, Any]:
        calls.append(msg)
        await trio.sleep(0.01)
        return {"got": msg.get("x")}

    async def fail(msg: dict[str, Any]) -> dict[str, Any]:
        raise RcfsError("refresh failed: upstream said no")

    path = socket_path(tmp_path)
    assert path.parent == tmp_path and str(os.getpid()) in path.name
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(path, {"echo": echo, "fail": fail}).run)
            assert os.stat(path).st_mode & 0o777 == 0o600
            got = await trio.to_thread.run_sync(lambda: request(path, {"cmd": "echo", "x": 5}, timeout=5))
            assert got == {"got": 5} and calls == [{"cmd": "echo", "x": 5}]
            with pytest.raises(ControlError, match="upstream said no"):
                await trio.to_thread.run_sync(lambda: request(path, {"cmd": "fail"}, timeout=5))
            with pytest.raises(ControlError, match="unknown command"):
                await trio.to_thread.run_sync(lambda: request(path, {"cmd": "nope"}, timeout=5))

            def raw() -> bytes:  # two requests on one connection, one bad
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                    s.sendall(b'not json\n{"cmd": "echo", "x": 1}\n')
                    buf = b""
                    while buf.count(b"\n") < 2:
                        buf += s.recv(4096)
                    return buf

            lines = (await trio.to_thread.run_sync(raw)).splitlines()
            assert b'"ok": false' in lines[0] and b'"got": 1' in lines[1]
            nursery.cancel_scope.cancel()
    assert not path.exists()  # removed when the server ends
    with pytest.raises(ControlError, match="not listening"):
        request(path, {"cmd": "echo"}, timeout=1)


async def test_slow_command_times_out_on_the_client(tmp_path: Path) -> None:
    async def slow(msg: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep(30)
        return {}

    path = socket_path(tmp_path)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(path, {"slow": slow}).run)
            with pytest.raises(ControlError, match="within 1 s"):
                await trio.to_thread.run_sync(lambda: request(path, {"cmd": "slow"}, timeout=1))
            nursery.cancel_scope.cancel()


def test_long_state_dir_falls_back_to_a_short_private_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    deep = tmp_path / ("d" * 120)
    path = socket_path(deep, pid=123)
    assert path.parent == tmp_path / "run" and len(os.fsencode(path)) <= 107
    assert os.stat(path.parent).st_mode & 0o777 == 0o700


def test_stale_sockets_of_dead_daemons_are_removed(tmp_path: Path) -> None:
    (tmp_path / "control.999999999.sock").touch()
    mine = tmp_path / f"control.{os.getpid()}.sock"
    mine.touch()
    remove_stale(tmp_path)
    assert not (tmp_path / "control.999999999.sock").exists() and mine.exists()
