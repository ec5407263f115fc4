"""The hosts the client may send the bearer token to: the configured platform and
media hosts, compared by origin (scheme, host, port). Everything else is foreign:
a URL naming it is refused before any request (`checked`), except where the
media host redirects recording content, which the client follows without the
token (`RingCentralClient._send_unauthenticated`).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from rcfs.api.wire import origin, strip_secret_params
from rcfs.errors import BadResponse, ForeignHostRefused


class Hosts:
    def __init__(self, server_url: str, media_url: str) -> None:
        self._server_url = server_url
        self._media_url = media_url
        self._allowed = {origin(server_url), origin(media_url)}

    def checked(self, url: str, what: str) -> str:
        """`url` (a path means the platform's) ready to send, or ForeignHostRefused."""
        if url.startswith("/"):
            url = self._server_url + url
        try:
            found = origin(url)
        except ValueError:  # e.g. a port out of range
            raise BadResponse(f"{what}: unusable URL from the server") from None
        if found not in self._allowed:
            # scheme://host:port only: a URL may carry credentials or tokens.
            scheme, host, port = found
            raise ForeignHostRefused(
                f"{what}: refusing to contact {scheme}://{host or '?'}:{port}, which is neither "
                f"the platform ({self._server_url}) nor the media host ({self._media_url})"
            )
        return strip_secret_params(url)

    def platform_url(self, uri: str) -> str:
        """A URI the platform returned (navigation): keep path and query, on our server."""
        parts = urlsplit(uri)
        return self._server_url + urlunsplit(("", "", parts.path, parts.query, ""))

    def foreign(self, url: str) -> bool:
        try:
            return origin(url) not in self._allowed
        except ValueError:
            return True
