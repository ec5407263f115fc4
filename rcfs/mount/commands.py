"""The control socket's commands, as the mounted daemon answers them (the
protocol and the server are control.py's)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rcfs.connection import Link
from rcfs.content import ContentManager, ContentRef
from rcfs.control import Handler
from rcfs.errors import ConfigError
from rcfs.freshness import Freshness
from rcfs.index import Index
from rcfs.prefetch import Prefetcher
from rcfs.web import WebApp


def control_commands(
    fresh: Freshness, prefetcher: Prefetcher, status: Callable[[], bytes],
    content: ContentManager, index: Index, link: Link, web: WebApp | None = None,
) -> dict[str, Handler]:
    """The control socket's commands (see control.py for the protocol)."""

    async def refresh(msg: dict[str, Any]) -> dict[str, Any]:
        result = await fresh.refresh()
        link.reached()
        return result

    async def prefetch(msg: dict[str, Any]) -> dict[str, Any]:
        since, until = _time_arg(msg, "since"), _time_arg(msg, "until")
        return {"queued": await prefetcher.queue(since, until)}

    async def prune_deleted(msg: dict[str, Any]) -> dict[str, Any]:
        return await fresh.prune_deleted()

    async def get_status(msg: dict[str, Any]) -> dict[str, Any]:
        return {"status": json.loads(status())}

    async def verify(msg: dict[str, Any]) -> dict[str, Any]:
        def ref_of(recording_id: str) -> ContentRef | None:
            ir = index.get_recording(recording_id)
            return None if ir is None else ContentRef.of(ir)

        return await content.verify(ref_of, repair=bool(msg.get("repair")))

    async def web_sign_in(msg: dict[str, Any]) -> dict[str, Any]:
        if web is None:
            raise ConfigError("the web player is not enabled (mount with --web HOST:PORT)")
        return await web.command(msg)

    return {"refresh": refresh, "prefetch": prefetch, "prune_deleted": prune_deleted,
            "status": get_status, "verify": verify, "web": web_sign_in}


def _time_arg(msg: dict[str, Any], key: str) -> datetime | None:
    value = msg.get(key)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: not an ISO 8601 time: {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
