"""The PUT fast path (``resolver.fast_put``) as a client sees it: for the same requests, the
bytes on the wire with it equal those without it (Date aside), errors included, the node's
counters and metrics move the same, and a registration is answered only once it is stored.

Each scenario runs against two nodes seeded alike, one behind ``[http] fast_path = 0``
(aiohttp alone), one behind ``fast_path = 1``: a registration changes its node, so each
server gets its own. Chunks are written one by one, each once the server has read the one
before (``test_fast_http.Arrivals``).
"""
from __future__ import annotations

import asyncio

from aiohttp import web
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ENT8, ENT8_SECRET, ENT9, ENT9_SECRET, NODE_ADMIN_SECRET, auth_headers
from resolver import auth, server
from resolver.config import HttpConfig
from resolver.fast_http import FastServer
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.web import NodeAPI
from test_fast_http import (Arrivals, arrivals, exchange, install,  # noqa: F401 (a fixture)
                            read_responses)

ADMIN = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")
GOOD = b'{"values":[{"index":1,"type":"URL","data":{"format":"string","value":"https://x.test/"}}]}'
ENT8_AUTH = "Authorization: " + auth_headers(ENT8, ENT8_SECRET)["Authorization"]
ENT9_AUTH = "Authorization: " + auth_headers(ENT9, ENT9_SECRET)["Authorization"]
WRONG_AUTH = "Authorization: " + auth_headers(ENT8, "not-the-secret")["Authorization"]
JSON = "Content-Type: application/json"


