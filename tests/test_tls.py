"""HTTPS for clients: the cluster CA (``topology.pki``), nodes serving TLS, and ``idsim up --tls``.

Three levels: the PKI's files and certificates (no network: the chain is checked with an
in-memory ``ssl`` handshake); an in-process ``mini`` network with ``https`` addresses (every
node in the test's loop, certificates from its data directory); and ``idsim up --tls`` as a
user runs it, driven by pyhandle unchanged (``HTTPS_verify`` = the CA file) and by the CLI.
Nothing here turns verification off.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from benchmarks.network import free_preset
from network_fixtures import FakeClock, basic_token, free_topology
from resolver.config import Config
from resolver.top import parse_site
from topology import pki
from topology.cluster import make_logins
from topology.tomlio import from_toml, to_toml
from topology.wiring import start_nodes

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
ENT = "88.118.8"


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> None:
    """A TLS handshake between the two contexts in memory; ssl.SSLError when it fails."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for key, end in (("c", client), ("s", server)):
            if not done[key]:
                try:
                    end.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


# ------------------------------------------------------------------ the PKI

def test_ca_and_node_certificate_verify_with_ssl_and_name_every_host(tmp_path):
    files = pki.ensure(pki.directory(tmp_path), ["127.0.0.1", "10.1.2.3", "node.example"], NOW)
    cert = x509.load_pem_x509_certificate(files.node_cert.read_bytes())
    names = pki.names_of(cert)
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3"),
            ipaddress.ip_address("::1"), "localhost", "node.example"} <= names
    # validity from the time given, not the machine's clock
    assert cert.not_valid_before_utc == NOW - pki.BACKDATE
    assert cert.not_valid_after_utc == NOW + pki.NODE_VALIDITY

    server = pki.server_context(files)
    for name in ("127.0.0.1", "10.1.2.3", "localhost", "node.example"):
        handshake(server, pki.client_context(files.ca_cert), name)
    with pytest.raises(ssl.SSLCertVerificationError):  # a name it does not carry
        handshake(server, pki.client_context(files.ca_cert), "10.9.9.9")
    other = pki.ensure(pki.directory(tmp_path / "other"), ["127.0.0.1"], NOW)
    with pytest.raises(ssl.SSLCertVerificationError):  # another cluster's CA does not vouch
        handshake(server, pki.client_context(other.ca_cert), "127.0.0.1")


def test_keys_are_private_and_the_ca_key_stays_out_of_what_nodes_load(tmp_path):
    files = pki.ensure(pki.directory(tmp_path), ["127.0.0.1"], NOW)
    assert files.ca_key.stat().st_mode & 0o777 == 0o600
    assert files.node_key.stat().st_mode & 0o777 == 0o600
    assert files.dir.stat().st_mode & 0o777 == 0o700
    ca_key = files.ca_key.read_bytes()
    assert ca_key not in files.node_key.read_bytes() + files.node_cert.read_bytes()
    assert ca_key not in files.ca_cert.read_bytes()


def test_a_restart_reuses_the_ca_and_the_certificate(tmp_path):
    files = pki.directory(tmp_path)
    pki.ensure(files, ["127.0.0.1"], NOW)
    before = {p: p.read_bytes() for p in (files.ca_key, files.ca_cert, files.node_key,
                                          files.node_cert)}
    pki.ensure(files, ["127.0.0.1"], NOW + dt.timedelta(days=100))
    assert {p: p.read_bytes() for p in before} == before

    # a new host: the same CA, a new certificate naming it
    pki.ensure(files, ["127.0.0.1", "10.0.0.7"], NOW + dt.timedelta(days=101))
    assert files.ca_cert.read_bytes() == before[files.ca_cert]
    assert files.node_cert.read_bytes() != before[files.node_cert]
    cert = x509.load_pem_x509_certificate(files.node_cert.read_bytes())
    assert ipaddress.ip_address("10.0.0.7") in pki.names_of(cert)


