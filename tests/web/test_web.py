"""The web player over HTTP: a real index, tree, content manager and emulator, and
the app served by Hypercorn on 127.0.0.1:0, driven with httpx.

Every test is bounded by `trio.fail_after` (and pytest-timeout).
"""

from __future__ import annotations

import html
import logging
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
import trio

from rcfs.content import BULK, INTERACTIVE, ContentRef
from rcfs.errors import TemporaryFailure
from rcfs.vfs import dir_ino
from rcfs.web import SECURITY_HEADERS, WebApp, count_between, parse_range, serve_web
from rcfs.web.auth import Sessions, SignIns, UrlSigner
from rcfs.web.media import Unsatisfiable, content_disposition

from .webstack import links, web_stack

pytestmark = pytest.mark.timeout(120)
LIMIT = 60  # seconds: each test's own hang guard

HOSTILE = "<script>alert('x')</script> \"O'Brien\" & <b>Co</b>"


def assert_security_headers(r: httpx.Response) -> None:
    for key, value in SECURITY_HEADERS.items():
        assert r.headers.get(key) == value, (r.request.url.path, key)
    assert "script-src" not in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]


async def wait_until(cond: Any, what: str, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


# -- audio: Range, HEAD, types, names -----------------------------------------------


async def test_range_1000_1999_is_those_bytes_of_the_emulators_content(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            ir = s.recordings()[0]
            assert not ir.size_exact and not s.content.is_cached(ir.recording_id)
            data = await s.emulator_content(ir.recording_id)
            url = s.audio_url(ir)
            for state in ("uncached", "cached"):
                r = await s.http.get(url, headers={"Range": "bytes=1000-1999"})
                assert r.status_code == 206, (state, r.text)
                assert r.content == data[1000:2000], state
                assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
                assert r.headers["content-length"] == "1000"
                assert r.headers["accept-ranges"] == "bytes"
                assert r.headers["content-type"] == "audio/mpeg"
                assert_security_headers(r)
                if state == "uncached":
                    await wait_until(lambda: s.content.is_cached(ir.recording_id), "the cache")
            # The whole file without Range: 200, every byte, the exact length.
            r = await s.http.get(url)
            assert r.status_code == 200
            assert r.content == data
            assert r.headers["content-length"] == str(len(data))
            assert "content-range" not in r.headers
            assert r.headers["accept-ranges"] == "bytes"


async def test_range_forms_head_and_416(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            ir = s.recordings()[1]
            data = await s.emulator_content(ir.recording_id)
            size = len(data)
            url = s.audio_url(ir)
            # HEAD of a recording whose size is only estimated: the exact length, no body.
            r = await s.http.head(url)
            assert r.status_code == 200 and r.content == b""
            assert r.headers["content-length"] == str(size)
            r = await s.http.head(url, headers={"Range": "bytes=10-19"})
            assert r.status_code == 206 and r.content == b""
            assert r.headers["content-range"] == f"bytes 10-19/{size}"
            assert r.headers["content-length"] == "10"
            cases = {
                "bytes=-500": (size - 500, size - 1),
                f"bytes={size - 100}-": (size - 100, size - 1),
                "bytes=0-": (0, size - 1),
                f"bytes=5-{size + 1000}": (5, size - 1),
                f"bytes=-{size + 5}": (0, size - 1),
            }
            for header, (start, end) in cases.items():
                r = await s.http.get(url, headers={"Range": header})
                assert r.status_code == 206, header
                assert r.content == data[start:end + 1], header
                assert r.headers["content-range"] == f"bytes {start}-{end}/{size}", header
                assert r.headers["content-length"] == str(end + 1 - start), header
            for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
                r = await s.http.get(url, headers={"Range": header})
                assert r.status_code == 416, header
                assert r.headers["content-range"] == f"bytes */{size}"
                assert r.content == b""
            # Ignored: several ranges, another unit, nonsense, an If-Range that does not match.
            for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "items=0-1"},
                            {"Range": "bytes=9-3"}, {"Range": "bytes=abc"},
                            {"Range": "bytes=0-9", "If-Range": '"stale"'}):
                r = await s.http.get(url, headers=headers)
                assert r.status_code == 200, headers
                assert r.content == data
            etag = r.headers["etag"]
            r = await s.http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
            assert r.status_code == 206 and r.content == data[:10]


async def test_download_gives_the_mounts_bytes_and_file_name(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            ir = s.recordings()[2]
            name = s.name_of(ir)
            data = await s.emulator_content(ir.recording_id)
            r = await s.http.get(s.audio_url(ir, "download"))
            assert r.status_code == 200
            assert r.content == data
            assert r.headers["content-disposition"] == (
                f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name, safe='')}"
                .replace("%2B", "+"))
            assert r.headers["content-type"] == "audio/mpeg" and name.endswith(".mp3")
            # The same file name as the mount, in the URL's path too (for mpv, VLC, wget).
            assert urlsplit(s.audio_url(ir, "download")).path.endswith("/" + quote(name, safe=""))
            r = await s.http.get(s.audio_url(ir))
            assert r.headers["content-disposition"].startswith("inline; ")


