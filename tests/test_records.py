"""Records: values from client JSON, their stored bytes, and Handle.Net's REST JSON shape."""
from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver import errors, record_input, records
from resolver.record_input import values_from_json
from resolver.records import Value

NOW = 1_700_000_000
# 2026-11-23T02:54:53Z, the timestamp of the values in shared/reference/handle-rest-9.3.1.txt
REF_TS = 1795402493

# The "existing handle" answer's values array from a real Handle.Net 9.3.1 server
# (shared/reference/handle-rest-9.3.1.txt, GET /api/handles/88.118.8/SN000000042).
REFERENCE_VALUES = (
    b'[{"index":1,"type":"URL","data":{"format":"string","value":"https://ex.com/SN000000042"},'
    b'"ttl":86400,"timestamp":"2026-11-23T02:54:53Z"},{"index":2,"type":"CHECKSUM","data":'
    b'{"format":"string","value":"sha1:000000000000000000000000000000000000002a"},"ttl":86400,'
    b'"timestamp":"2026-11-23T02:54:53Z"},{"index":100,"type":"HS_ADMIN","data":{"format":"admin",'
    b'"value":{"handle":"88.118.8/ADMIN","index":300,"permissions":"111111111111"}},"ttl":86400,'
    b'"timestamp":"2026-11-23T02:54:53Z"}]'
)

URL = {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://ex.com/x"}}


def reference_record_json() -> list[dict]:
    return [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://ex.com/SN000000042"}},
        {"index": 2, "type": "CHECKSUM",
         "data": "sha1:000000000000000000000000000000000000002a"},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "88.118.8/ADMIN", "index": 300, "permissions": "111111111111"}}},
    ]


def stored_rows(values: list[Value], text: str = "88.118.8/SN000000042") -> list[list]:
    got_text, rows = records.decode_rows(records.encode(text, values))
    assert got_text == text
    return rows


def invalid(doc) -> errors.HandleError:
    with pytest.raises(errors.HandleError) as info:
        values_from_json(doc, now=NOW)
    err = info.value
    assert err.code == errors.INVALID_VALUE == 202
    assert err.status == 400
    assert err.message
    return err


# ------------------------------------------------------------------ values_from_json

def test_values_wrapper_and_bare_list_are_the_same():
    wrapped = values_from_json({"values": [URL]}, now=NOW)
    bare = values_from_json([URL], now=NOW)
    assert wrapped == bare == [Value(1, "URL", "https://ex.com/x", "string", 86400, NOW,
                                     records.DEFAULT_PERMS)]


def test_data_as_bare_string_is_format_string():
    [v] = values_from_json([{"index": 1, "type": "URL", "data": "https://ex.com/x"}], now=NOW)
    assert (v.format, v.value) == ("string", "https://ex.com/x")


