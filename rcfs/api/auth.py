"""Access tokens: JWT login, refresh, the on-disk token store, redaction.

Owns: when to log in or refresh, sharing one refresh among every waiting
request (a trio.Lock in-process, an fcntl lock on the token file across
processes), persisting tokens (mode 0600, atomic replace) for re-use by the
next run, and scrubbing secrets from text. It does not speak HTTP: the client
hands it `grant(form) -> dict`, which POSTs to /restapi/oauth/token through
the Auth rate-limit group and raises AuthError for refused grants.

Renewal order: another process's newer token from the store if still good,
else the refresh_token grant, else a new JWT login, else AuthError naming the
cause. A refused login is remembered for a short while so a burst of requests
with revoked credentials fails fast instead of spending the Auth budget.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from rcfs.config import Credentials, ensure_private_dir, state_dir
from rcfs.errors import AuthError, BadResponse

log = logging.getLogger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FAILURE_MEMORY = 30.0  # seconds a refused login is answered from memory
LOCK_POLL = 0.02

Grant = Callable[[dict[str, str]], Awaitable[dict[str, Any]]]


def fingerprint(creds: Credentials) -> str:
    """Identifies the credential set without revealing it (one-way hash)."""
    h = hashlib.sha256("\0".join((creds.server_url, creds.client_id, creds.jwt)).encode())
    return h.hexdigest()[:20]


def default_token_path(creds: Credentials, root: Path | None = None) -> Path:
    """One token file per credential set, so switching accounts never mixes tokens."""
    return ensure_private_dir((root or state_dir()) / "tokens") / f"{fingerprint(creds)}.json"


@dataclass(frozen=True)
class Token:
    """A token pair; times are trio clock values. The repr hides the tokens."""

    access_token: str = field(repr=False)
    expires_at: float
    lifetime: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None

    @classmethod
    def from_response(cls, data: dict[str, Any], now: float) -> Token:
        try:
            access = data["access_token"]
            lifetime = float(data.get("expires_in", 3600))
            refresh = data.get("refresh_token")
            rlife = data.get("refresh_token_expires_in")
            if not isinstance(access, str) or not access:
                raise TypeError("access_token")
            if refresh is not None and not isinstance(refresh, str):
                raise TypeError("refresh_token")
        except (KeyError, TypeError, ValueError) as exc:
            raise BadResponse(f"token response without a usable {exc}") from None
        return cls(
            access_token=access,
            expires_at=now + lifetime,
            lifetime=lifetime,
            refresh_token=refresh or None,
            refresh_expires_at=now + float(rlife) if refresh and rlife is not None else None,
        )

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def refresh_due(self, now: float) -> bool:
        return self.remaining(now) < min(60.0, 0.2 * self.lifetime)

    def usable(self, now: float) -> bool:
        return self.remaining(now) > min(10.0, 0.1 * self.lifetime)

    def refresh_usable(self, now: float) -> bool:
        if not self.refresh_token:
            return False
        return self.refresh_expires_at is None or self.refresh_expires_at - now > 5.0


class TokenStore:
    """One JSON file (0600) plus a lock file, shared by processes with the same credentials."""

    def __init__(self, path: Path, fp: str) -> None:
        self.path = path
        self._fp = fp
        self._lock_path = path.with_name(path.name + ".lock")

    def __repr__(self) -> str:
        return f"<TokenStore {self.path}>"

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Exclusive across processes. Polls so that cancellation stays prompt."""
        try:
            ensure_private_dir(self.path.parent)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot lock the token store %s (%s); going on unlocked", self.path, exc.strerror)
            yield
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                await trio.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)  # also releases the lock

    def _load_sync(self) -> dict[str, Any] | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable token store %s: %s", self.path, type(exc).__name__)
            return None
        if not isinstance(data, dict) or data.get("fingerprint") != self._fp:
            return None
        return data

    async def load(self) -> Token | None:
        data = await trio.to_thread.run_sync(self._load_sync)
        if data is None:
            return None
        # Persisted times are wall-clock; in memory they are trio clock values.
        offset = trio.current_time() - time.time()
        try:
            rexp = data.get("refresh_expires_at")
            return Token(
                access_token=str(data["access_token"]),
                expires_at=float(data["expires_at"]) + offset,
                lifetime=float(data["lifetime"]),
                refresh_token=data.get("refresh_token") or None,
                refresh_expires_at=float(rexp) + offset if rexp is not None else None,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def _save_sync(self, data: dict[str, Any]) -> None:
        ensure_private_dir(self.path.parent)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    async def save(self, token: Token) -> None:
        offset = time.time() - trio.current_time()
        data = {
            "fingerprint": self._fp,
            "access_token": token.access_token,
            "expires_at": token.expires_at + offset,
            "lifetime": token.lifetime,
            "refresh_token": token.refresh_token,
            "refresh_expires_at": (
                token.refresh_expires_at + offset if token.refresh_expires_at is not None else None
            ),
        }
        await trio.to_thread.run_sync(self._save_sync, data)

    async def clear(self) -> None:
        def _unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

        await trio.to_thread.run_sync(_unlink)


class Authenticator:
    """Hands out access tokens; one renewal at a time, shared by all waiters."""

    def __init__(self, creds: Credentials, store: TokenStore, grant: Grant) -> None:
        self._creds = creds
        self._store = store
        self._grant = grant
        self._token: Token | None = None
        self._lock = trio.Lock()
        self._failure: AuthError | None = None
        self._failed_at = 0.0
        self.logins = 0
        self.refreshes = 0

    def __repr__(self) -> str:
        state = "token" if self._token else "no token"
        return f"<Authenticator {self._creds.server_url} {state}>"

    # -- secrets --------------------------------------------------------------

    def redact(self, text: str) -> str:
        """`text` with every secret or token this process knows replaced by '***'."""
        secrets = [self._creds.jwt, self._creds.client_secret]
        if self._token is not None:
            secrets += [self._token.access_token, self._token.refresh_token or ""]
        for s in secrets:
            if s and len(s) >= 6:
                text = text.replace(s, "***")
        return text

    # -- tokens ------------------------------------------------------------------

    def usable_token(self) -> str | None:
        """The current access token if it is good for a request sent now."""
        tok = self._token
        if tok is not None and tok.usable(trio.current_time()):
            return tok.access_token
        return None

    def _not_due(self) -> str | None:
        """The access token held, if it is not due for renewal yet."""
        tok = self._token
        if tok is not None and not tok.refresh_due(trio.current_time()):
            return tok.access_token
        return None

    async def token(self) -> str:
        """A good access token, refreshing first if it is due."""
        if (held := self._not_due()) is not None:
            return held
        async with self._lock:
            if (held := self._not_due()) is not None:
                return held  # another waiter renewed it
            tok = self._token
            now = trio.current_time()
            if tok is None:
                stored = await self._store.load()
                if stored is not None and not stored.refresh_due(now):
                    log.debug("re-using the stored access token")
                    self._token = stored
                    return stored.access_token
            return await self._renew(stale=tok.access_token if tok else None)

    @contextlib.asynccontextmanager
    async def use(self, token: str) -> AsyncIterator[str]:
        """The token to send a request with, held while the request is sent (a shared
        session takes a lease here: shared/session.py)."""
        yield token

    async def after_401(self, used: str) -> str:
        """The server refused `used`: renew once (unless someone already did)."""
        async with self._lock:
            tok = self._token
            if tok is not None and tok.access_token != used and tok.usable(trio.current_time()):
                return tok.access_token
            log.info("access token refused (401); renewing it")
            return await self._renew(stale=used)

    def _login_refused(self, exc: AuthError, refresh_cause: str | None) -> AuthError:
        """The error of a refused JWT login (remembered for FAILURE_MEMORY), secrets redacted."""
        msg = f"RingCentral refused the JWT login: {self.redact(str(exc))}"
        if refresh_cause:
            msg += f" (refresh before that: {refresh_cause})"
        err = AuthError(msg)
        self._failure, self._failed_at = err, trio.current_time()
        return err

    async def _renew(self, stale: str | None) -> str:
        now = trio.current_time()
        if self._failure is not None and now - self._failed_at < FAILURE_MEMORY:
            raise AuthError(str(self._failure))
        async with self._store.locked():
            stored = await self._store.load()
            now = trio.current_time()
            current = self._token.access_token if self._token else None
            if stored is not None and stored.access_token not in (stale, current) and stored.usable(now):
                log.debug("adopting a token renewed by another process")
                self._token = stored
                return stored.access_token
            candidates = [t for t in (stored, self._token) if t is not None]
            refresh_cause = ""
            for cand in candidates:
                if cand.refresh_usable(now):
                    assert cand.refresh_token is not None
                    try:
                        new = await self._grant(
                            {"grant_type": "refresh_token", "refresh_token": cand.refresh_token}
                        )
                    except AuthError as exc:
                        refresh_cause = self.redact(str(exc))
                        log.info("token refresh refused (%s); logging in with the JWT", exc)
                        break
                    self.refreshes += 1
                    return await self._adopt(new)
            try:
                new = await self._grant({"grant_type": JWT_GRANT, "assertion": self._creds.jwt})
            except AuthError as exc:
                err = self._login_refused(exc, refresh_cause)
                self._token = None
                await self._store.clear()
                raise err from None
            self.logins += 1
            log.info("logged in to %s with the JWT", self._creds.server_url)
            return await self._adopt(new)

    async def _adopt(self, data: dict[str, Any]) -> str:
        # Without a refresh token (the app may not enable them) the next renewal
        # re-presents the JWT.
        tok = Token.from_response(data, trio.current_time())
        self._token = tok
        self._failure = None
        try:
            await self._store.save(tok)
        except OSError as exc:
            log.warning("cannot save the token to %s: %s", self._store.path, exc.strerror)
        return tok.access_token

    async def forget(self) -> Token | None:
        """Drop the token in memory and on disk (after revoking it)."""
        async with self._lock:
            tok, self._token = self._token, None
            await self._store.clear()
            return tok


__all__ = [
    "Authenticator",
    "Grant",
    "Token",
    "TokenStore",
    "default_token_path",
    "fingerprint",
]
