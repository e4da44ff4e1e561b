"""Identifiers: parsing ``prefix/suffix`` handles, their store keys, and prefix arithmetic."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver import errors, identifiers
from resolver.identifiers import Handle, InvalidHandle, NationalPrefix, make_key, parse

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_upper(text: str) -> str:
    """Upper-case ASCII letters only (what Handle.Net folds); leave everything else alone."""
    return text.translate(_ASCII_UPPER)


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def rejected(text, **kw) -> InvalidHandle:
    with pytest.raises(InvalidHandle) as info:
        parse(text, **kw)
    err = info.value
    assert isinstance(err, errors.HandleError)
    assert err.code == errors.INVALID_HANDLE == 102
    assert err.status == 400
    assert err.message  # says why
    return err


# ------------------------------------------------------------------ parsing

def test_parse_industrial_identifier():
    h = parse("88.118.8/SN-0001")
    assert h == Handle("88.118.8", "SN-0001", b"88.118.8/SN-0001")
    assert h.prefix == "88.118.8"
    assert h.suffix == "SN-0001"
    assert h.text == str(h) == "88.118.8/SN-0001"
    assert not h.is_prefix_handle


@pytest.mark.parametrize("scheme", ["hdl:", "HDL:", "Hdl:"])
def test_hdl_scheme_is_stripped(scheme):
    h = parse(scheme + "88.118.8/SN-0001")
    assert h == parse("88.118.8/SN-0001")
    assert h.text == "88.118.8/SN-0001"


def test_empty_suffix_is_allowed():
    # Handle.Net answers "88.118.8/" with "handle not found", not "invalid handle".
    h = parse("88.118.8/")
    assert (h.prefix, h.suffix, h.text) == ("88.118.8", "", "88.118.8/")


def test_suffix_may_contain_slashes():
    h = parse("88.118.8/a/b/c")
    assert (h.prefix, h.suffix) == ("88.118.8", "a/b/c")


def test_prefix_handle():
    h = parse("0.NA/88.118.8")
    assert h.is_prefix_handle
    assert parse("0.na/88.118.8").is_prefix_handle
    assert h.suffix == "88.118.8"


def test_reject_empty():
    assert rejected("").message == "Empty handle invalid"
    assert rejected("hdl:").message == "Empty handle invalid"


def test_reject_no_slash():
    err = rejected("88.118.8")
    assert "'/'" in err.message
    assert err.handle == "88.118.8"


def test_reject_empty_prefix():
    assert "empty prefix" in rejected("/SN-0001").message


@pytest.mark.parametrize("ch", ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f"])
def test_reject_control_character(ch):
    err = rejected(f"88.118.8/SN{ch}0001")
    assert "control character" in err.message
    # the echoed handle is escaped, so the control character is not sent back raw
    assert ch not in err.handle


def test_length_limit_counts_utf8_bytes():
    head = "88.118.8/"  # 9 bytes
    ascii_ok = head + "a" * (255 - 9)
    assert parse(ascii_ok).suffix == "a" * 246
    assert "255" in rejected(ascii_ok + "a").message

    # 'é' is 2 bytes of UTF-8: 9 + 2*123 = 255 bytes in only 132 characters
    multi_ok = head + "é" * 123
    assert len(multi_ok.encode("utf-8")) == 255
    assert parse(multi_ok).suffix == "é" * 123
    multi_too_long = multi_ok + "a"
    assert len(multi_too_long) == 133 and len(multi_too_long.encode("utf-8")) == 256
    err = rejected(multi_too_long)
    assert "256 bytes" in err.message and "255" in err.message


def test_length_limit_applies_after_the_scheme_is_stripped():
    text = "88.118.8/" + "a" * 246  # 255 bytes
    assert parse("hdl:" + text).text == text


def test_reject_lone_surrogate():
    assert "UTF-8" in rejected("88.118.8/\ud800").message


@pytest.mark.parametrize("value", [None, 42, b"88.118.8/SN-0001", ["88.118.8/x"], 1.5])
def test_reject_non_str(value):
    assert "string" in rejected(value).message


def test_reject_doubled_scheme():
    # "hdl:hdl:x/y" would give a handle whose text "hdl:x/y" names a different handle (x/y)
    assert "hdl:" in rejected("hdl:hdl:88.118.8/x").message
    assert "hdl:" in rejected("hdl:HDL:88.118.8/x").message
    # a scheme-looking string later on is just part of the suffix
    assert parse("88.118.8/hdl:x").suffix == "hdl:x"


def test_invalid_handle_body():
    err = rejected("88.118.8")
    assert err.body() == {"responseCode": 102, "message": err.message, "handle": "88.118.8"}


# ------------------------------------------------------------------ keys

def test_key_folds_ascii_case():
    assert parse("88.118.8/sn").key == parse("88.118.8/SN").key == b"88.118.8/SN"
    assert parse("hdl:88.118.8/sn").key == b"88.118.8/SN"
    assert make_key("88.118.8/sn") == make_key("88.118.8/SN")


def test_key_does_not_fold_non_ascii():
    assert parse("88.118.8/é").key != parse("88.118.8/É").key
    assert make_key("88.118.8/é") == "88.118.8/é".encode("utf-8")
    # 'ß'.upper() is 'SS' for str, but keys never change length
    assert make_key("88.118.8/ß") == "88.118.8/ß".encode("utf-8")


def test_case_sensitive_keys_differ():
    lower = parse("88.118.8/sn", case_sensitive=True)
    upper = parse("88.118.8/SN", case_sensitive=True)
    assert lower.key == b"88.118.8/sn"
    assert upper.key == b"88.118.8/SN"
    assert lower.key != upper.key
    assert make_key("88.118.8/sn", case_sensitive=True) == b"88.118.8/sn"


def test_text_keeps_the_given_spelling():
    h = parse("88.118.8/sN-Ab")
    assert h.text == "88.118.8/sN-Ab"
    assert h.key == b"88.118.8/SN-AB"
    assert parse("88.118.8/sn") != parse("88.118.8/SN")  # same key, different spelling


# ------------------------------------------------------------------ prefixes

@pytest.mark.parametrize("prefix,parent", [
    ("88.118.8", "88.118"),
    ("88.118", "88.118"),
    ("88.118.8.1", "88.118"),
    ("88.118.8", "88"),
    ("ab.cd", "AB"),
    ("AB.CD", "ab.cd"),
])
def test_is_under(prefix, parent):
    assert identifiers.is_under(prefix, parent)


@pytest.mark.parametrize("prefix,parent", [
    ("88.1180", "88.118"),      # the trap: a string prefix but not a segment prefix
    ("88.1180.1", "88.118"),
    ("88.118", "88.118.8"),     # a parent is not under its child
    ("88", "88.118"),
    ("89.118.8", "88.118"),
    ("88.118.8", "88.118."),
    ("88.é", "88.É"),           # case-insensitive for ASCII only, like the store keys
])
def test_is_not_under(prefix, parent):
    assert not identifiers.is_under(prefix, parent)


def test_is_under_strict_excludes_the_parent_itself():
    assert identifiers.is_under("88.118", "88.118")
    assert not identifiers.is_under("88.118", "88.118", strict=True)
    assert not identifiers.is_under("ab", "AB", strict=True)  # equal up to ASCII case
    assert identifiers.is_under("88.118.8", "88.118", strict=True)
    assert identifiers.is_under("ab.cd", "AB", strict=True)
    assert not identifiers.is_under("88.1180", "88.118", strict=True)


def test_national_levels():
    assert identifiers.national("88.118.8") == NationalPrefix("88", "88.118", "88.118.8")
    assert identifiers.national("88.118") == NationalPrefix("88", "88.118", None)
    assert identifiers.national("88.118.8.12") == NationalPrefix("88", "88.118", "88.118.8.12")


@pytest.mark.parametrize("prefix", ["88", "", "0.NA", "88.abc", "88..8", "88.118.", "88.١١٨", "88.118.8a"])
def test_national_rejects(prefix):
    with pytest.raises(InvalidHandle) as info:
        identifiers.national(prefix)
    assert info.value.code == errors.INVALID_HANDLE
    assert "national" in info.value.message


@pytest.mark.parametrize("prefix", ["88.118.8", "88", "0.NA", "abc_D-e.X9"])
def test_check_prefix_accepts(prefix):
    assert identifiers.check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "88.118.8/x", "88..8", "88.118.", ".88", "88 .1", "88.é",
                                    "88.1\n", "hdl:88.118", "a" * 256])
def test_check_prefix_rejects(prefix):
    with pytest.raises(InvalidHandle) as info:
        identifiers.check_prefix(prefix)
    assert info.value.code == errors.INVALID_HANDLE
    assert info.value.message


def test_prefix_of():
    assert identifiers.prefix_of("88.118.8/SN/1") == "88.118.8"
    assert identifiers.prefix_of("88.118.8") == "88.118.8"


# ------------------------------------------------------------------ properties

# every character, lone surrogates included
any_char = st.characters(exclude_categories=())
any_text = st.one_of(
    st.text(any_char, max_size=40),
    st.text(any_char, min_size=120, max_size=400),
)
encodable_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
# text that looks like a handle, to reach past the first checks often
segment = st.text(st.sampled_from("0123456789.abcXYZéÉß-_:/\x00 "), max_size=12)
handle_like = st.builds(
    lambda scheme, prefix, sep, suffix: scheme + prefix + sep + suffix,
    st.sampled_from(["", "", "hdl:", "HDL:", "hdl:hdl:", "hDl:HdL:"]),
    st.one_of(segment, st.sampled_from(["88.118.8", "0.NA", "hdl", "HDL:"])),
    st.sampled_from(["/", "/", "", "//"]),
    st.one_of(segment, st.text(any_char, max_size=260)),
)
candidates = st.one_of(any_text, handle_like)


@given(candidates, st.booleans())
@settings(max_examples=400)
def test_parse_format_identity(text, case_sensitive):
    try:
        h = parse(text, case_sensitive=case_sensitive)
    except InvalidHandle:
        return
    again = parse(h.text, case_sensitive=case_sensitive)
    assert again == h
    assert again.key == h.key


@given(candidates)
@settings(max_examples=400)
def test_parse_raises_only_invalid_handle(text):
    try:
        h = parse(text)
    except InvalidHandle as err:
        assert err.code == errors.INVALID_HANDLE
        assert err.message
        return
    assert isinstance(h, Handle)
    assert len(h.key) <= identifiers.MAX_BYTES


@given(st.one_of(st.none(), st.integers(), st.binary(), st.floats(), st.lists(st.text())))
def test_parse_non_str_raises_invalid_handle(value):
    with pytest.raises(InvalidHandle):
        parse(value)


@given(encodable_text)
def test_make_key_is_idempotent(text):
    key = make_key(text)
    assert key.upper() == key
    assert make_key(key.decode("utf-8")) == key
    assert len(key) == len(text.encode("utf-8"))  # folding never changes length


@given(candidates)
@settings(max_examples=300)
def test_key_ignores_ascii_case_only(text):
    try:
        h = parse(text)
    except InvalidHandle:
        return
    assert parse(ascii_upper(text)).key == h.key
    assert parse(ascii_lower(text)).key == h.key
    if ascii_upper(h.text) != h.text:  # a case-sensitive node tells the spellings apart
        assert parse(ascii_upper(h.text), case_sensitive=True).key != parse(h.text, case_sensitive=True).key
