"""What rcfs knows about a recording's bytes beyond their length: digests and plausibility.

Owns the digest algorithm (BLAKE2b-512, hex: what `b2sum` prints, so a backup
can check its copies against `user.rc.blake2b`) and the bound on a size a
server may declare for a recording of a given duration. Synchronous and
disk-bound: callers run `fd_digest` in a worker thread.
"""

from __future__ import annotations

import hashlib
import os

DIGEST_NAME = "blake2b"  # BLAKE2b-512, as `b2sum` prints it
_CHUNK = 1 << 20

# The most bytes a second of audio can take, generously: 48 kHz stereo 32-bit
# PCM is 384,000 B/s; RingCentral records 8-16 kHz mono MP3 or WAV.
MAX_BYTES_PER_SECOND = 1_000_000
SIZE_SLACK = 16 << 20  # for headers, odd durations, rounding


def fd_digest(fd: int) -> str:
    """BLAKE2b-512 (hex) of the whole file open at `fd` (read with pread; offset untouched)."""
    h = hashlib.blake2b()
    offset = 0
    while True:
        data = os.pread(fd, _CHUNK, offset)
        if not data:
            return h.hexdigest()
        h.update(data)
        offset += len(data)


def max_plausible_size(duration_s: int | None) -> int | None:
    """The largest size a recording of `duration_s` seconds can have (None: no bound known)."""
    if duration_s is None or duration_s < 0:
        return None
    return duration_s * MAX_BYTES_PER_SECOND + SIZE_SLACK
