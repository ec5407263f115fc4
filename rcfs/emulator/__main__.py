"""`python -m rcfs.emulator ...` runs `rcfs emulator ...`."""

from __future__ import annotations

import sys

from rcfs.emulator.server import main

sys.exit(main(sys.argv[1:]))
