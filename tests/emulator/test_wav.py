"""WAV companies: `--audio-format mp3|wav|mixed`, the admin switch, and real, decodable WAV."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rcfs.emulator import Emulator, EmulatorConfig, main
from rcfs.emulator.audio import WAV_HEADER_BYTES, RecordingAudio, WavAudio, audio_for
from rcfs.emulator.server import config_from_args
from rcfs.emulator.testing import OpenAPI, emulator_process, login, open_emulator

pytestmark = pytest.mark.timeout(90)

LOG = "/restapi/v1.0/account/~/call-log"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(calls=80, seed=3, rate_limits="off", audio_format="wav")


async def admin(emulator: Emulator, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as plain:
        return await plain.request(method, emulator.info["server_url"] + "/__emulator" + path, **kw)


async def recorded(api: httpx.AsyncClient, n: int = 3) -> list[dict[str, Any]]:
    params = {"dateFrom": "2000-01-01T00:00:00Z", "withRecording": "true", "perPage": n}
    records: list[dict[str, Any]] = (await api.get(LOG, params=params)).json()["records"]
    assert len(records) == n and all("recording" in r for r in records)
    return records


# -- the bytes, without a server -----------------------------------------------


def test_wav_is_8khz_16bit_mono_pcm_with_a_44_byte_header() -> None:
    audio = WavAudio("4000000001", 47)
    whole = audio.read()
    assert audio.size == len(whole) == 44 + 47 * 16_000
    assert audio.duration == 47
    header = whole[:WAV_HEADER_BYTES]
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert int.from_bytes(header[4:8], "little") == len(whole) - 8
    assert int.from_bytes(header[20:22], "little") == 1  # PCM
    assert int.from_bytes(header[22:24], "little") == 1  # mono
    assert int.from_bytes(header[24:28], "little") == 8000
    assert int.from_bytes(header[28:32], "little") == 16_000  # bytes a second
    assert int.from_bytes(header[34:36], "little") == 16  # bits a sample
    assert header[36:40] == b"data" and int.from_bytes(header[40:44], "little") == 47 * 16_000
    assert any(whole[44:2000])  # not silence


def test_wav_ranges_are_arithmetic_and_bytes_are_per_recording() -> None:
    audio = WavAudio("4000000001", 47)
    whole = audio.read()
    for start, stop in [(0, 1), (0, 44), (40, 50), (10, 70_000), (500_000, 500_001),
                        (audio.size - 3, None), (63_999 + 44, 64_001 + 44)]:  # fmt: skip
        assert audio.read(start, stop) == whole[start:stop]
    assert b"".join(audio.chunks(7, 300_000, size=1000)) == whole[7:300_000]
    # The same id gives the same bytes; another id other bytes, same size.
    assert WavAudio("4000000001", 47).read() == whole
    other = WavAudio("4000000002", 47).read()
    assert len(other) == len(whole) and other != whole
    # An hour: size by arithmetic, its last bytes without building the rest.
    started = time.perf_counter()
    hour = WavAudio("4000000003", 3600)
    assert hour.size == 44 + 3600 * 16_000
    tail = hour.read(hour.size - 10)
    assert len(tail) == 10 and time.perf_counter() - started < 1.0
    assert isinstance(audio_for("1", 5, "audio/wav"), WavAudio)
    assert isinstance(audio_for("1", 5, "audio/mpeg"), RecordingAudio)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
def test_ffprobe_reads_the_wav_module_alone(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "a.wav"
    path.write_bytes(WavAudio("4000000002", 1800).read())
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "format=format_name,duration:stream=codec_name,sample_rate,channels", "-of", "json",
         str(path)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert info["format"]["format_name"] == "wav"
    assert abs(float(info["format"]["duration"]) - 1800) < 1.0
    stream = info["streams"][0]
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == ("pcm_s16le", "8000", 1)


# -- over the API ---------------------------------------------------------------


async def test_metadata_content_type_and_bytes_agree(
    api: httpx.AsyncClient, emulator: Emulator, openapi: OpenAPI
) -> None:
    for record in await recorded(api):
        rec = record["recording"]
        meta = await api.get(rec["uri"])
        assert meta.status_code == 200
        openapi.validate("GetCallRecordingResponse", meta.json())
        assert meta.json()["contentType"] == "audio/wav"
        content = await api.get(rec["contentUri"])
        assert content.status_code == 200
        assert content.headers["content-type"] == "audio/wav"
        assert content.content[:4] == b"RIFF" and content.content[8:12] == b"WAVE"
        assert int(content.headers["content-length"]) == len(content.content)
        assert len(content.content) == 44 + 16_000 * meta.json()["duration"]
        copy = await admin(emulator, "GET", f"/recordings/{rec['id']}/content")
        assert copy.headers["content-type"] == "audio/wav" and copy.content == content.content


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
async def test_ffprobe_reads_served_wav_with_the_metadata_duration(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    for record in await recorded(api, 3):
        rec = record["recording"]
        meta = (await api.get(rec["uri"])).json()
        path = tmp_path / f"{rec['id']}.wav"
        path.write_bytes((await api.get(rec["contentUri"])).content)
        probe = await trio.run_process(
            ["ffprobe", "-v", "error", "-show_entries",
             "format=format_name,duration:stream=codec_name,sample_rate,channels", "-of", "json",
             str(path)],
            capture_stdout=True,
        )  # fmt: skip
        info = json.loads(probe.stdout)
        assert info["format"]["format_name"] == "wav"
        assert info["streams"][0]["codec_name"] == "pcm_s16le"
        assert abs(float(info["format"]["duration"]) - meta["duration"]) < 1.0
        if shutil.which("ffmpeg"):
            decoded = await trio.run_process(
                ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                capture_stderr=True,
                check=False,
            )
            assert decoded.returncode == 0 and decoded.stderr == b""


async def test_ranges_on_wav(api: httpx.AsyncClient, openapi: OpenAPI) -> None:
    rec = (await recorded(api, 1))[0]["recording"]
    whole = (await api.get(rec["contentUri"])).content
    size = len(whole)
    for header, start, stop in [
        ("bytes=0-43", 0, 44),
        ("bytes=40-99", 40, 100),
        ("bytes=100000-", 100_000, size),
        ("bytes=-1000", size - 1000, size),
        (f"bytes={size - 10}-{size + 1000}", size - 10, size),
    ]:
        response = await api.get(rec["contentUri"], headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["content-type"] == "audio/wav"
        assert response.content == whole[start:stop], header
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert int(response.headers["content-length"]) == stop - start
    unsatisfiable = await api.get(rec["contentUri"], headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    openapi.validate("ApiErrorResponseModel", unsatisfiable.json())


async def test_audio_format_switches_at_run_time(api: httpx.AsyncClient, emulator: Emulator) -> None:
    rec = (await recorded(api, 1))[0]["recording"]
    assert (await admin(emulator, "GET", "/audio-format")).json() == {"format": "wav"}
    assert (await admin(emulator, "PUT", "/audio-format", json={"format": "mp3"})).status_code == 204
    assert (await admin(emulator, "GET", "/audio-format")).json() == {"format": "mp3"}
    assert (await api.get(rec["uri"])).json()["contentType"] == "audio/mpeg"
    mp3 = await api.get(rec["contentUri"])
    assert mp3.headers["content-type"] == "audio/mpeg" and mp3.content[:3] == b"ID3"
    assert (await admin(emulator, "PUT", "/audio-format", json={"format": "WAV"})).status_code == 204
    wav = await api.get(rec["contentUri"])
    assert wav.headers["content-type"] == "audio/wav" and wav.content[:4] == b"RIFF"
    for bad in ({"format": "flac"}, {"format": None}, {"fmt": "wav"}):
        response = await admin(emulator, "PUT", "/audio-format", json=bad)
        assert response.status_code == 400 and "error" in response.json()
    assert (await admin(emulator, "GET", "/audio-format")).json() == {"format": "wav"}


async def test_mixed_is_a_seeded_quarter_and_consistent() -> None:
    config = EmulatorConfig(calls=300, seed=8, rate_limits="off", audio_format="mixed")
    async with open_emulator(config) as emu, httpx.AsyncClient(timeout=30) as client:
        token = (await login(client, emu.info))["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        listing = await client.get(emu.info["server_url"] + "/__emulator/recordings")
        recordings = listing.json()["recordings"]
        assert len(recordings) > 60
        kinds: dict[str, str] = {}
        for item in recordings[:40]:
            rid = item["id"]
            meta = await client.get(
                f"{emu.info['server_url']}/restapi/v1.0/account/~/recording/{rid}", headers=headers
            )
            content = await client.get(meta.json()["contentUri"], headers=headers)
            kind = meta.json()["contentType"]
            assert content.headers["content-type"] == kind
            assert content.content[:4] == (b"RIFF" if kind == "audio/wav" else b"ID3\x03")
            kinds[rid] = kind
        assert emu.state is not None
        every = [emu.state.content_type_for(r["id"]) for r in recordings]
        assert all(emu.state.content_type_for(rid) == kind for rid, kind in kinds.items())
        share = every.count("audio/wav") / len(every)
        assert 0.1 < share < 0.45, share
    # Seeded: the same seed picks the same recordings.
    async with open_emulator(config) as again:
        assert again.state is not None
        assert [again.state.content_type_for(r["id"]) for r in recordings] == every


def test_audio_format_option() -> None:
    assert config_from_args([])[0].audio_format == "mp3"
    assert config_from_args(["--audio-format", "wav"])[0].audio_format == "wav"
    assert config_from_args(["--audio-format", "Mixed"])[0].audio_format == "mixed"
    with pytest.raises(ValueError):
        Emulator(EmulatorConfig(audio_format="ogg"))


def test_bad_audio_format_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--audio-format", "ogg"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "audio format" in err


def test_command_serves_wav() -> None:
    with emulator_process("--calls", "20", "--seed", "3", "--rate-limits", "off",
                          "--audio-format", "wav") as (info, _):  # fmt: skip
        token = httpx.post(
            info["server_url"] + "/restapi/oauth/token",
            data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": info["jwt"]},
            auth=(info["client_id"], info["client_secret"]),
            timeout=30,
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = httpx.get(
            info["server_url"] + LOG,
            params={"dateFrom": "2000-01-01T00:00:00Z", "withRecording": "true", "perPage": 1},
            headers=headers,
            timeout=30,
        ).json()
        rec = body["records"][0]["recording"]
        assert httpx.get(rec["uri"], headers=headers, timeout=30).json()["contentType"] == "audio/wav"
        head = httpx.head(rec["contentUri"], headers=headers, timeout=30)
        assert head.headers["content-type"] == "audio/wav"
