"""The web player's HTML: small, server-rendered, script-free pages.

Owns the markup and the style sheet. Every value that comes from the call
log (names, numbers, ids) or from the request (the search query) goes
through `esc` (html.escape with quotes) exactly once, at the point it is
written into the page, and every URL is built by the app from numbers and
percent-quoted names, so a name like `<script>"'&` shows as text. There is
no JavaScript at all: `<audio controls preload="none">` plays and seeks, a
GET form searches, and the Content-Security-Policy allows no script.

Accessibility: `lang`, one `h1` per page, a skip link, landmarks (`header`,
`nav` with a breadcrumb, `main`, `role=search`), a labelled search field,
tables with a caption and `scope`d headers, an accessible name on each
player and download link, visible focus. On a narrow screen (a phone) each
table row becomes a card with the column names as labels.

Must not: import trio, httpx or pyfuse3; read the index or the cache (the
app hands it plain view objects).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def month_name(m: int) -> str:
    return _MONTHS[m - 1]


def weekday_name(i: int) -> str:
    return _WEEKDAYS[i]


@dataclass(frozen=True)
class PartyView:
    number: str  # phone number as the call log gave it, or ""
    extension: str  # extension number, or ""
    name: str  # or ""


@dataclass(frozen=True)
class RecordingView:
    ino: int
    anchor: str  # id of its row
    day_href: str  # its day page
    date: str  # YYYY-MM-DD (local to the mount)
    time: str  # HH:MM:SS (local to the mount)
    inbound: bool
    from_party: PartyView
    to_party: PartyView
    duration_s: int
    size: int
    size_exact: bool
    cached: bool
    downloading: bool
    deleted: bool  # deleted upstream (user.rc.deleted)
    file_name: str
    audio_url: str
    download_url: str
    content_type: str


@dataclass(frozen=True)
class DayView:
    href: str
    day: int
    weekday: int
    count: int


@dataclass(frozen=True)
class MonthView:
    year: int
    month: int
    days: list[DayView]  # newest first

    @property
    def count(self) -> int:
        return sum(d.count for d in self.days)


@dataclass(frozen=True)
class YearView:
    year: int
    months: list[MonthView]  # newest first

    @property
    def count(self) -> int:
        return sum(m.count for m in self.months)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def fmt_duration(seconds: int) -> str:
    h, rest = divmod(max(0, seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_size(n: int) -> str:
    """Decimal units, as file managers show them: 812 B, 560 KB, 14.4 MB, 1.2 GB."""
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.0f} KB"
    if n < 1_000_000_000:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e9:.1f} GB"


# -- the frame ---------------------------------------------------------------

def layout(title: str, body: str, *, crumbs: Iterable[tuple[str, str | None]] = (),
           query: str = "", search_box: bool = True) -> str:
    """A whole page: `crumbs` are (label, href or None for the current page)."""
    items = []
    for label, href in crumbs:
        items.append(f'<li><a href="{esc(href)}">{esc(label)}</a></li>' if href is not None
                     else f'<li aria-current="page">{esc(label)}</li>')
    nav = (f'<nav aria-label="Breadcrumb"><ol class="crumbs">{"".join(items)}</ol></nav>'
           if items else "")
    form = (
        '<form class="search" role="search" method="get" action="/search">'
        '<label for="q">Phone number, extension or name</label>'
        f'<input id="q" name="q" type="search" value="{esc(query)}" maxlength="100" '
        'autocomplete="off" inputmode="search" spellcheck="false">'
        '<button type="submit">Search</button></form>'
    ) if search_box else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{esc(title)} · rcfs</title>\n"
        '<link rel="stylesheet" href="/static/rcfs.css">\n'
        "</head>\n<body>\n"
        '<a class="skip" href="#main">Skip to content</a>\n'
        f'<header><p class="brand"><a href="/">rcfs</a> call recordings</p>{nav}{form}</header>\n'
        f'<main id="main" tabindex="-1">\n{body}\n</main>\n'
        "</body>\n</html>\n"
    )


def message_page(title: str, text_html: str, *, search_box: bool = False) -> str:
    """A page with a heading and a paragraph (`text_html` is markup: escape its parts)."""
    return layout(title, f"<h1>{esc(title)}</h1>\n<p>{text_html}</p>", search_box=search_box)


SIGN_IN_HINT = (
    "Run <code>rcfs web MOUNTPOINT</code> as the user who mounted rcfs, on the machine "
    "it runs on, and open the one-time link it prints (it is valid for a few minutes)."
)


# -- the date tree -------------------------------------------------------------

def tree_page(years: list[YearView], note: str = "") -> str:
    total = sum(y.count for y in years)
    parts = ["<h1>Call recordings</h1>",
             f'<p class="summary">{esc(_plural(total, "recording"))} by the day the call '
             "started (in the mount's time zone), newest first.</p>"]
    if note:
        parts.append(f'<p class="note" role="status">{esc(note)}</p>')
    if not years:
        parts.append("<p>No recordings are indexed yet.</p>")
    for i, y in enumerate(years):
        parts.append(f'<section aria-labelledby="y{y.year}">'
                     f'<h2 id="y{y.year}">{y.year} <span class="count">'
                     f'{esc(_plural(y.count, "recording"))}</span></h2>')
        for j, m in enumerate(y.months):
            label = f"{month_name(m.month)} {m.year}"
            opened = " open" if i == 0 and j == 0 else ""
            parts.append(f'<details class="month"{opened}><summary><h3>{esc(label)} '
                         f'<span class="count">{esc(_plural(m.count, "recording"))}</span>'
                         "</h3></summary>")
            if not m.days:
                parts.append('<p class="note">Not indexed yet: days appear as they are indexed.</p>')
            else:
                parts.append(f'<ul class="days" aria-label="Days of {esc(label)}">')
                for d in m.days:
                    parts.append(
                        f'<li><a href="{esc(d.href)}"><span class="dom">{d.day}</span> '
                        f'<span class="dow">{esc(weekday_name(d.weekday)[:3])}</span> '
                        f'<span class="count">{esc(_plural(d.count, "recording"))}</span></a></li>')
                parts.append("</ul>")
            parts.append("</details>")
        parts.append("</section>")
    return layout("Call recordings", "\n".join(parts), crumbs=[("All days", None)])


# -- recordings ----------------------------------------------------------------

def _party(p: PartyView) -> str:
    lines = []
    if p.name:
        lines.append(f'<span class="name">{esc(p.name)}</span>')
    if p.extension:
        lines.append(f'<span class="num">ext. {esc(p.extension)}</span>')
    if p.number and p.number != p.extension:
        lines.append(f'<span class="num">{esc(p.number)}</span>')
    return "<br>".join(lines) or '<span class="unknown">unknown</span>'


def _who(p: PartyView) -> str:
    return p.name or p.extension or p.number or "unknown"


def recordings_table(rows: list[RecordingView], caption: str, *, with_date: bool) -> str:
    head = ['<th scope="col">Date</th>'] if with_date else []
    head += ['<th scope="col">Time</th>', '<th scope="col">Direction</th>',
             '<th scope="col">From</th>', '<th scope="col">To</th>',
             '<th scope="col">Duration</th>', '<th scope="col">Size</th>',
             '<th scope="col">Cache</th>', '<th scope="col">Listen</th>',
             '<th scope="col">File</th>']
    out = ['<div class="table-wrap"><table class="recordings">',
           f"<caption>{esc(caption)}</caption>", f"<thead><tr>{''.join(head)}</tr></thead>",
           "<tbody>"]
    for r in rows:
        who = f"{'from' if r.inbound else 'to'} {_who(r.from_party if r.inbound else r.to_party)}"
        label = f"Recording of the call at {r.time} on {r.date}, {who}"
        cache = ("downloading" if r.downloading else "cached" if r.cached else "not cached")
        deleted = (' <span class="deleted" title="Deleted upstream: rcfs keeps its copy">'
                   "deleted upstream</span>" if r.deleted else "")
        size = ("" if r.size_exact else "≈ ") + fmt_size(r.size)  # ≈: an estimate
        cells = []
        if with_date:
            cells.append(f'<td data-label="Date"><a href="{esc(r.day_href)}#{esc(r.anchor)}">'
                         f"{esc(r.date)}</a></td>")
        cells += [
            f'<td data-label="Time"><time>{esc(r.time)}</time></td>',
            f'<td data-label="Direction">{"Inbound" if r.inbound else "Outbound"}{deleted}</td>',
            f'<td data-label="From">{_party(r.from_party)}</td>',
            f'<td data-label="To">{_party(r.to_party)}</td>',
            f'<td data-label="Duration">{esc(fmt_duration(r.duration_s))}</td>',
            f'<td data-label="Size">{esc(size)}</td>',
            f'<td data-label="Cache" class="cache-{cache.replace(" ", "-")}">{cache}</td>',
            f'<td data-label="Listen"><audio controls preload="none" src="{esc(r.audio_url)}" '
            f'aria-label="{esc(label)}">'
            f'<a href="{esc(r.download_url)}">Download</a></audio></td>',
            f'<td data-label="File"><a href="{esc(r.download_url)}" download '
            f'aria-label="Download {esc(r.file_name)}" class="file">{esc(r.file_name)}</a></td>',
        ]
        out.append(f'<tr id="{esc(r.anchor)}" data-recording="{r.ino}">{"".join(cells)}</tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def day_page(y: int, m: int, d: int, weekday: int, rows: list[RecordingView], *,
             prev_href: str | None, next_href: str | None, note: str = "") -> str:
    title = f"{weekday_name(weekday)} {d} {month_name(m)} {y}"
    parts = [f"<h1>{esc(title)}</h1>",
             f'<p class="summary">{esc(_plural(len(rows), "recording"))}; times are in the '
             "mount's time zone. Links to the audio are valid for an hour: reload the page "
             "after that.</p>"]
    if note:
        parts.append(f'<p class="note" role="status">{esc(note)}</p>')
    pager = []
    if prev_href:
        pager.append(f'<a rel="prev" href="{esc(prev_href)}">← Previous day</a>')
    if next_href:
        pager.append(f'<a rel="next" href="{esc(next_href)}">Next day →</a>')
    nav = f'<nav class="pager" aria-label="Other days">{" ".join(pager)}</nav>' if pager else ""
    parts.append(nav)
    parts.append(recordings_table(rows, f"Recordings of {title}", with_date=False))
    parts.append(nav)
    crumbs = [("All days", "/"), (str(y), "/#y" + str(y)), (month_name(m), "/#y" + str(y)),
              (str(d), None)]
    return layout(title, "\n".join(parts), crumbs=crumbs)


def search_page(query: str, rows: list[RecordingView] | None, *, truncated: bool) -> str:
    parts = ["<h1>Search</h1>"]
    if rows is None:
        parts.append("<p>Find recordings by a phone number (or part of one: digits are "
                     "enough), an extension number, or a name (or part of one).</p>")
    elif not rows:
        parts.append(f'<p role="status">No recording matches “{esc(query)}”.</p>')
    else:
        more = " (the newest; narrow the search to see others)" if truncated else ""
        parts.append(f'<p role="status">{esc(_plural(len(rows), "recording"))} match '
                     f"“{esc(query)}”{esc(more)}.</p>")
        parts.append(recordings_table(rows, f"Recordings matching “{query}”", with_date=True))
    return layout("Search" if not query else f"Search: {query}", "\n".join(parts),
                  crumbs=[("All days", "/"), ("Search", None)], query=query)


CSS = """\
:root { color-scheme: light dark; --fg: #1b1b1b; --bg: #fff; --muted: #595959;
  --line: #d0d0d0; --accent: #0b57d0; --warn: #8a1c00; --ok: #1e6b2e; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8e8; --bg: #161616; --muted: #b0b0b0; --line: #444;
    --accent: #8ab4f8; --warn: #ffb4a0; --ok: #8fd19e; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, summary:focus-visible,
audio:focus-visible, main:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.skip { position: absolute; left: -9999px; }
.skip:focus { left: 1rem; top: 1rem; background: var(--bg); padding: .5rem; z-index: 1; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center;
  padding: .75rem 1rem; border-bottom: 1px solid var(--line); }
.brand { margin: 0; font-weight: 600; }
.brand a { text-decoration: none; }
.crumbs { display: flex; flex-wrap: wrap; list-style: none; margin: 0; padding: 0; }
.crumbs li + li::before { content: "\\203A"; padding: 0 .4rem; color: var(--muted); }
.search { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin-left: auto; }
.search label { font-size: .9rem; color: var(--muted); }
.search input { font: inherit; padding: .35rem .5rem; min-width: 12rem;
  border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--fg); }
