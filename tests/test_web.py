"""The Handle REST API as a user sees it: ``NodeAPI(node)`` under an aiohttp test client.

Where ``shared/reference/handle-rest-9.3.1.txt`` records a real Handle.Net 9.3.1 answer, the
test replays the same request against a node holding the same records (same values, same
timestamps) and compares status, Content-Type and body byte for byte.
"""
from __future__ import annotations

import asyncio
import base64
import calendar
import json
import re
import time
from pathlib import Path

import msgpack
import pytest
from aiohttp import ClientSession

from conftest import (ENT8, ENT8_SECRET, admin_headers, auth_headers, basic_token,
                      ent8_headers, ent9_headers)
from resolver import auth, server
from resolver.config import Config, HttpConfig
from resolver.web import NodeAPI
from topology import demo

JSON_CT = "application/json;charset=utf-8"
LIMITS = HttpConfig()  # what a node and ``server.serve`` use when given no config
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

# ------------------------------------------------------------------ the reference file

REFERENCE = Path("/work/shared/reference/handle-rest-9.3.1.txt")
if not REFERENCE.exists():  # the repo's own copy, wherever the checkout lives
    REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/handle-rest-9.3.1.txt"


def _parse_reference(text: str) -> dict[str, dict]:
    out = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        title, _, rest = block.partition("\n")
        cmd, _, rest = rest.partition("\n")
        head, _, body = rest.partition("\n\n")
        status_line, *header_lines = head.split("\n")
        urls = re.findall(r"https?://127\.0\.0\.1:8000(\S*)", cmd)
        out[title.strip()] = {
            "cmd": cmd,
            "path": urls[-1] if urls else None,
            "status": int(status_line.split()[1]),
            "headers": [tuple(h.split(": ", 1)) for h in header_lines if ": " in h],
            "body": body.rstrip("\n").encode(),
        }
    return out


REF = _parse_reference(REFERENCE.read_text())
# The identity the reference server used, and its secret (both appear in the recorded commands).
REF_USER = "300:88.118.8/ADMIN"
REF_SECRET = "hdlperf-secret-88.118.8"


def _epoch(iso: str) -> int:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def ref_header(title: str, name: str) -> str:
    return next(v for k, v in REF[title]["headers"] if k.lower() == name.lower())


@pytest.fixture
async def ref(node, client):
    """``client`` talking to a node loaded with the reference records (see module doc)."""
    try:
        node.clock = lambda: _epoch("2026-11-23T02:53:14Z")
        r = await client.put("/api/handles/0.NA/88.118.8?index=200", headers=ent8_headers(), json={
            "values": [{"index": 200, "type": "HS_VLIST", "data": {"format": "vlist", "value": [
                {"index": 300, "handle": "0.NA/88.118.8"}, {"index": 300, "handle": "88.118.8/ADMIN"}]}}]})
        assert r.status == 200, await r.text()
        r = await client.put("/api/handles/88.118.8/ADMIN", headers=ent8_headers(), json={"values": [
            {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                "handle": "88.118.8/ADMIN", "index": 300, "permissions": "111111111111"}}},
            {"index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": REF_SECRET}}]})
        assert r.status == 201, await r.text()
        r = await client.post("/api/batch/register", headers=ent8_headers(), json={
            "handles": [{"handle": h, "values": doc["values"]}
                        for h, doc in demo.demo_batch("88.118.8", 0, 50)]})
        assert r.status == 200 and (await r.json())["registered"] == 50
        node.clock = lambda: _epoch("2026-11-23T02:54:53Z")
        r = await client.put("/api/handles/88.118.8/SN000000042", headers=ent8_headers(), json={"values": [
            {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://ex.com/SN000000042"}},
            {"index": 2, "type": "CHECKSUM", "data": {"format": "string",
                                                      "value": "sha1:" + "0" * 38 + "2a"}},
            {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                "handle": "88.118.8/ADMIN", "index": 300, "permissions": "111111111111"}}}]})
        assert r.status == 200, await r.text()
    finally:
        node.clock = time.time
    return client


def ref_auth(**extra: str) -> dict[str, str]:
    return auth_headers(REF_USER, REF_SECRET, **extra)


async def get(client, path: str, **kw):
    r = await client.get(path, allow_redirects=False, **kw)
    return r, await r.read()


# ------------------------------------------------------------------ byte-for-byte replays

EXACT_GETS = [
    "existing handle",
    "existing handle, pretty",
    "existing handle, case-insensitive lookup (lowercase suffix)",
    "existing handle, type filter ?type=URL",
    "existing handle, two types ?type=URL&type=CHECKSUM",
    "existing handle, index filter ?index=100",
    "existing handle, type that is absent ?type=EMAIL",
    "missing prefix (prefix not homed here)",
    "malformed: no slash (bare prefix-like string)",
    "malformed: empty handle",
    "malformed: no slash, non-prefix string",
    "percent-encoded slash in handle",
    "admin handle (HS_SECKEY hidden from anonymous)",
    "unknown API path",
]

NOT_FOUND_GETS = [
    "missing handle",
    "missing handle with ?type=URL",
    "malformed: trailing slash / empty suffix",
]


@pytest.mark.parametrize("title", EXACT_GETS)
async def test_get_matches_reference_byte_for_byte(ref, title):
    want = REF[title]
    r, body = await get(ref, want["path"])
    assert r.status == want["status"]
    assert r.headers["Content-Type"] == ref_header(title, "Content-Type") == JSON_CT
    assert body == want["body"]


@pytest.mark.parametrize("title", NOT_FOUND_GETS)
async def test_not_found_status_code_and_handle(ref, title):
    """What pyhandle relies on (404 + responseCode 100 + the handle), plus the message idsim
    adds to every error (Handle.Net sends none here: a deliberate, documented difference)."""
    want = json.loads(REF[title]["body"])
    r, body = await get(ref, REF[title]["path"])
    assert (r.status, r.headers["Content-Type"]) == (404, JSON_CT)
    doc = json.loads(body)
    assert list(doc)[0] == "responseCode"
    assert doc["responseCode"] == 100 and doc["handle"] == want["handle"]
    assert doc["message"]


async def test_head_matches_reference(ref):
    r = await ref.head("/api/handles/88.118.8/SN000000042")
    assert r.status == 200
    assert r.headers["Content-Type"] == JSON_CT
    assert int(r.headers["Content-Length"]) == len(REF["existing handle"]["body"]) == 539
    assert await r.read() == b""


async def test_redirect_matches_reference(ref):
    title = "proxy-style redirect GET /88.118.8/SN000000042 (no /api)"
    want = REF[title]
    r, body = await get(ref, want["path"])
    assert r.status == 302
    assert r.headers["Location"] == ref_header(title, "Location") == "https://ex.com/SN000000042"
    assert r.headers["Content-Type"] == ref_header(title, "Content-Type")
    assert body == want["body"]


