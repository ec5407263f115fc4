"""What systemd hears from a mount: READY=1 once the tree lists, then STATUS= as it changes.

The real exchange over a NOTIFY_SOCKET is in tests/e2e/test_service.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from rcfs.connection import Link
from rcfs.mount import NOTIFY_STATUS_SECONDS, Notifier
from rcfs.mount.notify import announce, status_summary


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, **fields: Any) -> bool:
        self.sent.append(fields)
        return True


async def test_ready_then_a_status_line_whenever_progress_changes(
    tmp_path: Path, autojump_clock: Any
) -> None:
    systemd = Recorder()
    notifier = Notifier(None, verbose=False, systemd=systemd)  # type: ignore[arg-type]
    lines = iter(["indexed 1 of 9 days", "indexed 1 of 9 days", "indexed 5 of 9 days"])
    last = ["indexed 5 of 9 days"]

    def summary() -> str:
        last[0] = next(lines, last[0])
        return last[0]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(announce, tmp_path, notifier, summary)
        while not systemd.sent:  # the listing runs in a thread, in real time
            await trio.sleep(0.001)
        await trio.sleep(4 * NOTIFY_STATUS_SECONDS + 1)
        nursery.cancel_scope.cancel()
    assert systemd.sent[0] == {"READY": 1, "STATUS": f"mounted {tmp_path}: indexed 1 of 9 days"}
    # Every 30 s, only when the line changed.
    assert systemd.sent[1:] == [{"STATUS": "indexed 5 of 9 days"}]
    notifier.stopping()
    notifier.stopping()
    assert systemd.sent[-1] == {"STOPPING": 1, "STATUS": "unmounting"}
    assert sum("STOPPING" in m for m in systemd.sent) == 1


def test_status_line_names_index_archive_and_offline() -> None:
    link = Link()
    progress = {"complete": False, "days_indexed": 3, "days_total": 91, "eta_s": 600}
    archive = {"enabled": True, "pending": 10, "done": 5, "bytes": 1000, "rate_per_min": 10,
               "eta_s": 60, "at_risk": 0, "lost": 0}
    line = status_summary({"recordings": 42}, progress, archive, link)
    assert line.startswith("serving 42 recordings; indexed 3 of 91 days, about 10 min left")
    assert "archive: 10 pending" in line and "offline" not in line
    link.lost("cannot reach RingCentral (no answer within 10 s)")
    line = status_summary({"recordings": 42}, {"complete": True}, {"enabled": False}, link)
    assert line == ("serving 42 recordings; offline, retrying: cannot reach RingCentral "
                    "(no answer within 10 s); call log indexed")
