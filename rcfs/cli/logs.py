"""Logging set-up for the daemon and the commands, with a last-line secret redactor."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from rcfs.errors import ConfigError

log = logging.getLogger("rcfs")

log = logging.getLogger("rcfs")

class _Redactor(logging.Filter):
    """Last line of defence: blank out known secrets should one reach a log record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            msg = record.getMessage()
            if any(s in msg for s in self._secrets):
                for s in self._secrets:
                    msg = msg.replace(s, "***")
                record.msg, record.args = msg, None
        return True


def setup_logging(level: str, log_file: Path | None, secrets: list[str] | None = None) -> None:
    handler: logging.Handler
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write the log file {log_file}: {exc.strerror}") from None
        handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redactor(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx/httpcore at DEBUG print every header exchange; keep them at INFO at most.
    for noisy in ("httpcore", "hpack", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