async def test_reference_write_sequence(ref):
    """Create with the reference admin identity (curl's -u form: user fully %-encoded),
    DELETE it, GET it: statuses and bodies as recorded."""
    curl_user = "300%3A88.118.8%2FADMIN"
    import base64
    hdr = {"Authorization": "Basic " + base64.b64encode(f"{curl_user}:{REF_SECRET}".encode()).decode(),
           "Content-Type": "application/json"}
    create = REF["PUT over HTTPS, correct secret (create)"]
    data = re.search(r"--data (\{.*\}) https", create["cmd"]).group(1)
    r = await ref.put(create["path"], data=data.encode(), headers=hdr)
    assert (r.status, r.headers["Content-Type"], await r.read()) == (201, JSON_CT, create["body"])

    delete = REF["DELETE over HTTPS (delete the REF-HTTPS handle)"]
    r = await ref.delete(delete["path"], headers={"Authorization": hdr["Authorization"]})
    assert (r.status, r.headers["Content-Type"], await r.read()) == (200, JSON_CT, delete["body"])

    gone = REF["GET after delete"]
    r, body = await get(ref, gone["path"])
    assert (r.status, json.loads(body)["responseCode"], json.loads(body)["handle"]) == \
        (404, 100, "88.118.8/REF-HTTPS")


async def test_wrong_secret_is_401_with_basic_challenge(ref):
    title = "PUT over HTTPS with wrong secret"
    r = await ref.put(REF[title]["path"], headers=auth_headers(REF_USER, "wrong"),
                      json={"values": [{"index": 1, "type": "URL", "data": "https://ex.com/x"}]})
    assert r.status == 401 == REF[title]["status"]
    assert r.headers.getall("WWW-Authenticate")[0] == ref_header(title, "WWW-Authenticate")
    doc = await r.json()
    assert doc["responseCode"] == 403 and "Identity not verified" in doc["message"]
    assert (await ref.get("/api/handles/88.118.8/REF-HTTPS")).status == 404


async def test_wrong_content_type_like_reference(ref):
    title = "PUT over HTTPS, wrong content-type"
    r = await ref.put(REF[title]["path"], data=b"x",
                      headers=ref_auth(**{"Content-Type": "text/plain"}))
    assert (r.status, r.headers["Content-Type"]) == (400, JSON_CT)
    doc = await r.json()
    want = json.loads(REF[title]["body"])
    assert list(doc) == ["responseCode", "message"]
    assert doc["responseCode"] == want["responseCode"] == 4
    assert want["message"].endswith(doc["message"]) and "text/plain" in doc["message"]


async def test_invalid_json_like_reference(ref):
    title = "PUT over HTTPS, invalid JSON"
    r = await ref.put(REF[title]["path"], data=b'{"values":',
                      headers=ref_auth(**{"Content-Type": "application/json"}))
    assert (r.status, r.headers["Content-Type"]) == (400, JSON_CT)
    doc = await r.json()
    assert list(doc) == ["responseCode", "message"] and doc["responseCode"] == 4
    assert doc["message"]


async def test_list_handles_like_reference(ref):
    title = "list handles with auth (https)"
    r, body = await get(ref, REF[title]["path"], headers=ref_auth())
    assert (r.status, r.headers["Content-Type"]) == (200, JSON_CT)
    want = json.loads(REF[title]["body"])
    doc = json.loads(body)
    assert list(doc) == list(want)
    assert doc["handles"] == want["handles"] == ["88.118.8/ADMIN", "88.118.8/SN000000000"]
    assert doc["totalCount"] == "51" and isinstance(want["totalCount"], str)
    assert (doc["page"], doc["pageSize"]) == (0, 2)


# ------------------------------------------------------------------ reads

@pytest.fixture
async def seeded(node, client):
    admin = auth.Identity(300, "0.NA/88.118")
    await node.register_many(demo.demo_batch("88.118.8", 0, 20), identity=admin)
    return client


async def test_resolve_existing(seeded):
    r, body = await get(seeded, "/api/handles/88.118.8/SN000000007")
    assert (r.status, r.headers["Content-Type"]) == (200, JSON_CT)
    doc = json.loads(body)
    assert list(doc) == ["responseCode", "handle", "values"]
    assert doc["responseCode"] == 1 and doc["handle"] == "88.118.8/SN000000007"
    assert [v["index"] for v in doc["values"]] == [1, 2, 100]
    for v in doc["values"]:
        assert list(v) == ["index", "type", "data", "ttl", "timestamp"]
        assert list(v["data"]) == ["format", "value"]
        assert TS_RE.match(v["timestamp"]) and v["ttl"] == 86400
    assert doc["values"][0]["data"] == {"format": "string",
                                        "value": "https://ex.com/88.118.8/SN000000007"}
    assert doc["values"][2]["data"]["value"] == {"handle": "0.NA/88.118.8", "index": 200,
                                                 "permissions": "111111111111"}


async def test_case_insensitive_lookup_echoes_requested_spelling(seeded):
    r, body = await get(seeded, "/api/handles/88.118.8/sn000000007")
    doc = json.loads(body)
    assert r.status == 200 and doc["handle"] == "88.118.8/sn000000007"
    assert doc["values"][0]["data"]["value"].endswith("/SN000000007")


async def test_type_and_index_filters(seeded):
    base = "/api/handles/88.118.8/SN000000003"
    doc = json.loads((await get(seeded, base + "?type=URL"))[1])
    assert [v["type"] for v in doc["values"]] == ["URL"]
    doc = json.loads((await get(seeded, base + "?type=URL&type=CHECKSUM"))[1])
    assert [v["type"] for v in doc["values"]] == ["URL", "CHECKSUM"]
    doc = json.loads((await get(seeded, base + "?type=url"))[1])  # types compare case-insensitively
    assert [v["type"] for v in doc["values"]] == ["URL"]
    doc = json.loads((await get(seeded, base + "?index=100"))[1])
    assert [v["index"] for v in doc["values"]] == [100] and doc["responseCode"] == 1


async def test_absent_type_is_200_with_code_200(seeded):
    r, body = await get(seeded, "/api/handles/88.118.8/SN000000003?type=EMAIL")
    assert (r.status, r.headers["Content-Type"]) == (200, JSON_CT)
    assert body == b'{"responseCode":200,"values":[],"handle":"88.118.8/SN000000003"}'


@pytest.mark.parametrize("path, status, code, handle", [
    ("/api/handles/88.118.8/NOPE", 404, 100, "88.118.8/NOPE"),
    ("/api/handles/88.118.8/NOPE?type=URL", 404, 100, "88.118.8/NOPE"),
    ("/api/handles/99.999/x", 400, 301, "99.999/x"),
    ("/api/handles/88.118.8", 400, 301, "88.118.8"),
    ("/api/handles/88.118.8/", 404, 100, "88.118.8/"),
    ("/api/handles/notahandle", 400, 301, "notahandle"),
    ("/api/handles/", 400, 102, None),
])
async def test_lookup_errors(seeded, path, status, code, handle):
    r, body = await get(seeded, path)
    assert (r.status, r.headers["Content-Type"]) == (status, JSON_CT)
    doc = json.loads(body)
    assert list(doc)[0] == "responseCode" and doc["responseCode"] == code
    assert doc.get("handle") == handle
    if code == 301:
        assert doc["message"] == "That prefix doesn't live here"
    if code == 102:
        assert doc == {"responseCode": 102, "message": "Empty handle invalid"}


async def test_bad_percent_encoding_is_400_json(seeded):
    r, body = await get(seeded, "/api/handles/88.118.8/%ZZ")
    assert (r.status, r.headers["Content-Type"]) == (400, JSON_CT)
    assert json.loads(body) == {"responseCode": 102, "message": "bad percent-encoding in handle",
                                "handle": "88.118.8/%ZZ"}