.search button { font: inherit; padding: .35rem .8rem; border-radius: 4px;
  border: 1px solid var(--accent); background: var(--accent); color: var(--bg); }
main { padding: 1rem; max-width: 90rem; }
h1 { font-size: 1.5rem; margin: .25rem 0 .5rem; }
h2 { font-size: 1.25rem; margin: 1.25rem 0 .25rem; }
h3 { display: inline; font-size: 1.05rem; margin: 0; }
.count, .summary, .note, caption { color: var(--muted); font-weight: normal; }
.count { font-size: .9rem; }
.note { font-style: italic; }
details.month { margin: .25rem 0; }
summary { cursor: pointer; padding: .25rem 0; }
.days { display: grid; grid-template-columns: repeat(auto-fill, minmax(9.5rem, 1fr));
  gap: .4rem; list-style: none; padding: 0; margin: .4rem 0 .8rem; }
.days a { display: block; padding: .4rem .6rem; border: 1px solid var(--line);
  border-radius: 6px; text-decoration: none; }
.days .dom { font-weight: 600; font-size: 1.1rem; }
.days .count { display: block; }
.pager { display: flex; gap: 1.5rem; margin: .5rem 0; }
.table-wrap { overflow-x: auto; }
table.recordings { border-collapse: collapse; width: 100%; }
caption { text-align: left; padding: .25rem 0; }
th, td { text-align: left; vertical-align: top; padding: .45rem .5rem;
  border-bottom: 1px solid var(--line); }
