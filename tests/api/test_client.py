"""RingCentralClient against a strict fake server (httpx.MockTransport, autojump clock)."""

from __future__ import annotations

import json
import logging
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trio

from rcfs.api import Priority, RetryPolicy, RingCentralClient
from rcfs.config import Credentials
from rcfs.errors import (
    ApiError,
    AuthError,
    BadResponse,
    ConfigError,
    ForeignHostRefused,
    NotFound,
    PermissionDenied,
    SyncTokenInvalid,
    TemporaryFailure,
)

from .fakerc import JWT, MEDIA, SECRET, FakeRC

CONTENT = f"{MEDIA}/restapi/v1.0/account/1/recording/7/content"
D0, D1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


async def test_login_persists_token_0600_and_reuses_it(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient, token_path: Path
) -> None:
    await client.login()
    assert fake.logins == 1
    assert (os.stat(token_path).st_mode & 0o777) == 0o600
    assert JWT not in token_path.read_text()
    async with RingCentralClient.open(fake.creds(), token_path, transport=fake.transport()) as c2:
        await c2.account_info()
    assert fake.logins == 1  # the second client re-used the stored token


async def test_refresh_before_expiry_shared_by_waiters(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    fake.access_ttl = 100.0
    fake.groups.pop("Light")
    await client.login()
    await trio.sleep(85)  # inside the refresh margin, not yet expired
    async with trio.open_nursery() as n:
        for _ in range(20):
            n.start_soon(client.account_info)
    assert (fake.logins, fake.refreshes) == (1, 1)
    assert not any(op == "getToken" for op in fake.ops[-20:])


async def test_401_triggers_one_renewal_and_retry(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    await client.login()
    fake.tokens.clear()  # the server forgot every access token
    info = await client.account_info()
    assert info["id"] == "4242"
    assert fake.refreshes == 1


async def test_failed_refresh_falls_back_to_jwt_login(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    await client.login()
    fake.tokens.clear()
    fake.refresh_ok = False
    await client.account_info()
    assert fake.logins == 2


async def test_refused_credentials_give_clear_autherror_fast(
    autojump_clock: trio.abc.Clock,
    fake: FakeRC,
    client: RingCentralClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.login()
    fake.tokens.clear()
    fake.refresh_ok = False
    fake.jwt_ok = False
    start = trio.current_time()
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await client.account_info()
        except AuthError as exc:
            errors.append(exc)

    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(one)
    assert len(errors) == 10
    msg = str(errors[0])
    assert "JWT login" in msg and "invalid_grant" in msg and "OAU-140" in msg
    assert trio.current_time() - start < 5  # no waiting out the Auth budget
    assert fake.logins == 1  # one refused login attempt, remembered
    for text in [str(e) for e in errors] + [r.getMessage() for r in caplog.records]:
        assert JWT not in text and SECRET not in text and "AT-secret" not in text


async def test_call_log_pages_followed(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    pages = [p async for p in client.iter_call_log(D0, D1)]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [r["id"] for p in pages for r in p] == [f"c{i}" for i in range(25)]
    first = next(r for r in fake.requests if r.url.path.endswith("/call-log"))
    q = dict(first.url.params)
    assert q["view"] == "Detailed" and q["perPage"] == "1000" and q["withRecording"] == "true"
    assert q["dateFrom"] == "2026-01-01T00:00:00.000Z"
    # nextPage named another host: the request went to our own server anyway
    assert {r.url.host for r in fake.requests} == {"platform.example.test"}


async def test_403_falls_back_to_extension_call_log(
    autojump_clock: trio.abc.Clock,
    fake: FakeRC,
    client: RingCentralClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.company_allowed = False
    pages = [p async for p in client.iter_call_log(D0, D1)]
    assert sum(len(p) for p in pages) == 25
    assert client.call_log_scope == "extension"
    assert client.snapshot()["call_log_scope"] == "extension"
    assert fake.ops.count("readUserCallLog") == 3
    [p async for p in client.iter_call_log(D0, D1)]
    assert fake.ops.count("readCompanyCallLog") == 1
    assert sum("company call log is not permitted" in r.getMessage() for r in caplog.records) == 1


async def test_sync(autojump_clock: trio.abc.Clock, client: RingCentralClient) -> None:
    full = await client.sync_call_log(None, date_from=D0)
    assert full.full and full.sync_token == "tok-1" and len(full.records) == 3
    inc = await client.sync_call_log("tok-1")
    assert not inc.full
    with pytest.raises(SyncTokenInvalid) as ei:
        await client.sync_call_log("stale")
    assert ei.value.error_code == "CLG-102"


async def test_error_mapping(autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient) -> None:
    with pytest.raises(NotFound, match="CMN-102"):
        await client.recording_info("missing")
    fake.fail_next.extend([403])
    with pytest.raises(PermissionDenied):
        await client.recording_info("1")
    fake.fail_next.extend([400])
    with pytest.raises(ApiError) as ei:
        await client.recording_info("1")
    assert ei.value.status == 400
    fake.fail_next.extend([200])  # a 200 that is not JSON: retried like a 5xx
    assert (await client.recording_info("2"))["id"] == "2"
    fake.fail_next.extend([200] * 10)
    with pytest.raises(BadResponse, match="not valid JSON"):
        await client.recording_info("1")
    fake.fail_next.clear()
    fake.fail_next.extend([503, 500])
    assert (await client.recording_info("5"))["id"] == "5"  # 5xx retried
    fake.fail_next.extend([503] * 10)
    with pytest.raises(TemporaryFailure):
        await client.recording_info("5")
    assert client.snapshot()["requests"]["Heavy"]["errors"] == 11


async def test_429_pauses_group_then_retries(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    fake = FakeRC(limits={"Heavy": (2, 10.0), "Auth": (5, 60.0)})
    async with RingCentralClient.open(
        fake.creds(),
        tmp_path / "t.json",
        transport=fake.transport(),
        retry_policy=RetryPolicy(rng=random.Random(2)),
    ) as client:
        await client.login()
        fake.groups["Heavy"].accepted.extend([trio.current_time()] * 2)  # someone else used it
        start = trio.current_time()
        await client.recording_info("1")
        assert fake.groups["Heavy"].throttled == 1  # one 429, nothing sent during the penalty
        assert trio.current_time() - start >= 60
        assert client.snapshot()["requests"]["Heavy"]["throttled_429"] == 1


async def test_content_streamed_with_range(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    async with client.stream_content(CONTENT, start=1000) as resp:
        assert (resp.status, resp.start, resp.total_size) == (206, 1000, len(fake.content))
        assert resp.content_type == "audio/mpeg" and resp.length == len(fake.content) - 1000
        body = b"".join([c async for c in resp.iter_chunks()])
    assert body == fake.content[1000:]
    req = fake.requests[-1]
    assert req.headers["range"] == "bytes=1000-"
    assert "application/json" not in req.headers.get("accept", "")
    assert req.url.host == "media.example.test"
    assert client.snapshot()["requests"]["Heavy"]["bytes"] >= len(body)


async def test_content_200_instead_of_206_and_no_length(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    fake.ignore_range = True
    fake.content_length = False
    async with client.stream_content(CONTENT, start=500) as resp:
        assert (resp.status, resp.start, resp.total_size, resp.length) == (200, 0, None, None)
        body = b"".join([c async for c in resp.iter_chunks()])
    assert body == fake.content


async def test_content_errors(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    with pytest.raises(ApiError) as ei:
        async with client.stream_content(CONTENT, start=10**7):
            pass
    assert ei.value.status == 416 and ei.value.error_code == "CMN-107"
    fake.fail_next.append(404)
    with pytest.raises(NotFound):
        async with client.stream_content(CONTENT):
            pass


async def test_foreign_hosts_refused(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    with pytest.raises(ForeignHostRefused, match=r"evil\.example"):
        async with client.stream_content("https://evil.example/restapi/x/content"):
            pass
    # A redirect of content to plain http elsewhere is not followed at all...
    fake.redirect_to = "http://evil.example/steal"
    with pytest.raises(ForeignHostRefused, match="only https"):
        async with client.stream_content(CONTENT):
            pass
    assert all(r.url.host != "evil.example" for r in fake.requests)
    # ...one to https is (a signed storage URL), but never with the token.
    fake.redirect_to = "https://evil.example/steal?access_token=leak&sig=1"
    with pytest.raises(AuthError):  # this fake answers 401 to anyone without a token
        async with client.stream_content(CONTENT):
            pass
    foreign = [r for r in fake.requests if r.url.host == "evil.example"]
    assert len(foreign) == 1
    assert "authorization" not in foreign[0].headers
    assert "access_token" not in str(foreign[0].url) and "sig=1" in str(foreign[0].url)
    assert foreign[0].headers["range"] == "bytes=0-"


async def test_access_token_never_in_urls(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    async with client.stream_content(CONTENT + "?access_token=leaked&contentDisposition=Inline"):
        pass
    url = str(fake.requests[-1].url)
    assert "access_token" not in url and "contentDisposition=Inline" in url


async def test_emulator_credentials_refused_for_remote_server(tmp_path: Path) -> None:
    creds = Credentials("https://platform.ringcentral.com", "id", "s", "rcfs-emulator-jwt.x")
    with pytest.raises(ConfigError):
        async with RingCentralClient.open(creds, tmp_path / "t"):
            pass


async def test_priority_on_the_wire(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    fake.groups["Heavy"] = type(fake.groups["Heavy"])(1, 10.0, 60.0)
    await client.login()
    await client.recording_info("0")
    order: list[str] = []

    async def get(rid: str, prio: Priority) -> None:
        await client.recording_info(rid, priority=prio)
        order.append(rid)

    async with trio.open_nursery() as n:
        for i in range(3):
            n.start_soon(get, f"b{i}", Priority.BACKGROUND)
            await trio.sleep(0.01)
        n.start_soon(get, "i", Priority.INTERACTIVE)
    assert order == ["i", "b0", "b1", "b2"]
    assert fake.groups["Heavy"].throttled == 0


async def test_no_secrets_in_logs_or_reprs(
    autojump_clock: trio.abc.Clock,
    fake: FakeRC,
    client: RingCentralClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.login()
    fake.access_ttl = 1.0
    fake.tokens.clear()
    await client.account_info()
    async with client.stream_content(CONTENT) as resp:
        [c async for c in resp.iter_chunks()]
    fake.fail_next.extend([503])
    await client.recording_info("1")
    texts = [r.getMessage() for r in caplog.records] + [repr(client), repr(client._auth)]
    texts.append(repr(client._auth._token))
    joined = "\n".join(texts)
    assert caplog.records  # httpx and rcfs did log
    for secret in (JWT, SECRET, "AT-secret", "RT-secret", "access_token="):
        assert secret not in joined


async def test_a_503_retry_after_is_honoured(
    autojump_clock: trio.abc.Clock, fake: FakeRC, client: RingCentralClient
) -> None:
    await client.login()
    fake.fail_next.extend([503, 503])
    fake.fail_headers = {"Retry-After": "40"}
    t0 = trio.current_time()
    await client.recording_info("1")
    assert trio.current_time() - t0 >= 80  # two 503s, each asking for 40 s
    fake.fail_headers = {}
    fake.fail_next.append(503)
    t0 = trio.current_time()
    await client.recording_info("1")
    assert trio.current_time() - t0 < 30  # without the header: the policy's own back-off


async def test_a_400_about_the_sync_token_means_a_full_sync() -> None:
    from rcfs.api.responses import error_for

    for body in (
        {"errorCode": "CMN-101", "message": "Parameter [syncToken] is invalid",
         "errors": [{"errorCode": "CMN-101", "parameterName": "syncToken"}]},
        {"errorCode": "CMN-101", "message": "Parameter [syncToken] is invalid "
                                            "[max sync record number limit is exceeded]"},
        {"errorCode": "CLG-104", "message": "Sync token is expired"},
    ):
        err = error_for("syncAccountCallLog", 400, httpx.Headers(), json.dumps(body).encode(),
                        lambda t: t)
        assert isinstance(err, SyncTokenInvalid), body
    other = error_for("syncAccountCallLog", 400, httpx.Headers(),
                      b'{"errorCode": "CMN-101", "message": "Parameter [dateFrom] is invalid"}',
                      lambda t: t)
    assert not isinstance(other, SyncTokenInvalid)