async def test_bad_index_parameter(seeded):
    r, body = await get(seeded, "/api/handles/88.118.8/SN000000001?index=abc")
    assert (r.status, r.headers["Content-Type"]) == (400, JSON_CT)
    doc = json.loads(body)
    assert list(doc) == ["responseCode", "message"] and doc["responseCode"] == 4
    assert "abc" in doc["message"]


async def test_percent_encoded_slash_resolves(seeded):
    plain = (await get(seeded, "/api/handles/88.118.8/SN000000001"))[1]
    r, body = await get(seeded, "/api/handles/88.118.8%2FSN000000001")
    assert r.status == 200 and body == plain
    r, body = await get(seeded, "/api/handles/88.118.8%2fSN000000001")
    assert r.status == 200 and json.loads(body)["handle"] == "88.118.8/SN000000001"


async def test_prefix_record_without_secret_for_anonymous(client):
    for path in ("/api/handles/0.NA/88.118.8", "/api/handles/0.NA/88.118.8?auth=true",
                 "/api/handles/0.NA/88.118.8?index=300", "/api/handles/0.NA/88.118.8?type=HS_SECKEY",
                 "/api/handles/0.na/88.118.8"):
        r, body = await get(client, path)
        assert r.status == 200, path
        doc = json.loads(body)
        assert "HS_SECKEY" not in body.decode() and ENT8_SECRET not in body.decode()
        assert all(v["type"] != "HS_SECKEY" for v in doc["values"])
    doc = json.loads((await get(client, "/api/handles/0.NA/88.118.8"))[1])
    # pyhandle's construction check: rc 1 and the handle echoed as requested
    assert doc["responseCode"] == 1 and doc["handle"] == "0.NA/88.118.8"
    assert [(v["index"], v["type"]) for v in doc["values"]] == [(100, "HS_ADMIN"), (200, "HS_VLIST")]
    assert doc["values"][0]["data"]["value"] == {"handle": "0.NA/88.118.8", "index": 200,
                                                 "permissions": "111111111111"}
    assert doc["values"][1]["data"] == {"format": "vlist",
                                        "value": [{"index": 300, "handle": "0.NA/88.118.8"}]}
    # asking for the secret's index alone finds nothing visible
    doc = json.loads((await get(client, "/api/handles/0.NA/88.118.8?index=300"))[1])
    assert doc == {"responseCode": 200, "values": [], "handle": "0.NA/88.118.8"}


async def test_prefix_record_shows_hashed_secret_to_its_admin(client):
    r, body = await get(client, "/api/handles/0.NA/88.118.8?auth=true", headers=ent8_headers())
    doc = json.loads(body)
    seckey = [v for v in doc["values"] if v["type"] == "HS_SECKEY"]
    assert len(seckey) == 1 and seckey[0]["index"] == 300
    assert ENT8_SECRET not in seckey[0]["data"]["value"]
    assert seckey[0]["data"]["value"].startswith("scrypt$")


async def test_other_enterprise_does_not_see_admin_only_values(client):
    r, body = await get(client, "/api/handles/0.NA/88.118.8?auth=true", headers=ent9_headers())
    assert r.status == 200
    assert all(v["type"] != "HS_SECKEY" for v in json.loads(body)["values"])


async def test_pretty_is_two_space_indented(seeded):
    plain = json.loads((await get(seeded, "/api/handles/88.118.8/SN000000001"))[1])
    r, body = await get(seeded, "/api/handles/88.118.8/SN000000001?pretty")
    assert r.headers["Content-Type"] == JSON_CT
    assert body.decode() == json.dumps(plain, indent=2, ensure_ascii=False)
    assert body.startswith(b'{\n  "responseCode": 1,\n  "handle": ')


async def test_head(seeded):
    g = await seeded.get("/api/handles/88.118.8/SN000000001")
    full = await g.read()
    r = await seeded.head("/api/handles/88.118.8/SN000000001")
    assert r.status == 200 and r.headers["Content-Type"] == JSON_CT
    assert int(r.headers["Content-Length"]) == len(full)
    assert await r.read() == b""
    r = await seeded.head("/api/handles/88.118.8/NOPE")
    assert r.status == 404


async def test_unknown_api_path(client):
    for method in ("GET", "POST", "PUT", "DELETE"):
        r = await client.request(method, "/api/nonsense")
        assert (r.status, r.headers["Content-Type"]) == (404, JSON_CT), method
        assert await r.read() == (b'{"responseCode":4,"message":"Unknown HTTP API endpoint ' +
                                  method.encode() + b' /api/nonsense"}')


async def test_redirect_without_api(seeded):
    r, body = await get(seeded, "/88.118.8/SN000000005")
    assert r.status == 302
    assert r.headers["Location"] == "https://ex.com/88.118.8/SN000000005"
    assert r.headers["Content-Type"] == "text/html;charset=utf-8"
    assert b'<a href="https://ex.com/88.118.8/SN000000005">' in body
    r, body = await get(seeded, "/88.118.8/sn000000005")
    assert r.status == 302 and r.headers["Location"] == "https://ex.com/88.118.8/SN000000005"
    r, body = await get(seeded, "/88.118.8/NOPE")
    assert r.status == 404 and json.loads(body)["responseCode"] == 100


async def test_redirect_page_escapes_url(client):
    url = 'https://x/"><script>alert(1)</script>'
    r = await client.put("/api/handles/88.118.8/XSS", headers=ent8_headers(),
                         json={"values": [{"index": 1, "type": "URL", "data": url}]})
    assert r.status == 201
    r, body = await get(client, "/88.118.8/XSS")
    assert r.status == 302
    assert b"<script>" not in body


async def test_redirect_with_newline_in_url_answers(client):
    """A URL value is stored as given (Handle.Net does too), but one holding control characters
    is never put in a Location header: the redirect answers as if there were no URL."""
    url = "https://x/\r\nSet-Cookie: a=b"
    r = await client.put("/api/handles/88.118.8/CRLF", headers=ent8_headers(), json={
        "values": [{"index": 1, "type": "URL", "data": url}]})
    assert r.status == 201
    doc = await (await client.get("/api/handles/88.118.8/CRLF")).json()
    assert doc["values"][0]["data"]["value"] == url
    r = await client.get("/88.118.8/CRLF", allow_redirects=False)
    assert (r.status, r.headers["Content-Type"]) == (404, JSON_CT)
    assert "Set-Cookie" not in r.headers and "Location" not in r.headers
    assert await r.json() == {"responseCode": 200, "handle": "88.118.8/CRLF",
                              "message": "handle has no URL value to redirect to"}


async def test_msgpack_answers_same_document(seeded):
    for path in ("/api/handles/88.118.8/SN000000001", "/api/handles/88.118.8/NOPE",
                 "/api/handles/88.118.8/SN000000001?type=EMAIL"):
        want_r, want = await get(seeded, path)
        r, body = await get(seeded, path, headers={"Accept": "application/msgpack"})
        assert r.status == want_r.status
        assert r.headers["Content-Type"] == "application/msgpack"
        assert msgpack.unpackb(body, raw=False) == json.loads(want)
        assert list(msgpack.unpackb(body, raw=False)) == list(json.loads(want))


# ------------------------------------------------------------------ writes

URL_BODY = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/1"}]}


