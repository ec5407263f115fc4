"""Malformed API responses at the HTTP level (httpx.MockTransport, autojump clock).

What a misbehaving server, proxy or network can hand the client: missing and
wrong-typed fields, truncated JSON, HTML error pages with a 200, a body
shorter or longer than its Content-Length, a contentUri or redirect to an
unknown host, error bodies that echo secrets. The rule each test checks: the
client raises a domain error (retrying what may be transient), the indexer
skips a bad record and keeps the good ones, and the log says what and why
without a secret. (No `trio.fail_after` here: under autojump_clock a wait on a
worker thread lets the clock jump straight to any deadline; pytest-timeout
bounds every test instead.)
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rcfs.api import RetryPolicy, RingCentralClient
from rcfs.content import ContentManager, ContentRef
from rcfs.errors import BadResponse, ForeignHostRefused, RcfsError, TemporaryFailure
from rcfs.index import Index
from rcfs.indexer import read_span, refresh
from rcfs.models import epoch_ms

from .fakerc import JWT, MEDIA, SECRET, FakeRC

D0, D1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
CONTENT = f"{MEDIA}/restapi/v1.0/account/1/recording/7/content"
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"

Override = Callable[[httpx.Request], "httpx.Response | None"]


class Chaos:
    """FakeRC behind a switch: `override` may answer a request instead of the fake."""

    def __init__(self, fake: FakeRC) -> None:
        self.fake = fake
        self.override: Override | None = None
        self.hits = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.override is not None and request.url.path != "/restapi/oauth/token":
            answer = self.override(request)
            if answer is not None:
                self.hits += 1
                self.fake.requests.append(request)
                return answer
        return await self.fake.handle(request)


@pytest.fixture
async def chaos_client(fake: FakeRC, tmp_path: Path) -> AsyncIterator[tuple[Chaos, RingCentralClient]]:
    chaos = Chaos(fake)
    policy = RetryPolicy(rng=random.Random(3))
    async with RingCentralClient.open(
        fake.creds(), tmp_path / "token.json", transport=httpx.MockTransport(chaos.handle),
        retry_policy=policy,
    ) as c:
        yield chaos, c


def first_n(n: int, make: Callable[[httpx.Request], httpx.Response]) -> Override:
    """Answer the first `n` call-log requests with `make(...)`, then step aside."""
    left = [n]

    def override(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/call-log") and left[0] > 0:
            left[0] -= 1
            return make(request)
        return None

    return override


def good_record(call_id: str, rid: str) -> dict[str, Any]:
    return {"id": call_id, "startTime": "2026-01-01T10:00:00Z", "direction": "Inbound",
            "from": {"phoneNumber": "+16505550123"}, "to": {"extensionNumber": "101"},
            "duration": 30, "recording": {"id": rid, "contentUri": f"{MEDIA}/c/{rid}/content"}}


@pytest.mark.parametrize(
    "body",
    [HTML, b'{"records": [{"id": "c1", "startTi', b"", b"\x00\xff garbage"],
    ids=["html", "truncated", "empty", "binary"],
)
async def test_unreadable_page_is_retried_then_succeeds(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient], body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chaos, client = chaos_client
    caplog.set_level(logging.DEBUG)
    chaos.override = first_n(2, lambda r: httpx.Response(200, content=body))
    pages = [p async for p in client.iter_call_log(D0, D1)]
    assert sum(len(p) for p in pages) == len(chaos.fake.records)
    assert chaos.hits == 2
    assert "not valid JSON" in caplog.text


async def test_persistently_unreadable_page_fails_with_a_clear_reason(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    chaos, client = chaos_client
    chaos.override = first_n(100, lambda r: httpx.Response(200, content=HTML,
                                                         headers={"Content-Type": "text/html"}))
    with pytest.raises(BadResponse) as info:
        [p async for p in client.iter_call_log(D0, D1)]
    assert "readCompanyCallLog" in str(info.value) and "HTML page" in str(info.value)
    assert "Bad Gateway" not in str(info.value)  # the body itself is never quoted
    assert chaos.hits == 6  # the policy's attempts, no more


@pytest.mark.parametrize(
    "page",
    [{"records": "none"}, {"navigation": {}}, [], {"records": None}],
    ids=["string", "missing", "array", "null"],
)
async def test_page_without_records_is_a_bad_response(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient], page: Any,
) -> None:
    chaos, client = chaos_client
    chaos.override = first_n(1, lambda r: httpx.Response(200, json=page))
    with pytest.raises(BadResponse):
        [p async for p in client.iter_call_log(D0, D1)]
    assert chaos.hits == 1  # a well-formed answer that says nothing useful is not retried


async def test_bad_records_skipped_good_ones_indexed_and_logged(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chaos, client = chaos_client
    bad: list[Any] = [
        {**good_record("b1", "91"), "startTime": 1767261600},
        {**good_record("b2", "92"), "direction": None},
        {**good_record("b3", "93"), "recording": {"id": "93"}},  # no contentUri
        {**good_record("b4", "94"), "duration": "long"},
        {**good_record("b5", "95"), "from": ["+1"]},
        {**good_record("b6", "96"), "startTime": "0001-01-01T00:00:00+05:00"},
        {**good_record("b7\nFAKE LOG LINE", "97"), "legs": "many"},
        "not an object",
        None,
    ]
    good = [good_record(f"g{i}", str(i)) for i in range(5)]
    records = good[:2] + bad + good[2:]
    chaos.override = first_n(1, lambda r: httpx.Response(200, json={"records": records}))
    caplog.set_level(logging.INFO)
    index = Index(tmp_path / "index.sqlite")
    try:
        await read_span(client, index, epoch_ms(D0), epoch_ms(D1))
        ids = {r.recording_id for r in index.recordings_between(0, 2**62, include_deleted=True)}
        assert ids == {str(i) for i in range(5)}
    finally:
        index.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "bad call-log record" in r.getMessage()]
    for call_id, why in [("b1", "startTime"), ("b2", "direction"), ("b3", "contentUri"),
                         ("b4", "duration"), ("b5", "from"), ("b6", "startTime")]:
        assert any(call_id in w and why in w for w in warnings), (call_id, warnings)
    assert any("legs" in w for w in warnings)
    assert all("\n" not in w for w in warnings)  # one line each, even for a hostile id


async def test_bad_sync_answer_does_not_fail_refresh(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chaos, client = chaos_client

    def override(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("call-log-sync"):
            return httpx.Response(200, json={"records": [], "syncInfo": "soon"})
        return None

    chaos.override = override
    chaos.fake.records = [good_record(f"g{i}", str(i)) for i in range(3)]
    index = Index(tmp_path / "index.sqlite")
    try:
        result = await refresh(client, index, now=datetime(2026, 1, 1, 12, tzinfo=UTC))
        assert result.new_recordings > 0  # the window read still counted
    finally:
        index.close()
    assert "call-log sync failed" in caplog.text and "syncInfo" in caplog.text


@pytest.mark.parametrize("declared", [-100, +100], ids=["short-body", "long-body"])
async def test_wrong_content_length_is_never_a_complete_download(
    chaos_client: tuple[Chaos, RingCentralClient], tmp_path: Path,
    declared: int,
) -> None:
    """A body whose length disagrees with Content-Length fails or resumes; never cached wrong."""
    chaos, client = chaos_client
    data = chaos.fake.content
    broken = [2]

    def override(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/content") or broken[0] == 0:
            return None
        broken[0] -= 1
        start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
        body = data[start:]
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                   "Content-Length": str(len(body) + declared), "Content-Type": "audio/mpeg"}
        return httpx.Response(206, content=body if declared > 0 else body[:declared], headers=headers)

    chaos.override = override
    async with trio.open_nursery() as nursery:
        content = await ContentManager.create(cache_dir=tmp_path / "cache", size_limit=10**8,
                                              client=client, nursery=nursery,
                                              on_exact_size=lambda rid, size, **_: None)
        try:
            info = await content.open(ContentRef("7", CONTENT))
            assert info.size == len(data)
            got = await content.read("7", 0, len(data) + 10)
            content.release("7")
            assert got == data
            await content.prefetch(ContentRef("7", CONTENT))
            assert content.is_cached("7")
        finally:
            await content.aclose()
    assert broken[0] < 2  # the broken answers were served


async def test_foreign_content_uri_gets_no_request_at_all(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient],
) -> None:
    chaos, client = chaos_client
    for uri in ("https://evil.example/restapi/v1.0/account/1/recording/7/content",
                "https://media.example.test.evil.example/x",
                "http://media.example.test/x",            # same host, other scheme
                "https://media.example.test:8443/x"):     # same host, other port
        with pytest.raises(ForeignHostRefused):
            async with client.stream_content(uri):
                pass
    assert {r.url.host for r in chaos.fake.requests} <= {"platform.example.test", "media.example.test"}
    assert all(r.url.port in (None, 443) for r in chaos.fake.requests)


async def test_redirect_to_a_foreign_host_keeps_the_token_home(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient],
) -> None:
    chaos, client = chaos_client
    chaos.override = lambda r: (httpx.Response(307, headers={"Location": "https://evil.example/grab"})
                                if r.url.host == "media.example.test" else None)
    with pytest.raises(RcfsError):  # followed, without the token: evil's own answer
        async with client.stream_content(CONTENT):
            pass
    sent_auth = [r for r in chaos.fake.requests if "authorization" in r.headers]
    assert sent_auth and all(r.url.host != "evil.example" for r in sent_auth)
    assert any(r.url.host == "evil.example" for r in chaos.fake.requests)


async def test_error_bodies_echoing_secrets_are_redacted(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    chaos, client = chaos_client
    caplog.set_level(logging.DEBUG)
    await client.login()
    token = client._auth.usable_token()
    assert token
    echo = {"errorCode": "CMN-999", "message": f"bad {token} for {JWT} with {SECRET}"}
    chaos.override = lambda r: (httpx.Response(503, json=echo) if "call-log" in r.url.path else None)
    with pytest.raises(TemporaryFailure) as info:
        [p async for p in client.iter_call_log(D0, D1)]
    text = str(info.value) + caplog.text + json.dumps(client.snapshot())
    assert "CMN-999" in text
    for secret in (token, JWT, SECRET):
        assert secret not in text


async def test_malformed_token_response(
    autojump_clock: trio.abc.Clock, fake: FakeRC, tmp_path: Path,
) -> None:
    calls = [0]

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/restapi/oauth/token":
            calls[0] += 1
            return httpx.Response(200, json={"token_type": "bearer", "expires_in": "soon"})
        return await fake.handle(request)

    async with RingCentralClient.open(fake.creds(), tmp_path / "t.json",
                                      transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(BadResponse, match="access_token"):
            await client.login()
    assert calls[0] == 1


async def test_an_error_body_that_breaks_off_is_still_a_clean_error(
    autojump_clock: trio.abc.Clock, chaos_client: tuple[Chaos, RingCentralClient],
) -> None:
    """A 503 whose body the connection drops: a TemporaryFailure (retried), not a crash."""
    chaos, client = chaos_client

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def,override]
            yield b'{"errorCode": "CMN-'
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")

    calls = [0]

    def override(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/content") or calls[0] >= 2:
            return None
        calls[0] += 1
        return httpx.Response(503, stream=Broken(), headers={"Content-Length": "142"})

    chaos.override = override
    async with client.stream_content(CONTENT) as resp:  # retried past both, then served
        body = b"".join([c async for c in resp.iter_chunks()])
    assert body == chaos.fake.content and calls[0] == 2
