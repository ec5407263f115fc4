"""rcfs: a RingCentral account's call recordings as a read-only file system."""

from __future__ import annotations

__version__ = "0.1.0"