async def test_put_without_credentials(client):
    r = await client.put("/api/handles/88.118.8/W1", json=URL_BODY)
    assert (r.status, r.headers["Content-Type"]) == (401, JSON_CT)
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    doc = await r.json()
    assert doc["responseCode"] == 402 and doc["handle"] == "88.118.8/W1"
    assert (await client.get("/api/handles/88.118.8/W1")).status == 404


@pytest.mark.parametrize("hdr", [
    auth_headers(ENT8, "wrong-secret"),
    auth_headers("301:0.NA/88.118.8", ENT8_SECRET),        # right secret, wrong index
    auth_headers("300:0.NA/99.1", "x"),                     # identity handle not here
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Bearer abc"},
])
async def test_put_with_bad_credentials(client, hdr):
    r = await client.put("/api/handles/88.118.8/W1", json=URL_BODY, headers=hdr)
    assert (r.status, r.headers["Content-Type"]) == (401, JSON_CT)
    assert "WWW-Authenticate" in r.headers
    assert (await r.json())["responseCode"] == 403
    assert (await client.get("/api/handles/88.118.8/W1")).status == 404


async def test_auth_header_is_pyhandle_format():
    assert basic_token is auth.basic_header
    assert auth.basic_header("300:0.NA/88.118.8", "secret") == \
        "Basic MzAwJTNBMC5OQS84OC4xMTguODpzZWNyZXQ="  # base64("300%3A0.NA/88.118.8:secret")


@pytest.mark.parametrize("user", ["300%3A0.NA/88.118.8",     # pyhandle: quote(), safe='/'
                                  "300%3A0.NA%2F88.118.8",   # quote(safe=''), curl users
                                  "300:0.NA/88.118.8"])      # not quoted at all
async def test_login_accepted_however_the_user_is_quoted(client, user):
    token = base64.b64encode(f"{user}:{ENT8_SECRET}".encode()).decode()
    r = await client.put("/api/handles/88.118.8/Q1", json=URL_BODY,
                         headers={"Authorization": "Basic " + token})
    assert r.status == 201, await r.text()


async def test_other_enterprise_may_not_write(client):
    r = await client.put("/api/handles/88.118.8/W1", json=URL_BODY, headers=ent9_headers())
    assert (r.status, r.headers["Content-Type"]) == (403, JSON_CT)
    doc = await r.json()
    assert doc["responseCode"] == 400 and doc["handle"] == "88.118.8/W1"
    assert (await client.get("/api/handles/88.118.8/W1")).status == 404
    # ... and may not touch an existing one either
    assert (await client.put("/api/handles/88.118.8/W1", json=URL_BODY, headers=ent8_headers())).status == 201
    for req in (client.put("/api/handles/88.118.8/W1", json=URL_BODY, headers=ent9_headers()),
                client.delete("/api/handles/88.118.8/W1", headers=ent9_headers()),
                client.delete("/api/handles/88.118.8/W1?index=1", headers=ent9_headers())):
        r = await req
        assert r.status == 403 and (await r.json())["responseCode"] == 400
    assert (await client.get("/api/handles/88.118.8/W1")).status == 200


async def test_create_replace_and_overwrite_false(client):
    r = await client.put("/api/handles/88.118.8/W1", json=URL_BODY, headers=ent8_headers())
    assert (r.status, r.headers["Content-Type"], await r.read()) == \
        (201, JSON_CT, b'{"responseCode":1,"handle":"88.118.8/W1"}')
    body2 = {"values": [{"index": 1, "type": "URL", "data": "https://example.com/2"}]}
    r = await client.put("/api/handles/88.118.8/W1", json=body2, headers=ent8_headers())
    assert (r.status, await r.read()) == (200, b'{"responseCode":1,"handle":"88.118.8/W1"}')
    r = await client.put("/api/handles/88.118.8/W1?overwrite=false", json=URL_BODY,
                         headers=ent8_headers())
    assert (r.status, r.headers["Content-Type"]) == (409, JSON_CT)
    doc = await r.json()
    assert doc["responseCode"] == 101 and doc["handle"] == "88.118.8/W1"
    doc = await (await client.get("/api/handles/88.118.8/W1")).json()
    assert doc["values"][0]["data"]["value"] == "https://example.com/2"
    # the writer became the record's admin (HS_ADMIN at 100)
    admin = [v for v in doc["values"] if v["type"] == "HS_ADMIN"]
    assert admin[0]["index"] == 100 and admin[0]["data"]["value"]["handle"] == "0.NA/88.118.8"
    # new handle with overwrite=false is a plain create
    r = await client.put("/api/handles/88.118.8/W2?overwrite=false", json=URL_BODY,
                         headers=ent8_headers())
    assert r.status == 201


async def test_put_index_replaces_only_that_value(client):
    values = [{"index": 1, "type": "URL", "data": "https://example.com/1"},
              {"index": 2, "type": "EMAIL", "data": "a@example.com"},
              {"index": 3, "type": "DESC", "data": "three"}]
    assert (await client.put("/api/handles/88.118.8/P1", json={"values": values},
                             headers=ent8_headers())).status == 201
    # pyhandle's modify: only the changed entry, echoing ttl
    r = await client.put("/api/handles/88.118.8/P1?index=2&overwrite=true", headers=ent8_headers(),
                         json={"values": [{"index": 2, "type": "EMAIL", "data": "b@example.com",
                                           "ttl": 86400}]})
    assert (r.status, await r.read()) == (200, b'{"responseCode":1,"handle":"88.118.8/P1"}')
    doc = await (await client.get("/api/handles/88.118.8/P1")).json()
    got = {v["index"]: (v["type"], v["data"]["value"]) for v in doc["values"]}
    assert got[1] == ("URL", "https://example.com/1")
    assert got[2] == ("EMAIL", "b@example.com")
    assert got[3] == ("DESC", "three")
    assert 100 in got and len(got) == 4
    # a new index through ?index= adds it
    r = await client.put("/api/handles/88.118.8/P1?index=4&overwrite=true", headers=ent8_headers(),
                         json={"values": [{"index": 4, "type": "NOTE", "data": "four"}]})
    assert r.status == 200
    doc = await (await client.get("/api/handles/88.118.8/P1")).json()
    assert [v["index"] for v in doc["values"]] == [1, 2, 3, 4, 100]


async def test_put_index_overwrite_false_adds_new_value(client):
    assert (await client.put("/api/handles/88.118.8/P2", json=URL_BODY,
                             headers=ent8_headers())).status == 201
    r = await client.put("/api/handles/88.118.8/P2?index=2&overwrite=false", headers=ent8_headers(),
                         json={"values": [{"index": 2, "type": "EMAIL", "data": "a@example.com"}]})
    assert r.status == 200, await r.text()
    r = await client.put("/api/handles/88.118.8/P2?index=2&overwrite=false", headers=ent8_headers(),
                         json={"values": [{"index": 2, "type": "EMAIL", "data": "b@example.com"}]})
    assert r.status == 409 and (await r.json())["responseCode"] == 201


async def test_put_index_on_missing_handle_is_404(client):
    r = await client.put("/api/handles/88.118.8/NOPE?index=2", headers=ent8_headers(),
                         json={"values": [{"index": 2, "type": "EMAIL", "data": "x"}]})
    assert r.status == 404 and (await r.json())["responseCode"] == 100


