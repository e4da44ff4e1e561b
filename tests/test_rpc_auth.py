"""Node-to-node RPC trust: the handshake (``resolver.rpc_auth``), who may call what, and what
crosses RPC. Each RPC port of a running mini network (top-level, recursive, secondary) is
probed as an outsider would: with no key, a wrong key, or as the wrong node.
"""
from __future__ import annotations

import asyncio
import hmac

import pytest

from network_fixtures import Net, net  # noqa: F401  (net: fixture)
from resolver import auth, errors, identifiers, records
from resolver.roles import Role
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import (CHALLENGE, HELLO, Caller, Keyring, Method, Trust, client_proof,
                               role_of)
from rpc_helpers import as_node, errors_in, pack, raw_session

pytestmark = pytest.mark.timeout(60)

ENT = "88.118.8"
CODE = "88.118"


def fixed(seed: int):
    """A nonce source for tests: the same bytes every time."""
    return lambda n: bytes([seed]) * n


KEYS = Keyring({"top": b"t" * 32, "recursive": b"r" * 32, "88.118": b"s" * 32})


# --------------------------------------------------------------------------- the handshake


def test_handshake_proves_both_ends():
    server, client = Trust("top", KEYS, fixed(1)), Trust("recursive", KEYS, fixed(2))
    nonce = server.nonce()
    name, hello = client.hello(server.challenge(nonce), client.nonce())
    assert name == "top"
    caller, welcome = server.admit(nonce, hello)
    assert caller == Caller("recursive", Role.RECURSIVE)
    client.check_welcome("top", nonce, client.nonce(), welcome)  # raises if not proven


def test_a_proof_is_good_for_one_challenge_and_one_server_only():
    server, client = Trust("top", KEYS, fixed(1)), Trust("recursive", KEYS, fixed(2))
    _, hello = client.hello(server.challenge(b"\x01" * 16), client.nonce())
    with pytest.raises(errors.HandleError) as info:  # replayed against another challenge
        server.admit(b"\x09" * 16, hello)
    assert info.value.code == errors.AUTHENTICATION_FAILED
    other = Trust("88.118", KEYS)  # relayed to another server
    with pytest.raises(errors.HandleError):
        other.admit(b"\x01" * 16, hello)


@pytest.mark.parametrize("hello", [
    None, [], ["recursive"], ["nobody", b"n" * 16, b"p" * 32],
    ["recursive", b"short", b"p" * 32], ["recursive", b"n" * 16, "text"],
    ["recursive", b"n" * 16, b"p" * 32], [["recursive"], b"n" * 16, b"p" * 32],
])
def test_malformed_or_wrong_hellos_are_refused(hello):
    with pytest.raises(errors.HandleError) as info:
        Trust("top", KEYS).admit(b"\x01" * 16, hello)
    assert info.value.code == errors.AUTHENTICATION_FAILED


def test_the_server_proof_cannot_pass_for_a_client_proof():
    server, client = Trust("top", KEYS, fixed(1)), Trust("recursive", KEYS, fixed(2))
    nonce = server.nonce()
    _, hello = client.hello(server.challenge(nonce), client.nonce())
    _, welcome = server.admit(nonce, hello)
    assert not hmac.compare_digest(welcome[0], hello[2])
    with pytest.raises(errors.HandleError):  # a welcome signed by another key is refused
        client.check_welcome("top", nonce, client.nonce(), [client_proof(
            b"x" * 32, nonce, client.nonce(), "recursive", "top")])


def test_roles_of_node_names():
    assert [role_of(n) for n in ("top", "recursive", "88.118")] == [
        Role.TOP, Role.RECURSIVE, Role.SECONDARY]


def test_method_arity_is_read_from_the_signature():
    assert Method(lambda caller, a, b=1: None, [Role.TOP]).arity == (1, 2)
    assert Method(lambda caller, *a: None, [Role.TOP]).arity == (0, float("inf"))


async def test_a_server_with_trust_serves_only_methods():
    with pytest.raises(ValueError):
        RpcServer({"x": lambda: 1}, trust=Trust("top", KEYS))
    with pytest.raises(ValueError):
        RpcServer({"x": Method(lambda caller: 1, [Role.TOP])})


# --------------------------------------------------------------------------- on the wire


