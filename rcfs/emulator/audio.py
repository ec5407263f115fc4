"""Synthetic recordings, MP3 or WAV: real, decodable audio that costs almost nothing.

Design: a few seconds of tones are encoded with lameenc once per process
(per variant, lazily) at CBR 32 kbps, 16 kHz mono: MPEG-2 Layer III, where
every frame is exactly 144 bytes and 36 ms, i.e. 4,000 bytes per second --
the nominal bitrate rcfs uses to estimate sizes. lameenc cannot switch off the
bit reservoir, but the first frame it emits never borrows from earlier frames
(`main_data_begin` == 0) and no frame borrows from later ones, so the run of
frames starting there can be repeated back to back and stays a valid stream.

A recording is then

    [ID3v2.3 tag naming the recording id]  +  loop frames, cyclically, for `duration`

Its size and any byte range are pure arithmetic on (tag length, frame count),
so an hour-long recording is never materialised: `chunks()` slices the loop.
The same recording id and duration always give the same bytes.

WAV (`WavAudio`) is what RingCentral records when a company chooses it: 8 kHz,
16-bit, mono PCM, i.e. 16,000 bytes a second after a canonical 44-byte
RIFF/WAVE header. A few seconds of tones are synthesised once per variant
(whole cycles of every tone, so the loop repeats without a click), and a
recording is the header followed by that loop, cyclically, from a phase that
depends on the recording id (so two recordings' bytes differ). Size and byte
ranges are again arithmetic; nothing is materialised.

`audio_for(recording_id, duration, content_type)` picks the class; both share
`size`, `duration`, `chunks()` and `read()`.

This module owns the audio bytes only; it knows nothing about HTTP.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import zlib
from array import array
from collections.abc import Iterator
from typing import Protocol

import lameenc

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
BITRATE_KBPS = 32
FRAME_SAMPLES = 576  # MPEG-2 Layer III
FRAME_BYTES = 144  # 72 * 32000 / 16000, never padded at this rate
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE  # 0.036 s
BYTES_PER_SECOND = FRAME_BYTES / FRAME_SECONDS  # 4000
CONTENT_TYPE = "audio/mpeg"
MP3_TYPE = CONTENT_TYPE
WAV_TYPE = "audio/wav"
CHUNK = 64 * 1024
LOOP_FRAMES = 139  # ~5 s of audio per loop
VARIANTS = 4

_loops: dict[int, bytes] = {}
_lock = threading.Lock()


def _pcm(variant: int, seconds: float) -> bytes:
    """A soft two-tone pattern, different pitch per variant, as s16le mono."""
    base = (330.0, 392.0, 440.0, 523.25)[variant % 4]
    n = int(seconds * SAMPLE_RATE)
    w1 = 2 * math.pi * base / SAMPLE_RATE
    w2 = 2 * math.pi * base * 1.5 / SAMPLE_RATE
    samples = array("h", bytes(2 * n))
    for i in range(n):
        t = i / SAMPLE_RATE
        env = 1.0 if (t % 1.0) < 0.6 else 0.2
        samples[i] = int(env * (5000 * math.sin(w1 * i) + 1500 * math.sin(w2 * i)))
    return samples.tobytes()


def _frame_offsets(mp3: bytes) -> list[int]:
    offsets = []
    pos = 0
    while pos + 4 <= len(mp3):
        header = int.from_bytes(mp3[pos : pos + 4], "big")
        if header >> 21 != 0x7FF:
            raise RuntimeError(f"lameenc output lost frame sync at byte {pos}")
        version, layer = (header >> 19) & 3, (header >> 17) & 3
        bitrate_index, padding = (header >> 12) & 15, (header >> 9) & 1
        # MPEG-2 (version bits 0b10), Layer III (0b01), 32 kbps (index 4), unpadded.
        if (version, layer, bitrate_index, padding) != (2, 1, 4, 0):
            raise RuntimeError("lameenc produced an unexpected frame format")
        offsets.append(pos)
        pos += FRAME_BYTES
    return offsets


def _encode_loop(variant: int) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(BITRATE_KBPS)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_out_sample_rate(SAMPLE_RATE)
    encoder.set_channels(1)
    encoder.set_quality(5)
    encoder.silence()
    # Encode more than the loop so the frames we keep are not the flush tail.
    mp3 = bytes(encoder.encode(_pcm(variant, LOOP_FRAMES * FRAME_SECONDS + 1.0)))
    mp3 += bytes(encoder.flush())
    offsets = _frame_offsets(mp3)
    if len(offsets) < LOOP_FRAMES + 4:
        raise RuntimeError("lameenc produced too few frames")
    side_info = offsets[0] + 4 + (0 if mp3[offsets[0] + 1] & 1 else 2)
    if mp3[side_info] != 0:  # main_data_begin of the first frame (8 bits in MPEG-2)
        raise RuntimeError("first frame borrows from the bit reservoir")
    return mp3[offsets[0] : offsets[0] + LOOP_FRAMES * FRAME_BYTES]


def loop_bytes(variant: int) -> bytes:
    """The repeatable frame run for `variant`, encoded on first use (thread-safe)."""
    loop = _loops.get(variant)
    if loop is None:
        with _lock:
            loop = _loops.get(variant)
            if loop is None:
                loop = _encode_loop(variant)
                # Enough repetitions that any CHUNK-sized slice is contiguous.
                reps = 2 + CHUNK // len(loop)
                _loops[variant] = loop = loop * reps
                log.debug("encoded MP3 loop variant %d (%d bytes)", variant, len(loop))
    return loop


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _text_frame(frame_id: str, payload: bytes) -> bytes:
    return frame_id.encode("ascii") + len(payload).to_bytes(4, "big") + b"\0\0" + payload


def id3_tag(recording_id: str, duration_ms: int) -> bytes:
    """A small ID3v2.3 tag so every recording's bytes differ (title, id, length)."""
    frames = (
        _text_frame("TIT2", b"\0" + f"Call recording {recording_id}".encode("latin-1"))
        + _text_frame("TXXX", b"\0RCRecordingId\0" + recording_id.encode("latin-1"))
        + _text_frame("TLEN", b"\0" + str(duration_ms).encode("ascii"))
        + _text_frame("TSSE", b"\0rcfs emulator (lameenc)")
    )
    return b"ID3\x03\x00\x00" + _syncsafe(len(frames)) + frames