th { font-size: .9rem; white-space: nowrap; }
td .num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td .name { font-weight: 500; overflow-wrap: anywhere; }
td .unknown { color: var(--muted); }
td[data-label="Time"], td[data-label="Duration"], td[data-label="Size"],
td[data-label="Cache"] { white-space: nowrap; }
td audio { width: 16rem; max-width: 100%; height: 2.25rem; }
a.file { font-size: .8rem; overflow-wrap: anywhere; }
.deleted { display: inline-block; margin-left: .3rem; padding: 0 .35rem; border-radius: 3px;
  font-size: .8rem; color: var(--warn); border: 1px solid var(--warn); }
.cache-cached { color: var(--ok); }
.cache-not-cached, .cache-downloading { color: var(--muted); }
tr:target { background: color-mix(in srgb, var(--accent) 12%, transparent); }
code { font-size: .95em; }
@media (max-width: 760px) {
  header { padding: .5rem; }
  .search { margin-left: 0; width: 100%; }
  .search input { flex: 1; min-width: 0; }
  main { padding: .5rem; }
  table.recordings, table.recordings tbody, table.recordings tr, table.recordings td {
    display: block; width: 100%; }
  table.recordings thead { position: absolute; width: 1px; height: 1px; overflow: hidden;
    clip: rect(0 0 0 0); }
  table.recordings tr { border: 1px solid var(--line); border-radius: 8px;
    margin: 0 0 .75rem; padding: .25rem .5rem; }
  table.recordings td { border: 0; padding: .2rem 0; display: grid;
    grid-template-columns: 6.5rem 1fr; gap: .5rem; }
  table.recordings td::before { content: attr(data-label); color: var(--muted);
    font-size: .85rem; }
  td audio { width: 100%; }
}
"""