async def test_delete_index_removes_one_value(client):
    values = [{"index": 1, "type": "URL", "data": "https://example.com/1"},
              {"index": 2, "type": "EMAIL", "data": "a@example.com"}]
    assert (await client.put("/api/handles/88.118.8/D1", json={"values": values},
                             headers=ent8_headers())).status == 201
    r = await client.delete("/api/handles/88.118.8/D1?index=2", headers=ent8_headers())
    assert (r.status, await r.read()) == (200, b'{"responseCode":1,"handle":"88.118.8/D1"}')
    doc = await (await client.get("/api/handles/88.118.8/D1")).json()
    assert [v["index"] for v in doc["values"]] == [1, 100]
    r = await client.delete("/api/handles/88.118.8/D1?index=7", headers=ent8_headers())
    assert (r.status, await r.json()) == (400, {"responseCode": 200, "message": "Values not found",
                                                "handle": "88.118.8/D1"})
    r = await client.delete("/api/handles/88.118.8/D1", headers=ent8_headers())
    assert r.status == 200


async def test_delete_handle_then_get_404(client):
    assert (await client.put("/api/handles/88.118.8/D2", json=URL_BODY,
                             headers=ent8_headers())).status == 201
    r = await client.delete("/api/handles/88.118.8/D2")
    assert r.status == 401 and (await r.json())["responseCode"] == 402
    r = await client.delete("/api/handles/88.118.8/D2", headers=ent8_headers())
    assert (r.status, await r.read()) == (200, b'{"responseCode":1,"handle":"88.118.8/D2"}')
    r = await client.get("/api/handles/88.118.8/D2")
    assert r.status == 404 and (await r.json())["responseCode"] == 100
    r = await client.delete("/api/handles/88.118.8/D2", headers=ent8_headers())
    doc = await r.json()
    assert r.status == 404 and doc["responseCode"] == 100 and doc["handle"] == "88.118.8/D2"


async def test_pyhandle_style_values_stored_properly(client):
    """Bare-string data and HS_ADMIN with a string index, exactly as pyhandle sends them."""
    body = {"values": [
        {"index": 100, "type": "HS_ADMIN", "data": {"value": {"index": "200", "handle": "0.NA/88.118.8",
                                                              "permissions": "011111110011"},
                                                    "format": "admin"}},
        {"index": 1, "type": "URL", "data": "https://example.com/1"},
        {"index": "2", "type": "CHECKSUM", "data": "md5:abc"}]}
    r = await client.put("/api/handles/88.118.8/PY1?overwrite=false", json=body,
                         headers=ent8_headers())
    assert r.status == 201
    doc = await (await client.get("/api/handles/88.118.8/PY1")).json()
    assert [(v["index"], v["type"], v["data"]) for v in doc["values"]] == [
        (1, "URL", {"format": "string", "value": "https://example.com/1"}),
        (2, "CHECKSUM", {"format": "string", "value": "md5:abc"}),
        (100, "HS_ADMIN", {"format": "admin", "value": {"handle": "0.NA/88.118.8", "index": 200,
                                                        "permissions": "011111110011"}})]
    assert all(TS_RE.match(v["timestamp"]) for v in doc["values"])
    # the admin group 200:0.NA/88.118.8 holds the enterprise login: it can modify the record
    r = await client.put("/api/handles/88.118.8/PY1?index=1&overwrite=true", headers=ent8_headers(),
                         json={"values": [{"index": 1, "type": "URL", "data": "https://example.com/2"}]})
    assert r.status == 200


async def test_client_written_secret_is_hashed_and_works(client):
    secret = "user-one-secret-xyz"
    r = await client.put("/api/handles/88.118.8/USER1", headers=ent8_headers(), json={"values": [
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "88.118.8/USER1", "index": 300, "permissions": "111111111111"}}},
        {"index": 300, "type": "HS_SECKEY", "data": secret}]})
    assert r.status == 201
    anon = await (await client.get("/api/handles/88.118.8/USER1")).read()
    assert b"HS_SECKEY" not in anon and secret.encode() not in anon
    r = await client.get("/api/handles/88.118.8/USER1?auth=true", headers=ent8_headers())
    doc = await r.json()
    (seckey,) = [v for v in doc["values"] if v["type"] == "HS_SECKEY"]
    assert secret not in seckey["data"]["value"] and seckey["data"]["value"].startswith("scrypt$")
    # the secret works as a login for the handle that names it
    user = auth_headers("300:88.118.8/USER1", secret)
    r = await client.put("/api/handles/88.118.8/USER1?index=1", headers=user,
                         json={"values": [{"index": 1, "type": "URL", "data": "https://u/1"}]})
    assert r.status == 200, await r.text()
    r = await client.put("/api/handles/88.118.8/OTHER", headers=user, json=URL_BODY)
    assert r.status == 403 and (await r.json())["responseCode"] == 400
    doc = await (await client.get("/api/handles/88.118.8/USER1?auth=true", headers=ent8_headers())).json()
    assert [v["data"]["value"] for v in doc["values"] if v["type"] == "HS_SECKEY"] == [seckey["data"]["value"]]


@pytest.mark.parametrize("data, ctype, code", [
    (b'{"values":', "application/json", 4),
    (b"x", "text/plain", 4),
    (b'{"values": 3}', "application/json", 202),
    (b'{"values": "https://x"}', "application/json", 202),
    (b'{"nothing": []}', "application/json", 202),
    (b'[1, 2]', "application/json", 202),
    (b'{"values": [{"index": 1, "type": "URL", "data": "a"}, {"index": 1, "type": "URL", "data": "b"}]}',
     "application/json", 202),
    (b'{"values": [{"index": 0, "type": "URL", "data": "a"}]}', "application/json", 202),
    (b'{"values": [{"index": 1, "data": "a"}]}', "application/json", 202),
    (b'{"values": [{"index": 1, "type": "URL", "data": 5}]}', "application/json", 202),
    (b'{"values": [{"index": 1, "type": "HS_ADMIN", "data": "x"}]}', "application/json", 202),
    (b'{"values": []}', "application/json", 202),
    (b"\xff\xfe", "application/json", 4),
    (b"", "application/json", 4),
])
async def test_bad_bodies_are_400_handle_shaped(client, data, ctype, code):
    r = await client.put("/api/handles/88.118.8/B1", data=data,
                         headers=ent8_headers(**{"Content-Type": ctype}))
    assert (r.status, r.headers["Content-Type"]) == (400, JSON_CT)
    doc = await r.json()
    assert list(doc)[0] == "responseCode" and doc["responseCode"] == code
    assert isinstance(doc["message"], str) and doc["message"]
    assert (await client.get("/api/handles/88.118.8/B1")).status == 404


async def raw_request(client, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        return head + await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/api/handles/88.118.8/BIG", "/api/batch/register",
                                  "/api/admin/prefixes"])
async def test_body_over_limit_is_413(client, path):
    method = "PUT" if "handles" in path else "POST"
    req = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Authorization: {ent8_headers()['Authorization']}\r\n"
           f"Content-Length: {LIMITS.max_body + 1}\r\n\r\n" + '{"values": [').encode()
    answer = await raw_request(client, req)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"application/json" in head
    doc = json.loads(body)
    assert doc["responseCode"] == 4 and str(LIMITS.max_body) in doc["message"]
    assert (await client.get("/api/handles/88.118.8/BIG")).status == 404


