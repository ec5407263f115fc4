"""Encryption at rest of the shared session's tokens in Redis.

Owns the key and the sealed format; nothing else. The key is derived from
the app's client secret with HKDF-SHA256 (salt fixed per format version,
info = the namespace, which is a hash of server URL, client id and JWT), so
whoever can read Redis but does not have the client secret cannot use the
tokens, and a record cannot be moved to another credential set. Sealing is
AES-256-GCM with a random 96-bit nonce; the associated data binds a sealed
token to its record and generation, so a blob copied to another record or
replayed as another generation fails to open (as does any changed byte).

Library: `cryptography` (pyca): maintained by the Python Cryptographic
Authority, wheels for every platform rcfs runs on, AES-GCM and HKDF over
OpenSSL with constant-time tag checks; no primitive of our own.

Never logs or formats a key, a token or the secret.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"rcfs1"
_SALT = b"rcfs redis token store v1"
_NONCE = 12


class Undecryptable(Exception):
    """The sealed token cannot be opened: another secret, or it was changed."""


class TokenCipher:
    def __init__(self, client_secret: str, namespace: str) -> None:
        if not client_secret:
            raise ValueError("no client secret to derive the token key from")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                   info=b"rcfs token key:" + namespace.encode()).derive(client_secret.encode())
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "<TokenCipher AES-256-GCM>"

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(_NONCE)
        sealed = VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)
        return base64.b64encode(sealed).decode("ascii")

    def open(self, text: str, aad: bytes) -> bytes:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, UnicodeError):
            raise Undecryptable("not a sealed token") from None
        if not raw.startswith(VERSION) or len(raw) < len(VERSION) + _NONCE + 16:
            raise Undecryptable("not a sealed token of this version")
        nonce = raw[len(VERSION):len(VERSION) + _NONCE]
        try:
            return self._aead.decrypt(nonce, raw[len(VERSION) + _NONCE:], aad)
        except InvalidTag:
            raise Undecryptable("authentication failed (another client secret, or altered)") from None