def test_certificates_are_renewed_before_they_end(tmp_path):
    files = pki.directory(tmp_path)
    pki.ensure(files, ["127.0.0.1"], NOW)
    ca = files.ca_cert.read_bytes()
    node = files.node_cert.read_bytes()
    later = NOW + pki.NODE_VALIDITY - pki.RENEW_BEFORE + dt.timedelta(days=1)
    pki.ensure(files, ["127.0.0.1"], later)
    assert files.ca_cert.read_bytes() == ca and files.node_cert.read_bytes() != node
    much_later = NOW + pki.CA_VALIDITY
    pki.ensure(files, ["127.0.0.1"], much_later)
    assert files.ca_cert.read_bytes() != ca
    new_ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.node_cert.read_bytes())
    cert.verify_directly_issued_by(new_ca)  # reissued under the new CA (raises if not)
    assert new_ca.not_valid_before_utc == much_later - pki.BACKDATE


def test_a_topology_keeps_its_scheme_through_toml_and_re_addressing():
    topo = free_topology("mini").with_scheme("https")
    assert topo.uses_tls and topo.recursive.http_url.startswith("https://")
    assert from_toml(to_toml(topo)) == topo
    moved = topo.with_ports(21000)
    assert all(a.scheme == "https" for a in moved.addresses())
    plain = free_topology("mini")
    assert "scheme" not in to_toml(plain) and not plain.uses_tls


# ------------------------------------------------------------------ an in-process TLS network

@pytest.fixture
async def tls_net(tmp_path):
    topo = logins = host = None
    for _ in range(5):
        topo = free_topology("mini").with_scheme("https")
        pki.ensure(pki.directory(tmp_path), {a.host for a in topo.addresses()}, NOW)
        logins = make_logins(topo)
        names = ["top", "recursive", *(s.code for s in topo.secondaries)]
        try:
            host = await start_nodes(topo, names, Config(), data_dir=tmp_path, logins=logins,
                                     store="memory", clock=FakeClock())
            break
        except OSError:
            continue
    assert host is not None, "no free ports for the mini network"
    ctx = pki.client_context(pki.directory(tmp_path).ca_cert)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                    timeout=aiohttp.ClientTimeout(total=15))
    try:
        yield topo, logins, session
    finally:
        await session.close()
        await host.close()


async def test_writes_through_the_recursive_node_reach_an_https_node(tls_net):
    topo, logins, http = tls_net
    login = logins["enterprises"][ENT]
    handle = f"{ENT}/TLS-{uuid.uuid4().hex[:8].upper()}"
    body = {"values": [{"index": 1, "type": "URL",
                        "data": {"format": "string", "value": "https://example.com/t"}}]}
    # passed on by the recursive node over HTTPS, verified with the cluster CA
    async with http.put(f"{topo.recursive.http_url}/api/handles/{handle}", json=body,
                        headers={"Authorization": basic_token(login["username"],
                                                              login["secret"])}) as r:
        assert r.status == 201, await r.text()
    async with http.get(f"{topo.recursive.http_url}/api/handles/{handle}") as r:
        doc = await r.json()
    assert doc["values"][0]["data"]["value"] == "https://example.com/t"
    # the top-level node hands out the node's site as https
    async with http.get(f"{topo.top.http_url}/api/handles/0.NA/{ENT}?type=HS_SITE") as r:
        site = (await r.json())["values"][0]["data"]["value"]
    assert parse_site(ENT, site).http_url == topo.secondary("88.118").address.http_url