class RecordingAudio:
    """The MP3 bytes of one recording, addressable by range without building them."""

    __slots__ = ("frames", "size", "tag", "variant")

    def __init__(self, recording_id: str, duration: float) -> None:
        self.frames = max(1, round(duration / FRAME_SECONDS))
        self.tag = id3_tag(recording_id, round(self.frames * FRAME_SECONDS * 1000))
        self.size = len(self.tag) + self.frames * FRAME_BYTES
        self.variant = zlib.crc32(recording_id.encode()) % VARIANTS

    @property
    def duration(self) -> float:
        """Decoded duration in seconds."""
        return self.frames * FRAME_SECONDS

    def chunks(self, start: int = 0, stop: int | None = None, size: int = CHUNK) -> Iterator[bytes]:
        """Bytes [start, stop) in pieces of at most `size` (<= CHUNK) bytes."""
        stop = self.size if stop is None else min(stop, self.size)
        size = max(1, min(size, CHUNK))
        pos = max(0, start)
        tag_len = len(self.tag)
        if pos < tag_len and pos < stop:
            end = min(tag_len, stop)
            yield self.tag[pos:end]
            pos = end
        if pos >= stop:
            return
        loop = loop_bytes(self.variant)
        period = LOOP_FRAMES * FRAME_BYTES
        while pos < stop:
            n = min(size, stop - pos)
            offset = (pos - tag_len) % period
            yield loop[offset : offset + n]
            pos += n

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        return b"".join(self.chunks(start, stop))


# -- WAV ----------------------------------------------------------------------

WAV_RATE = 8_000
WAV_SAMPLE_BYTES = 2  # 16-bit, mono
WAV_BYTES_PER_SECOND = WAV_RATE * WAV_SAMPLE_BYTES  # 16,000
WAV_HEADER_BYTES = 44
WAV_LOOP_SECONDS = 4  # every tone below completes whole cycles in 4 s
# Base pitches (and fifths at 1.5x) chosen so that f * WAV_LOOP_SECONDS is an integer.
_WAV_PITCHES = (330.0, 392.0, 440.0, 520.0)

_wav_loops: dict[int, bytes] = {}