def test_data_as_format_and_value():
    doc = [
        {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://ex.com/x"}},
        {"index": 2, "type": "BLOB", "data": {"format": "base64", "value": "aGVsbG8="}},
        {"index": 3, "type": "HASH", "data": {"format": "hex", "value": "00ff"}},
    ]
    got = values_from_json(doc, now=NOW)
    assert [(v.index, v.format, v.value) for v in got] == [
        (1, "string", "https://ex.com/x"), (2, "base64", "aGVsbG8="), (3, "hex", "00ff")]


def test_hs_admin_as_pyhandle_sends_it():
    doc = {"index": "100", "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "index": "200", "handle": "0.NA/88.118.8", "permissions": "011111110011"}}}
    [v] = values_from_json([doc], now=NOW)
    assert v == Value(100, "HS_ADMIN",
                      {"handle": "0.NA/88.118.8", "index": 200, "permissions": "011111110011"},
                      "admin", 86400, NOW, records.DEFAULT_PERMS)
    assert type(v.index) is int and type(v.value["index"]) is int
    assert records.admins([v]) == [(200, "0.NA/88.118.8")]


def test_admin_defaults():
    [v] = values_from_json([{"index": 100, "type": "HS_ADMIN",
                             "data": {"format": "admin", "value": {"handle": "88.118.8/ADMIN"}}}],
                           now=NOW)
    assert v.value == {"handle": "88.118.8/ADMIN", "index": 300, "permissions": "111111111111"}


def test_ttl_default_and_given():
    a, b, c = values_from_json([URL, {**URL, "index": 2, "ttl": 60}, {**URL, "index": 3, "ttl": "3600"}],
                               now=NOW)
    assert (a.ttl, b.ttl, c.ttl) == (records.DEFAULT_TTL, 60, 3600)
    assert records.DEFAULT_TTL == 86400


def test_every_value_gets_the_timestamp_now():
    got = values_from_json(reference_record_json(), now=NOW)
    assert [v.timestamp for v in got] == [NOW, NOW, NOW]
    # a client-sent timestamp is not trusted
    [v] = values_from_json([{**URL, "timestamp": 5}], now=NOW)
    assert v.timestamp == NOW


@pytest.mark.parametrize("vtype", ["HS_SECKEY", "HS_PRIVKEY", "hs_seckey"])
def test_secret_types_are_hidden_by_default(vtype):
    [v] = values_from_json([{"index": 300, "type": vtype, "data": "s3cret"}], now=NOW)
    assert v.perms == records.SECRET_PERMS == records.ADMIN_READ | records.ADMIN_WRITE
    assert not v.public


def test_other_types_are_public_by_default():
    [v] = values_from_json([URL], now=NOW)
    assert v.perms == records.DEFAULT_PERMS
    assert v.public


@pytest.mark.parametrize("bits,perms,public", [
    ("1110", 0b1110, True),
    ("1111", 0b1111, True),
    ("1100", 0b1100, False),
    ("0010", 0b0010, True),
    ("0000", 0, False),
])
def test_permission_bits(bits, perms, public):
    [v] = values_from_json([{**URL, "permissions": bits}], now=NOW)
    assert v.perms == perms
    assert v.public is public


def test_explicit_permissions_override_the_secret_default():
    [v] = values_from_json([{"index": 300, "type": "HS_SECKEY", "data": "s", "permissions": "1110"}],
                           now=NOW)
    assert v.public


def test_value_order_is_kept_as_sent():
    got = values_from_json([{**URL, "index": 5}, {**URL, "index": 2}], now=NOW)
    assert [v.index for v in got] == [5, 2]


# Each rejection: (bad value placed at values[1], text the message must contain).
REJECTIONS = {
    "missing index": ({"type": "URL", "data": "x"}, "values[1]: index is missing"),
    "index 0": ({**URL, "index": 0}, "values[1].index"),
    "negative index": ({**URL, "index": -1}, "values[1].index"),
    "index too large": ({**URL, "index": 2**31}, "values[1].index"),
    "bool index": ({**URL, "index": True}, "values[1].index must be an integer"),
    "float index": ({**URL, "index": 1.5}, "values[1].index must be an integer"),
    "word index": ({**URL, "index": "one"}, "values[1].index must be an integer"),
    "superscript-digit index": ({**URL, "index": "²"}, "values[1].index must be an integer"),
    "double-minus index": ({**URL, "index": "--5"}, "values[1].index must be an integer"),
    "5000-digit index": ({**URL, "index": "9" * 5000}, "values[1].index must be an integer"),
    "duplicate index": ({**URL, "data": "other"}, "values[1]: index 1 appears twice"),
    "bad format": ({**URL, "index": 2, "data": {"format": "jpeg", "value": "x"}},
                   "values[1].data.format"),
    "bad base64": ({**URL, "index": 2, "data": {"format": "base64", "value": "not base64!"}},
                   "values[1].data.value is not valid base64"),
    "non-ascii base64": ({**URL, "index": 2, "data": {"format": "base64", "value": "é"}},
                         "values[1].data.value is not valid base64"),
    "bad hex": ({**URL, "index": 2, "data": {"format": "hex", "value": "0g"}},
                "values[1].data.value is not valid hex"),
    "non-string string": ({**URL, "index": 2, "data": {"format": "string", "value": 5}},
                          "values[1].data.value"),
    "data a number": ({**URL, "index": 2, "data": 5}, "values[1].data"),
    "admin without handle": ({"index": 100, "type": "HS_ADMIN", "data": {
        "format": "admin", "value": {"index": 300, "permissions": "111111111111"}}},
        "values[1].data.value"),
    "admin not an object": ({"index": 100, "type": "HS_ADMIN", "data": {
        "format": "admin", "value": "88.118.8/ADMIN"}}, "values[1].data.value"),
    "admin permissions too short": ({"index": 100, "type": "HS_ADMIN", "data": {
        "format": "admin", "value": {"handle": "88.118.8/ADMIN", "permissions": "1111"}}},
        "values[1].data.value.permissions"),
    "admin permissions not bits": ({"index": 100, "type": "HS_ADMIN", "data": {
        "format": "admin", "value": {"handle": "88.118.8/ADMIN", "permissions": "11111111111x"}}},
        "values[1].data.value.permissions"),
    "admin index huge": ({"index": 100, "type": "HS_ADMIN", "data": {
        "format": "admin", "value": {"handle": "88.118.8/ADMIN", "index": "99999999999999999999"}}},
        "values[1].data.value.index"),
    "admin index negative": ({"index": 100, "type": "HS_ADMIN", "data": {
        "format": "admin", "value": {"handle": "88.118.8/ADMIN", "index": -1}}},
        "values[1].data.value.index"),
    "HS_ADMIN as a string": ({"index": 100, "type": "HS_ADMIN", "data": "88.118.8/ADMIN"},
                             "values[1]: HS_ADMIN needs data.format 'admin'"),
    "type empty": ({**URL, "index": 2, "type": ""}, "values[1].type"),
    "type missing": ({"index": 2, "data": "x"}, "values[1].type"),
    "type not a string": ({**URL, "index": 2, "type": 7}, "values[1].type"),
    "ttl negative": ({**URL, "index": 2, "ttl": -1}, "values[1].ttl"),
    "ttl a word": ({**URL, "index": 2, "ttl": "day"}, "values[1].ttl"),
    "permissions not 4 bits": ({**URL, "index": 2, "permissions": "111"}, "values[1].permissions"),
    "permissions not a string": ({**URL, "index": 2, "permissions": 14}, "values[1].permissions"),
    "value not an object": ("URL=https://ex.com", "values[1] must be an object"),
    # issue 8 item 6 and issue 9 part 7: every integer in range, types clean, data present
    "vlist index huge": ({"index": 200, "type": "HS_VLIST", "data": {"format": "vlist", "value": [
        {"handle": "0.NA/88.118.8", "index": "99999999999999999999"}]}},
        "values[1].data.value[0].index must be between 0 and"),
    "vlist index negative": ({"index": 200, "type": "HS_VLIST", "data": {"format": "vlist",
        "value": [{"handle": "0.NA/88.118.8", "index": -1}]}}, "values[1].data.value[0].index"),
    "ttl beyond int32": ({**URL, "index": 2, "ttl": 2**31}, "values[1].ttl"),
    "data missing": ({"index": 2, "type": "URL"}, "values[1].data is missing"),
    "type with NUL": ({**URL, "index": 2, "type": "URL\u0000"}, "values[1].type must not"),
    "type with newline": ({**URL, "index": 2, "type": "URL\r\nX"}, "values[1].type must not"),
    "type with C1 control": ({**URL, "index": 2, "type": "URL\u0085"}, "values[1].type must not"),
}


@pytest.mark.parametrize("bad,says", list(REJECTIONS.values()), ids=list(REJECTIONS))
def test_rejections_name_the_value(bad, says):
    assert says in invalid({"values": [URL, bad]}).message
    # the same value alone is reported at position 0
    if "twice" not in says:
        assert says.replace("values[1]", "values[0]") in invalid([bad]).message


@pytest.mark.parametrize("doc", [{"values": "x"}, {"values": {"index": 1}}, "values", 5, None])
def test_values_must_be_a_list(doc):
    assert "list" in invalid(doc).message


def test_body_without_values():
    assert '"values"' in invalid({"handle": "88.118.8/x"}).message


def test_too_many_values():
    doc = [{"index": i, "type": "URL", "data": "x"} for i in range(1, records.MAX_VALUES + 2)]
    assert str(records.MAX_VALUES) in invalid(doc).message
    assert len(values_from_json(doc[:-1], now=NOW)) == records.MAX_VALUES


def test_empty_values_list_is_allowed():
    assert values_from_json({"values": []}, now=NOW) == []


# ------------------------------------------------------------------ stored bytes

value_types = st.sampled_from(["URL", "EMAIL", "HS_ADMIN", "HS_SECKEY", "CHECKSUM", "类型", "x" * 255])
value_data = st.one_of(
    st.tuples(st.just("string"), st.text()),
    st.tuples(st.just("base64"), st.binary().map(lambda b: base64.b64encode(b).decode())),
    st.tuples(st.just("hex"), st.binary().map(bytes.hex)),
    st.tuples(st.just("admin"), st.fixed_dictionaries({
        "handle": st.text(min_size=1), "index": st.integers(0, records.MAX_INDEX),
        "permissions": st.text("01", min_size=12, max_size=12)})),
    st.tuples(st.just("vlist"), st.lists(st.text(), max_size=3)),
)


@st.composite
def value_lists(draw):
    indexes = draw(st.lists(st.integers(1, records.MAX_INDEX), unique=True, max_size=8))
    out = []
    for index in indexes:
        fmt, data = draw(value_data)
        out.append(Value(index, draw(value_types), data, fmt,
                         ttl=draw(st.integers(0, records.MAX_INDEX)),
                         timestamp=draw(st.integers(0, 2**40)),
                         perms=draw(st.integers(0, 15))))
    return out


@given(st.text(max_size=255), value_lists())
@settings(max_examples=200)
def test_encode_decode_round_trip(text, values):
    data = records.encode(text, values)
    assert isinstance(data, bytes)
    got_text, got = records.decode(data)
    assert got_text == text
    assert got == sorted(values, key=lambda v: v.index)  # stored in index order
    _, rows = records.decode_rows(data)
    assert rows == [v.to_row() for v in got]


def test_encode_sorts_by_index():
    vs = values_from_json([{**URL, "index": 100}, {**URL, "index": 2}, URL], now=NOW)
    _, got = records.decode(records.encode("88.118.8/x", vs))
    assert [v.index for v in got] == [1, 2, 100]


# ------------------------------------------------------------------ REST JSON

def test_iso_timestamp():
    assert records.iso_timestamp(REF_TS) == "2026-11-23T02:54:53Z"
    assert records.iso_timestamp(0) == "1970-01-01T00:00:00Z"


def test_rest_values_match_handle_net_byte_for_byte():
    values = values_from_json(reference_record_json(), now=REF_TS)
    assert orjson.dumps(records.rest_values(stored_rows(values))) == REFERENCE_VALUES
    assert orjson.dumps([v.to_json() for v in values]) == REFERENCE_VALUES


def test_admin_value_helper_matches_handle_net():
    v = records.admin_value("88.118.8/ADMIN", timestamp=REF_TS)
    assert orjson.dumps(records.rest_values(stored_rows([v]))) == (
        b'[{"index":100,"type":"HS_ADMIN","data":{"format":"admin","value":{"handle":"88.118.8/ADMIN",'
        b'"index":300,"permissions":"111111111111"}},"ttl":86400,"timestamp":"2026-11-23T02:54:53Z"}]')


@pytest.fixture
def rows():
    doc = reference_record_json() + [{"index": 300, "type": "HS_SECKEY", "data": "hashed"}]
    return stored_rows(values_from_json(doc, now=REF_TS))


def indexes_of(out: list[dict]) -> list[int]:
    return [v["index"] for v in out]


def test_rest_values_unfiltered_hides_secrets(rows):
    assert indexes_of(records.rest_values(rows)) == [1, 2, 100]


def test_rest_values_authorised_shows_secrets(rows):
    assert indexes_of(records.rest_values(rows, authorised=True)) == [1, 2, 100, 300]


@pytest.mark.parametrize("types,want", [
    (["URL"], [1]),
    (["url"], [1]),
    (["Checksum"], [2]),
    (["URL", "CHECKSUM"], [1, 2]),
    (["EMAIL"], []),
    (["HS_SECKEY"], []),  # hidden even when asked for by type
])
def test_rest_values_type_filter(rows, types, want):
    assert indexes_of(records.rest_values(rows, types=types)) == want


def test_rest_values_index_filter(rows):
    assert indexes_of(records.rest_values(rows, indexes=[100])) == [100]
    assert indexes_of(records.rest_values(rows, indexes=[2, 1])) == [1, 2]
    assert indexes_of(records.rest_values(rows, indexes=[7])) == []
    assert indexes_of(records.rest_values(rows, indexes=[300])) == []
    assert indexes_of(records.rest_values(rows, indexes=[300], authorised=True)) == [300]


def test_rest_values_type_and_index_are_a_union(rows):
    assert indexes_of(records.rest_values(rows, types=["URL"], indexes=[100])) == [1, 100]
    assert indexes_of(records.rest_values(rows, types=["HS_SECKEY"], indexes=[2],
                                          authorised=True)) == [2, 300]


def test_rest_values_type_filter_matches_reference(rows):
    # ?type=URL from shared/reference
    assert orjson.dumps(records.rest_values(rows, types=["URL"])) == (
        b'[{"index":1,"type":"URL","data":{"format":"string","value":"https://ex.com/SN000000042"},'
        b'"ttl":86400,"timestamp":"2026-11-23T02:54:53Z"}]')


# ------------------------------------------------------------------ helpers

def test_merge_replaces_same_index_and_keeps_the_rest():
    old = values_from_json(reference_record_json(), now=1)
    new = values_from_json([{"index": 2, "type": "CHECKSUM", "data": "sha1:new"},
                            {"index": 3, "type": "EMAIL", "data": "a@ex.com"}], now=2)
    merged = records.merge(old, new)
    assert [v.index for v in merged] == [1, 2, 3, 100]
    assert merged[0] is old[0] and merged[3] is old[2]
    assert merged[1].value == "sha1:new" and merged[1].timestamp == 2
    assert merged[2].type == "EMAIL"
    assert records.merge(old, []) == old
    assert records.merge([], new) == new


def test_admins():
    values = values_from_json(reference_record_json() + [
        {"index": 101, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "0.NA/88.118.8", "index": "300"}}},
    ], now=NOW)
    assert records.admins(values) == [(300, "88.118.8/ADMIN"), (300, "0.NA/88.118.8")]
    assert records.admins(values_from_json([URL], now=NOW)) == []
    assert records.admins([records.admin_value("88.118/ADMIN", 200)]) == [(200, "88.118/ADMIN")]


def test_a_cached_answer_costs_what_it_says():
    """The recursive node's cache bounds itself by ``len(answer)``: that must not undercount
    what an answer really holds (orjson's output once kept ~4 KiB of spare capacity each)."""
    import gc
    import tracemalloc

    from resolver.cache import TTLCache
    from topology import demo

    items = demo.demo_batch("88.118.8", 0, 2000)
    datas = [records.encode(h, record_input.values_from_json(d, now=1795402493)) for h, d in items]
    gc.collect()
    tracemalloc.start()
    try:
        cache = TTLCache(max_entries=10**6, max_bytes=2**30)
        before = tracemalloc.get_traced_memory()[0]
        for (h, _), data in zip(items, datas):
            ans = records.Answer(data)
            cache.put(h.upper().encode(), ans, ttl=86400, now=0, size=len(ans))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 1.25 * cache.bytes_used, (held / 2000, cache.bytes_used / 2000)
