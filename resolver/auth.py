"""Credentials the Handle way: an identity is ``index:handle`` and its secret is the HS_SECKEY
value at that index of that handle (``300:0.NA/88.118.8`` for an enterprise prefix's owner).

``basic_header`` builds the header a client sends; ``parse_basic`` reads it back.

Secrets are stored hashed, never in clear, and checked in constant time. Secrets a person
chooses get scrypt, deliberately slow (~50 ms); secrets this program generates (``new_secret``:
144 random bits) get salted SHA-256, as API tokens are stored: guessing them is hopeless
anyway, and a 4,065-enterprise cluster starts in seconds instead of minutes. A successful
check is remembered by a keyed digest of (stored hash, secret) for the life of the process,
so the register path pays scrypt once per client, not per request. No I/O here.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from resolver import errors, identifiers

SCHEME = "scrypt"
TOKEN_SCHEME = "sha256"
_N, _R, _P = 2**14, 8, 1
SECRET_INDEX = 300
_INDEX = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() also accepts '²'


@dataclass(frozen=True, slots=True)
class Identity:
    index: int
    handle: str

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"

    def matches(self, index: int, handle: str) -> bool:
        return self.index == index and self.handle.upper() == handle.upper()


def hash_secret(secret: str, *, token: bool = False, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` for a chosen secret; ``sha256$salt$hash`` for a generated token."""
    salt = salt or os.urandom(16)
    b64 = base64.b64encode
    if token:
        digest = hashlib.sha256(salt + secret.encode()).digest()
        return f"{TOKEN_SCHEME}${b64(salt).decode()}${b64(digest).decode()}"
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{SCHEME}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith((SCHEME + "$", TOKEN_SCHEME + "$"))


def new_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(18)).decode()


class Verifier:
    """Checks secrets against stored hashes; remembers successes only, in an LRU of at most
    ``max_remembered`` (a failure costs a hash each time, never memory)."""

    def __init__(self, max_remembered: int = 100_000) -> None:
        self._key = os.urandom(32)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._max = max_remembered

    def verify(self, secret: str, stored: str) -> bool:
        token = hmac.new(self._key, stored.encode() + b"\0" + secret.encode(), "sha256").digest()
        if token in self._ok:
            self._ok.move_to_end(token)
            return True
        try:
            parts = stored.split("$")
            if parts[0] == TOKEN_SCHEME and len(parts) == 3:
                salt, want = base64.b64decode(parts[1]), base64.b64decode(parts[2])
                got = hashlib.sha256(salt + secret.encode()).digest()
            elif parts[0] == SCHEME and len(parts) == 6:
                n, r, p = (int(x) for x in parts[1:4])
                salt, want = base64.b64decode(parts[4]), base64.b64decode(parts[5])
                got = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
            else:
                return False
            ok = hmac.compare_digest(got, want)
        except (ValueError, binascii.Error):
            ok = False
        if ok and self._max:
            self._ok[token] = None
            if len(self._ok) > self._max:
                self._ok.popitem(last=False)
        return ok


def parse_identity(user: str) -> Identity:
    """``300:0.NA/88.118.8`` (URL-encoded or not) → Identity. HandleError 403 if malformed."""
    user = unquote(user)
    index, colon, handle = user.partition(":")
    if not colon or not _INDEX.fullmatch(index) or "/" not in handle:
        raise errors.HandleError(
            errors.AUTHENTICATION_FAILED,
            f"user must be index:handle, like 300:0.NA/88.118.8; got {user[:100]!r}")
    try:  # a handle like any other (at most 255 bytes): what the memos keep stays small
        identifiers.check_text(handle)
    except errors.HandleError as exc:
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 f"user's handle is not a handle: {exc.message}") from None
    return Identity(int(index), handle)


def basic_header(user: str, secret: str) -> str:
    """The ``Authorization`` value pyhandle sends: ``Basic base64(quote(user) + ':' + secret)``.

    ``quote`` with its default ``safe='/'``: ``300:0.NA/88.118.8`` goes as
    ``300%3A0.NA/88.118.8``. ``parse_basic`` reads it back (and the fully quoted form too).
    """
    raw = quote(user) + ":" + secret
    return "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")


def parse_basic(header: str | None) -> tuple[Identity, str] | None:
    """The identity and secret from an ``Authorization: Basic`` header; None when absent."""
    if not header:
        return None
    if len(header) <= CACHED_HEADER:
        return _parse_basic_cached(header)
    return _parse_basic(header)


def _parse_basic(header: str) -> tuple[Identity, str]:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 f"only Basic authentication is supported, not {scheme[:20]!r}")
    try:
        user, colon, secret = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text in the token
        raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                 "Authorization header is not valid base64") from None
    # The user itself contains ':' (index:handle); clients URL-encode it, but tolerate both.
    if not colon:
        raise errors.HandleError(errors.AUTHENTICATION_FAILED, "Basic credentials need user:secret")
    if user.isdigit() and ":" in secret:
        handle, _, secret = secret.partition(":")
        user = f"{user}:{handle}"
    return parse_identity(user), secret


# Clients send the same header with every request, so parsing is remembered, but only for
# headers of an ordinary size: what the cache holds is bounded (~1 MiB), however many
# distinct, however long headers arrive (8 KiB each would otherwise be ~70 MB held).
CACHED_HEADER = 256
_parse_basic_cached = lru_cache(maxsize=1024)(_parse_basic)