async def test_wav_recordings_are_audio_wav_named_wav(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=10, audio_format="wav") as s:
            ir = s.recordings()[0]
            data = await s.emulator_content(ir.recording_id)
            assert data[:4] == b"RIFF"
            r = await s.http.get(s.audio_url(ir), headers={"Range": "bytes=0-43"})
            assert r.status_code == 206
            assert r.headers["content-type"] == "audio/wav"
            assert r.content == data[:44]
            assert s.name_of(ir).endswith(".wav")
            assert f'filename="{s.name_of(ir)}"' in r.headers["content-disposition"]


async def test_a_play_is_an_interactive_read_released_when_done(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            priorities: list[int] = []
            real_open = s.content.open

            async def spy(ref: ContentRef, priority: int = INTERACTIVE) -> Any:
                priorities.append(priority)
                return await real_open(ref, priority)

            s.content.open = spy  # type: ignore[method-assign]
            ir = s.recordings()[3]
            r = await s.http.get(s.audio_url(ir), headers={"Range": "bytes=0-99"})
            assert r.status_code == 206
            assert priorities == [INTERACTIVE]
            await wait_until(lambda: not s.content._handles, "the handle's release")
            assert s.web.snapshot()["streams_active"] == 0


async def test_a_play_goes_ahead_of_a_queue_of_background_downloads(tmp_path: Path) -> None:
    # Heavy at 4 a second: 36 archive downloads queued take 9 s; a play must not wait
    # behind them, only for the next slot.
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=120,
                             rate_limits="heavy=4/1s,medium=100/1s,light=100/1s,auth=50/1s") as s:
            recs = s.recordings()
            assert len(recs) > 36
            queued, play = recs[:36], recs[-1]
            async with trio.open_nursery() as n:
                for ir in queued:
                    n.start_soon(s.content.prefetch, ContentRef.of(ir), BULK)
                await wait_until(lambda: s.content.snapshot()["downloads"]["queued"] >= 30,
                                 "the queue")
                t0 = trio.current_time()
                r = await s.http.get(s.audio_url(play), headers={"Range": "bytes=0-999"})
                took = trio.current_time() - t0
                left = s.content.snapshot()["downloads"]["queued"]
                n.cancel_scope.cancel()
            assert r.status_code == 206
            assert r.content == (await s.emulator_content(play.recording_id))[:1000]
            assert took < 1.5, took  # one slot (0.25 s) and then some; the queue is 9 s
            assert left >= 20, left  # most of the queue was still waiting


async def test_a_client_going_away_mid_stream_releases_the_recording(tmp_path: Path) -> None:
    # A slow media host: the body trickles, so the client leaves long before the end.
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=6, faults="trickle=20000") as s:
            ir = s.recordings()[0]
            async with s.http.stream("GET", s.audio_url(ir)) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_raw():
                    assert chunk
                    break
            # At 20 kB/s the rest of the body would take many seconds: the stream must end
            # because the client left, not because the body did.
            await wait_until(lambda: s.web.snapshot()["streams_active"] == 0, "the stream's end",
                             timeout=3)
            await wait_until(lambda: ir.recording_id not in s.content._handles, "the release",
                             timeout=3)
            assert not s.content.is_cached(ir.recording_id)


