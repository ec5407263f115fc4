"""Human-readable renderings of the status document (`rcfs status`)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from rcfs.units import count, fmt_bytes, fmt_duration

log = logging.getLogger("rcfs")


def when(value: Any, now: float | None = None) -> str:
    """An ISO 8601 time (or epoch seconds) as local time to the second, with its age:
    `2026-12-03 14:05:10 (3 min ago)`; '-' when absent, as is when unreadable."""
    if value is None or value == "":
        return "-"
    try:
        ts = float(value) if isinstance(value, int | float) else datetime.fromisoformat(
            str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return str(value)
    now = time.time() if now is None else now
    local = datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    delta = now - ts
    if abs(delta) < 1:
        return f"{local} (now)"
    age = fmt_duration(abs(delta))
    return f"{local} ({age} ago)" if delta > 0 else f"{local} (in {age})"


def progress_bar(done: int, total: int, width: int = 30) -> str:
    frac = 1.0 if total <= 0 else min(1.0, done / total)
    filled = round(frac * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}%"


def format_status(st: dict[str, Any]) -> str:
    idx, cache, dl = st.get("index", {}), st.get("cache", {}), st.get("downloads", {})
    lines = [
        f"account     {st.get('account', '?')}  (call log: {st.get('call_log_scope', 'company')})",
        *_connection(st.get("connection") or {}),
        f"index       {count(idx.get('recordings', 0), 'recording')} in "
        f"{count(idx.get('records', 0), 'call')}, "
        f"{when(idx.get('oldest')).split(' (')[0]} .. {when(idx.get('newest')).split(' (')[0]}",
        *_index_progress(idx.get("progress") or {}),
        f"            {idx.get('deleted', 0)} deleted upstream ({idx.get('deleted_kept', 0)} kept"
        f"{'' if st.get('keep_deleted', True) else ', --no-keep-deleted'}); "
        f"last sync {when(idx.get('last_sync'))}",
        f"cache       {fmt_bytes(cache.get('bytes', 0))} of {fmt_bytes(cache.get('limit', 0))}, "
        f"{count(cache.get('entries', 0), 'recording')}; {cache.get('hits', 0)} hits, "
        f"{cache.get('misses', 0)} misses",
        *_archive(st.get("archive") or {}),
        f"downloads   {dl.get('active', 0)} active, {dl.get('queued', 0)} queued, "
        f"{dl.get('done', 0)} done, {dl.get('failed', 0)} failed, {fmt_bytes(dl.get('bytes', 0))}",
    ]
    ref = st.get("refresh") or {}
    if ref:
        last = ref.get("last") or {}
        summary = (f"last {when(last.get('time'))}: {last.get('new_recordings', 0)} new, "
                   f"{last.get('deleted', 0)} deleted" if last else "none yet")
        lines.append(f"refresh     every {ref.get('poll_interval', 0):g} s, {ref.get('refreshes', 0)} done"
                     f"{', running' if ref.get('running') else ''}; {summary}")
    pf = st.get("prefetch") or {}
    if pf.get("total"):
        finished = pf.get("done", 0) + pf.get("failed", 0)
        state = "running" if pf.get("running") else "done"
        lines.append(f"prefetch    {progress_bar(finished, pf['total'])} {finished}/{pf['total']} "
                     f"({pf.get('failed', 0)} failed, {fmt_bytes(pf.get('bytes', 0))}), {state}")
    web = st.get("web") or {}
    if web.get("url"):
        lines.append(f"web player  {web['url']}  {web.get('sessions', 0)} signed in, "
                     f"{web.get('streams_active', 0)} playing, {fmt_bytes(web.get('bytes_sent', 0))} "
                     "sent (sign in: rcfs web MOUNTPOINT)")
    lines.append("rate limits")
    reqs = st.get("requests", {})
    for group, rl in sorted(st.get("rate_limits", {}).items()):
        r = reqs.get(group, {})
        paused = f", paused until {when(rl['paused_until'])}" if rl.get("paused_until") else ""
        lines.append(
            f"  {group:<8} {rl.get('remaining', '?')}/{rl.get('limit', '?')}"
            f" per {rl.get('window', '?')} s{paused}; "
            f"sent {r.get('sent', 0)}, 429s {r.get('throttled_429', 0)}, errors {r.get('errors', 0)}; "
            f"queued {rl.get('queued', 0)}, in flight {rl.get('in_flight', 0)}"
        )
        for w in rl.get("interactive_waiting") or []:
            lines.append(f"           a read waits for its slot: {w.get('op') or 'request'}, "
                         f"place {w.get('position')} in the queue, for {w.get('waiting_s')} s")
    errs = st.get("errors", [])
    lines.append(f"errors      {len(errs)} recent" + (":" if errs else ""))
    lines.extend(f"  {when(e.get('time'))} {e.get('cause', '')}" for e in errs[-5:])
    return "\n".join(lines)


def _connection(c: dict[str, Any]) -> list[str]:
    if not c or c.get("online", True):
        return []
    return [f"connection  OFFLINE since {when(c.get('offline_since'))}, serving the index; "
            f"next attempt {when(c.get('next_attempt'))}: {c.get('error') or '?'}"]


def _index_progress(p: dict[str, Any]) -> list[str]:
    if not p or p.get("complete"):
        return []
    eta = p.get("eta_s")
    left = f", about {fmt_duration(eta)} left" if eta else ""
    error = f"; {p['error']}" if p.get("error") else ""
    return [f"            indexing {progress_bar(p.get('days_indexed', 0), p.get('days_total', 0))} "
            f"{p.get('days_indexed', 0)}/{p.get('days_total', 0)} days since "
            f"{p.get('since', '?')}{left}{error}"]


def _archive(a: dict[str, Any]) -> list[str]:
    from rcfs.archive import summary_line

    if not a:
        return []
    lines = [f"archive     {summary_line(a)}"]
    if a.get("enabled") and a.get("at_risk"):
        lines.append(
            f"WARNING     {a['at_risk']} recordings will be deleted by RingCentral (after "
            f"{a.get('retention_days', 90):g} days) before the archive reaches them at "
            f"{a.get('rate_per_min', 0):g} a minute: raise the Heavy rate limit of the app, "
            "or archive from a second app")
    return lines
