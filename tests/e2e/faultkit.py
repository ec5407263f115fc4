"""Helpers of the fault and security tests: read everything back, audit the cache.

The single standard of every fault test: each file read through the mount,
and each entry in the content cache, equals the emulator's bytes from
`GET /__emulator/recordings/{id}/content`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .conftest import EmulatorProc, Mount


def recordings(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".mp3", ".wav"))


def rec_id(path: Path) -> str:
    return path.stem.rsplit("_", 1)[1]


def read_file(path: Path) -> bytes:
    """Read like a player does: open, fstat, read to EOF in 128 KiB requests."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        chunks = []
        while chunk := os.read(fd, 128 * 1024):
            chunks.append(chunk)
        data = b"".join(chunks)
        assert len(data) == size, f"{path}: fstat says {size}, read {len(data)}"
        return data
    finally:
        os.close(fd)


def verify_files(emu: EmulatorProc, files: list[Path], root: Path | None = None) -> None:
    """Every file (or its copy under `root`) has exactly the emulator's bytes."""
    for f in files:
        expected = emu.content(rec_id(f))
        got = read_file(f) if root is None else (root / f.name).read_bytes()
        assert got == expected, f"{f}: {len(got)} bytes, expected {len(expected)}"


def cache_entries(cache_dir: Path) -> dict[str, Path]:
    """Recording id -> file of every entry the content cache would serve as complete.

    Read from diskcache's own table (not through rcfs), plus the archive of
    recordings kept after deletion upstream, if there is one. Asserts that an
    entry's recorded size (tag) matches its file.
    """
    out: dict[str, Path] = {}
    db = cache_dir / "cache" / "cache.db"
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT key, filename, tag, size FROM Cache").fetchall()
        finally:
            conn.close()
        for key, filename, tag, size in rows:
            assert filename, f"cache entry {key} stored inline, not as a file"
            path = cache_dir / "cache" / filename
            actual = path.stat().st_size
            assert actual == tag == size, f"cache entry {key}: file {actual}, tag {tag}, size {size}"
            out[str(key)] = path
    archive = cache_dir / "archive"
    if archive.is_dir():
        for entry in archive.iterdir():
            if not entry.name.endswith(".tmp") and not entry.name.startswith("="):
                out[entry.name] = entry
    return out


def verify_cache(emu: EmulatorProc, cache_dir: Path) -> int:
    """Every complete-looking cache entry is complete and correct; returns how many."""
    entries = cache_entries(cache_dir)
    for rid, path in entries.items():
        assert path.read_bytes() == emu.content(rid), f"cache entry {rid} differs from the emulator"
    return len(entries)


def partial_files(cache_dir: Path) -> list[Path]:
    root = cache_dir / "partial"
    return sorted(root.rglob("*.part")) if root.exists() else []


def status_when(
    m: Mount, cond: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            st = m.status()
            if cond(st):
                return st
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last status: {st}")


def settled(m: Mount, timeout: float = 30) -> dict[str, Any]:
    """Status once no download is queued or running (commits happen after the last read)."""
    return status_when(m, lambda st: st["downloads"]["active"] == 0 and st["downloads"]["queued"] == 0,
                       timeout, "downloads to settle")


@contextlib.contextmanager
def background(cmd: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is always ended (by PID) and reaped."""
    proc = subprocess.Popen(cmd, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