async def test_actual_oversized_body_is_413(client):
    big = b'{"values": [' + b" " * (LIMITS.max_body + 10) + b"]}"
    r = await client.put("/api/handles/88.118.8/BIG", data=big,
                         headers=ent8_headers(**{"Content-Type": "application/json"}))
    assert r.status == 413 and (await r.json())["responseCode"] == 4


async def test_many_headers_is_400_not_500(client):
    headers = {f"X-Filler-{i}": "v" for i in range(LIMITS.max_headers + 40)}
    r = await client.get("/api/handles/88.118.8/SN000000001", headers=headers)
    assert r.status == 400
    # ... and the node keeps serving
    r = await client.get("/api/handles/88.118.8/NOPE")
    assert r.status == 404


async def test_many_headers_with_serve_limits(node):
    """The limits ``idsim node`` actually serves with (resolver.server.serve): aiohttp's parser
    refuses an over-long head with its plain-text 400 (a difference the README lists)."""
    runner = await server.serve(NodeAPI(node), "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.bound_port(runner)}"
        async with ClientSession() as s:
            hdrs = {f"X-Filler-{i}": "v" for i in range(LIMITS.max_headers + 40)}
            async with s.get(url + "/api/handles/88.118.8/x", headers=hdrs) as r:
                assert r.status == 400
            async with s.get(url + "/api/handles/88.118.8/x",
                             headers={"X-Long": "x" * (LIMITS.max_field + 10)}) as r:
                assert r.status == 400 and r.content_type == "text/plain"
            async with s.get(url + "/api/handles/88.118.8/" + "x" * (LIMITS.max_line + 10)) as r:
                assert r.status == 400 and r.content_type == "text/plain"
            async with s.get(url + "/api/handles/0.NA/88.118.8") as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ listing

async def test_list_handles_needs_auth(seeded):
    r, body = await get(seeded, "/api/handles?prefix=88.118.8&pageSize=2&page=0")
    assert (r.status, r.headers["Content-Type"]) == (401, JSON_CT)
    doc = json.loads(body)
    assert doc["responseCode"] == 402 and doc["handle"] == "88.118.8"


async def test_list_handles_pages_in_key_order(seeded):
    path = "/api/handles?prefix=88.118.8&pageSize=2&page={}"
    r, body = await get(seeded, path.format(0), headers=ent8_headers())
    assert (r.status, r.headers["Content-Type"]) == (200, JSON_CT)
    doc = json.loads(body)
    assert list(doc) == ["responseCode", "prefix", "totalCount", "page", "pageSize", "handles"]
    assert body.startswith(b'{"responseCode":1,"prefix":"88.118.8","totalCount":"20","page":0,'
                           b'"pageSize":2,"handles":[')
    assert doc["totalCount"] == "20" and isinstance(doc["totalCount"], str)
    assert doc["handles"] == ["88.118.8/SN000000000", "88.118.8/SN000000001"]
    doc1 = json.loads((await get(seeded, path.format(1), headers=ent8_headers()))[1])
    assert doc1["page"] == 1 and doc1["handles"] == ["88.118.8/SN000000002", "88.118.8/SN000000003"]
    # every page, end to end: all 20 exactly once, in key order
    seen = []
    for page in range(11):
        seen += json.loads((await get(seeded, path.format(page), headers=ent8_headers()))[1])["handles"]
    assert seen == [f"88.118.8/{demo.suffix(i)}" for i in range(20)]


async def test_list_handles_key_order_mixed_case(client):
    for sfx in ("b", "A", "C", "a-"):
        assert (await client.put(f"/api/handles/88.118.8/{sfx}", json=URL_BODY,
                                 headers=ent8_headers())).status == 201
    doc = json.loads((await get(client, "/api/handles?prefix=88.118.8&pageSize=10",
                                headers=ent8_headers()))[1])
    assert doc["handles"] == ["88.118.8/A", "88.118.8/a-", "88.118.8/b", "88.118.8/C"]
    assert doc["totalCount"] == "4"


async def test_list_handles_other_enterprise_forbidden(seeded):
    r, body = await get(seeded, "/api/handles?prefix=88.118.8", headers=ent9_headers())
    assert r.status == 403 and json.loads(body)["responseCode"] == 400
    r, body = await get(seeded, "/api/handles?prefix=88.118.8", headers=admin_headers())
    assert r.status == 200 and json.loads(body)["totalCount"] == "20"
    r, body = await get(seeded, "/api/handles?prefix=88.118.8&pageSize=x", headers=ent8_headers())
    assert r.status == 400 and json.loads(body)["responseCode"] == 4


# ------------------------------------------------------------------ admin API

async def test_admin_creates_prefix_and_its_login_registers(client):
    r = await client.post("/api/admin/prefixes", json={"prefix": "88.118.10"},
                          headers=admin_headers())
    assert (r.status, r.headers["Content-Type"]) == (201, JSON_CT)
    doc = await r.json()
    assert doc["responseCode"] == 1 and doc["prefix"] == "88.118.10"
    assert doc["username"] == "300:0.NA/88.118.10" and len(doc["secret"]) >= 8
    login = auth_headers(doc["username"], doc["secret"])
    r = await client.put("/api/handles/88.118.10/FIRST", json=URL_BODY, headers=login)
    assert r.status == 201
    assert (await client.get("/api/handles/88.118.10/FIRST")).status == 200
    # the new login is confined to its own prefix
    r = await client.put("/api/handles/88.118.8/X", json=URL_BODY, headers=login)
    assert r.status == 403
    # the prefix record is readable the way pyhandle checks it, secret hidden
    doc = await (await client.get("/api/handles/0.NA/88.118.10")).json()
    assert doc["responseCode"] == 1 and doc["handle"] == "0.NA/88.118.10"
    assert [v["type"] for v in doc["values"]] == ["HS_ADMIN", "HS_VLIST"]
    # creating it again is a conflict
    r = await client.post("/api/admin/prefixes", json={"prefix": "88.118.10"},
                          headers=admin_headers())
    assert r.status == 409 and (await r.json())["responseCode"] == 101


async def test_admin_prefix_with_chosen_secret(client):
    r = await client.post("/api/admin/prefixes", json={"prefix": "88.118.12", "secret": "chosen-secret"},
                          headers=admin_headers())
    assert r.status == 201 and (await r.json())["secret"] == "chosen-secret"
    r = await client.put("/api/handles/88.118.12/X", json=URL_BODY,
                         headers=auth_headers("300:0.NA/88.118.12", "chosen-secret"))
    assert r.status == 201
    r = await client.post("/api/admin/prefixes", json={"prefix": "88.118.13", "secret": "short"},
                          headers=admin_headers())
    assert r.status == 400 and (await r.json())["responseCode"] == 202


async def test_enterprise_cannot_create_prefixes(client):
    r = await client.post("/api/admin/prefixes", json={"prefix": "88.118.11"}, headers=ent8_headers())
    assert (r.status, r.headers["Content-Type"]) == (403, JSON_CT)
    assert (await r.json())["responseCode"] == 400
    assert (await client.get("/api/handles/0.NA/88.118.11")).status == 404
    r = await client.post("/api/admin/prefixes", json={"prefix": "88.118.11"})
    assert r.status == 401 and (await r.json())["responseCode"] == 402


@pytest.mark.parametrize("prefix, status, code", [
    ("99.1", 400, 301), ("88.1180", 400, 301), ("88.118.x/y", 400, 102), ("", 400, 102),
])
async def test_admin_prefix_outside_or_invalid(client, prefix, status, code):
    r = await client.post("/api/admin/prefixes", json={"prefix": prefix}, headers=admin_headers())
    assert (r.status, r.headers["Content-Type"]) == (status, JSON_CT)
    assert (await r.json())["responseCode"] == code


async def test_admin_prefix_bad_body(client):
    r = await client.post("/api/admin/prefixes", json=["88.118.10"], headers=admin_headers())
    assert r.status == 400 and (await r.json())["responseCode"] == 202


# ------------------------------------------------------------------ batches

async def test_batch_register_thousand(client):
    handles = [{"handle": f"88.118.8/B{i:05d}", "values": [
        {"index": 1, "type": "URL", "data": f"https://example.com/{i}"}]} for i in range(1000)]
    r = await client.post("/api/batch/register", json={"handles": handles}, headers=ent8_headers())
    assert (r.status, r.headers["Content-Type"]) == (200, JSON_CT)
    doc = await r.json()
    assert (doc["responseCode"], doc["registered"], doc["failed"]) == (1, 1000, 0)
    assert [x["responseCode"] for x in doc["results"]] == [1] * 1000
    assert [x["handle"] for x in doc["results"]] == [h["handle"] for h in handles]
    r = await client.post("/api/batch/resolve", json={"handles": [h["handle"] for h in handles]})
    res = (await r.json())["results"]
    assert [x["responseCode"] for x in res] == [1] * 1000
    assert res[999]["values"][0]["data"]["value"] == "https://example.com/999"
    r = await client.get("/api/handles/88.118.8/B00500")
    assert r.status == 200
    r = await client.get("/api/handles?prefix=88.118.8&pageSize=1", headers=ent8_headers())
    assert (await r.json())["totalCount"] == "1000"


async def test_batch_register_mixed(client):
    assert (await client.put("/api/handles/88.118.8/EXISTS", json=URL_BODY,
                             headers=ent8_headers())).status == 201
    good = [{"index": 1, "type": "URL", "data": "https://good/1"}]
    items = [
        {"handle": "88.118.8/GOOD", "values": good},
        {"handle": "no-slash-here", "values": good},
        {"handle": "88.118.8/GOOD", "values": [{"index": 1, "type": "URL", "data": "https://dup/2"}]},
        {"handle": "88.118.8/EXISTS", "values": [{"index": 1, "type": "URL", "data": "https://new"}]},
        {"handle": "88.118.9/THEIRS", "values": good},
    ]
    r = await client.post("/api/batch/register", json={"overwrite": False, "handles": items},
                          headers=ent8_headers())
    assert r.status == 200
    doc = await r.json()
    assert [x["responseCode"] for x in doc["results"]] == [1, 102, 101, 101, 400]
    assert [x.get("handle") for x in doc["results"]] == [i["handle"] for i in items]
    assert (doc["registered"], doc["failed"]) == (1, 4)
    doc = await (await client.get("/api/handles/88.118.8/GOOD")).json()
    assert doc["values"][0]["data"]["value"] == "https://good/1"
    doc = await (await client.get("/api/handles/88.118.8/EXISTS")).json()
    assert doc["values"][0]["data"]["value"] == "https://example.com/1"
    assert (await client.get("/api/handles/88.118.9/THEIRS")).status == 404
    r = await client.get("/api/handles?prefix=88.118.8", headers=ent8_headers())
    assert (await r.json())["totalCount"] == "2"


async def test_batch_register_needs_auth_per_item(client):
    r = await client.post("/api/batch/register",
                          json={"handles": [{"handle": "88.118.8/A", "values": URL_BODY["values"]}]})
    doc = await r.json()
    assert doc["results"][0]["responseCode"] == 402
    assert (await client.get("/api/handles/88.118.8/A")).status == 404


async def test_batch_register_too_many(client):
    items = [{"handle": f"88.118.8/T{i}", "values": []} for i in range(10_001)]
    r = await client.post("/api/batch/register", json={"handles": items}, headers=ent8_headers())
    assert (r.status, r.headers["Content-Type"]) == (413, JSON_CT)
    assert await r.json() == {"responseCode": 202,
                              "message": "a batch registers at most 10000 identifiers; got 10001"}
    assert (await client.get("/api/handles/88.118.8/T0")).status == 404


async def test_batch_resolve(seeded):
    items = ["88.118.8/SN000000001", "88.118.8/NOPE", "notahandle", "99.9/x", "", 5,
             "88.118.8/sn000000002"]
    r = await seeded.post("/api/batch/resolve", json={"handles": items})
    assert (r.status, r.headers["Content-Type"]) == (200, JSON_CT)
    res = (await r.json())["results"]
    # "notahandle" (no '/') is 301 as in a GET (Handle.Net 9.3.1, shared/reference)
    assert [x["responseCode"] for x in res] == [1, 100, 301, 301, 102, 102, 1]
    assert res[0]["handle"] == "88.118.8/SN000000001"
    assert [v["index"] for v in res[0]["values"]] == [1, 2, 100]
    assert res[1]["handle"] == "88.118.8/NOPE"
    assert res[6]["handle"] == "88.118.8/sn000000002"
    # a bare list is accepted too
    r = await seeded.post("/api/batch/resolve", json=["88.118.8/SN000000001"])
    assert (await r.json())["results"][0]["responseCode"] == 1


async def test_batch_resolve_too_many(client):
    r = await client.post("/api/batch/resolve",
                          json={"handles": [f"88.118.8/X{i}" for i in range(1001)]})
    assert (r.status, r.headers["Content-Type"]) == (413, JSON_CT)
    assert await r.json() == {"responseCode": 202,
                              "message": "a batch resolves at most 1000 identifiers; got 1001"}
    r = await client.post("/api/batch/resolve",
                          json={"handles": [f"88.118.8/X{i}" for i in range(1000)]})
    assert r.status == 200


async def test_batch_resolve_hides_secrets(client):
    r = await client.post("/api/batch/resolve", json={"handles": ["0.NA/88.118.8"]})
    body = await r.read()
    assert b"HS_SECKEY" not in body and json.loads(body)["results"][0]["responseCode"] == 1


# ------------------------------------------------------------------ concurrency

async def test_concurrent_create_same_handle_exactly_one_wins(client):
    async def attempt(i):
        r = await client.put("/api/handles/88.118.8/RACE?overwrite=false", headers=ent8_headers(),
                             json={"values": [{"index": 1, "type": "URL", "data": f"https://r/{i}"}]})
        return r.status, await r.json()

    answers = await asyncio.gather(*(attempt(i) for i in range(50)))
    statuses = sorted(s for s, _ in answers)
    assert statuses == [201] + [409] * 49
    assert all(d["responseCode"] == 101 for s, d in answers if s == 409)
    winner = next(i for i, (s, _) in enumerate(answers) if s == 201)
    doc = await (await client.get("/api/handles/88.118.8/RACE")).json()
    assert doc["values"][0]["data"]["value"] == f"https://r/{winner}"


async def test_concurrent_create_same_handle_lmdb(tmp_path):
    """The same race on the durable store, whose commits really yield to the event loop."""
    from aiohttp.test_utils import RawTestServer, TestClient
    from resolver.nodes import SecondaryNode
    from resolver.store import open_store
    node = SecondaryNode("gz", open_store(f"lmdb:{tmp_path / 'db'}"), ["88.118"])
    await node.bootstrap("node-admin-secret")
    await node.create_prefix("88.118.8", identity=auth.Identity(300, "0.NA/88.118"),
                             secret=ENT8_SECRET)
    client = TestClient(RawTestServer(NodeAPI(node)))
    await client.start_server()
    try:
        async def attempt(i):
            r = await client.put("/api/handles/88.118.8/RACE?overwrite=false",
                                 headers=ent8_headers(),
                                 json={"values": [{"index": 1, "type": "URL", "data": f"https://r/{i}"}]})
            return r.status
        statuses = await asyncio.gather(*(attempt(i) for i in range(50)))
        assert sorted(statuses) == [201] + [409] * 49
        # and 50 different handles at once all land (one group commit or several)
        many = await asyncio.gather(*(client.put(f"/api/handles/88.118.8/M{i}", headers=ent8_headers(),
                                                 json=URL_BODY) for i in range(50)))
        assert [r.status for r in many] == [201] * 50
        r = await client.get("/api/handles?prefix=88.118.8&pageSize=1", headers=ent8_headers())
        assert (await r.json())["totalCount"] == "51"
    finally:
        await client.close()
        await node.close()


# ------------------------------------------------------------------ stored data that breaks reads

async def test_msgpack_bytes_value_cannot_poison_a_record(client):
    body = msgpack.packb({"values": [{"index": 1, "type": "X",
                                      "data": {"format": "vlist", "value": b"\xff"}}]})
    r = await client.put("/api/handles/88.118.8/POISON", data=body,
                         headers=ent8_headers(**{"Content-Type": "application/msgpack"}))
    assert (r.status, await r.json()) == (400, {
        "responseCode": 202, "handle": "88.118.8/POISON",
        "message": "values[0].data.value must be a list of {handle, index} for format 'vlist'"})
    r = await client.get("/api/handles/88.118.8/POISON")
    assert r.status == 404


async def test_malformed_admin_group_member_does_not_break_writes(client):
    r = await client.put("/api/handles/0.NA/88.118.8?index=200", headers=ent8_headers(), json={
        "values": [{"index": 200, "type": "HS_VLIST", "data": {"format": "vlist", "value": [
            {"index": "x", "handle": "0.NA/88.118.8"}, {"index": 300, "handle": "0.NA/88.118.8"}]}}]})
    assert (r.status, await r.json()) == (400, {
        "responseCode": 202, "handle": "0.NA/88.118.8",
        "message": "values[0].data.value[0].index must be an integer; got 'x'"})
    # the refused write left the prefix's administrators as they were
    r = await client.put("/api/handles/88.118.8/AFTER", json=URL_BODY, headers=ent8_headers())
    assert r.status == 201, await r.text()
    r = await client.put("/api/handles/88.118.8/AFTER2", json=URL_BODY, headers=ent9_headers())
    assert r.status == 403, await r.text()
    r = await client.put("/api/handles/88.118.8/AFTER3", json=URL_BODY, headers=admin_headers())
    assert r.status == 201, await r.text()


async def test_rotated_secret_takes_effect_at_once(client):
    """Logins are checked against decoded 0.NA/ records the node keeps; a change to one (here
    the enterprise's HS_SECKEY, rotated by the node admin) must count from the next request."""
    assert (await client.put("/api/handles/88.118.8/ROT1", json=URL_BODY,
                             headers=ent8_headers())).status == 201
    r = await client.put("/api/handles/0.NA/88.118.8?index=300", headers=admin_headers(), json={
        "values": [{"index": 300, "type": "HS_SECKEY", "data": "a-brand-new-secret",
                    "permissions": "1100"}]})
    assert r.status == 200, await r.text()
    old = await client.put("/api/handles/88.118.8/ROT2", json=URL_BODY, headers=ent8_headers())
    assert old.status == 401 and (await old.json())["responseCode"] == 403
    new = await client.put("/api/handles/88.118.8/ROT2", json=URL_BODY,
                           headers=auth_headers(ENT8, "a-brand-new-secret"))
    assert new.status == 201


async def test_a_body_that_never_arrives_gets_408_not_a_hang(node):
    """Headers promising a body, then silence: the node answers 408 in Handle's shape and
    frees the handler, instead of waiting for ever (http.body_timeout, from the config)."""
    config = node.config = Config().with_values("test", {"http": {"body_timeout": 0.2}})
    runner = await server.serve(NodeAPI(node), "127.0.0.1", 0, config.http)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port(runner))
        token = ent8_headers()["Authorization"]
        writer.write(b"PUT /api/handles/88.118.8/SLOW HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                     b"Authorization: " + token.encode() + b"\r\n\r\n{\"values\":")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        assert json.loads(await reader.readexactly(length)) == {
            "responseCode": 4, "message": "request body not received within 0.2 s"}
        writer.close()
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ limits from the config

async def api_client(node, config: Config):
    from aiohttp.test_utils import RawTestServer, TestClient
    node.config = config  # the limits a node serves with are its config's
    srv = RawTestServer(NodeAPI(node), host="127.0.0.1")
    await srv.start_server(**server.server_limits(config.http))
    client = TestClient(srv)
    await client.start_server()
    return client


async def test_body_limit_comes_from_config(node):
    config = Config().with_values("test", {"http": {"max_body": 200}})
    client = await api_client(node, config)
    try:
        r = await client.put("/api/handles/88.118.8/SMALL", json=URL_BODY, headers=ent8_headers())
        assert r.status == 201
        big = {"values": [{"index": 1, "type": "URL", "data": "https://x/" + "a" * 200}]}
        r = await client.put("/api/handles/88.118.8/BIG", json=big, headers=ent8_headers())
        assert (r.status, await r.json()) == (413, {
            "responseCode": 4, "message": "request body larger than 200 bytes"})
        r = await client.post("/api/batch/resolve", json={"handles": ["88.118.8/" + "x" * 200]})
        assert r.status == 413
    finally:
        await client.close()


async def test_listing_page_sizes_come_from_config(node):
    config = Config().with_values("test", {"http": {"page_size": 1, "max_page_size": 2}})
    client = await api_client(node, config)
    try:
        for i in range(3):
            assert (await client.put(f"/api/handles/88.118.8/P{i}", json=URL_BODY,
                                     headers=ent8_headers())).status == 201
        doc = await (await client.get("/api/handles?prefix=88.118.8", headers=ent8_headers())).json()
        assert (doc["totalCount"], doc["pageSize"], doc["handles"]) == ("3", 1, ["88.118.8/P0"])
        doc = await (await client.get("/api/handles?prefix=88.118.8&pageSize=50",
                                      headers=ent8_headers())).json()
        assert (doc["pageSize"], doc["handles"]) == (2, ["88.118.8/P0", "88.118.8/P1"])
    finally:
        await client.close()


async def test_serve_takes_its_limits_from_http_config(node):
    limits = HttpConfig(max_headers=8)
    runner = await server.serve(NodeAPI(node), "127.0.0.1", 0, limits)
    try:
        url = f"http://127.0.0.1:{server.bound_port(runner)}/api/handles/88.118.8/x"
        async with ClientSession() as s:
            async with s.get(url, headers={f"X-Filler-{i}": "v" for i in range(12)}) as r:
                assert r.status == 400  # would be 404 under the default limit of 64
            async with s.get(url) as r:
                assert r.status == 404
    finally:
        await runner.cleanup()
