"""Domain errors shared by every layer.

The API client turns HTTP into these once; `fuse_ops` turns them into errnos
once. Messages never carry a token, JWT or secret.
"""

from __future__ import annotations

from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)


class RcfsError(Exception):
    """Base of every error rcfs raises on purpose."""


class ConfigError(RcfsError):
    """Missing or invalid configuration or command-line input."""


class NotFound(RcfsError):
    """The resource does not exist (any more) upstream or in the tree."""


class AuthError(RcfsError):
    """Credentials were refused; retrying without new credentials won't help."""


class PermissionDenied(RcfsError):
    """The credentials are valid but lack a permission (HTTP 403)."""


class TemporaryFailure(RcfsError):
    """Transport error, 5xx, or retries exhausted: may work later (not before
    `retry_after` seconds, when the server said so)."""

    retry_after: float | None = None


class RateLimited(TemporaryFailure):
    """HTTP 429: the rate-limit group must stay silent for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float, group: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.group = group


class BadResponse(RcfsError):
    """The API answered something rcfs cannot use (malformed JSON, wrong types)."""


class ApiError(RcfsError):
    """A 4xx the client does not retry, with RingCentral's errorCode."""

    def __init__(self, message: str, status: int, error_code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SyncTokenInvalid(ApiError):
    """The call-log sync token expired or is invalid (CLG-101..105): redo a full sync."""


class UnreadableResponse(BadResponse, TemporaryFailure):
    """A 2xx whose body is not JSON (an HTML page from a proxy, a truncated body):
    usually a glitch between us and the API, so it is retried like a 5xx."""


class ForeignHostRefused(BadResponse):
    """A response named a URL outside the configured platform and media hosts."""


class CacheFull(RcfsError):
    """The content cache's disk is full (ENOSPC/EDQUOT): nothing was cached."""


class Damaged(RcfsError):
    """Cached content does not match the digest taken when it was downloaded, and
    cannot be fetched again (deleted upstream): it is never served as good."""


def found_in(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first `kind` among `exc` and, when trio wrapped it, its ExceptionGroups' leaves."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := found_in(inner, kind)) is not None:
                return found
    return None
