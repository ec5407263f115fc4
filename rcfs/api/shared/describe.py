"""The `redis` block of `status.json` as lines for `rcfs status` (pure: no I/O)."""

from __future__ import annotations

from typing import Any


def redis_lines(block: Any) -> list[str]:
    """Lines for a mount sharing through Redis; none for a mount that does not."""
    if not isinstance(block, dict) or not block:
        return []
    state = "connected" if block.get("connected") else (
        f"LOST ({block.get('error') or '?'}): local budgets of "
        f"{round(100 * float(block.get('fallback', {}).get('share', 1 / 3)))}% of each limit, "
        "reconnecting")
    peers = block.get("peers") or []
    lines = [f"redis       {block.get('url', '?')} {state}; {len(peers)} peer(s): "
             + ", ".join(f"{p.get('host')}:{p.get('pid')}"
                         + (f" {p['label']}" if p.get("label") else "")
                         + (" (this one)" if p.get("self") else "") for p in peers)]
    s = block.get("session") or {}
    if s.get("present"):
        mine = " (this process)" if s.get("holder_is_me") else ""
        lines.append(f"            session held by {s.get('holder')}{mine} since its "
                     f"{s.get('obtained_by') or '?'} {s.get('obtained_s_ago')} s ago, expires in "
                     f"{s.get('expires_in_s')} s; {s.get('logins', 0)} login(s), "
                     f"{s.get('refreshes', 0)} refresh(es) in all"
                     + (f"; being renewed by {s['refreshing']}" if s.get("refreshing") else ""))
    for group, b in sorted((block.get("budget") or {}).items()):
        paused = f", paused {b['paused_for_s']} s" if b.get("paused_for_s") else ""
        lines.append(f"            shared {group}: {b.get('remaining')}/{b.get('limit')} per "
                     f"{b.get('window')} s left{paused}, {b.get('interactive_waiting', 0)} "
                     "read(s) waiting anywhere")
    return lines