def put(path: str, body: bytes = GOOD, *headers: str, query: str = "?overwrite=false") -> bytes:
    """One PUT request: Host, ``headers``, Content-Length, then ``body``."""
    return (f"PUT /api/handles/{path}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(h + "\r\n" for h in headers)
            + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET /api/handles/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def seeded_node() -> SecondaryNode:
    node = SecondaryNode("gz", open_store("memory:"), ["88.118"], clock=lambda: 1_700_000_000)
    await node.bootstrap(NODE_ADMIN_SECRET)
    await node.create_prefix("88.118.8", identity=ADMIN, secret=ENT8_SECRET)
    await node.create_prefix("88.118.9", identity=ADMIN, secret=ENT9_SECRET)
    return node


class Servers:
    """Two nodes seeded alike: ``nodes[0]`` behind aiohttp alone, ``nodes[1]`` behind the
    fast path."""

    async def start(self) -> "Servers":
        self.nodes = [await seeded_node(), await seeded_node()]
        self.apis = [NodeAPI(n) for n in self.nodes]
        self.runners = [await server.serve(api, "127.0.0.1", 0, HttpConfig(fast_path=fast))
                        for fast, api in enumerate(self.apis)]
        assert type(self.runners[0].server) is web.Server
        assert type(self.runners[1].server) is FastServer
        self.ports = [server.bound_port(r) for r in self.runners]
        return self

    @property
    def answered(self) -> int:
        return self.runners[1].server.answered

    async def both(self, chunks: list[bytes], answers: int, arr: Arrivals) -> list[bytes]:
        return [await exchange(port, chunks, arr, answers=answers) for port in self.ports]

    def counters(self) -> list:
        return [(dict(n.stats), {op: [s.ok, s.codes, sum(s.buckets)] for op, s in
                                 api.metrics.requests.ops.items()})
                for n, api in zip(self.nodes, self.apis)]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        for node in self.nodes:
            await node.close()


async def test_registrations_and_their_errors_equal_bytes(arrivals):
    servers = await Servers().start()
    try:
        chunks = [put("88.118.8/A1", GOOD, ENT8_AUTH, JSON),             # 201
                  put("88.118.8/A1", GOOD, ENT8_AUTH, JSON),             # exists: 409
                  put("88.118.8/A1", GOOD, ENT8_AUTH, JSON, query="?overwrite=true"),  # 200
                  put("88.118.8/A2", GOOD, JSON),                        # anonymous
                  put("88.118.8/A3", GOOD, WRONG_AUTH, JSON),            # wrong secret
                  put("88.118.8/A4", GOOD, ENT9_AUTH, JSON),             # not its prefix
                  put("88.118.8/A5", b"{not json", ENT8_AUTH, JSON),
                  put("88.118.8/A6", b'{"values":[{"index":0,"type":"URL","data":"x"}]}',
                      ENT8_AUTH, JSON),                                  # bad value
                  put("88.118.8/A7", b'{"values":"x"}', ENT8_AUTH, JSON),
                  put("88.118.7/A8", GOOD, ENT8_AUTH, JSON),             # not homed here
                  put("0.NA/88.118.5", GOOD, ENT8_AUTH, JSON),           # a prefix record
                  put("88.118.8/A9", GOOD, "Authorization: Basic !!!", JSON),
                  put("88.118.8/B1", GOOD, ENT8_AUTH, "Connection: keep-alive", JSON),
                  put("88.118.8/B2", GOOD, ENT8_AUTH, "Accept: application/msgpack", JSON),
                  put("88.118.8/B3", GOOD, ENT8_AUTH, JSON, query="?overwrite=false&pretty"),
                  put("88.118.8/B4", GOOD, ENT8_AUTH, "Content-Type: text/json"),
                  put("88.118.8/B5", GOOD, ENT8_AUTH, JSON) + get("88.118.8/B5"),  # pipelined
                  get("88.118.8/A1"), put("88.118.8/B6", GOOD, ENT8_AUTH, JSON)]
        before = servers.answered
        plain, fast = await servers.both(chunks, 20, arrivals)
        assert plain == fast
        assert plain.count(b"HTTP/1.1 201 Created") == 7 and b"HTTP/1.1 200 OK" in plain
        for status in (b"400", b"401", b"403", b"409"):
            assert b"HTTP/1.1 " + status in plain
        assert servers.answered - before >= 8  # the fast path took the plain registrations
        assert servers.counters()[0] == servers.counters()[1]
        assert servers.nodes[1].store.get(b"88.118.8/B6") == servers.nodes[0].store.get(
            b"88.118.8/B6") is not None
    finally:
        await servers.close()


async def test_failed_logins_over_the_limit_equal_bytes(arrivals):
    servers = await Servers().start()
    try:
        limit = servers.nodes[0].config.auth.address_failures
        chunks = [put(f"88.118.8/W{i}", GOOD, WRONG_AUTH, JSON) for i in range(limit + 1)]
        chunks.append(put("88.118.8/OK", GOOD, ENT8_AUTH, JSON))
        plain, fast = await servers.both(chunks, len(chunks), arrivals)
        assert plain == fast and b"HTTP/1.1 429 " in plain and b"\r\nRetry-After: " in plain
        assert servers.counters()[0] == servers.counters()[1]
    finally:
        await servers.close()


async def test_answered_only_once_stored_and_in_order(arrivals):
    """The 201 is written after the store's commit returns; a GET arriving meanwhile is
    answered after it."""
    servers = await Servers().start()
    node = servers.nodes[1]
    gate, entered = asyncio.Event(), asyncio.Event()
    original = node.store.put_many

    async def slow(items, absent=()):
        entered.set()
        await gate.wait()
        return await original(items, absent)
    node.store.put_many = slow
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", servers.ports[1])
        before = servers.answered
        writer.write(put("88.118.8/SLOW", GOOD, ENT8_AUTH, JSON))
        await entered.wait()
        n = arrivals.count + 1
        writer.write(get("88.118.8/SLOW"))
        await arrivals.reach(n)
        assert servers.answered == before and node.store.get(b"88.118.8/SLOW") is None
        gate.set()
        out = await read_responses(reader, [b"PUT", b"GET"])
        writer.close()
        assert out.index(b"201 Created") < out.index(b"200 OK")
        assert servers.answered - before >= 1 and b"https://x.test/" in out
    finally:
        await servers.close()


_SUFFIX = st.sampled_from(["N1", "N2", "a%20b", ".dot", "x/./y", "x/y", "", "%zz", "A-_~!$"])
_PREFIX = st.sampled_from(["88.118.8/", "88.118.9/", "0.NA/88.118.8", "88.7/", ""])
_QUERY = st.sampled_from(["?overwrite=false", "?overwrite=true", "", "?overwrite=maybe",
                          "?overwrite=false&index=1", "?index=1&overwrite=true"])
_AUTH = st.sampled_from([ENT8_AUTH, ENT9_AUTH, WRONG_AUTH, "Authorization: Basic !!!",
                         "Authorization: Bearer x", None])
_TYPE = st.sampled_from([JSON, "Content-Type: text/json", "Content-Type: application/msgpack",
                         None])
_BODY = st.sampled_from([GOOD, b"not json", b"[]", b'{"values":"x"}', b"{}",
                         b'{"values":[{"index":1,"type":"URL"}]}',
                         b'[{"index":2,"type":"EMAIL","data":"a@x.test","ttl":-1}]'])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(_PREFIX, _SUFFIX, _QUERY, _AUTH, _TYPE, _BODY),
                         min_size=1, max_size=6))
def test_generated_registrations_equal_bytes(requests, monkeypatch):
    async def run():
        arr = Arrivals()
        with monkeypatch.context() as m:
            install(m.setattr, arr)
            servers = await Servers().start()
            try:
                chunks = [put(pre + suffix, body, *[h for h in (creds, ctype) if h],
                              query=query)
                          for pre, suffix, query, creds, ctype, body in requests]
                chunks += chunks  # again: now some exist
                plain, fast = await servers.both(chunks, len(chunks), arr)
                assert plain == fast
                assert servers.counters()[0] == servers.counters()[1]
            finally:
                await servers.close()
    asyncio.run(run())