def _wav_pcm(variant: int) -> bytes:
    """WAV_LOOP_SECONDS of a soft two-tone pattern at 8 kHz, s16le, seamless when repeated."""
    base = _WAV_PITCHES[variant % len(_WAV_PITCHES)]
    n = WAV_LOOP_SECONDS * WAV_RATE
    w1 = 2 * math.pi * base / WAV_RATE
    w2 = 2 * math.pi * base * 1.5 / WAV_RATE
    samples = array("h", bytes(2 * n))
    for i in range(n):
        env = 1.0 if (i % WAV_RATE) < 0.6 * WAV_RATE else 0.2
        samples[i] = int(env * (5000 * math.sin(w1 * i) + 1500 * math.sin(w2 * i)))
    if sys.byteorder == "big":  # WAV is little-endian
        samples.byteswap()
    return samples.tobytes()


def wav_loop_bytes(variant: int) -> bytes:
    """The repeatable PCM loop for `variant`, built on first use (thread-safe), repeated
    so that any CHUNK-sized slice starting inside the first period is contiguous."""
    loop = _wav_loops.get(variant)
    if loop is None:
        with _lock:
            loop = _wav_loops.get(variant)
            if loop is None:
                period = _wav_pcm(variant)
                _wav_loops[variant] = loop = period * (2 + CHUNK // len(period))
                log.debug("built WAV loop variant %d (%d bytes)", variant, len(period))
    return loop


def wav_header(data_bytes: int) -> bytes:
    """The canonical 44-byte RIFF/WAVE header for `data_bytes` of 8 kHz 16-bit mono PCM."""
    return (
        b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVE"
        + b"fmt " + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + WAV_RATE.to_bytes(4, "little")
        + WAV_BYTES_PER_SECOND.to_bytes(4, "little")
        + WAV_SAMPLE_BYTES.to_bytes(2, "little")  # block align
        + (8 * WAV_SAMPLE_BYTES).to_bytes(2, "little")  # bits per sample
        + b"data" + data_bytes.to_bytes(4, "little")
    )  # fmt: skip


class WavAudio:
    """The WAV bytes of one recording (8 kHz 16-bit mono PCM), addressable by range."""

    __slots__ = ("data_bytes", "phase", "size", "tag", "variant")

    def __init__(self, recording_id: str, duration: float) -> None:
        samples = max(1, round(duration * WAV_RATE))
        self.data_bytes = samples * WAV_SAMPLE_BYTES
        self.tag = wav_header(self.data_bytes)
        self.size = WAV_HEADER_BYTES + self.data_bytes
        crc = zlib.crc32(recording_id.encode())
        self.variant = crc % VARIANTS
        # Where in the loop this recording starts (whole samples), so bytes differ per id.
        self.phase = (crc // VARIANTS) % (WAV_LOOP_SECONDS * WAV_RATE) * WAV_SAMPLE_BYTES

    @property
    def duration(self) -> float:
        """Decoded duration in seconds."""
        return self.data_bytes / WAV_BYTES_PER_SECOND

    def chunks(self, start: int = 0, stop: int | None = None, size: int = CHUNK) -> Iterator[bytes]:
        """Bytes [start, stop) in pieces of at most `size` (<= CHUNK) bytes."""
        stop = self.size if stop is None else min(stop, self.size)
        size = max(1, min(size, CHUNK))
        pos = max(0, start)
        if pos < WAV_HEADER_BYTES and pos < stop:
            end = min(WAV_HEADER_BYTES, stop)
            yield self.tag[pos:end]
            pos = end
        if pos >= stop:
            return
        loop = wav_loop_bytes(self.variant)
        period = WAV_LOOP_SECONDS * WAV_BYTES_PER_SECOND
        while pos < stop:
            n = min(size, stop - pos)
            offset = (pos - WAV_HEADER_BYTES + self.phase) % period
            yield loop[offset : offset + n]
            pos += n

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        return b"".join(self.chunks(start, stop))


class Audio(Protocol):
    """What the media host needs of a recording's bytes."""

    @property
    def size(self) -> int: ...

    @property
    def duration(self) -> float: ...

    def chunks(self, start: int = 0, stop: int | None = None, size: int = CHUNK) -> Iterator[bytes]: ...

    def read(self, start: int = 0, stop: int | None = None) -> bytes: ...


def audio_for(recording_id: str, duration: float, content_type: str) -> Audio:
    """The bytes of a recording in the given format (`audio/wav` or `audio/mpeg`)."""
    if content_type == WAV_TYPE:
        return WavAudio(recording_id, duration)
    return RecordingAudio(recording_id, duration)


def prepare_loops() -> None:
    """Build every MP3 and WAV loop now (slow-ish, CPU-bound: call it off the event loop)."""
    for variant in range(VARIANTS):
        loop_bytes(variant)
        wav_loop_bytes(variant)
