"""Ready-made ways for any test package to run an emulator.

- `emulator_config` / `emulator` pytest fixtures: an in-process Emulator on
  127.0.0.1 port 0 in pytest-trio's `nursery`, cancelled when the test ends.
  Override `emulator_config` in a conftest (or a module) to change the account,
  rate limits or faults. Import both into a conftest:
  `from rcfs.emulator.testing import emulator, emulator_config  # noqa: F401`.
- `open_emulator(config)`: the same as an async context manager.
- `emulator_in_thread(config)`: for synchronous code (requests, the official
  SDK): trio runs in a background thread; yields the info dict.
- `emulator_process(*args)` / the `emulator_proc` fixture: `python -m
  rcfs.emulator` in a subprocess; reads its JSON line, and always terminates
  and reaps it by PID.
- `OpenAPI` / the session-scoped `openapi` fixture: RingCentral's OpenAPI
  file, loaded once, validating JSON bodies against its schemas (skips the
  test when the file cannot be found; set RCFS_OPENAPI).
- `login(client, info)`: a JWT login with httpx, returning the TokenInfo body.

Everything binds loopback only and is bounded by timeouts.
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from jsonschema import Draft4Validator

from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.server import Emulator

START_TIMEOUT = 60.0


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """A small, unthrottled, fault-free account; override to taste."""
    return EmulatorConfig(calls=200, seed=1, rate_limits="off")


@pytest.fixture
async def emulator(nursery: trio.Nursery, emulator_config: EmulatorConfig) -> Emulator:
    """A running in-process emulator; `emulator.info` has its URLs and credentials."""
    emu = Emulator(emulator_config)
    with trio.fail_after(START_TIMEOUT):
        await nursery.start(emu.run)
    return emu


@asynccontextmanager
async def open_emulator(config: EmulatorConfig | None = None) -> AsyncIterator[Emulator]:
    async with trio.open_nursery() as nursery:
        emu = Emulator(config or EmulatorConfig(rate_limits="off"))
        with trio.fail_after(START_TIMEOUT):
            await nursery.start(emu.run)
        try:
            yield emu
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def emulator_in_thread(config: EmulatorConfig | None = None) -> Iterator[dict[str, str]]:
    """Run an emulator on its own trio loop in a daemon thread; yields the info dict."""
    results: queue.Queue[Any] = queue.Queue()
    handles: dict[str, Any] = {}

    async def runner() -> None:
        async with trio.open_nursery() as nursery:
            handles["scope"] = nursery.cancel_scope
            handles["token"] = trio.lowlevel.current_trio_token()
            results.put(await nursery.start(Emulator(config or EmulatorConfig()).run))

    def target() -> None:
        try:
            trio.run(runner)
        except BaseException as err:  # reported to the waiting test
            results.put(err)

    thread = threading.Thread(target=target, name="rcfs-emulator", daemon=True)
    thread.start()
    item = results.get(timeout=START_TIMEOUT)
    if isinstance(item, BaseException):
        raise item
    try:
        yield item
    finally:
        trio.from_thread.run_sync(handles["scope"].cancel, trio_token=handles["token"])
        thread.join(timeout=10)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("emulator did not print its info line in time")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"emulator exited early (status {proc.wait(5)})")
            data += chunk
    return data.split(b"\n", 1)[0]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, wait, SIGKILL if needed; always reaps. Returns the exit status."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout)


@contextmanager
def emulator_process(
    *args: str, timeout: float = START_TIMEOUT
) -> Iterator[tuple[dict[str, str], subprocess.Popen[bytes]]]:
    """`python -m rcfs.emulator ARGS` -> (info, process); killed and reaped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcfs.emulator", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        info = json.loads(_read_line(proc, timeout))
        yield info, proc
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def emulator_proc() -> Iterator[dict[str, str]]:
    """An emulator subprocess (unthrottled, 200 calls); yields its info dict."""
    with emulator_process("--rate-limits", "off", "--calls", "200") as (info, _):
        yield info


JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_REPO = Path(__file__).resolve().parents[2]
OPENAPI_CANDIDATES = (
    _REPO / "ringcentral" / "rc-public-openapi.yml",
    _REPO / "docs" / "ringcentral" / "rc-public-openapi.yml",
    # Developers and CI have the shared folder beside the clone.
    _REPO.parent / "shared" / "ringcentral" / "rc-public-openapi.yml",
)


def client_env(info: dict[str, str], home: Path) -> dict[str, str]:
    """The environment for an rcfs process pointed at an emulator, all state under `home`.

    Inherited RC_*/RINGCENTRAL_* credentials are dropped so that a real
    account's variables can never leak into a test or benchmark run.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RC_", "RINGCENTRAL_"))}
    env.update(
        RC_SERVER_URL=info["server_url"],
        RC_MEDIA_URL=info["media_url"],
        RC_APP_CLIENT_ID=info["client_id"],
        RC_APP_CLIENT_SECRET=info["client_secret"],
        RC_USER_JWT=info["jwt"],
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        TZ="UTC",
    )
    return env


def openapi_path() -> Path | None:
    env = os.environ.get("RCFS_OPENAPI")
    for candidate in ([Path(env)] if env else []) + list(OPENAPI_CANDIDATES):
        if candidate.is_file():
            return candidate
    return None


def _translate(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema draft 4: `nullable`; drop examples (they hold dates)."""
    if isinstance(node, dict):
        out = {k: _translate(v) for k, v in node.items() if k not in ("example", "examples")}
        if out.pop("nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_translate(v) for v in node]
    if isinstance(node, datetime.date):
        return node.isoformat()
    return node


class OpenAPI:
    """RingCentral's OpenAPI document, validating instances against its components."""

    def __init__(self, path: Path) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open() as f:
            self.raw: dict[str, Any] = yaml.load(f, Loader=loader)
        self.components = _translate(self.raw["components"])

    def validate(self, ref: str, instance: Any) -> None:
        """`ref`: a schema name or a '#/components/...' pointer. Raises ValidationError."""
        if not ref.startswith("#"):
            ref = f"#/components/schemas/{ref}"
        Draft4Validator({"$ref": ref, "components": self.components}).validate(instance)

    def validate_response(self, name: str, instance: Any) -> None:
        """Against a shared response (`InvalidRequest`, `OauthInvalidRequest`, ...)."""
        self.validate(f"#/components/responses/{name}/content/application~1json/schema", instance)

    def operation(self, operation_id: str) -> dict[str, Any]:
        for item in self.raw["paths"].values():
            for op in item.values():
                if isinstance(op, dict) and op.get("operationId") == operation_id:
                    return op
        raise KeyError(operation_id)


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    path = openapi_path()
    if path is None:
        reason = "rc-public-openapi.yml not found beside the repo (../shared/ringcentral; RCFS_OPENAPI)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must validate against the spec, never skip it
        print(f"SKIPPED spec validation: {reason}")
        pytest.skip(reason)
    return OpenAPI(path)


async def login(client: httpx.AsyncClient, info: dict[str, str]) -> dict[str, Any]:
    """JWT bearer login; returns the TokenInfo body (asserts success)."""
    response = await client.post(
        info["server_url"] + "/restapi/oauth/token",
        data={"grant_type": JWT_GRANT, "assertion": info["jwt"]},
        auth=(info["client_id"], info["client_secret"]),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
