"""Several rcfs processes on one account, coordinated through Redis (or Valkey).

`rcfs mount ... --redis URL` (also `RCFS_REDIS_URL`, `redis_url` in
config.toml): every rcfs process with the same credentials and the same Redis
shares one rate budget per rate-limit group (`budget.py`), one RingCentral
session (`session.py`, tokens sealed by `crypto.py`), and priorities: a read
waiting anywhere goes ahead of background work everywhere. `link.py` owns
the connection, its loss and its return; `backend.py` opens it all and
renders the `redis` block of `status.json`; `describe.py` renders that block
for `rcfs status`.

Why Redis, and why coredis. Redis gives the three things needed without a
protocol of our own: atomic scripts on one server clock (`TIME` inside Lua),
expiring keys for leases and locks, and sorted sets for sliding logs.
coredis 6 is a maintained client built on anyio, so it runs natively under
trio (no worker threads around a synchronous client); redis-py's asyncio
client would need asyncio, and a sync client would need a thread hop per
request.

Cross-process single-flight of one recording is deliberately not done: the
mounts are on different machines with their own caches, so a second mount
could only be spared its request if the bytes travelled through Redis (a
poor store for audio files) or between the peers (a protocol of our own).
The shared budget already makes duplicate downloads cost only their share.

Importing this package is cheap; coredis is imported when a mount opens
the backend (it takes about half a second).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rcfs.api.shared.describe import redis_lines

if TYPE_CHECKING:
    from rcfs.api.shared.backend import SharedBackend, namespace, open_shared
    from rcfs.api.shared.budget import FALLBACK_SHARE, SharedGroupLimiter, fallback_limit
    from rcfs.api.shared.crypto import TokenCipher, Undecryptable
    from rcfs.api.shared.link import RedisDown, RedisLink, display_url
    from rcfs.api.shared.session import SessionStore, SharedAuthenticator

_LAZY = {
    "SharedBackend": "backend", "namespace": "backend", "open_shared": "backend",
    "FALLBACK_SHARE": "budget", "SharedGroupLimiter": "budget", "fallback_limit": "budget",
    "TokenCipher": "crypto", "Undecryptable": "crypto",
    "RedisDown": "link", "RedisLink": "link", "display_url": "link",
    "SessionStore": "session", "SharedAuthenticator": "session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"rcfs.api.shared.{module}"), name)


__all__ = [
    "FALLBACK_SHARE",
    "RedisDown",
    "RedisLink",
    "SessionStore",
    "SharedAuthenticator",
    "SharedBackend",
    "SharedGroupLimiter",
    "TokenCipher",
    "Undecryptable",
    "display_url",
    "fallback_limit",
    "namespace",
    "open_shared",
    "redis_lines",
]
