"""Identifiers: ``prefix/suffix`` handles, parsed at the edge into frozen values. No I/O.

A handle is at most 255 bytes of UTF-8 with no control characters, an optional ``hdl:``
scheme in front. Handle.Net compares ASCII letters case-insensitively by default, so the
lookup key upper-cases ASCII only (``bytes.upper`` touches nothing else); a node started
case-sensitive keys on the exact bytes. The spelling that was given is kept in ``text``.

Industrial-internet identifiers are the national form ``88.<node>.<enterprise>/<suffix>``:
``national()`` splits such a prefix into its levels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from resolver import errors

MAX_BYTES = 255
NA_PREFIX = "0.NA"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEGMENT = re.compile(r"[0-9A-Za-z_-]+")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class InvalidHandle(errors.HandleError):
    """The text is not a handle; the message says why."""

    def __init__(self, reason: str, text: str | None = None):
        super().__init__(errors.INVALID_HANDLE, reason, handle=text)


def make_key(text: str, case_sensitive: bool = False) -> bytes:
    """The store key for a handle or prefix text: UTF-8, ASCII letters folded unless told not."""
    raw = text.encode("utf-8")
    return raw if case_sensitive else raw.upper()


@dataclass(frozen=True, slots=True)
class Handle:
    prefix: str
    suffix: str
    key: bytes  # the normalised store key: see make_key

    @property
    def text(self) -> str:
        return f"{self.prefix}/{self.suffix}"

    def __str__(self) -> str:
        return self.text

    @property
    def is_prefix_handle(self) -> bool:
        """``0.NA/<prefix>``: the record that says where a prefix is served and who owns it."""
        return self.prefix.upper() == NA_PREFIX


def check_text(text: str) -> str:
    """Strip an ``hdl:`` scheme and check length and characters; return the bare text."""
    if not isinstance(text, str):
        raise InvalidHandle("handle must be a string")
    if text[:4].lower() == "hdl:":
        text = text[4:]
    if not text:
        raise InvalidHandle("Empty handle invalid")
    if _CONTROL.search(text):
        raise InvalidHandle("handle contains a control character", text.encode("unicode_escape").decode())
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidHandle("handle is not valid UTF-8 (lone surrogate)", None) from None
    if size > MAX_BYTES:
        raise InvalidHandle(f"handle is {size} bytes of UTF-8; at most {MAX_BYTES} are allowed", text[:64] + "…")
    return text


def parse(text: str, *, case_sensitive: bool = False) -> Handle:
    """Parse ``prefix/suffix`` (optionally ``hdl:prefix/suffix``) into a Handle.

    Raises InvalidHandle (responseCode 102) with the reason. The suffix may be empty
    (Handle.Net answers such a lookup with "handle not found", not "invalid").
    """
    text = check_text(text)
    if text[:4].lower() == "hdl:":  # its text would re-parse as a different handle
        raise InvalidHandle("handle has the 'hdl:' scheme twice", text)
    prefix, slash, suffix = text.partition("/")
    if not slash:
        raise InvalidHandle("handle has no '/' between prefix and suffix", text)
    if not prefix:
        raise InvalidHandle("handle has an empty prefix", text)
    return Handle(prefix, suffix, make_key(text, case_sensitive))


def prefix_of(text: str) -> str:
    """The prefix part of a handle text (all of it when there is no '/')."""
    return text.partition("/")[0]


def check_prefix(prefix: str) -> str:
    """A prefix on its own (``88.118.8``): non-empty dotted segments of letters, digits, _ or -."""
    check_text(prefix)
    if "/" in prefix:
        raise InvalidHandle("a prefix contains no '/'", prefix)
    for seg in prefix.split("."):
        if not _SEGMENT.fullmatch(seg):
            raise InvalidHandle(f"prefix segment {seg!r} must be letters, digits, '_' or '-'", prefix)
    return prefix


def is_under(prefix: str, parent: str, *, strict: bool = False) -> bool:
    """True when ``prefix`` equals ``parent`` or extends it by whole dotted segments.

    ``88.118.8`` is under ``88.118``; ``88.1180`` is not. ASCII case-insensitive, like the
    store keys. With ``strict=True`` equality does not count: only proper descendants.
    """
    p, q = prefix.translate(_ASCII_UPPER), parent.translate(_ASCII_UPPER)
    if p == q:
        return not strict
    return p.startswith(q + ".")


@dataclass(frozen=True, slots=True)
class NationalPrefix:
    """``88.118.8`` → country ``88``, secondary node ``88.118``, enterprise ``88.118.8``."""

    country: str
    node: str
    enterprise: str | None


def national(prefix: str) -> NationalPrefix:
    """Split a national-form prefix into its levels; InvalidHandle if it is not one."""
    segs = prefix.split(".")
    if len(segs) < 2 or not all(s.isdigit() and s.isascii() for s in segs):
        raise InvalidHandle(
            "not a national-form prefix: expected digits like 88.<node>[.<enterprise>...]", prefix)
    node = ".".join(segs[:2])
    return NationalPrefix(segs[0], node, prefix if len(segs) > 2 else None)