async def trusted_server():
    def whoami(caller):
        return [caller.name, str(caller.role)]
    return await RpcServer({"whoami": Method(whoami, [Role.RECURSIVE])},
                           trust=Trust("top", KEYS)).start()


async def test_the_server_challenges_first_and_answers_nothing_unproven():
    srv = await trusted_server()
    try:
        got = await raw_session(srv.port, pack([0, 1, "whoami", []], [0, 2, "whoami", []]))
        assert got[0][:2] == [2, CHALLENGE] and got[0][2][1] == "top"
        assert errors_in(got) == [[errors.AUTHENTICATION_FAILED, "rpc authentication failed: "
                                   "not authenticated: a connection proves which node it is "
                                   "first", None]]  # one answer, then closed
        assert srv.connections == 0
    finally:
        await srv.close()


async def test_wrong_key_is_refused_and_the_connection_closed():
    srv = await trusted_server()
    wrong = Keyring({"recursive": b"w" * 32, "top": b"t" * 32})
    try:
        async with RpcClient("127.0.0.1", srv.port, trust=Trust("recursive", wrong)) as c:
            with pytest.raises(errors.PeerUnavailable) as info:
                await c.call("whoami")
            assert "wrong proof" in info.value.message
            assert not c.connected
        async with RpcClient("127.0.0.1", srv.port, trust=Trust("recursive", KEYS)) as c:
            assert await c.call("whoami") == ["recursive", "recursive"]
        assert srv.connections_opened == 2
    finally:
        await srv.close()


async def test_a_client_does_not_trust_a_server_without_the_key():
    impostor = Keyring({"top": b"i" * 32, "recursive": b"r" * 32})  # knows no real top key
    srv = await RpcServer({"whoami": Method(lambda c: "x", [Role.RECURSIVE])},
                          trust=Trust("top", impostor)).start()
    try:
        async with RpcClient("127.0.0.1", srv.port, trust=Trust("recursive", KEYS)) as c:
            with pytest.raises(errors.PeerUnavailable) as info:
                await c.call("whoami")
            assert "did not prove it is node top" in info.value.message
    finally:
        await srv.close()


async def test_a_hello_then_calls_in_one_write_are_served_in_order():
    srv = await trusted_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        import msgpack
        unpacker = msgpack.Unpacker(raw=False)
        async with asyncio.timeout(10):
            while not (msgs := list(unpacker)):
                unpacker.feed(await reader.read(4096))
        client = Trust("recursive", KEYS, fixed(3))
        _, hello = client.hello(msgs[0][2], client.nonce())
        writer.write(pack([2, HELLO, hello], [0, 7, "whoami", []]))
        got = []
        async with asyncio.timeout(10):
            while len(got) < 2:
                unpacker.feed(await reader.read(4096))
                got += list(unpacker)
        assert got[0][1] == "idsim.welcome" and got[1] == [1, 7, None, ["recursive", "recursive"]]
        writer.close()
    finally:
        await srv.close()


# --------------------------------------------------------------------------- a running network


def rpc_ports(n: Net) -> dict[str, int]:
    return {"top": n.topo.top.rpc_port, "recursive": n.topo.recursive.rpc_port,
            CODE: n.topo.secondary(CODE).address.rpc_port}


async def put_hidden(n: Net) -> str:
    """A record at 88.118.8 with a public URL and a value only admins may read."""
    handle = f"{ENT}/HIDDEN-1"
    body = {"values": [{"index": 1, "type": "URL", "data": "https://ex.com/public"},
                       {"index": 2, "type": "EMAIL", "data": "secret@corp.example",
                        "permissions": "1100"}]}
    async with n.http.put(f"{n.node_url(ENT)}/api/handles/{handle}", json=body,
                          headers=n.auth(ENT)) as resp:
        assert resp.status == 201, await resp.text()
    return handle


async def stop_reports(n: Net) -> None:
    """Cancel the report loops: the reports the top-level node holds change only by the test."""
    for task in n.host.tasks:
        task.cancel()
    await asyncio.gather(*n.host.tasks, return_exceptions=True)