async def test_a_failure_mid_stream_cuts_the_body_short_and_is_recorded_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=6) as s:
            ir = s.recordings()[0]
            real_read = s.content.read
            calls = 0

            async def failing(rid: str, offset: int, size: int) -> bytes:
                nonlocal calls
                calls += 1
                if calls > 2:
                    raise TemporaryFailure("connection reset by the media host")
                return await real_read(rid, offset, size)

            s.content.read = failing  # type: ignore[method-assign,assignment]
            with pytest.raises(httpx.RemoteProtocolError):
                await s.http.get(s.audio_url(ir))
            causes = [e["cause"] for e in s.errors.snapshot()]
            assert causes == [f"web: recording {ir.recording_id}: connection reset by the "
                              "media host"]
            await wait_until(lambda: not s.content._handles, "the release")
            # Before the headers (the open fails), it is a 503 page with Retry-After.
            async def refused(ref: ContentRef, priority: int = INTERACTIVE) -> Any:
                raise TemporaryFailure("no answer from the media host")

            s.content.open = refused  # type: ignore[method-assign]
            r = await s.http.get(s.audio_url(s.recordings()[1]), headers={"Range": "bytes=0-10"})
            assert r.status_code == 503 and r.headers["retry-after"] == "30"
            assert_security_headers(r)


# -- signatures -------------------------------------------------------------------


