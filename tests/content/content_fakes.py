"""A fake ContentSource with scriptable timing and faults (no emulator, no HTTP)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from rcfs.api import Urgency
from rcfs.content import ContentManager, ContentRef
from rcfs.errors import NotFound, RcfsError, TemporaryFailure


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Plan:
    """How the fake server answers for one content URI."""

    data: bytes
    chunk: int = 1000
    fail_at: list[int] = field(default_factory=list)  # mid-body TemporaryFailure, once each
    error_at: dict[int, RcfsError] = field(default_factory=dict)  # mid-body fatal error
    fail_always_at: int | None = None  # TemporaryFailure at this byte, every time
    ignore_range: bool = False  # answer 200 to a Range request
    no_length: bool = False  # a 200 without Content-Length
    extra: bytes = b""  # sent after `data` (a body longer than announced)
    not_found: bool = False
    headers_error: RcfsError | None = None  # raised instead of the headers, once
    end_early_at: int | None = None  # the body ends cleanly (short) here, once
    gate_at: int | None = None  # stop before sending this byte until `gate` is set
    gate: trio.Event = field(default_factory=trio.Event)
    headers_gate: trio.Event | None = None  # hold the response headers


@dataclass
class FakeResponse:
    status: int
    content_type: str | None
    start: int
    total_size: int | None
    length: int | None
    _chunks: Callable[[], AsyncIterator[bytes]]

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._chunks()


class FakeSource:
    def __init__(self, plans: dict[str, Plan] | None = None) -> None:
        self.plans = plans or {}
        self.calls: list[tuple[str, int, Any]] = []  # (uri, start, priority as it was then)
        self.urgencies: list[Any] = []  # what each request was given (an Urgency may rise later)
        self.sent = 0

    def add(self, rid: str, uri: str, plan: Plan) -> ContentRef:
        self.plans[uri] = plan
        return ContentRef(recording_id=rid, content_uri=uri)

    @asynccontextmanager
    async def stream_content(
        self, content_uri: str, *, start: int = 0, priority: Any = 0
    ) -> AsyncIterator[FakeResponse]:
        self.urgencies.append(priority)
        self.calls.append(
            (content_uri, start, priority.priority if isinstance(priority, Urgency) else priority))
        await trio.lowlevel.checkpoint()
        plan = self.plans.get(content_uri)
        if plan is None or plan.not_found:
            raise NotFound(f"no recording at {content_uri}")
        if plan.headers_error is not None:
            error, plan.headers_error = plan.headers_error, None
            raise error
        if plan.headers_gate is not None:
            await plan.headers_gate.wait()
        size = len(plan.data)
        total: int | None
        if start and not plan.ignore_range:
            resp_start, status, total = start, 206, size
        else:
            resp_start, status = 0, 200
            total = None if plan.no_length else size

        async def chunks() -> AsyncIterator[bytes]:
            pos = resp_start
            body = plan.data + plan.extra
            while pos < len(body):
                if plan.gate_at is not None and pos >= plan.gate_at:
                    await plan.gate.wait()
                if pos == plan.end_early_at:
                    plan.end_early_at = None
                    return
                if pos == plan.fail_always_at:
                    raise TemporaryFailure(f"connection reset at {pos}, again")
                if pos in plan.error_at:
                    raise plan.error_at.pop(pos)
                if pos in plan.fail_at and pos != resp_start:
                    plan.fail_at.remove(pos)
                    raise TemporaryFailure(f"connection reset at {pos}")
                end = min(pos + plan.chunk, len(body))
                stops = (plan.gate_at, plan.fail_always_at, plan.end_early_at)
                for stop in (*stops, *plan.fail_at, *plan.error_at):
                    if stop is not None and pos < stop < end:
                        end = stop
                await trio.sleep(0.001)
                self.sent += end - pos
                yield body[pos:end]
                pos = end

        yield FakeResponse(
            status, "audio/mpeg", resp_start, total,
            None if total is None else total - resp_start, chunks,
        )


@asynccontextmanager
async def running(
    cache_dir: Path, source: FakeSource, size_limit: int = 1 << 30
) -> AsyncIterator[tuple[ContentManager, list[tuple[str, int]]]]:
    """A ContentManager on its own nursery; closed (downloads cancelled) on exit."""
    sizes: list[tuple[str, int]] = []  # each size a recording was given, once (provisional or final)

    def learned(rid: str, size: int, **_: object) -> None:
        if (rid, size) not in sizes:
            sizes.append((rid, size))

    async with trio.open_nursery() as nursery:
        manager = await ContentManager.create(
            cache_dir=cache_dir,
            size_limit=size_limit,
            client=source,
            nursery=nursery,
            on_exact_size=learned,
        )
        try:
            yield manager, sizes
        finally:
            await manager.aclose()


async def read_all(manager: ContentManager, rid: str, size: int, step: int = 4096) -> bytes:
    out = bytearray()
    while True:
        data = await manager.read(rid, len(out), step)
        if not data:
            return bytes(out)
        out += data
        assert len(out) <= size
