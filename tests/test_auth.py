"""Credentials: scrypt-hashed secrets and the Basic header Handle clients (pyhandle) send."""
from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver import auth, errors
from resolver.auth import Identity

SECRET = "ent-secret-8"
ENT8 = Identity(300, "0.NA/88.118.8")


@pytest.fixture(scope="module")
def stored() -> str:
    return auth.hash_secret(SECRET)


def basic(raw: str | bytes) -> str:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def pyhandle_header(user: str, secret: str) -> str:
    """As pyhandle builds it: ``quote(user)`` (safe='/', so ':' → %3A and '/' stays) + ':' + secret."""
    return basic(urllib.parse.quote(user) + ":" + secret)


def refused(header: str) -> errors.HandleError:
    with pytest.raises(errors.HandleError) as info:
        auth.parse_basic(header)
    err = info.value
    assert err.code == errors.AUTHENTICATION_FAILED == 403
    assert err.status == 401
    assert err.message
    return err


# ------------------------------------------------------------------ secrets

def test_hash_and_verify(stored):
    v = auth.Verifier()
    assert v.verify(SECRET, stored) is True
    assert v.verify("wrong", stored) is False
    assert v.verify(SECRET.upper(), stored) is False
    assert v.verify("", stored) is False


def test_stored_value_never_contains_the_secret(stored):
    assert SECRET not in stored
    assert auth.is_hashed(stored)
    assert stored.startswith("scrypt$")
    assert not auth.is_hashed(SECRET)


def test_salt_makes_every_hash_different(stored):
    again = auth.hash_secret(SECRET)
    assert again != stored
    assert auth.Verifier().verify(SECRET, again)


def test_same_salt_same_hash():
    salt = b"0123456789abcdef"
    assert auth.hash_secret("s", salt=salt) == auth.hash_secret("s", salt=salt)


def test_remembered_success_still_rejects_a_wrong_secret(stored):
    v = auth.Verifier()
    assert v.verify(SECRET, stored)
    assert v.verify(SECRET, stored)  # remembered
    assert not v.verify("wrong", stored)
    assert not v.verify(SECRET + "x", stored)
    # a remembered success is for that stored value only
    other = auth.hash_secret("other")
    assert not v.verify(SECRET, other)
    assert v.verify(SECRET, stored)


def test_remembered_successes_are_bounded(stored):
    v = auth.Verifier(max_remembered=1)
    other = auth.hash_secret("other")
    assert v.verify(SECRET, stored) and v.verify("other", other)
    assert len(v._ok) <= 1
    assert v.verify(SECRET, stored) and not v.verify("wrong", stored)


@pytest.mark.parametrize("bad", ["", SECRET, "scrypt$", "scrypt$x$y$z$a$b", "scrypt$16384$8$1$!!$!!",
                                 "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$3$8$1$AAAA$AAAA"])
def test_malformed_stored_value_never_verifies(bad):
    assert auth.Verifier().verify(SECRET, bad) is False


def test_generated_tokens_use_fast_salted_sha256():
    token = auth.new_secret()
    stored = auth.hash_secret(token, token=True)
    assert stored.startswith("sha256$") and auth.is_hashed(stored)
    assert token not in stored
    v = auth.Verifier()
    assert v.verify(token, stored)
    assert not v.verify(token + "x", stored)
    assert not v.verify(token, auth.hash_secret(token, token=True).replace("sha256$", "scrypt$"))


@pytest.mark.parametrize("bad", ["sha256$", "sha256$AAAA", "sha256$!!$!!", "sha256$AAAA$AAAA$AAAA"])
def test_malformed_token_hash_never_verifies(bad):
    assert auth.Verifier().verify("", bad) is False


def test_new_secret_is_random_text():
    a, b = auth.new_secret(), auth.new_secret()
    assert a != b and len(a) >= 20 and ":" not in a


# ------------------------------------------------------------------ identities

def test_identity():
    assert str(ENT8) == "300:0.NA/88.118.8"
    assert ENT8.matches(300, "0.na/88.118.8")
    assert not ENT8.matches(301, "0.NA/88.118.8")
    assert not ENT8.matches(300, "0.NA/88.118.9")


@pytest.mark.parametrize("user", ["300:0.NA/88.118.8", "300%3A0.NA/88.118.8", "300%3A0.NA%2F88.118.8"])
def test_parse_identity(user):
    assert auth.parse_identity(user) == ENT8


@pytest.mark.parametrize("user", ["0.NA/88.118.8", "300", "300:", "300:0.NA", "abc:0.NA/88.118.8",
                                  ":0.NA/88.118.8", "-1:0.NA/88.118.8", "²:0.NA/88.118.8",
                                  pytest.param("9" * 5000 + ":0.NA/88.118.8", id="5000-digit-index")])
def test_parse_identity_rejects(user):
    with pytest.raises(errors.HandleError) as info:
        auth.parse_identity(user)
    assert info.value.code == errors.AUTHENTICATION_FAILED
    assert "index:handle" in info.value.message


# ------------------------------------------------------------------ Basic headers

@pytest.mark.parametrize("header", [None, ""])
def test_no_header(header):
    assert auth.parse_basic(header) is None