async def test_tampered_misplaced_and_expired_signatures_get_403(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            a, b = s.recordings()[:2]
            good = s.audio_url(a)
            path, sig = good.split("?s=")
            assert (await s.http.head(good)).status_code == 200
            # Change the MAC's first character: its last one holds 2 bits that base64
            # decoding drops, so changing that one can leave the same MAC (a flaky test).
            stamp, mac = sig.split(".", 1)
            flipped = f"{stamp}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
            ino_b = s.vfs.recording_ino(b)
            bad = [
                f"{path}?s={flipped}",  # tampered signature
                f"{path}?s={sig}x",
                path,  # none
                f"{path}?s=",
                f"/audio/{ino_b}/{s.name_of(b)}?s={sig}",  # another recording's
                s.audio_url(a, "download").replace("/download/", "/audio/"),  # another purpose
                good.replace("/audio/", "/download/"),
                f"{path}?s=1.{sig.split('.', 1)[1]}",  # the timestamp changed
            ]
            for url in bad:
                r = await s.http.get(url, headers={"Range": "bytes=0-9"})
                assert r.status_code == 403, url
                assert_security_headers(r)
                assert not r.headers["content-type"].startswith("audio/")
            # Expired: an hour and a bit later.
            s.clock.offset = s.web.signer.ttl + 5
            assert (await s.http.get(good)).status_code == 403
            # A fresh page gives fresh links.
            assert (await s.http.head(s.audio_url(a))).status_code == 200
            # Not valid before it was made either (a clock that went back).
            s.clock.offset = 0
            ahead = UrlSigner(b"k" * 32, clock=lambda: 10_000.0)
            assert not ahead.check("audio", 5, UrlSigner(b"k" * 32, clock=lambda: 20_000.0)
                                   .sign("audio", 5))


async def test_a_signed_link_to_an_unknown_recording_is_404(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=4) as s:
            ino = (1 << 30) + 999_999
            r = await s.http.get(f"/audio/{ino}/x.mp3?s={s.web.signer.sign('audio', ino)}")
            assert r.status_code == 404
            assert_security_headers(r)


# -- sign-in and sessions --------------------------------------------------------------


async def test_pages_without_the_session_cookie_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            ir = s.recordings()[0]
            secret_bits = [ir.recording.from_party.name or "", ir.recording_id, s.name_of(ir)]
            for path in ("/", s.day_href(ir), "/search?q=5", "/search"):
                r = await s.http.get(path)
                assert r.status_code == 401, path
                assert "rcfs web MOUNTPOINT" in r.text
                assert_security_headers(r)
                for bit in secret_bits:
                    assert bit not in r.text, (path, bit)
            # A made-up or foreign cookie is no better.
            s.http.cookies.set(s.web.cookie_name, "made-up")
            assert (await s.http.get("/")).status_code == 401
            s.http.cookies.clear()


async def test_the_sign_in_link_works_once_sets_a_safe_cookie_and_redirects_home(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            link = s.web.sign_in_url()
            assert link.startswith(s.url + "signin?token=")
            # Whatever else the link carries, the only place it sends anyone is "/".
            r = await s.http.get(link + "&next=https://evil.example/&url=//evil.example")
            assert r.status_code == 303
            assert r.headers["location"] == "/"
            assert_security_headers(r)
            cookie = r.headers["set-cookie"]
            attrs = [a.strip().lower() for a in cookie.split(";")]
            name, _, value = cookie.split(";")[0].partition("=")
            assert name == s.web.cookie_name == f"rcfs_session_{urlsplit(s.url).port}"
            assert len(value) >= 40
            assert "httponly" in attrs and "path=/" in attrs and "samesite=lax" in attrs
            assert "secure" not in attrs  # plain HTTP on loopback
            assert token_of(link) not in cookie
            r = await s.http.get("/")
            assert r.status_code == 200 and "<h1>Call recordings</h1>" in r.text
            # Used once: the same link again is refused, and makes no new session.
            async with httpx.AsyncClient(base_url=s.url, trust_env=False) as other:
                r = await other.get(link)
                assert r.status_code == 403
                assert "set-cookie" not in r.headers
                assert (await other.get("/")).status_code == 401
            assert s.web.snapshot()["sessions"] == 1
            # A link that expired before use is refused too.
            late = s.web.sign_in_url()
            s.clock.offset = s.web.sign_ins.ttl + 1
            async with httpx.AsyncClient(base_url=s.url, trust_env=False) as other:
                assert (await other.get(late)).status_code == 403
                # A mangled token never works either.
                fresh = s.web.sign_in_url()
                assert (await other.get(fresh[:-1])).status_code == 403
                assert (await other.get(fresh + "x")).status_code == 403
                assert (await other.get("/signin")).status_code == 403
                assert (await other.get(fresh)).status_code == 303
            # Sessions end: after their lifetime, or all at once.
            s.clock.offset += s.web.sessions.ttl + 1
            assert (await s.http.get("/")).status_code == 401
            s.clock.offset = 0
            http = await s.signed_in()
            assert (await http.get("/")).status_code == 200
            assert s.web.revoke_sessions() >= 1
            assert (await http.get("/")).status_code == 401
            await http.aclose()


async def test_the_control_command_and_status(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=4) as s:
            answer = await s.web.command({"cmd": "web"})
            assert answer["url"].startswith(f"http://127.0.0.1:{urlsplit(s.url).port}/signin?token=")
            assert answer["expires_in"] == int(s.web.sign_ins.ttl)
            snap = s.web.snapshot()
            assert snap["url"] == s.url
            assert snap["sign_ins_pending"] == 1
            assert token_of(answer["url"]) not in repr(snap)


def token_of(link: str) -> str:
    return link.split("token=", 1)[1]


def test_sign_in_tokens_and_sessions_units() -> None:
    now = [1000.0]
    tokens = SignIns(ttl=300, clock=lambda: now[0], limit=3)
    minted = [tokens.mint() for _ in range(4)]
    assert len(set(minted)) == 4
    assert not tokens.redeem(minted[0])  # pushed out by the limit
    assert tokens.redeem(minted[1]) and not tokens.redeem(minted[1])
    now[0] += 301
    assert not tokens.redeem(minted[2])
    assert tokens.pending() == 0
    assert not tokens.redeem(None) and not tokens.redeem("") and not tokens.redeem("x" * 1000)
    sessions = Sessions(ttl=10, clock=lambda: now[0], limit=2)
    a, b, c = sessions.create(), sessions.create(), sessions.create()
    assert not sessions.valid(a) and sessions.valid(b) and sessions.valid(c)
    now[0] += 11
    assert not sessions.valid(c) and len(sessions) == 0
    with pytest.raises(ValueError):
        UrlSigner(b"short")


# -- pages ------------------------------------------------------------------------------


async def test_the_tree_lists_years_months_and_days_with_counts(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=60, days=40) as s:
            http = await s.signed_in()
            r = await http.get("/")
            assert r.status_code == 200
            assert_security_headers(r)
            assert r.headers["cache-control"] == "no-store"
            page = r.text
            assert '<html lang="en">' in page and 'name="viewport"' in page
            assert "<script" not in page.lower()
            days = 0
            total = 0
            for yname, _ in s.vfs.readdir(1):
                y = int(yname)
                assert f'<h2 id="y{y}">{y} ' in page
                for mname, _ in s.vfs.readdir(dir_ino(y)):
                    m = int(mname)
                    for dname, _ in s.vfs.readdir(dir_ino(y, m)):
                        d = int(dname)
                        lo_hi = s.vfs.day_range(dir_ino(y, m, d))
                        assert lo_hi is not None
                        n = count_between(s.index, *lo_hi)
                        listed = len(s.vfs.readdir(dir_ino(y, m, d))) - 1  # minus calls.json
                        assert n == listed
                        word = "recording" if n == 1 else "recordings"
                        assert re.search(
                            rf'<a href="/day/{y:04d}/{m:02d}/{d:02d}"><span class="dom">{d}</span>'
                            rf' <span class="dow">\w+</span> <span class="count">{n} {word}</span>',
                            page), (y, m, d, n)
                        days += 1
                        total += n
            assert days >= 2
            assert f"{total} recordings by the day" in page
            # Days are linked newest first.
            hrefs = [h for h in links(page) if h.startswith("/day/")]
            assert hrefs == sorted(hrefs, reverse=True) and len(hrefs) == days
            await http.aclose()


async def test_a_day_page_has_one_row_and_player_per_recording(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            recs = s.recordings()
            first = recs[0]
            day = s.day_href(first)
            same_day = [ir for ir in recs if s.day_href(ir) == day]
            # One of them cached, one deleted upstream (kept visible: --keep-deleted).
            await s.content.prefetch(ContentRef.of(same_day[0]))
            gone = same_day[-1]
            s.vfs.invalidate(s.index.mark_deleted([gone.recording_id]))
            http = await s.signed_in()
            r = await http.get(day)
            assert r.status_code == 200, r.text
            page = r.text
            assert page.count("<audio controls preload=\"none\"") == len(same_day)
            rows = re.findall(r'<tr id="r(\d+)".*?</tr>', page, flags=re.S)
            assert [int(x) for x in rows] == [s.vfs.recording_ino(ir) for ir in
                                              sorted(same_day, key=s.name_of)]
            for ir in same_day:
                ir = s.vfs.recording(s.vfs.recording_ino(ir))
                row = re.search(rf'<tr id="r{s.vfs.recording_ino(ir)}".*?</tr>', page, re.S)
                assert row is not None
                text = row.group(0)
                name = s.name_of(ir)
                assert f"<time>{name[0:2]}:{name[2:4]}:{name[4:6]}</time>" in text
                assert ("Inbound" if ir.recording.is_inbound else "Outbound") in text
                for party in (ir.recording.from_party, ir.recording.to_party):
                    for bit in (party.name, party.phone_number, party.extension_number):
                        if bit:
                            assert html.escape(bit) in text, bit
                m, sec = divmod(ir.duration, 60)
                assert f">{m}:{sec:02d}<" in text
                cached = ir.recording_id == same_day[0].recording_id
                assert ('class="cache-cached">cached<' in text) == cached
                assert ("deleted upstream" in text) == (ir.recording_id == gone.recording_id)
                assert f'download aria-label="Download {name}"' in text
                if cached:  # the exact size once known; an estimate is marked
                    assert "≈" not in text
            # The links on the page work: the player's and the download's.
            srcs = [u for u in links(page) if u.startswith("/audio/")]
            assert len(srcs) == len(same_day)
            r = await s.http.get(srcs[0], headers={"Range": "bytes=0-0"})
            assert r.status_code == 206
            await http.aclose()


async def test_a_day_not_indexed_yet_is_indexed_first(tmp_path: Path) -> None:
    class OnDemand:
        def __init__(self) -> None:
            self.asked: list[tuple[int, int]] = []

        def complete(self) -> bool:
            return False

        async def ensure(self, lo_ms: int, hi_ms: int) -> None:
            self.asked.append((lo_ms, hi_ms))

    on_demand = OnDemand()
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=8, on_demand=on_demand) as s:
            http = await s.signed_in()
            ir = s.recordings()[0]
            day = s.day_href(ir)
            assert (await http.get(day)).status_code == 200
            y, m, d = (int(x) for x in day.rsplit("/", 3)[1:])
            assert on_demand.asked == [s.vfs.day_range(dir_ino(y, m, d))]
            page = (await http.get("/")).text
            assert "still being indexed" in page
            # An impossible or empty date is a 404 page, not an error.
            for path in ("/day/2026/02/31", "/day/1999/01/01", "/day/2026/13/01"):
                r = await http.get(path)
                assert r.status_code == 404, path
                assert_security_headers(r)
            await http.aclose()


async def test_every_field_from_the_call_log_is_escaped(tmp_path: Path) -> None:
    async def hostile(admin: httpx.AsyncClient) -> None:
        recs = (await admin.get("/__emulator/recordings")).json()["recordings"]
        r = await admin.put(f"/__emulator/calls/{recs[0]['callId']}/patch",
                            json={"from": {"name": HOSTILE, "phoneNumber": '+1650"<i>5550100'},
                                  "to": {"name": "</td></tr><img src=x onerror=alert(1)>"}})
        assert r.status_code == 204, r.text

    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, before_index=hostile) as s:
            ir = next(ir for ir in s.recordings() if ir.recording.from_party.name == HOSTILE)
            http = await s.signed_in()
            day = (await http.get(s.day_href(ir))).text
            found = (await http.get("/search", params={"q": "o'brien"})).text
            by_number = (await http.get("/search", params={"q": "5550100"})).text
            echoed = (await http.get("/search", params={"q": HOSTILE})).text
            for page in (day, found, by_number, echoed):
                assert "<script" not in page.lower()
                assert "<img" not in page.lower()
                assert "<b>Co" not in page and "<i>" not in page
            for page in (day, found):
                assert html.escape(HOSTILE) in page
                assert "&lt;/td&gt;&lt;/tr&gt;&lt;img src=x onerror=alert(1)&gt;" in page
                assert f'id="r{s.vfs.recording_ino(ir)}"' in page
            assert f'id="r{s.vfs.recording_ino(ir)}"' in by_number
            assert f'value="{html.escape(HOSTILE)}"' in echoed
            await http.aclose()


async def test_search_finds_a_caller_by_number_extension_and_name(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=40) as s:
            recs = s.recordings()
            external = next(ir for ir in recs if ir.recording.is_inbound
                            and ir.recording.from_party.phone_number
                            and not ir.recording.from_party.extension_number)
            phone = external.recording.from_party.phone_number or ""
            digits = re.sub(r"\D", "", phone)
            internal = next(ir for ir in recs if ir.recording.to_party.extension_number
                            or ir.recording.from_party.extension_number)
            ext = (internal.recording.to_party.extension_number
                   or internal.recording.from_party.extension_number or "")
            named = next(ir for ir in recs if ir.recording.from_party.name
                         and len(ir.recording.from_party.name) > 4)
            name = named.recording.from_party.name or ""
            http = await s.signed_in()
            # Partial digits, punctuated like a person would type them.
            pretty = f"({digits[-10:-7]}) {digits[-7:-4]}-{digits[-4:]}"
            queries = {
                phone: external, digits[-7:]: external, pretty: external,
                ext: internal,
                name: named, name[1:-1].lower(): named, name.upper(): named,
            }
            for q, want in queries.items():
                r = await http.get("/search", params={"q": q})
                assert r.status_code == 200
                assert_security_headers(r)
                assert f'id="r{s.vfs.recording_ino(want)}"' in r.text, q
                assert "match" in r.text
                # Each result links to its day and plays.
                assert f'href="{s.day_href(want)}#r{s.vfs.recording_ino(want)}"' in r.text
            r = await http.get("/search", params={"q": "no such caller zzzz"})
            assert "No recording matches" in r.text and "<tr id=" not in r.text
            # Wildcards are literal.
            r = await http.get("/search", params={"q": "%"})
            assert "<tr id=" not in r.text
            r = await http.get("/search", params={"q": "_"})
            assert "<tr id=" not in r.text
            await http.aclose()


async def test_search_is_bounded(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=60) as s:
            from rcfs.web import search

            everything = search(s.index, "1", limit=1000)  # every number has a 1
            some = search(s.index, "1", limit=5)
            assert len(some.recordings) == 5 and some.truncated
            assert [ir.rowid for ir in some.recordings] == [
                ir.rowid for ir in everything.recordings[:5]]
            starts = [ir.start_ms for ir in everything.recordings]
            assert starts == sorted(starts, reverse=True)
            assert search(s.index, "   ").recordings == []
            # From worker threads, as the app runs it: no connection is left behind.
            before = len(s.index._conns)
            for q in ("1", "a", "zz"):
                await trio.to_thread.run_sync(search, s.index, q)
            assert len(s.index._conns) == before


# -- the whole site: security properties -------------------------------------------------


async def test_no_token_the_emulator_issued_appears_in_any_page_url_header_or_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path) as s:
            http = await s.signed_in()
            seen: list[str] = []  # every URL, header and body the player sent
            queue = ["/", "/search?q=1", "/search?q=a"]
            done: set[str] = set()
            while queue:
                url = queue.pop()
                if url in done:
                    continue
                done.add(url)
                if url.startswith(("/audio/", "/download/")):
                    r = await http.get(url, headers={"Range": "bytes=0-99"})
                    assert r.status_code == 206, url
                else:
                    r = await http.get(url)
                    assert r.status_code == 200, url
                    queue += [u for u in links(r.text) if u.startswith("/") and "#" not in u]
                seen += [url, repr(r.headers), r.text if "html" in r.headers["content-type"] else ""]
            assert any(u.startswith("/audio/") for u in done)
            assert any(u.startswith("/download/") for u in done)
            assert any(u.startswith("/day/") for u in done)
            seen.append(repr(s.web.snapshot()))
            seen.append(caplog.text)
            everything = "\n".join(seen)
            tokens = await s.issued_tokens()
            assert tokens, "the emulator issued no token: the test would prove nothing"
            secrets_ = [*tokens, s.emulator_info["jwt"], s.emulator_info["client_secret"]]
            for secret in secrets_:
                assert secret not in everything
            assert "access_token" not in everything
            await http.aclose()


