"""A local stand-in for the RingCentral platform, faithful enough to test rcfs against.

Serves OAuth, the call log, call-log sync and recording metadata on a platform
port and recording content on a media port (and, under the `redirect` fault, on
a loopback storage port), with RingCentral's throttling, error bodies and a
seeded synthetic account whose recordings are real MP3 or WAV.
See DESIGN.md, "The emulator". Credentials and tokens it issues are
recognisably fake (`rcfs-emulator-…`, `rcfs-emu-at-…`).
"""

from __future__ import annotations

from rcfs.emulator.config import EmulatorConfig, parse_faults, parse_rate_limits
from rcfs.emulator.server import Emulator, main

__all__ = ["Emulator", "EmulatorConfig", "main", "parse_faults", "parse_rate_limits"]