async def test_unauthenticated_clients_read_nothing_and_change_nothing(net: Net):
    hidden = await put_hidden(net)
    await stop_reports(net)
    top_record = net.top.store.get(net.top.key(f"0.NA/{ENT}"))
    reports = dict(net.top.reports)
    calls = [[0, 1, "resolve", [hidden]], [0, 2, "resolve", [f"0.NA/{ENT}"]],
             [0, 3, "register_prefixes", [[ENT], ["x", "http://evil:1", "127.0.0.1:1"]]],
             [0, 4, "report", [CODE, {"identifiers": 10**12}]],
             [2, "report", [CODE, {"identifiers": 10**12}]], [0, 5, "stats", []]]
    for name, port in rpc_ports(net).items():
        for call in calls:
            got = await raw_session(port, pack(call))  # returns only once the server closed
            blob = repr(got)
            assert "secret@corp.example" not in blob and "HS_SECKEY" not in blob, name
            assert all(e[0] == errors.AUTHENTICATION_FAILED for e in errors_in(got)), (name, got)
            assert all(m[0] != 1 or m[2] is not None for m in got)  # no result at all
    assert net.top.store.get(net.top.key(f"0.NA/{ENT}")) == top_record
    # (a report sent by a node before its loop stopped may still land: it is a true one)
    assert all(s.get("identifiers", 0) < 10**12 for s, _ in net.top.reports.values())
    assert net.top.reports.keys() <= reports.keys() | {c for c in net.top.reports
                                                       if c.startswith("recursive")}


async def test_rpc_resolve_shows_what_an_anonymous_get_shows(net: Net):
    hidden = await put_hidden(net)
    port = rpc_ports(net)[CODE]
    async with as_node("recursive", net.logins, port) as c:
        _, rows = records.decode_rows(await c.call("resolve", hidden))
        assert [r[1] for r in rows] == ["URL", "HS_ADMIN"]  # EMAIL (1100) stays at home
        _, rows = records.decode_rows(await c.call("resolve", f"0.NA/{ENT}"))
        assert "HS_SECKEY" not in [r[1] for r in rows]  # not even its hash
        assert [r[1] for r in rows] == ["HS_ADMIN", "HS_VLIST"]
    async with as_node("recursive", net.logins, rpc_ports(net)["top"]) as c:
        _, rows = records.decode_rows(await c.call("resolve", f"0.NA/{CODE}"))
        assert "HS_SECKEY" not in [r[1] for r in rows]
    # the recursive node's HTTP answer is the serving node's anonymous answer, byte for byte
    for home, path in ((net.node_url(ENT), f"/api/handles/{hidden}"),
                       (net.node_url(ENT), f"/api/handles/{hidden}?type=EMAIL"),
                       (net.node_url(ENT), f"/api/handles/{hidden}?index=2"),
                       (net.top_url, f"/api/handles/0.NA/{ENT}"),
                       (net.top_url, f"/api/handles/0.NA/{CODE}?type=HS_SECKEY")):
        assert await net.get(net.url + path) == await net.get(home + path), path
    # hidden values are read with credentials at the serving node only
    status, doc = await net.get(f"{net.node_url(ENT)}/api/handles/{hidden}?auth=true",
                                headers=net.auth(ENT))
    assert status == 200 and "secret@corp.example" in repr(doc)


def test_public_record_drops_hidden_values_and_every_secret_key():
    data = records.encode("88.118.8/x", [
        records.Value(1, "URL", "u"), records.Value(2, "EMAIL", "e", perms=records.SECRET_PERMS),
        records.Value(300, "HS_SECKEY", "h", perms=records.DEFAULT_PERMS)])  # public by mistake
    assert [r[1] for r in records.decode_rows(records.public_record(data))[1]] == ["URL"]
    plain = records.encode("88.118.8/y", [records.Value(1, "URL", "u")])
    assert records.public_record(plain) is plain  # nothing to drop: the same bytes


async def test_each_method_admits_only_its_roles(net: Net):
    ports = rpc_ports(net)
    site = [CODE, net.topo.secondary(CODE).address.http_url,
            net.topo.secondary(CODE).address.rpc_addr]
    refused = [("recursive", "top", "register_prefixes", [[ENT], site]),
               (CODE, "top", "resolve", [f"0.NA/{ENT}"]),
               (CODE, CODE, "resolve", [f"{ENT}/x"]),
               ("top", CODE, "register_prefixes", [[ENT], site])]
    for who, where, method, params in refused:
        async with as_node(who, net.logins, ports[where]) as c:
            with pytest.raises(errors.HandleError) as info:
                await c.call(method, *params)
            assert info.value.code in (errors.INSUFFICIENT_PERMISSIONS, errors.PROTOCOL_ERROR), \
                (who, where, method)
    async with as_node(CODE, net.logins, ports["top"]) as c:  # a secondary may ask delegate
        site_back, ttl = await c.call("delegate", ENT)
        assert site_back[0] == ENT and ttl > 0


