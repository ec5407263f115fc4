"""The web player: listen to recordings in a browser, from the mount's own cache.

Wiring, in the daemon's nursery (design essay: `rcfs.web.app`)::

    web = WebApp(
        vfs=vfs,                       # the mount's Vfs: the date tree and names
        index=index,                   # the Index: search
        content=content,               # the ContentManager: audio (interactive reads)
        errors=errors,                 # the ErrorLog: failed plays, recorded once
        on_demand=OfflineAware(backfill, link),  # a day not indexed yet is indexed first
        keep_deleted=opts.keep_deleted,
    )
    url = await nursery.start(serve_web, web, host, port)  # OSError: cannot bind
    commands["web"] = web.command      # control socket {"cmd": "web"} -> {"url", "expires_in"}
    sections["web"] = web.snapshot     # status.json "web": {"url", "sessions", ...}

`web.sign_in_url()` mints a one-time sign-in link (what `rcfs web MOUNTPOINT`
prints); `web.revoke_sessions()` signs every browser out.
"""

from __future__ import annotations

from .app import CSP, SECURITY_HEADERS, OnDemandIndex, WebApp
from .auth import SESSION_TTL, SIGN_IN_TTL, URL_TTL, Sessions, SignIns, UrlSigner
from .media import parse_range
from .search import SearchResult, count_between, search
from .server import DEFAULT_HOST, serve_web

__all__ = [
    "CSP",
    "DEFAULT_HOST",
    "SECURITY_HEADERS",
    "SESSION_TTL",
    "SIGN_IN_TTL",
    "URL_TTL",
    "OnDemandIndex",
    "SearchResult",
    "Sessions",
    "SignIns",
    "UrlSigner",
    "WebApp",
    "count_between",
    "parse_range",
    "search",
    "serve_web",
]
