"""OAuth for the emulator: its fake app credentials, sessions and tokens.

Owns who may call the API. Credentials are recognisably fake
(`rcfs-emulator-client`, JWT `rcfs-emulator-jwt.…`, access tokens
`rcfs-emu-at-…`) so rcfs can refuse them for non-loopback servers. Semantics
follow RingCentral: a JWT login opens a session; a refresh issues new tokens
and invalidates the previous access and refresh tokens at once; revoking
either token ends the whole session. Lifetimes use `trio.current_time()`-style
monotonic seconds passed in by the caller. Tokens never appear in log lines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass

CLIENT_ID = "rcfs-emulator-client"
JWT_PREFIX = "rcfs-emulator-jwt."
ACCESS_PREFIX = "rcfs-emu-at-"
REFRESH_PREFIX = "rcfs-emu-rt-"
ACCESS_TTL = 3600.0
REFRESH_TTL = 604800.0
SCOPE = "ReadAccounts ReadCallLog ReadCallRecording"


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str
    jwt: str


def make_credentials(seed: int, account_id: str, extension_id: str) -> Credentials:
    digest = hashlib.sha256(f"rcfs-emulator:{seed}:{account_id}".encode()).hexdigest()
    claims = json.dumps(
        {"iss": "rcfs-emulator", "sub": extension_id, "account": account_id}, sort_keys=True
    )
    payload = base64.urlsafe_b64encode(claims.encode()).decode().rstrip("=")
    return Credentials(
        client_id=CLIENT_ID,
        client_secret=f"rcfs-emulator-secret-{digest[:24]}",
        jwt=f"{JWT_PREFIX}{payload}.{digest[24:56]}",
    )


@dataclass
class Session:
    id: str
    owner_id: str
    client_id: str
    access_token: str
    access_expires: float
    refresh_token: str
    refresh_expires: float
    endpoint_id: str
    alive: bool = True


class TokenError(Exception):
    """An API token was refused; `code` is the OAU-xxx code RingCentral uses."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthState:
    """The sessions issued by one emulator."""

    def __init__(self, seed: int, credentials: Credentials, owner_id: str) -> None:
        self.credentials = credentials
        self.owner_id = owner_id
        self.jwt_valid = True
        self.access_ttl = ACCESS_TTL
        self._rng = random.Random(f"rcfs-emulator-tokens:{seed}")
        self._by_access: dict[str, Session] = {}
        self._by_refresh: dict[str, Session] = {}
        self._sessions = 0
        # Every token ever issued, for tests that prove none of them leaks.
        self.issued: list[str] = []

    def _token(self, prefix: str) -> str:
        return prefix + "".join(self._rng.choice("0123456789abcdef") for _ in range(40))

    def check_client(self, client_id: str, client_secret: str) -> bool:
        return (client_id, client_secret) == (
            self.credentials.client_id,
            self.credentials.client_secret,
        )

    def login(self, assertion: str, client_id: str, now: float, ttl: float) -> Session:
        """JWT bearer grant. Raises TokenError('OAU-...') when the JWT is refused."""
        if not self.jwt_valid or assertion != self.credentials.jwt:
            raise TokenError("OAU-140", "Invalid JWT token")
        self._sessions += 1
        session = Session(
            id=f"{self._rng.randrange(10**9, 10**10)}",
            owner_id=self.owner_id,
            client_id=client_id,
            access_token="",
            access_expires=0.0,
            refresh_token="",
            refresh_expires=0.0,
            endpoint_id=f"rcfs-emu-ep-{self._sessions}",
        )
        self._issue(session, now, ttl)
        return session

    def refresh(self, refresh_token: str, client_id: str, now: float, ttl: float) -> Session:
        session = self._by_refresh.get(refresh_token)
        if session is None or not session.alive or session.client_id != client_id:
            raise TokenError("OAU-211", "Token is revoked or not found")
        if now >= session.refresh_expires:
            raise TokenError("OAU-213", "Refresh token expired")
        self._by_access.pop(session.access_token, None)
        self._by_refresh.pop(session.refresh_token, None)
        self._issue(session, now, ttl)
        return session

    def _issue(self, session: Session, now: float, ttl: float) -> None:
        session.access_token = self._token(ACCESS_PREFIX)
        session.refresh_token = self._token(REFRESH_PREFIX)
        session.access_expires = now + ttl
        session.refresh_expires = now + REFRESH_TTL
        self._by_access[session.access_token] = session
        self._by_refresh[session.refresh_token] = session
        self.issued += [session.access_token, session.refresh_token]

    def revoke(self, token: str) -> bool:
        session = self._by_access.get(token) or self._by_refresh.get(token)
        if session is None:
            return False
        self._end(session)
        return True

    def _end(self, session: Session) -> None:
        session.alive = False
        self._by_access.pop(session.access_token, None)
        self._by_refresh.pop(session.refresh_token, None)

    def revoke_all(self) -> int:
        sessions = {id(s): s for s in self._by_access.values()}
        sessions.update({id(s): s for s in self._by_refresh.values()})
        for session in sessions.values():
            self._end(session)
        return len(sessions)

    def expire_all(self, now: float) -> None:
        """Every access token expires now (refresh tokens stay valid)."""
        for session in self._by_access.values():
            session.access_expires = min(session.access_expires, now)

    def authenticate(self, token: str, now: float) -> Session:
        """An API request's bearer token -> its session, or TokenError."""
        if not token.startswith(ACCESS_PREFIX):
            raise TokenError("OAU-149", "Invalid token")
        session = self._by_access.get(token)
        if session is None or not session.alive:
            raise TokenError("OAU-213", "Token not found")
        if now >= session.access_expires:
            raise TokenError("OAU-128", "Access token expired")
        return session
