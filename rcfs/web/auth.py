"""Who may use the web player: one-time sign-in tokens, sessions, signed media URLs.

Owns three secrets, all kept only in this process's memory (a restart of the
daemon signs everybody out and voids every link it gave):

- Sign-in tokens (`SignIns`): 256 random bits, minted on request of the
  control socket (`rcfs web MOUNTPOINT`, so only the mounting user gets one),
  valid once, for `SIGN_IN_TTL` seconds. Only their SHA-256 digests are kept,
  and a token offered is compared with every pending digest in constant time
  (`hmac.compare_digest`), so neither a memory dump nor response timing
  reveals a usable token.
- Sessions (`Sessions`): a random id in an HttpOnly cookie, mapped (by its
  SHA-256 digest) to an absolute expiry, `SESSION_TTL` seconds after sign-in.
  A dictionary lookup by digest is safe against timing: an attacker can
  neither choose digests nor learn anything from a near miss.
- Media URL signatures (`UrlSigner`): itsdangerous' `TimestampSigner`
  (HMAC-SHA256) over the recording's inode number, salted with the purpose
  (`audio` or `download`), valid `URL_TTL` seconds, so one signature opens
  one recording for one purpose and nothing else; `<audio>`, mpv and VLC use
  such a URL without the cookie. The key is random per daemon unless given.

Must not: log a token, session id or signature, or put one in an exception
message. Time comes from the `clock` given (wall seconds), so tests can age
anything without sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from itsdangerous import BadSignature, TimestampSigner

SIGN_IN_TTL = 300.0  # seconds a sign-in link stays valid (once)
SESSION_TTL = 12 * 3600.0  # seconds a browser stays signed in
URL_TTL = 3600.0  # seconds a signed audio or download URL stays valid
MAX_PENDING_SIGN_INS = 32  # the oldest unused sign-in link goes first
MAX_SESSIONS = 256  # the oldest session goes first
PURPOSES = ("audio", "download")

Clock = Callable[[], float]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class SignIns:
    """One-time sign-in tokens: `mint` one, `redeem` it once before it expires."""

    def __init__(self, ttl: float = SIGN_IN_TTL, *, clock: Clock = time.time,
                 limit: int = MAX_PENDING_SIGN_INS) -> None:
        self.ttl = ttl
        self._clock = clock
        self._limit = limit
        self._pending: list[tuple[bytes, float]] = []  # (digest, expiry), oldest first

    def mint(self) -> str:
        token = secrets.token_urlsafe(32)
        self._purge()
        self._pending.append((_digest(token), self._clock() + self.ttl))
        del self._pending[:-self._limit]
        return token

    def redeem(self, token: str | None) -> bool:
        """True, once, for a token minted here less than `ttl` seconds ago."""
        self._purge()
        if not token or len(token) > 256:
            return False
        offered = _digest(token)
        found = None
        for i, (digest, _) in enumerate(self._pending):
            # Every pending digest is compared, each in constant time.
            if hmac.compare_digest(digest, offered):
                found = i
        if found is None:
            return False
        del self._pending[found]
        return True

    def pending(self) -> int:
        self._purge()
        return len(self._pending)

    def _purge(self) -> None:
        now = self._clock()
        self._pending = [(d, exp) for d, exp in self._pending if exp > now]


class Sessions:
    """Signed-in browsers: random ids with an absolute expiry."""

    def __init__(self, ttl: float = SESSION_TTL, *, clock: Clock = time.time,
                 limit: int = MAX_SESSIONS) -> None:
        self.ttl = ttl
        self._clock = clock
        self._limit = limit
        self._by_digest: dict[bytes, float] = {}  # insertion order: oldest first

    def create(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._purge()
        self._by_digest[_digest(sid)] = self._clock() + self.ttl
        while len(self._by_digest) > self._limit:
            del self._by_digest[next(iter(self._by_digest))]
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid or len(sid) > 256:
            return False
        expiry = self._by_digest.get(_digest(sid))
        return expiry is not None and expiry > self._clock()

    def revoke_all(self) -> int:
        n = len(self._by_digest)
        self._by_digest.clear()
        return n

    def __len__(self) -> int:
        self._purge()
        return len(self._by_digest)

    def _purge(self) -> None:
        now = self._clock()
        for digest in [d for d, exp in self._by_digest.items() if exp <= now]:
            del self._by_digest[digest]


class _ClockSigner(TimestampSigner):
    """itsdangerous' TimestampSigner on an injectable clock (whole seconds, as its own),
    deriving its key once rather than for every signature (a day page signs two URLs
    per recording: this halves the cost of a page of 2,000)."""

    clock: Clock = time.time
    _derived: bytes | None = None

    def get_timestamp(self) -> int:
        return int(self.clock())

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:
            return super().derive_key(secret_key)
        if self._derived is None:
            self._derived = super().derive_key()
        return self._derived


class UrlSigner:
    """Signatures that open one recording for one purpose for `ttl` seconds.

    `sign(purpose, ino)` gives the query value (`timestamp.signature`, URL-safe);
    `check(purpose, ino, value)` accepts it only for that purpose and inode, and
    only within `ttl` seconds of signing (not before: a clock that went back
    voids it too).
    """

    def __init__(self, secret: bytes | None = None, ttl: float = URL_TTL, *,
                 clock: Clock = time.time) -> None:
        key = secret if secret is not None else secrets.token_bytes(32)
        if len(key) < 16:
            raise ValueError("the URL-signing secret must be at least 16 bytes")
        self.ttl = ttl
        self._signers: dict[str, _ClockSigner] = {}
        for purpose in PURPOSES:
            signer = _ClockSigner(key, salt=f"rcfs.web.{purpose}", digest_method=hashlib.sha256)
            signer.clock = clock
            self._signers[purpose] = signer

    def sign(self, purpose: str, ino: int) -> str:
        value = str(ino)
        signed = self._signers[purpose].sign(value).decode("ascii")
        return signed[len(value) + 1:]  # the inode is in the path: keep "timestamp.signature"

    def check(self, purpose: str, ino: int, value: str | None) -> bool:
        signer = self._signers.get(purpose)
        if signer is None or not value or len(value) > 200:
            return False
        try:
            got = signer.unsign(f"{ino}.{value}", max_age=int(self.ttl))
        except BadSignature:  # also SignatureExpired, and a timestamp in the future
            return False
        return hmac.compare_digest(got, str(ino).encode())
