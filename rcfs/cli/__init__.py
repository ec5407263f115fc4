"""The `rcfs` command line.

Every failure a user can cause (bad option, missing credentials, busy
mountpoint, refused login) ends as one line on stderr and a non-zero exit,
never a traceback. Modules: `options` (the grammar), `logs` (logging set-up),
`display` (status rendering), `fstab` (mount(8)'s helper call, `-o` keys),
`commands` (what each subcommand does, and `main`).
"""

from __future__ import annotations

from rcfs.cli.commands import main, read_status
from rcfs.cli.display import format_status, progress_bar
from rcfs.cli.logs import setup_logging
from rcfs.cli.options import (
    build_parser,
    local_zone,
    parse_since,
    parse_size,
    parse_tz,
    parse_umask,
    parse_until,
    positive_float,
)

__all__ = [
    "build_parser",
    "format_status",
    "local_zone",
    "main",
    "parse_since",
    "parse_size",
    "parse_tz",
    "parse_umask",
    "parse_until",
    "positive_float",
    "progress_bar",
    "read_status",
    "setup_logging",
]
