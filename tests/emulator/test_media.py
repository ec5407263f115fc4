"""Recording content on the media host: ranges, lengths, streaming, real MP3."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rcfs.emulator import Emulator, EmulatorConfig
from rcfs.emulator.testing import OpenAPI

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=80, seed=3, rate_limits="off")


async def recorded(api: httpx.AsyncClient, n: int = 3) -> list[dict[str, Any]]:
    body = (
        await api.get(
            "/restapi/v1.0/account/~/call-log",
            params={"dateFrom": "2000-01-01", "withRecording": "true", "perPage": n},
        )
    ).json()
    records: list[dict[str, Any]] = body["records"]
    return records


async def test_full_content_and_admin_copy_agree(api: httpx.AsyncClient, emulator: Emulator) -> None:
    for record in await recorded(api):
        rec = record["recording"]
        response = await api.get(rec["contentUri"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/mpeg"
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.content.startswith(b"ID3")
        # about 4000 bytes per second of audio
        assert abs(len(response.content) - 4000 * record["duration"]) < 4000
        async with httpx.AsyncClient() as plain:
            copy = await plain.get(
                f"{emulator.info['server_url']}/__emulator/recordings/{rec['id']}/content"
            )
        assert copy.status_code == 200 and copy.content == response.content


async def test_ranges(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    rec = (await recorded(api, 1))[0]["recording"]
    whole = (await api.get(rec["contentUri"])).content
    size = len(whole)
    for header, start, stop in [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, size),
        ("bytes=-500", size - 500, size),
        (f"bytes={size - 10}-{size + 1000}", size - 10, size),
        (f"bytes=0-{size * 2}", 0, size),
        ("bytes=-99999999999", 0, size),
    ]:
        response = await api.get(rec["contentUri"], headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == whole[start:stop], header
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert int(response.headers["content-length"]) == stop - start
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        response = await api.get(rec["contentUri"], headers={"Range": header})
        assert response.status_code == 416, header
        assert response.json()["errorCode"] == "CMN-107"
        assert response.headers["content-range"] == f"bytes */{size}"
        openapi.validate("ApiErrorResponseModel", response.json())
    # Malformed or multi-range headers are ignored: the full body.
    for header in ("bytes=5-2", "bytes=0-1,5-6", "items=0-5"):
        response = await api.get(rec["contentUri"], headers={"Range": header})
        assert response.status_code == 200 and response.content == whole


async def test_token_in_query_and_disposition(
    client: httpx.AsyncClient, api: httpx.AsyncClient, token: str
) -> None:
    rec = (await recorded(api, 1))[0]["recording"]
    response = await client.get(
        rec["contentUri"],
        params={
            "access_token": token,
            "contentDisposition": "Attachment",
            "contentDispositionFilename": "call.mp3",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.headers["content-disposition"] == 'attachment; filename="call.mp3"'
    assert (await client.get(rec["contentUri"])).status_code == 401
    head = await client.head(rec["contentUri"], params={"access_token": token})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0


async def test_headers_arrive_before_the_body_ends(api: httpx.AsyncClient, emulator: Emulator) -> None:
    async with httpx.AsyncClient() as plain:
        added = await plain.post(
            emulator.info["server_url"] + "/__emulator/calls", json={"count": 1, "duration": 3600}
        )
    rec = added.json()["records"][0]["recording"]
    async with api.stream("GET", rec["contentUri"]) as response:
        size = int(response.headers["content-length"])
        assert 3600 * 4000 - 4000 < size < 3600 * 4000 + 4000
        got = 0
        async for chunk in response.aiter_bytes():
            got += len(chunk)
            if got > 100_000:
                break  # an hour of audio need not be read to see its size
    assert got > 100_000


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
async def test_ffprobe_duration_matches_metadata(api: httpx.AsyncClient, tmp_path: Path) -> None:
    for record in await recorded(api, 3):
        rec = record["recording"]
        meta = (await api.get(rec["uri"])).json()
        path = tmp_path / f"{rec['id']}.mp3"
        path.write_bytes((await api.get(rec["contentUri"])).content)
        probe = await trio.run_process(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
             "-of", "json", str(path)],
            capture_stdout=True,
        )  # fmt: skip
        info = json.loads(probe.stdout)
        assert info["streams"][0]["codec_name"] == "mp3"
        assert abs(float(info["format"]["duration"]) - meta["duration"]) < 1.0
        if shutil.which("ffmpeg"):
            decoded = await trio.run_process(
                ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                capture_stderr=True,
                check=False,
            )
            assert decoded.returncode == 0 and decoded.stderr == b""
            # decoded duration, not just the container's estimate
            out = await trio.run_process(
                ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
                 "stream=nb_read_packets,sample_rate", "-of", "json", str(path)],
                capture_stdout=True,
            )  # fmt: skip
            stream = json.loads(out.stdout)["streams"][0]
            seconds = int(stream["nb_read_packets"]) * 576 / int(stream["sample_rate"])
            assert abs(seconds - meta["duration"]) < 1.0


def test_same_seed_same_bytes() -> None:
    from rcfs.emulator.account import Account
    from rcfs.emulator.audio import RecordingAudio

    a = Account(11, 50, 30, end=1.8e9)
    b = Account(11, 50, 30, end=1.8e9)
    ra = sorted(a.recordings)[:3]
    assert ra == sorted(b.recordings)[:3]
    for rid in ra:
        x = RecordingAudio(rid, a.recordings[rid].duration).read()
        y = RecordingAudio(rid, b.recordings[rid].duration).read()
        assert x == y
    first, second = (RecordingAudio(rid, 60).read() for rid in ra[:2])
    assert first != second


def test_audio_range_arithmetic() -> None:
    from rcfs.emulator.audio import RecordingAudio

    audio = RecordingAudio("4000000001", 47)
    whole = audio.read()
    assert len(whole) == audio.size
    assert abs(audio.duration - 47) < 0.04
    for start, stop in [(0, 1), (0, 60), (10, 70_000), (50_000, 50_001), (audio.size - 3, None)]:
        assert audio.read(start, stop) == whole[start:stop]
    assert b"".join(audio.chunks(7, 150_000, size=1000)) == whole[7:150_000]


def test_process_runs_ffprobe_independently(tmp_path: Path) -> None:
    """The audio module alone yields a file ffprobe reads (no server involved)."""
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed")
    from rcfs.emulator.audio import RecordingAudio

    path = tmp_path / "a.mp3"
    path.write_bytes(RecordingAudio("4000000002", 1800).read())
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert abs(float(json.loads(out.stdout)["format"]["duration"]) - 1800) < 1.0


async def test_hostile_content_faults(api: httpx.AsyncClient, emulator: Emulator) -> None:
    """lie_length declares a size that is not the body's; stall_after stops the body
    with the connection open; trickle sends a few bytes a second."""
    rec = (await recorded(api, 1))[0]["recording"]
    whole = (await api.get(rec["contentUri"])).content
    admin = f"{emulator.info['server_url']}/__emulator/faults"
    async with httpx.AsyncClient() as plain:
        (await plain.put(admin, json={"lie_length": 10**12})).raise_for_status()
        async with api.stream("GET", rec["contentUri"], headers={"Range": "bytes=100-"}) as r:
            assert r.status_code == 206
            assert r.headers["content-range"] == f"bytes 100-{10**12 - 1}/{10**12}"
            assert int(r.headers["content-length"]) == 10**12 - 100
            with pytest.raises(httpx.RemoteProtocolError):  # the body is the real one: short
                await r.aread()
        (await plain.put(admin, json={"stall_after": 1000})).raise_for_status()
        async with api.stream("GET", rec["contentUri"]) as r:
            got = b""
            with trio.move_on_after(1.5):
                async for chunk in r.aiter_raw():
                    got += chunk
            assert got == whole[:1000]
        (await plain.put(admin, json={"trickle": 3})).raise_for_status()
        async with api.stream("GET", rec["contentUri"]) as r:
            got = b""
            with trio.move_on_after(2.5):
                async for chunk in r.aiter_raw():
                    got += chunk
            assert 3 <= len(got) <= 9 and whole.startswith(got)
        (await plain.put(admin, json={})).raise_for_status()
