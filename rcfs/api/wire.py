"""URLs and transport failures, as the client needs them: the origin a URL names
(the platform and media hosts are compared by origin), query parameters that
carry secrets stripped from any URL rcfs sends (a token belongs in the
Authorization header), and a failure to reach a server as one line that
always says something.
"""

from __future__ import annotations

import errno
import ipaddress
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

# Never put these in a URL we send: the token belongs in the Authorization header.
_SECRET_PARAMS = {"access_token", "refresh_token", "assertion", "client_secret"}


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def transport_reason(exc: httpx.TransportError, url: httpx.URL, timeout: httpx.Timeout) -> str:
    """A failure to talk to a server as one line that always says something (httpx's
    own message is empty for timeouts)."""
    where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    detail = str(exc).strip()
    if isinstance(exc, httpx.ConnectTimeout):
        detail = f"no connection within {timeout.connect or 0:g} s"
    elif isinstance(exc, httpx.ReadTimeout):
        detail = f"connected, but no answer within {timeout.read or 0:g} s"
    elif isinstance(exc, httpx.WriteTimeout | httpx.PoolTimeout):
        detail = detail or "timed out"
    elif isinstance(exc, httpx.ConnectError):
        cause = os_cause(exc)
        if (cause is not None and cause.errno == errno.ECONNREFUSED) or "refused" in detail.lower():
            detail = "connection refused"
        elif cause is not None and cause.strerror:
            detail = cause.strerror.lower()
        detail = detail or "cannot connect"
    return f"{where}: {type(exc).__name__} ({detail or 'no reason given'})"


def os_cause(exc: BaseException) -> OSError | None:
    """The OSError under a transport error (trio and anyio wrap it, sometimes in groups)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def strip_secret_params(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() not in _SECRET_PARAMS
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))
