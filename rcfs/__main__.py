"""`python -m rcfs` is the `rcfs` command."""

from __future__ import annotations

import sys

from rcfs.cli import main

sys.exit(main())