def test_basic_as_pyhandle_sends_it():
    header = pyhandle_header("300:0.NA/88.118.8", SECRET)
    # pyhandle leaves '/' unencoded
    assert base64.b64decode(header[6:]) == b"300%3A0.NA/88.118.8:ent-secret-8"
    assert auth.parse_basic(header) == (ENT8, SECRET)


def test_basic_fully_encoded_user():
    assert auth.parse_basic(basic("300%3A0.NA%2F88.118.8:" + SECRET)) == (ENT8, SECRET)


def test_basic_unencoded_user():
    assert auth.parse_basic(basic("300:0.NA/88.118.8:" + SECRET)) == (ENT8, SECRET)


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_scheme_is_case_insensitive(scheme):
    header = scheme + " " + base64.b64encode(b"300:0.NA/88.118.8:s").decode()
    assert auth.parse_basic(header) == (ENT8, "s")


@pytest.mark.parametrize("secret", ["a:b", "::", "a:b:c:", ":leading", "é:ü", ""])
def test_secret_may_contain_colons(secret):
    assert auth.parse_basic(pyhandle_header("300:0.NA/88.118.8", secret)) == (ENT8, secret)
    assert auth.parse_basic(basic("300:0.NA/88.118.8:" + secret)) == (ENT8, secret)


def test_other_index_and_handle():
    assert auth.parse_basic(pyhandle_header("200:88.118.8/ADMIN", "x")) == (
        Identity(200, "88.118.8/ADMIN"), "x")


def test_reject_bearer():
    assert "Basic" in refused("Bearer abc.def.ghi").message


@pytest.mark.parametrize("header", ["Basic !!!not-base64!!!", "Basic abc", "Basic é",
                                    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()])
def test_reject_not_base64_or_not_utf8(header):
    assert "base64" in refused(header).message


@pytest.mark.parametrize("header", ["Basic", "Basic ", basic("no-colon-here"), basic("")])
def test_reject_no_colon(header):
    assert "user:secret" in refused(header).message


@pytest.mark.parametrize("raw", ["0.NA/88.118.8:" + SECRET,           # user without index
                                 "0.NA%2F88.118.8:" + SECRET,
                                 "admin:" + SECRET,
                                 "abc:0.NA/88.118.8:" + SECRET,
                                 "300:" + SECRET,                    # index without handle
                                 "²:0.NA/88.118.8:" + SECRET,        # not an ASCII digit
                                 pytest.param("9" * 5000 + ":0.NA/88.118.8:s", id="5000-digit-index")])
def test_reject_malformed_user(raw):
    assert "index:handle" in refused(basic(raw)).message


@given(st.text(max_size=80))
def test_any_header_parses_or_is_refused_cleanly(header):
    try:
        got = auth.parse_basic(header)
    except errors.HandleError as err:
        assert err.code == errors.AUTHENTICATION_FAILED
        return
    assert got is None or isinstance(got[0], Identity)


@given(st.binary(max_size=80))
def test_any_credentials_parse_or_are_refused_cleanly(raw):
    try:
        got = auth.parse_basic(basic(raw))
    except errors.HandleError as err:
        assert err.code == errors.AUTHENTICATION_FAILED
        return
    identity, secret = got
    assert isinstance(identity, Identity) and isinstance(secret, str)


def test_an_identity_whose_handle_is_not_a_handle_is_refused():
    """The user part names a handle: over 255 bytes (or with control characters) it is
    refused as bad credentials (403) before anything is looked up or remembered."""
    with pytest.raises(errors.HandleError) as err:
        auth.parse_identity("300:0.NA/" + "x" * 300)
    assert err.value.code == errors.AUTHENTICATION_FAILED
    assert "at most 255" in err.value.message


def test_remembered_successes_are_an_lru(monkeypatch):
    """The most recently used successes stay when the memory is full (it used to be cleared
    wholesale, so every client paid scrypt again)."""
    stored = {s: auth.hash_secret(s) for s in ("a-secret", "b-secret", "c-secret")}
    v = auth.Verifier(max_remembered=2)
    for s in ("a-secret", "b-secret", "a-secret", "c-secret"):  # b is the least recent
        assert v.verify(s, stored[s])
    calls = []
    real = auth.hashlib.scrypt
    monkeypatch.setattr(auth.hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert v.verify("a-secret", stored["a-secret"]) and v.verify("c-secret", stored["c-secret"])
    assert calls == []
    assert v.verify("b-secret", stored["b-secret"]) and calls == [1]
    assert not v.verify("wrong", stored["a-secret"]) and len(v._ok) == 2


def test_only_ordinary_headers_are_remembered():
    """Distinct long headers (say, 4 KB guesses) are parsed each time, never kept: the parse
    cache holds at most 1,024 headers of at most 256 characters (it held 4,096 of any size)."""
    before = auth._parse_basic_cached.cache_info().currsize
    for i in range(100):
        identity, secret = auth.parse_basic(auth.basic_header(str(ENT8), f"{i:04d}" * 1000))
        assert identity == ENT8 and len(secret) == 4000
    assert auth._parse_basic_cached.cache_info().currsize == before
    assert auth._parse_basic_cached.cache_info().maxsize == 1024
    header = auth.basic_header(str(ENT8), "short-secret")
    assert auth.parse_basic(header) is auth.parse_basic(header)  # the usual header: parsed once
