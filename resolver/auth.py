"""Credentials the Handle way: an identity is ``index:handle`` and its secret is the HS_SECKEY
value at that index of that handle (``300:0.NA/88.118.8`` for an enterprise prefix's owner).

Secrets are stored as scrypt hashes, never in clear, and checked in constant time. scrypt is
deliberately slow (~30 ms), so a successful check is remembered by a keyed digest of
(stored hash, secret) for the life of the process: the register path pays the cost once per
client, not per request. No I/O here: callers look the stored value up.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from urllib.parse import unquote

from resolver import errors

SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
SECRET_INDEX = 300


@dataclass(frozen=True, slots=True)
class Identity:
    index: int
    handle: str

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"

    def matches(self, index: int, handle: str) -> bool:
        return self.index == index and self.handle.upper() == handle.upper()


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"{SCHEME}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(SCHEME + "$")


def new_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(18)).decode()


class Verifier:
    """Checks secrets against stored hashes; remembers successes (bounded)."""

    def __init__(self, max_remembered: int = 100_000) -> None:
        self._key = os.urandom(32)
        self._ok: set[bytes] = set()
        self._max = max_remembered

    def verify(self, secret: str, stored: str) -> bool:
        token = hmac.new(self._key, stored.encode() + b"\0" + secret.encode(), "sha256").digest()
        if token in self._ok:
            return True
        try:
            scheme, n, r, p, salt, want = stored.split("$")
            got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n),
                                 r=int(r), p=int(p), dklen=32)
            ok = scheme == SCHEME and hmac.compare_digest(got, base64.b64decode(want))
        except (ValueError, binascii.Error):
            ok = False
        if ok:
            if len(self._ok) >= self._max:
                self._ok.clear()
            self._ok.add(token)
        return ok


def parse_identity(user: str) -> Identity:
    """``300:0.NA/88.118.8`` (URL-encoded or not) → Identity. HandleError 402 if malformed."""
    user = unquote(user)
    index, colon, handle = user.partition(":")
    if not colon or not index.isdigit() or "/" not in handle:
        raise errors.HandleError(
            errors.AUTHENTICATION_FAILED,
            f"user must be index:handle, like 300:0.NA/88.118.8; got {user[:100]!r}")
    return Identity(int(index), handle)


def parse_basic(header: str | None) -> tuple[Identity, str] | None:
    """The identity and secret from an ``Authorization: Basic`` header; None when absent."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 f"only Basic authentication is supported, not {scheme[:20]!r}")
    try:
        user, colon, secret = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 "Authorization header is not valid base64") from None
    # The user itself contains ':' (index:handle); clients URL-encode it, but tolerate both.
    if not colon:
        raise errors.HandleError(errors.AUTHENTICATION_FAILED, "Basic credentials need user:secret")
    if user.isdigit() and ":" in secret:
        handle, _, secret = secret.partition(":")
        user = f"{user}:{handle}"
    return parse_identity(user), secret