async def test_the_access_log_has_paths_but_no_signature_or_sign_in_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rcfs.web.access")
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=6) as s:
            link = s.web.sign_in_url()
            async with httpx.AsyncClient(base_url=s.url, trust_env=False) as http:
                assert (await http.get(link)).status_code == 303
                ir = s.recordings()[0]
                url = s.audio_url(ir)
                assert (await http.get(url, headers={"Range": "bytes=0-9"})).status_code == 206
                assert (await http.get(url + "x")).status_code == 403

            def lines_() -> list[str]:
                return [r.getMessage() for r in caplog.records if r.name == "rcfs.web.access"]

            # A line is written once the response is over, just after the client has it.
            await wait_until(lambda: len(lines_()) >= 3, "the access log")
            lines = lines_()
            text = "\n".join(lines)
            assert re.search(r"127\.0\.0\.1 GET /signin 303 0 ", text)
            path = re.escape(unquote(url.split("?")[0]))  # the path as decoded
            assert re.search(rf"127\.0\.0\.1 GET {path} 206 10 ", text)
            assert re.search(rf"GET {path} 403 ", text)
            assert token_of(link) not in text
            assert url.split("?s=")[1] not in text
            assert "?" not in text and "s=" not in text and "token" not in text


async def test_security_headers_on_every_kind_of_response(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=4) as s:
            http = await s.signed_in()
            ir = s.recordings()[0]
            for path in ("/", "/search?q=1", s.day_href(ir), "/nope", "/static/rcfs.css",
                         "/favicon.ico", s.audio_url(ir)):
                r = await http.get(path, headers={"Range": "bytes=0-9"})
                assert_security_headers(r)
            r = await http.get("/static/rcfs.css")
            assert r.headers["content-type"].startswith("text/css")
            r = await http.post("/")
            assert r.status_code == 405
            assert_security_headers(r)
            r = await http.head("/")
            assert r.status_code == 200 and r.content == b""
            assert_security_headers(r)
            await http.aclose()


