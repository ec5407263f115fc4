"""The storage host's secrets and memory: signed URLs and the log of what reached it.

Real media hosts may answer a content request with a redirect to a signed URL
on another host (object storage). API-NOTES: follow it, but send the bearer
token only to RingCentral's own hosts. Under the `redirect` fault the media
host answers 302 to such a URL on a third server the emulator runs on
127.0.0.1 (routes in `media.StorageHost`).

This module owns the signing (an HMAC under a random per-run secret over the
recording id and an expiry, so the path is unguessable and cannot be forged
from another recording's) and the request log: method, path, raw query and
headers of every request the storage host receives, whatever its outcome,
so a test can prove that no `Authorization` header or `access_token` ever
reached it. The storage host serves a request that carries either like any
other; the log is what makes the leak visible. No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from typing import Any
from urllib.parse import urlencode

from rcfs.emulator.records import iso

URL_TTL = 3600.0  # seconds a signed URL stays valid (S3 presigned URLs default to an hour)
LOG_SIZE = 10_000  # the newest requests kept


class Storage:
    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self.url = ""  # http://127.0.0.1:PORT once listening
        self.requests: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)

    def _signature(self, recording_id: str, expires: int) -> str:
        message = f"{recording_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, recording_id: str, extra: list[tuple[str, str]] | None = None) -> str:
        """An absolute URL serving this recording's content for the next URL_TTL seconds.
        `extra` query parameters (contentDisposition...) ride along unsigned."""
        expires = int(time.time() + URL_TTL)
        sig = self._signature(recording_id, expires)
        query = urlencode([("expires", str(expires)), *(extra or [])])
        return f"{self.url}/blob/{sig}/{recording_id}?{query}"

    def verify(self, recording_id: str, expires: str | None, signature: str) -> bool:
        if expires is None or not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            return False
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(self._signature(recording_id, int(expires)), signature)

    def record(self, scope: dict[str, Any]) -> None:
        """Log one request from its ASGI scope (headers joined per name, names lower-case)."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.requests.append(
            {
                "time": iso(int(time.time() * 1000)),
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": headers,
            }
        )

    def describe(self) -> dict[str, Any]:
        """The admin API's view: {"url", "requests": [...]} (oldest first)."""
        return {"url": self.url, "requests": list(self.requests)}