async def test_a_secondary_registers_and_reports_for_its_own_code_only(net: Net):
    other = "88.201"
    other_site = net.topo.secondary(other).address
    before = net.top.store.get(net.top.key(f"0.NA/{other}.1"))
    async with as_node(CODE, net.logins, rpc_ports(net)["top"]) as c:
        with pytest.raises(errors.HandleError) as info:
            await c.call("register_prefixes", [f"{other}.1"],
                         [other, other_site.http_url, other_site.rpc_addr])
        assert info.value.code == errors.INSUFFICIENT_PERMISSIONS
        mine = net.topo.secondary(CODE).address
        with pytest.raises(errors.HandleError) as info:  # its own prefix, someone else's site
            await c.call("register_prefixes", [f"{CODE}.77"],
                         [CODE, other_site.http_url, other_site.rpc_addr])
        assert info.value.code == errors.INSUFFICIENT_PERMISSIONS
        assert await c.call("register_prefixes", [f"{CODE}.77"],
                            [CODE, mine.http_url, mine.rpc_addr]) == 1
    assert net.top.store.get(net.top.key(f"0.NA/{other}.1")) == before
    site, _ = net.top.delegate(f"{CODE}.77")
    assert site.rpc_addr == mine.rpc_addr
    with pytest.raises(errors.HandleError) as info:
        net.top.report_from(Caller(CODE, Role.SECONDARY), other, {"identifiers": 10**12})
    assert info.value.code == errors.INSUFFICIENT_PERMISSIONS
    with pytest.raises(errors.HandleError):  # nor as a recursive node
        net.top.report_from(Caller(CODE, Role.SECONDARY), "recursive@1", {"resolutions": 5})
    net.top.report_from(Caller(CODE, Role.SECONDARY), CODE, {"identifiers": 7})
    assert net.top.reports[CODE][0] == {"identifiers": 7}


async def test_register_prefixes_merges_and_the_node_login_keeps_working(net: Net):
    key = net.top.key(f"0.NA/{CODE}")
    login = net.logins["nodes"][CODE]
    identity = auth.parse_identity(login["username"])
    before = records.decode(net.top.store.get(key))[1]
    assert {"HS_VLIST", "HS_SECKEY", "HS_SITE"} <= {v.type for v in before}
    mine = net.topo.secondary(CODE).address
    async with as_node(CODE, net.logins, rpc_ports(net)["top"]) as c:
        assert await c.call("register_prefixes", [CODE, ENT],
                            [CODE, mine.http_url, mine.rpc_addr]) == 0
    after = records.decode(net.top.store.get(key))[1]
    assert [v for v in after if v.type != "HS_SITE"] == [v for v in before if v.type != "HS_SITE"]
    assert [v.type for v in after].count("HS_SITE") == 1
    assert net.top.authenticate(identity, login["secret"]) == identity
    # and over HTTP: the node admin still administers its prefix at the top-level node
    async with net.http.get(f"{net.top_url}/api/handles/0.NA/{CODE}?auth=true",
                            headers={"Authorization": auth.basic_header(login["username"],
                                                                        login["secret"])}) as r:
        assert r.status == 200
        assert "HS_SECKEY" in {v["type"] for v in (await r.json())["values"]}
    assert identifiers.NA_PREFIX == "0.NA"


def test_every_node_gets_its_own_key_and_restarts_keep_them():
    from topology.cluster import make_logins
    from topology.presets import get_preset
    topo = get_preset("mini")
    logins = make_logins(topo)
    names = {"top", "recursive", *(s.code for s in topo.secondaries)}
    assert set(logins["rpc"]) == names
    assert len({bytes.fromhex(k) for k in logins["rpc"].values()}) == len(names)  # all differ
    assert make_logins(topo, logins) == logins  # a restart keeps every key and secret
    old = {k: v for k, v in logins.items() if k != "rpc"}  # a data directory from before keys
    again = make_logins(topo, old)
    assert set(again["rpc"]) == names and again["nodes"] == logins["nodes"]
    Keyring.from_logins(again)  # usable by every host process