async def test_a_port_in_use_raises_oserror(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=2) as s:
            taken = urlsplit(s.url).port
            assert taken
            other = WebApp(vfs=s.vfs, index=s.index, content=s.content)
            with pytest.raises(OSError):
                await s.nursery.start(serve_web, other, "127.0.0.1", taken)
            with pytest.raises(Exception, match="not serving"):
                other.sign_in_url()
            # The first server is unharmed.
            assert (await s.http.get("/")).status_code == 401


def test_parse_range_units() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == (0, 9)
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("Bytes = 2 - 4", 10) == (2, 4)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("bytes=4-2", 10) is None
    assert parse_range("bytes=-", 10) is None
    assert parse_range("bytes=0-1,3-4", 10) is None
    assert parse_range("pages=1-2", 10) is None
    for bad in ("bytes=10-", "bytes=11-12", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(bad, 10)
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=0-", 0)
    assert content_disposition("attachment", 'a"b\\c%é.mp3') == (
        "attachment; filename=\"a_b_c__.mp3\"; filename*=UTF-8''a%22b%5Cc%25%C3%A9.mp3")


async def test_binds_loopback_by_default_and_names_the_url(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=2) as s:
            host = urlsplit(s.url).hostname
            assert host == "127.0.0.1"
            with socket.create_connection(("127.0.0.1", urlsplit(s.url).port or 0), timeout=5):
                pass
