"""End to end: a real ``idsim node`` process on a loopback port, driven over HTTP.

pyhandle's RESTHandleClient is synchronous, so the node runs as a subprocess
(``python -m topology.cli node …``) with an LMDB data directory; the tests talk to it as a
user would: pyhandle unchanged, or plain urllib with pyhandle's Basic header. Restart and
crash tests stop the process with SIGTERM (must exit 0) or SIGKILL and start it again on
the same data directory.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

pyhandle = pytest.importorskip("pyhandle")
from pyhandle.handleclient import PyHandleClient  # noqa: E402
from pyhandle.handleexceptions import (  # noqa: E402
    GenericHandleError, HandleAlreadyExistsException, HandleAuthenticationError,
    HandleNotFoundException)

from benchmarks.procs import free_port  # noqa: E402
from resolver import auth  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENT = "88.118.8"
ENT_USER = f"300:0.NA/{ENT}"
START_TIMEOUT = 60.0


# ------------------------------------------------------------------ running a node

class NodeProcess:
    def __init__(self, data: Path, *, demo: int = 10, enterprises=(ENT,)):
        self.data = data
        self.demo = demo
        self.enterprises = list(enterprises)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log_path: Path | None = None

    def start(self) -> "NodeProcess":
        self.data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        n = len(list(self.data.glob("node-*.log")))
        self.log_path = self.data / f"node-{n}.log"
        cmd = [sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
               "--demo", str(self.demo), "--port", str(port), "--data", str(self.data)]
        for e in self.enterprises:
            cmd += ["--enterprise", e]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            if "serving http://" in self.log() and (self.data / "logins.json").exists():
                try:
                    status, _ = http("GET", f"{self.url}/api/handles/0.NA/{ENT}")
                    if status == 200:
                        return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"node did not answer within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def logins(self) -> dict:
        return json.loads((self.data / "logins.json").read_text())

    def ent_secret(self, prefix: str = ENT) -> str:
        (entry,) = [e for e in self.logins()["enterprises"] if e["prefix"] == prefix]
        assert entry["username"] == f"300:0.NA/{prefix}"
        return entry["secret"]

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C / a service manager would; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node ignored SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


basic = auth.basic_header  # pyhandle's Authorization value


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body=None, user: str | None = None,
         secret: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if user:
        req.add_header("Authorization", basic(user, secret))
    try:
        with _NO_PROXY.open(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def url_values(url: str, **more: str) -> dict:
    values = [{"index": 1, "type": "URL", "data": {"format": "string", "value": url}}]
    for i, (t, v) in enumerate(more.items(), start=2):
        values.append({"index": i, "type": t, "data": v})
    return {"values": values}


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch):
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def running_node(tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("node-pyhandle")).start()
    yield node
    if node.proc.poll() is None:
        code = node.stop()
        assert code == 0, node.log()


@pytest.fixture
def nodes(tmp_path):
    """Start nodes on demand; whatever is still running at the end is killed."""
    started: list[NodeProcess] = []

    def start(data: Path | None = None, **kw) -> NodeProcess:
        n = NodeProcess(data or tmp_path / "data", **kw).start()
        started.append(n)
        return n

    yield start
    for n in started:
        n.kill()


@pytest.fixture
def client(running_node):
    return PyHandleClient("rest").instantiate_with_username_and_password(
        running_node.url, ENT_USER, running_node.ent_secret())


def fresh(tag: str) -> str:
    return f"{ENT}/{tag}-{uuid.uuid4().hex[:12].upper()}"


# ------------------------------------------------------------------ pyhandle, unchanged

def test_pyhandle_full_cycle(client):
    h = fresh("PH")
    assert client.register_handle(h, "https://example.com/1", checksum="md5:abc") == h

    rec = client.retrieve_handle_record(h)
    assert rec["URL"] == "https://example.com/1"
    assert rec["CHECKSUM"] == "md5:abc"
    assert "0.NA/88.118.8" in rec["HS_ADMIN"]
    assert client.get_value_from_handle(h, "URL") == "https://example.com/1"
    assert client.get_value_from_handle(h, "EMAIL") is None

    assert client.modify_handle_value(h, URL="https://example.com/2") == h
    assert client.get_value_from_handle(h, "URL") == "https://example.com/2"
    assert client.get_value_from_handle(h, "CHECKSUM") == "md5:abc"      # kept

    assert client.modify_handle_value(h, EMAIL="a@b.c") == h               # a new key
    assert client.get_value_from_handle(h, "EMAIL") == "a@b.c"
    record = client.retrieve_handle_record_json(h)
    assert {v["type"] for v in record["values"]} == {"URL", "CHECKSUM", "EMAIL", "HS_ADMIN"}
    assert all("timestamp" in v for v in record["values"])

    assert client.delete_handle_value(h, "EMAIL") == h
    assert client.get_value_from_handle(h, "EMAIL") is None
    assert client.get_value_from_handle(h, "URL") == "https://example.com/2"
    assert client.delete_handle_value(h, "NOSUCHKEY") is None               # nothing to delete

    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle(h, "https://example.com/3")
    assert client.register_handle(h, "https://example.com/3", overwrite=True) == h
    assert client.get_value_from_handle(h, "URL") == "https://example.com/3"

    assert client.delete_handle(h) == h
    # documented: retrieve_handle_record(_json) returns None for a missing handle;
    # get_value_from_handle and delete_handle raise HandleNotFoundException
    assert client.retrieve_handle_record(h) is None
    assert client.retrieve_handle_record_json(h) is None
    with pytest.raises(HandleNotFoundException):
        client.get_value_from_handle(h, "URL")
    with pytest.raises(HandleNotFoundException):
        client.delete_handle(h)
    with pytest.raises(HandleNotFoundException):
        client.modify_handle_value(h, URL="https://example.com/4")


def test_pyhandle_reads_seeded_demo_identifier(client):
    h = f"{ENT}/SN000000003"
    assert client.get_value_from_handle(h, "URL") == f"https://ex.com/{h}"
    assert client.get_value_from_handle(h, "CHECKSUM").startswith("sha1:")
    # case-insensitive lookup: pyhandle insists the echoed handle equals what it asked for
    assert client.retrieve_handle_record(h.lower())["URL"] == f"https://ex.com/{h}"


def test_pyhandle_generate_and_register(client):
    h = client.generate_and_register_handle(ENT, "https://example.com/gen")
    assert h.startswith(f"{ENT}/")
    assert client.get_value_from_handle(h, "URL") == "https://example.com/gen"
    assert client.delete_handle(h) == h


def test_pyhandle_register_with_extra_types_and_multiple_urls(client):
    h = fresh("KV")
    assert client.register_handle_kv(h, URL="https://example.com/kv", DESC="a thing",
                                     EMAIL="x@y.z") == h
    rec = client.retrieve_handle_record(h)
    assert (rec["URL"], rec["DESC"], rec["EMAIL"]) == ("https://example.com/kv", "a thing", "x@y.z")
    entries = [{"index": 1, "type": "URL", "data": "https://example.com/json"},
               {"index": 7, "type": "NOTE", "data": {"format": "string", "value": "seven"}}]
    h2 = fresh("JS")
    assert client.register_handle_json(h2, entries) == h2
    doc = client.retrieve_handle_record_json(h2)
    assert [(v["index"], v["type"]) for v in doc["values"]] == [(1, "URL"), (7, "NOTE"), (100, "HS_ADMIN")]
    client.delete_handle(h)
    client.delete_handle(h2)


def test_pyhandle_add_handle_value(client):
    h = fresh("ADD")
    client.register_handle(h, "https://example.com/add")
    try:
        assert client.add_handle_value(h, EMAIL="new@example.com") == h
        assert client.get_value_from_handle(h, "EMAIL") == "new@example.com"
    finally:
        client.delete_handle(h)


def test_pyhandle_wrong_password(running_node):
    c = PyHandleClient("rest").instantiate_with_username_and_password(
        running_node.url, ENT_USER, "not-the-secret")
    h = fresh("WRONG")
    with pytest.raises(HandleAuthenticationError):
        c.register_handle(h, "https://example.com/x")
    assert http("GET", f"{running_node.url}/api/handles/{h}")[0] == 404
    with pytest.raises(HandleAuthenticationError):
        c.delete_handle(f"{ENT}/SN000000001")
    assert http("GET", f"{running_node.url}/api/handles/{ENT}/SN000000001")[0] == 200


def test_pyhandle_unknown_username_handle(running_node):
    with pytest.raises(HandleNotFoundException):
        PyHandleClient("rest").instantiate_with_username_and_password(
            running_node.url, "300:0.NA/88.118.77", "whatever")


def test_pyhandle_other_prefix_not_permitted(running_node, client):
    # a handle under the node's own prefix (88.118) is not the enterprise's to write
    h = f"88.118/{uuid.uuid4().hex[:8]}"
    with pytest.raises(GenericHandleError):
        client.register_handle(h, "https://example.com/x")
    assert http("GET", f"{running_node.url}/api/handles/{h}")[0] == 404


# ------------------------------------------------------------------ restart and crash

def test_restart_keeps_everything(nodes, tmp_path):
    data = tmp_path / "data"
    n = nodes(data, demo=25)
    secret = n.ent_secret()
    admin = n.logins()["node_admin"]
    assert admin["username"] == "300:0.NA/88.118"

    written = {}
    for i in range(30):
        h = f"{ENT}/KEEP-{i:03d}"
        status, doc = http("PUT", f"{n.url}/api/handles/{h}", url_values(f"https://keep/{i}"),
                           ENT_USER, secret)
        assert (status, doc) == (201, {"responseCode": 1, "handle": h})
        written[h] = f"https://keep/{i}"
    batch = [{"handle": f"{ENT}/BATCH-{i:04d}", "values": url_values(f"https://batch/{i}")["values"]}
             for i in range(500)]
    status, doc = http("POST", f"{n.url}/api/batch/register", {"handles": batch}, ENT_USER, secret)
    assert status == 200 and doc["registered"] == 500
    written.update({b["handle"]: b["values"][0]["data"]["value"] for b in batch})
    # changed and deleted things must come back changed and deleted
    status, _ = http("PUT", f"{n.url}/api/handles/{ENT}/KEEP-000?index=2",
                     {"values": [{"index": 2, "type": "EMAIL", "data": "k@e.e"}]}, ENT_USER, secret)
    assert status == 200
    assert http("DELETE", f"{n.url}/api/handles/{ENT}/KEEP-001", None, ENT_USER, secret)[0] == 200
    del written[f"{ENT}/KEEP-001"]
    status, created = http("POST", f"{n.url}/api/admin/prefixes", {"prefix": "88.118.20"},
                           admin["username"], admin["secret"])
    assert status == 201
    assert http("PUT", f"{n.url}/api/handles/88.118.20/X", url_values("https://twenty"),
                created["username"], created["secret"])[0] == 201
    _, listing = http("GET", f"{n.url}/api/handles?prefix={ENT}&pageSize=1", None, ENT_USER, secret)
    total_before = listing["totalCount"]
    assert total_before == str(25 + 30 - 1 + 500)

    assert n.stop() == 0, n.log()
    assert "stopping" in n.log()

    m = nodes(data, demo=25)
    assert "seeded 0 identifiers" in m.log()
    assert m.logins()["node_admin"] == admin
    assert m.ent_secret() == secret
    for h, url in written.items():
        status, doc = http("GET", f"{m.url}/api/handles/{h}")
        assert status == 200, h
        assert doc["values"][0]["data"]["value"] == url
    doc = http("GET", f"{m.url}/api/handles/{ENT}/KEEP-000")[1]
    assert [v["type"] for v in doc["values"]] == ["URL", "EMAIL", "HS_ADMIN"]
    assert http("GET", f"{m.url}/api/handles/{ENT}/KEEP-001")[0] == 404
    assert http("GET", f"{m.url}/api/handles/{ENT}/SN000000024")[0] == 200
    _, listing = http("GET", f"{m.url}/api/handles?prefix={ENT}&pageSize=1", None, ENT_USER, secret)
    assert listing["totalCount"] == total_before
    # logins still work after the restart: the enterprise's, and the admin-API-made one
    h = f"{ENT}/AFTER-RESTART"
    assert http("PUT", f"{m.url}/api/handles/{h}", url_values("https://after"), ENT_USER, secret) \
        == (201, {"responseCode": 1, "handle": h})
    assert http("PUT", f"{m.url}/api/handles/{h}", url_values("https://x"), ENT_USER, "wrong")[0] == 401
    assert http("GET", f"{m.url}/api/handles/88.118.20/X")[0] == 200
    assert http("PUT", f"{m.url}/api/handles/88.118.20/Y", url_values("https://y"),
                created["username"], created["secret"])[0] == 201
    # and pyhandle, unchanged, against the restarted node
    c = PyHandleClient("rest").instantiate_with_username_and_password(m.url, ENT_USER, secret)
    assert c.get_value_from_handle(f"{ENT}/KEEP-005", "URL") == "https://keep/5"
    assert c.modify_handle_value(f"{ENT}/KEEP-005", URL="https://keep/5b") == f"{ENT}/KEEP-005"
    assert m.stop() == 0, m.log()


def test_sigkill_after_acknowledged_put_keeps_it(nodes, tmp_path):
    data = tmp_path / "data"
    n = nodes(data, demo=0)
    secret = n.ent_secret()
    h = f"{ENT}/CRASH-1"
    assert http("PUT", f"{n.url}/api/handles/{h}", url_values("https://crash/1"), ENT_USER, secret) \
        == (201, {"responseCode": 1, "handle": h})
    n.proc.send_signal(signal.SIGKILL)  # right after the 201: no orderly shutdown
    assert n.proc.wait(timeout=30) == -signal.SIGKILL

    m = nodes(data, demo=0)
    status, doc = http("GET", f"{m.url}/api/handles/{h}")
    assert status == 200 and doc["values"][0]["data"]["value"] == "https://crash/1"
    assert m.ent_secret() == secret
    assert http("PUT", f"{m.url}/api/handles/{ENT}/CRASH-2", url_values("https://crash/2"),
                ENT_USER, secret)[0] == 201


def test_sigkill_after_acknowledged_batch_and_delete(nodes, tmp_path):
    data = tmp_path / "data"
    n = nodes(data, demo=5)
    secret = n.ent_secret()
    batch = [{"handle": f"{ENT}/KB-{i:04d}", "values": url_values(f"https://kb/{i}")["values"]}
             for i in range(200)]
    status, doc = http("POST", f"{n.url}/api/batch/register", {"handles": batch}, ENT_USER, secret)
    assert status == 200 and doc["registered"] == 200
    assert http("DELETE", f"{n.url}/api/handles/{ENT}/SN000000002", None, ENT_USER, secret)[0] == 200
    n.proc.kill()
    n.proc.wait(timeout=30)

    m = nodes(data, demo=5)
    status, doc = http("POST", f"{m.url}/api/batch/resolve", {"handles": [b["handle"] for b in batch]})
    assert status == 200 and [r["responseCode"] for r in doc["results"]] == [1] * 200
    assert http("GET", f"{m.url}/api/handles/{ENT}/SN000000002")[0] == 404