async def test_a_plain_text_client_is_refused_and_the_node_keeps_serving(tls_net):
    topo, _, http = tls_net
    addr = topo.recursive

    def plain_request() -> bytes:
        with socket.create_connection((addr.host, addr.http_port), timeout=10) as s:
            s.sendall(b"GET /api/handles/88.118.8/SN000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            try:
                while chunk := s.recv(4096):
                    got += chunk
            except ConnectionResetError:
                pass
            return got
    got = await asyncio.get_running_loop().run_in_executor(None, plain_request)
    assert b"HTTP/1.1 200" not in got and b"SN000000000" not in got  # closed, no answer
    async with http.get(f"{addr.http_url}/api/handles/{ENT}/SN000000000") as r:
        assert r.status == 200


# ------------------------------------------------------------------ idsim up --tls, end to end

def test_idsim_up_tls_with_pyhandle_and_the_cli(tmp_path, monkeypatch):
    pyhandle = pytest.importorskip("pyhandle.handleclient")
    from test_cli_up import REPO, Up  # the launcher as test_cli_up drives it

    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    data = tmp_path / "data"
    base = free_preset("mini").recursive.http_port
    with open(tmp_path / "up.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "up", "--preset", "mini", "--port", str(base),
             "--data", str(data), "--workers", "2", "--tls"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    up = Up(proc, data, tmp_path / "up.log")
    try:
        state = up.wait_ready()
        ca = state["caFile"]
        assert Path(ca) == (data / "pki" / "ca.crt").resolve()
        assert state["recursiveUrl"] == f"https://127.0.0.1:{base}"
        assert all(n["httpUrl"].startswith("https://") for n in state["nodes"])
        logins = json.loads((data / "logins.json").read_text())
        assert all(e["httpUrl"].startswith("https://") for e in logins["enterprises"].values())

        login = logins["enterprises"][ENT]
        client = pyhandle.PyHandleClient("rest").instantiate_with_username_and_password(
            state["recursiveUrl"], login["username"], login["secret"], HTTPS_verify=ca)
        handle = f"{ENT}/PH-TLS-{uuid.uuid4().hex[:8].upper()}"
        assert client.register_handle(handle, "https://example.com/tls") == handle
        assert client.get_value_from_handle(handle, "URL") == "https://example.com/tls"

        cli = [sys.executable, "-m", "topology.cli"]

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(cli + list(args) + ["--data", str(data)], cwd=REPO,
                                  capture_output=True, text=True, timeout=60)
        status = run("status", "--json")
        assert status.returncode == 0, status.stderr
        assert all(n["up"] for n in json.loads(status.stdout)["nodes"])
        reg = run("register", f"{ENT}/CLI-TLS", "--url", "https://example.com/cli")
        assert reg.returncode == 0, reg.stderr
        res = run("resolve", f"{ENT}/CLI-TLS")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["values"][0]["data"]["value"] == "https://example.com/cli"
        assert up.interrupt() == 0
    finally:
        up.kill_all()


# ------------------------------------------------------------------ Basic auth and the transport

def test_credentials_count_over_tls_or_from_loopback_only():
    from resolver.config import HttpConfig
    from resolver.tls import credentials_count
    strict, lax = HttpConfig(), HttpConfig(plain_auth_remote=1)
    for peer in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert credentials_count(False, peer, strict), peer
    for peer in ("192.0.2.7", "10.0.0.1", "fd00::2", "::ffff:10.0.0.1", None, "", "x"):
        assert not credentials_count(False, peer, strict), peer
        assert credentials_count(True, peer, strict), peer
        assert credentials_count(False, peer, lax), peer


def lan_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if not loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2: routing only
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(ip).is_loopback else ip


@pytest.mark.parametrize("scheme,plain_auth_remote,status", [
    ("http", 0, 401),    # plain text from another host: anonymous (Handle.Net: the same)
    ("http", 1, 201),    # allowed by config
    ("https", 0, 201),   # over TLS credentials count
])
async def test_basic_auth_from_another_host_needs_tls(tmp_path, scheme, plain_auth_remote,
                                                      status):
    from benchmarks.procs import free_port
    from topology.cli_node import standalone_topology
    ip = lan_address()
    if ip is None:
        pytest.skip("no non-loopback address on this machine to connect from")
    topo = standalone_topology("88.118", [ENT], ip, free_port(), 0).with_scheme(scheme)
    if scheme == "https":
        pki.ensure(pki.directory(tmp_path), [ip], NOW)
    logins = make_logins(topo)
    config = Config().with_values("test", {"http": {"plain_auth_remote": plain_auth_remote}})
    running = await start_nodes(topo, ["88.118"], config, data_dir=tmp_path, logins=logins,
                                store="memory", standalone=True)
    ctx = pki.client_context_for(tmp_path)
    login = logins["enterprises"][ENT]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or True)) as http:
            async with http.put(
                    f"{topo.secondary('88.118').address.http_url}/api/handles/{ENT}/REMOTE-1",
                    json={"values": [{"index": 1, "type": "URL",
                                      "data": {"format": "string", "value": "https://e.x"}}]},
                    headers={"Authorization": basic_token(login["username"],
                                                          login["secret"])}) as r:
                doc = await r.json(content_type=None)
                assert r.status == status, doc
                if status == 401:
                    assert doc["responseCode"] == 402  # authentication needed: as if anonymous
    finally:
        await running.close()
