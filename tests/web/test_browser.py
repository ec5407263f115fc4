"""The web player in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium): the tree renders, recordings play
and seek (uncached and cached), search finds a caller, the page works on a
phone-sized screen, and the Content-Security-Policy blocks nothing the pages
need. Writes a screenshot of a day page (to $RCFS_WEB_SCREENSHOT too, if set:
that is how docs/web-player.png is made).

Selenium is synchronous: its calls run in worker threads while the trio
loop serves the player and the emulator. Chromium runs with a fresh profile
and is ended by PID in `finally` (chromedriver, our child, is reaped).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

from rcfs.content import ContentRef

from .webstack import Stack, web_stack

pytestmark = pytest.mark.timeout(300)
LIMIT = 240  # seconds for the whole browser session
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LONG_CALL_S = 3600  # a recording long enough (14 MB) that a seek lands past what is buffered

T = TypeVar("T")


def _unavailable() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install {package}; scripts/setup does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def _children(pid: int) -> set[int]:
    """Every descendant of `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium under chromedriver, with a fresh profile; ended by PID."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rcfs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--no-proxy-server", "--mute-audio", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = None
    pids: set[int] = set()
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(60)
        pids = _children(service.process.pid)  # Chromium and its helpers
        yield driver
    finally:
        if driver is not None:
            pids |= _children(service.process.pid)
            with contextlib.suppress(Exception):
                driver.quit()
        for pid in pids:  # whatever quit() left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        process = getattr(service, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


async def run(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)


async def wait_js(driver: Any, expression: str, what: str, timeout: float = 30) -> Any:
    """Poll a JavaScript expression until it is truthy; returns its value."""
    with trio.fail_after(timeout):
        while True:
            value = await run(driver.execute_script, f"return ({expression});")
            if value:
                return value
            await trio.sleep(0.1)
    raise AssertionError(what)


PLAY = """
const done = arguments[arguments.length - 1];
const a = document.querySelector(arguments[0]);
a.muted = true;
a.play().then(() => done("playing"), (e) => done("error: " + e));
"""

SEEK = """
const done = arguments[arguments.length - 1];
const a = document.querySelector(arguments[0]);
const to = arguments[1];
a.addEventListener("seeked", () => done(a.currentTime), {once: true});
a.addEventListener("error", () => done("error " + (a.error && a.error.code)), {once: true});
a.currentTime = to;
"""


async def play_and_seek(s: Stack, driver: Any, ino: int, target: float, *,
                        seek_request: bool = False) -> None:
    """Play the row's recording, seek to `target` seconds and check it plays on from
    there; every request for it was a Range request answered 206 (with `seek_request`:
    one of them started past byte 0, the seek's own)."""
    sel = f'tr[id="r{ino}"] audio'
    before = len(s.requests)
    assert await run(driver.execute_script, f"return document.querySelector('{sel}').preload;") \
        == "none"
    result = await run(driver.execute_async_script, PLAY, sel)
    assert result == "playing", result
    await wait_js(driver, f"document.querySelector('{sel}').currentTime > 0.3", "playback")
    duration = await wait_js(driver, f"document.querySelector('{sel}').duration", "a duration")
    assert duration > target
    landed = await run(driver.execute_async_script, SEEK, sel, target)
    assert isinstance(landed, int | float), landed
    assert abs(landed - target) < 1.0, (landed, target)
    # It plays on from there: the bytes at that offset arrived.
    await wait_js(driver, f"document.querySelector('{sel}').currentTime > {target + 0.3}",
                  "playback after the seek")
    assert await run(driver.execute_script, f"return document.querySelector('{sel}').error;") \
        is None
    mine = [r for r in s.requests[before:] if r[1].startswith(f"/audio/{ino}/")]
    assert mine, "no audio request reached the player"
    assert all(status == 206 for _, _, _, status in mine), mine
    assert all(rng is not None and rng.startswith("bytes=") for _, _, rng, _ in mine), mine
    if seek_request:
        starts = [int(rng[6:].split("-")[0] or 0) for _, _, rng, _ in mine if rng]
        assert any(start > 0 for start in starts), mine


async def test_the_player_in_headless_chromium(tmp_path: Path) -> None:
    reason = _unavailable()
    if reason is not None:
        print(f"SKIPPED browser test: {reason}", file=sys.stderr)
        pytest.skip(reason)

    async def long_call(admin: httpx.AsyncClient) -> None:
        # Yesterday at noon (UTC, the stack's zone), a day full of the seeded calls:
        # "now" just after midnight would be a day with no other recording.
        noon = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0)
        r = await admin.post("/__emulator/calls", json={
            "count": 1, "duration": LONG_CALL_S, "recorded": True,
            "startTime": noon.strftime("%Y-%m-%dT%H:%M:%S.000Z")})
        assert r.status_code == 200, r.text

    with trio.fail_after(LIMIT):
        async with web_stack(tmp_path, calls=40, days=3, before_index=long_call) as s:
            recs = s.recordings()
            long = max(recs, key=lambda ir: ir.duration)
            assert long.duration == LONG_CALL_S
            day = s.day_href(long)
            others = [ir for ir in recs if s.day_href(ir) == day and ir is not long
                      and ir.duration >= 20]
            assert others, "no second recording on the long call's day"
            cached = others[0]
            await s.content.prefetch(ContentRef.of(cached))
            assert s.content.is_cached(cached.recording_id)
            assert not s.content.is_cached(long.recording_id)

            with chromium() as driver:
                # Signed out: the 401 page says how to sign in.
                await run(driver.get, s.url)
                text = await run(driver.execute_script, "return document.body.innerText;")
                assert "rcfs web MOUNTPOINT" in text
                # Sign in: the link lands on the date tree.
                await run(driver.get, s.web.sign_in_url())
                assert await run(lambda: driver.current_url) == s.url
                assert await run(lambda: driver.title) == "Call recordings · rcfs"
                days = await run(driver.execute_script,
                                 "return [...document.querySelectorAll('ul.days a')]"
                                 ".map(a => a.getAttribute('href'));")
                expected = sorted({s.day_href(ir) for ir in recs}, reverse=True)
                assert days == expected
                assert await run(driver.execute_script,
                                 "return getComputedStyle(document.querySelector('main'))"
                                 ".paddingTop;") == "16px"  # the style sheet applied (CSP)

                # The day page: play and seek an uncached, then a cached recording.
                await run(driver.get, s.url.rstrip("/") + day)
                rows = await run(driver.execute_script,
                                 "return document.querySelectorAll('tbody tr').length;")
                assert rows == len([ir for ir in recs if s.day_href(ir) == day])
                await play_and_seek(s, driver, s.vfs.recording_ino(long), LONG_CALL_S * 0.75,
                                    seek_request=True)
                assert s.content.is_cached(long.recording_id) or s.content.in_flight(
                    long.recording_id)
                await play_and_seek(s, driver, s.vfs.recording_ino(cached),
                                    min(cached.duration * 0.6, cached.duration - 5))
                ranges = [rng for _, path, rng, _ in s.requests if path.startswith("/audio/")]
                assert ranges and all(r and r.startswith("bytes=") for r in ranges)
                # The day again, now with both cached: the README's screenshot.
                await run(driver.get, s.url.rstrip("/") + day)
                marks = await run(driver.execute_script,
                                  "return [...document.querySelectorAll('td.cache-cached')]"
                                  ".length;")
                assert marks >= 2
                screenshot = tmp_path / "web-player.png"
                assert await run(driver.save_screenshot, str(screenshot))

                # Search from the form, with the keyboard, by a caller's name.
                name = next(ir.recording.from_party.name for ir in recs
                            if ir.recording.from_party.name)
                assert name
                want = next(ir for ir in recs if ir.recording.from_party.name == name)
                await run(driver.get, s.url)
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys

                box = await run(driver.find_element, By.ID, "q")
                await run(box.send_keys, name.split()[0].lower() + Keys.ENTER)
                await wait_js(driver, "location.pathname === '/search'", "the search page")
                found = await run(driver.execute_script,
                                  "return [...document.querySelectorAll('tbody tr')]"
                                  ".map(tr => tr.id);")
                assert f"r{s.vfs.recording_ino(want)}" in found

                # A phone-sized screen: each row becomes a card with labels.
                await run(driver.set_window_size, 390, 844)
                await run(driver.get, s.url.rstrip("/") + day)
                display = await run(driver.execute_script,
                                    "return getComputedStyle(document.querySelector('tbody td'))"
                                    ".display;")
                assert display == "grid"

                # Nothing was blocked or broken on the way.
                log = await run(driver.get_log, "browser")
                problems = [e["message"] for e in log if e.get("level") == "SEVERE"
                            and "favicon" not in e["message"]
                            and "401" not in e["message"]]
                assert not problems, problems
                assert not [e for e in log if "Content Security Policy" in e["message"]]

            assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            target = os.environ.get("RCFS_WEB_SCREENSHOT")
            if target:
                shutil.copyfile(screenshot, target)
