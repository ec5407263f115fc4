"""A small, strict fake of RingCentral for unit tests over httpx.MockTransport.

Time is trio's clock, so tests run under autojump_clock. It enforces a sliding
window per group with a penalty restarted by every request during it, issues
tokens that expire, and records every request it saw.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import trio

from rcfs.config import Credentials

SERVER = "https://platform.example.test"
MEDIA = "https://media.example.test"
CLIENT_ID = "test-client-id"
SECRET = "test-client-secret-XYZ123"
JWT = "test-user-jwt-ABCDEF987654"

CREDS = Credentials(server_url=SERVER, client_id=CLIENT_ID, client_secret=SECRET, jwt=JWT, media_url=MEDIA)


@dataclass
class Group:
    limit: int
    window: float
    penalty: float
    accepted: deque[float] = field(default_factory=deque)
    penalty_until: float = -1.0
    throttled: int = 0


def _err(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"errorCode": code, "message": message, "errors": [{"errorCode": code}]}
    return httpx.Response(status, json=body, headers=headers)


class FakeRC:
    def __init__(self, *, limits: dict[str, tuple[int, float]] | None = None) -> None:
        limits = limits or {"Heavy": (10, 60.0), "Light": (50, 60.0), "Auth": (5, 60.0)}
        self.groups = {g: Group(n, w, 60.0) for g, (n, w) in limits.items()}
        self.access_ttl = 3600.0
        self.refresh_ok = True
        self.jwt_ok = True
        self.issue_refresh = True
        self.company_allowed = True
        self.latency = 0.0
        self.fail_next: deque[int] = deque()  # statuses to answer the next API requests with
        self.fail_headers: dict[str, str] = {}  # extra headers on those answers
        self.tokens: dict[str, float] = {}  # access token -> expiry
        self.refresh_tokens: set[str] = set()
        self.requests: list[httpx.Request] = []
        self.ops: list[str] = []
        self.logins = 0
        self.refreshes = 0
        self.n = 0
        self.records = [
            {"id": f"c{i}", "startTime": "2026-01-01T00:00:00Z", "recording": {"id": str(i)}}
            for i in range(25)
        ]
        self.content = bytes(range(256)) * 40
        self.content_length = True
        self.ignore_range = False
        self.redirect_to: str | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def creds(self) -> Credentials:
        return CREDS

    # -- plumbing -------------------------------------------------------------

    def _limit(self, group: str) -> httpx.Response | dict[str, str]:
        g = self.groups.get(group)
        if g is None:
            return {}
        now = trio.current_time()
        while g.accepted and g.accepted[0] <= now - g.window:
            g.accepted.popleft()
        if now < g.penalty_until or len(g.accepted) >= g.limit:
            g.penalty_until = now + g.penalty
            g.throttled += 1
            return _err(
                429,
                "CMN-301",
                "Request rate exceeded",
                **{
                    "Retry-After": str(int(g.penalty)),
                    "X-Rate-Limit-Group": group,
                },
            )
        g.accepted.append(now)
        return {
            "X-Rate-Limit-Group": group,
            "X-Rate-Limit-Limit": str(g.limit),
            "X-Rate-Limit-Remaining": str(g.limit - len(g.accepted)),
            "X-Rate-Limit-Window": f"{g.window:g}",
        }

    def _new_tokens(self) -> dict[str, Any]:
        self.n += 1
        at, rt = f"AT-secret-{self.n:04d}-zz", f"RT-secret-{self.n:04d}-zz"
        self.tokens[at] = trio.current_time() + self.access_ttl
        body: dict[str, Any] = {
            "access_token": at,
            "token_type": "bearer",
            "expires_in": self.access_ttl,
        }
        if self.issue_refresh:
            self.refresh_tokens.add(rt)
            body |= {"refresh_token": rt, "refresh_token_expires_in": 604800}
        return body

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.latency:
            await trio.sleep(self.latency)
        path = request.url.path
        if path == "/restapi/oauth/token":
            return self._token(request)
        if path.endswith("/content"):
            op, group = "readCallRecordingContent", "Heavy"
        elif path.endswith("/extension/~/call-log"):
            op, group = "readUserCallLog", "Heavy"
        elif path.endswith("/call-log"):
            op, group = "readCompanyCallLog", "Heavy"
        elif path.endswith("call-log-sync"):
            op, group = "syncAccountCallLog", "Heavy"
        elif "/recording/" in path:
            op, group = "readCallRecording", "Heavy"
        else:
            op, group = "readAccountInfo", "Light"
        self.ops.append(op)
        limited = self._limit(group)
        if isinstance(limited, httpx.Response):
            return limited
        headers = dict(limited)
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        exp = self.tokens.get(token)
        if exp is None:
            return _err(401, "OAU-213", "Token not found", **headers)
        if trio.current_time() >= exp:
            return _err(401, "OAU-128", "Access token expired", **headers)
        if self.fail_next:
            status = self.fail_next.popleft()
            if status == 200:
                return httpx.Response(200, content=b"not json{", headers=headers)
            return _err(status, f"TEST-{status}", "injected", **headers, **self.fail_headers)
        if self.redirect_to and op == "readCallRecordingContent":
            return httpx.Response(302, headers={"Location": self.redirect_to, **headers})
        if op == "readCompanyCallLog" and not self.company_allowed:
            return _err(403, "CMN-408", "In order to call this API endpoint, user needs...", **headers)
        if op in ("readCompanyCallLog", "readUserCallLog"):
            return self._call_log(request, headers)
        if op == "syncAccountCallLog":
            return self._sync(request, headers)
        if op == "readCallRecordingContent":
            return self._content(request, headers)
        if op == "readCallRecording":
            rid = path.rsplit("/", 1)[-1]
            if rid == "missing":
                return _err(404, "CMN-102", "Resource for parameter [recordingId] is not found")
            return httpx.Response(200, json={"id": rid, "contentType": "audio/mpeg"}, headers=headers)
        return httpx.Response(200, json={"id": "4242", "status": "Confirmed"}, headers=headers)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.ops.append("getToken")
        limited = self._limit("Auth")
        if isinstance(limited, httpx.Response):
            return limited
        basic = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode()
        if basic != f"{CLIENT_ID}:{SECRET}":
            return httpx.Response(401, json={"error": "invalid_client"})
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if form["grant_type"] == "refresh_token":
            rt = form["refresh_token"]
            if not self.refresh_ok or rt not in self.refresh_tokens:
                return httpx.Response(
                    400,
                    json={
                        "error": "invalid_grant",
                        "error_description": "Token is revoked",
                        "errors": [{"errorCode": "OAU-211"}],
                    },
                )
            self.refresh_tokens.discard(rt)
            self.refreshes += 1
            return httpx.Response(200, json=self._new_tokens(), headers=limited)
        if not self.jwt_ok or form.get("assertion") != JWT:
            return httpx.Response(
                400,
                json={
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT token",
                    "errors": [{"errorCode": "OAU-140"}],
                },
            )
        self.logins += 1
        return httpx.Response(200, json=self._new_tokens(), headers=limited)

    def _call_log(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        per_page = min(int(q.get("perPage", "100")), 10)  # small pages to test paging
        page = int(q.get("page", "1"))
        recs = self.records[(page - 1) * per_page : page * per_page]
        nav: dict[str, Any] = {}
        if page * per_page < len(self.records):
            # a different origin on purpose: the client keeps the path on its own server
            nav["nextPage"] = {"uri": f"https://elsewhere.test{request.url.path}?page={page + 1}"}
        body = {"records": recs, "navigation": nav, "paging": {"page": page}}
        return httpx.Response(200, json=body, headers=headers)

    def _sync(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        if q["syncType"] == "ISync" and q.get("syncToken") != "tok-1":
            return _err(400, "CLG-102", "Sync token is invalid", **headers)
        body = {
            "records": self.records[:3],
            "syncInfo": {"syncType": q["syncType"], "syncToken": "tok-1", "syncTime": "T"},
        }
        return httpx.Response(200, json=body, headers=headers)

    def _content(self, request: httpx.Request, headers: dict[str, str]) -> httpx.Response:
        data = self.content
        rng = request.headers.get("range")
        status = 200
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return _err(416, "CMN-107", "Requested range not satisfiable", **headers)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        headers["Content-Type"] = "audio/mpeg"

        async def body() -> Any:
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        if self.content_length:
            headers["Content-Length"] = str(len(data))
            return httpx.Response(status, content=data, headers=headers)
        return httpx.Response(status, content=body(), headers=headers)


def dump(obj: Any) -> str:
    return json.dumps(obj)
