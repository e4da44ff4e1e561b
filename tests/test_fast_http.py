"""The HTTP fast path (``resolver.fast_http``) as a client sees it: for the same requests, the
bytes on the wire with it equal those without it (Date aside), and the metrics count the same.

Each scenario runs against two servers over one node: ``[http] fast_path = 0`` (aiohttp alone)
first, then ``fast_path = 1``. Every chunk is written only after the server read the previous
one (``Arrivals``: counted in ``data_received``), so chunks reach the server as written.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ENT8_SECRET, NODE_ADMIN_SECRET, ent8_headers
from network_fixtures import net  # noqa: F401 (a fixture)
from resolver import auth, fast_http, server
from resolver.access_log import access_logs
from resolver.config import Config, HttpConfig
from resolver.mirror import MirrorNode
from resolver.record_input import values_from_json
from resolver.fast_http import FastHandler, FastServer
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.web import NodeAPI
from topology import pki

HOST = b"Host: 127.0.0.1\r\n"
VALUES = [{"index": 1, "type": "URL", "data": {"format": "string", "value": "http://x.test/"}}]
SEEDED = ["88.118.8/SN-1", "88.118.8/é漢字", "88.118.8/a b%c", "88.118.8/x/y", "88.118.8/.dot"]


@dataclass
class Arrivals:
    """How many chunks the servers' protocols have read (each read sets ``event``)."""
    count: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def reach(self, n: int) -> None:
        while self.count < n:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), 10)


@pytest.fixture
def arrivals(monkeypatch):
    install(monkeypatch.setattr, arr := Arrivals())
    return arr


def install(setattr_, arr: Arrivals) -> None:
    for cls in (FastHandler, RequestHandler):
        def read(self, data, original=cls.data_received, cls=cls):
            if data and type(self) is cls:
                arr.count += 1
                arr.event.set()
            original(self, data)
        setattr_(cls, "data_received", read)


def get(target: str, *headers: str, method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\n".encode() + HOST + "".join(
        h + "\r\n" for h in headers).encode() + b"\r\n"


def methods(chunks: list[bytes]) -> list[bytes]:
    return re.findall(rb"(?:^|\r\n\r\n)([A-Z]+) /", b"".join(chunks))


async def read_responses(reader: asyncio.StreamReader, expect: list[bytes]) -> bytes:
    """The responses to the requests ``expect`` (their methods) in order, up to a close."""
    out = b""
    for method in expect:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except asyncio.IncompleteReadError as exc:
            return out + exc.partial
        out += head
        length = re.search(rb"\r\nContent-Length: (\d+)", head)
        if method != b"HEAD" and length:
            out += await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
    return out


async def exchange(port: int, chunks: list[bytes], arr: Arrivals, before_read=None,
                   answers: int | None = None) -> bytes:
    """The answers to ``chunks`` (one per request head in them, or ``answers`` answers with a
    body each), Date masked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            n = arr.count + 1
            writer.write(chunk)
            await arr.reach(n)
        if before_read is not None:
            before_read()
        expect = methods(chunks) if answers is None else [b"PUT"] * answers
        return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -",
                      await read_responses(reader, expect))
    finally:
        writer.close()


@dataclass
class Pair:
    """One node behind two servers: aiohttp alone (``plain``) and with the fast path."""
    node: object
    apis: tuple
    runners: tuple
    ports: tuple

    @property
    def answered(self) -> int:
        return self.runners[1].server.answered

    async def both(self, chunks: list[bytes], arr: Arrivals) -> tuple[bytes, bytes]:
        """The responses to ``chunks`` from each server; the node's counters moved the same."""
        c0 = node_counters(self.node)
        plain = await exchange(self.ports[0], chunks, arr)
        c1 = node_counters(self.node)
        fast = await exchange(self.ports[1], chunks, arr)
        c2 = node_counters(self.node)
        self.moved = [{k: b[k] - a.get(k, 0) for k in b} for a, b in ((c0, c1), (c1, c2))]
        return plain, fast

    def counts(self) -> list[dict]:  # per op: responses by code, durations observed
        return [{op: [s.ok, s.codes, sum(s.buckets)] for op, s in api.metrics.requests.ops
                 .items()} for api in self.apis]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def node_counters(node) -> dict:
    """The node's stats and its caches' counters (what ``GET /metrics`` shows of them)."""
    out = {f"stats.{k}": v for k, v in node.stats.items()}
    caches = [("answers", node.caches.answers)] if hasattr(node, "caches") else []
    caches += [("rendered", node.answers)] if getattr(node, "answers", None) else []
    for name, cache in caches:
        for attr in ("hits", "misses", "stale_hits", "negative_hits", "stale", "evictions"):
            if hasattr(cache, attr):
                out[f"{name}.{attr}"] = getattr(cache, attr)
    return out


async def serve_pair(node) -> Pair:
    apis = NodeAPI(node), NodeAPI(node)
    runners = (await server.serve(apis[0], "127.0.0.1", 0, HttpConfig(fast_path=0)),
               await server.serve(apis[1], "127.0.0.1", 0, HttpConfig(fast_path=1)))
    assert type(runners[0].server) is web.Server and type(runners[1].server) is FastServer
    return Pair(node, apis, runners, tuple(server.bound_port(r) for r in runners))


async def seeded_node() -> SecondaryNode:
    node = SecondaryNode("gz", open_store("memory:"), ["88.118"])
    await node.bootstrap(NODE_ADMIN_SECRET)
    await node.create_prefix("88.118.8", identity=auth.Identity(auth.SECRET_INDEX, "0.NA/88.118"),
                             secret=ENT8_SECRET)
    values = values_from_json(VALUES, now=1_700_000_000, max_data=1 << 16)
    for text in SEEDED:
        await node.put(node.parse(text), values, identity=auth.Identity(300, "0.NA/88.118.8"))
    return node


def target(text: str) -> str:
    return "/api/handles/" + quote(text, safe="/:@")


async def test_keep_alive_mix_equal_bytes_and_metrics(arrivals):
    node = await seeded_node()
    pair = await serve_pair(node)
    try:
        hot = target(SEEDED[0])
        chunks = [get(hot), get(hot), get(hot, "Accept: application/msgpack"),
                  get(hot, "Authorization: " + ent8_headers()["Authorization"]),
                  get(hot + "?type=URL"), get(hot, method="HEAD"), get(hot),
                  get("/api/handles/88.118.8/NOPE"), get(hot, "Connection: keep-alive"),
                  get(target(SEEDED[1])), get(target(SEEDED[1])), get("/healthz"), get(hot),
                  get(hot, "Content-Length: 0"), get(hot, "Connection: close")]
        plain, fast = await pair.both(chunks, arrivals)
        assert plain == fast
        assert plain.count(b"HTTP/1.1 200 OK") == 14  # all but NOPE
        assert pair.answered >= 5  # the plain hot GETs after the first
        counts = pair.counts()
        assert counts[0] == counts[1]
        plain, fast = await pair.both(chunks, arrivals)  # from the same cache state
        assert plain == fast and pair.moved[0] == pair.moved[1]
        assert pair.moved[0]["rendered.misses"] and pair.moved[0]["rendered.hits"]
    finally:
        await pair.close()
        await node.close()


async def test_pipelined_and_split_requests(arrivals):
    node = await seeded_node()
    pair = await serve_pair(node)
    try:
        hot = get(target(SEEDED[0]))
        await pair.both([hot], arrivals)  # warm the answer
        for chunks, answers in (([hot + hot + hot], 3), ([hot[:20], hot[20:], hot], 2),
                                ([hot, hot[:-2], b"\r\n", hot], 3), ([hot[:-2], hot], 0),
                                ([hot + get("/api/handles/88.118.8/NOPE"), hot], 3)):
            before = pair.answered
            plain, fast = await pair.both(chunks, arrivals)
            assert plain == fast and plain.count(b"HTTP/1.1 ") == answers
            # only a chunk after aiohttp read whole requests may be answered below it
            assert pair.answered - before <= (1 if chunks[0] == hot else 0)
        assert pair.counts()[0] == pair.counts()[1]
    finally:
        await pair.close()
        await node.close()


async def test_order_holds_behind_a_slow_resolve(arrivals):
    """A hot GET that arrives while a slow resolve is in progress is answered after it."""
    node = await seeded_node()
    pair = await serve_pair(node)
    gate = asyncio.Event()
    original = node.resolve

    async def slow(handle, **kw):
        if handle.text.endswith("SLOW"):
            await gate.wait()
        return await original(handle, **kw)
    node.resolve = slow
    try:
        hot = get(target(SEEDED[0]))
        await pair.both([hot], arrivals)
        out = []
        for port in pair.ports:
            gate.clear()
            chunks = [get("/api/handles/88.118.8/SLOW"), hot]
            task = asyncio.ensure_future(exchange(port, chunks, arrivals))
            await arrivals.reach(arrivals.count + 2)
            gate.set()
            out.append(await task)
        assert out[0] == out[1] and out[0].index(b"404") < out[0].index(b"200 OK")
    finally:
        await pair.close()
        await node.close()


_PIECES = st.sampled_from(["SN-1", "é漢字", "a b%c", "x/y", ".dot", "%zz", "%", "..", ".", "",
                           "%2F", "%2e", "a?b", "a#b", "hdl:", "\u2028", "\x7f", "A"])
TEXTS = st.builds(lambda pre, parts: pre + "/".join(parts) if pre else "/".join(parts),
                  st.sampled_from(["88.118.8/", "88.118.9/", "0.NA/", "hdl:88.118.8/",
                                   "88.118.7/", "HDL:88.118.8/", ""]),
                  st.lists(_PIECES, min_size=1, max_size=3))


def encode(text: str, how: int) -> str:
    if how == 0:
        return quote(text, safe="/:@")
    if how == 1:
        return quote(text, safe="/:@%")  # '%' as typed: valid or not
    return quote(text, safe="")


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.tuples(TEXTS, st.integers(0, 2)), min_size=1, max_size=6))
def test_generated_handles_equal_bytes(texts, monkeypatch):
    async def run():
        arr = Arrivals()
        with monkeypatch.context() as m:
            install(m.setattr, arr)
            node = await seeded_node()
            pair = await serve_pair(node)
            try:
                chunks = [get("/api/handles/" + encode(text, how)) for text, how in texts]
                chunks += chunks + [get(target(SEEDED[0]))] * 2
                plain, fast = await pair.both(chunks, arr)
                assert plain == fast
                assert pair.answered >= 1
                assert pair.counts()[0] == pair.counts()[1]
                plain, fast = await pair.both(chunks, arr)  # from the same cache state
                assert plain == fast and pair.moved[0] == pair.moved[1]
            finally:
                await pair.close()
                await node.close()
    asyncio.run(run())


async def test_recursive_node_equal_bytes(net, arrivals):  # noqa: F811
    pair = await serve_pair(net.recursive)
    try:
        hot = get("/api/handles/0.NA/88.118.8")
        miss = get("/api/handles/88.118.8/NOPE")
        chunks = [hot, hot, get("/api/handles/hdl:0.NA/88.118.8"), miss, miss, hot,
                  get("/api/handles/0.na/88.118.8"), get("/api/handles/0.NA%2F88.118.8")]
        plain, fast = await pair.both(chunks, arrivals)
        assert plain == fast and pair.answered >= 2
        await pair.both(chunks, arrivals)  # the same state (cache entries) for each server
        plain, fast = await pair.both(chunks, arrivals)
        assert plain == fast and pair.moved[0] == pair.moved[1]
        assert pair.moved[0]["answers.misses"] and pair.moved[0]["answers.negative_hits"]
        assert pair.counts()[0] == pair.counts()[1]
    finally:
        await pair.close()


# ------------------------------------------------------------------ when it stays out


async def test_fault_access_log_tls_and_switch_off(arrivals, tmp_path):
    node = await seeded_node()
    pair = await serve_pair(node)
    try:
        hot = get(target(SEEDED[0]))
        await pair.both([hot], arrivals)
        api = pair.apis[1]
        api.dispatch = type(api).dispatch.__get__(api)  # how fault_inject wraps a node
        before = pair.answered
        await exchange(pair.ports[1], [hot, hot], arrivals)
        assert pair.answered == before
        del api.dispatch
        await exchange(pair.ports[1], [hot, hot], arrivals)
        assert pair.answered == before + 2
        assert fast_http.server_class(NodeAPI(node), HttpConfig(fast_path=0)) is web.Server
        files = pki.ensure(pki.directory(tmp_path), ["127.0.0.1"], dt.datetime.now(dt.UTC))
        log = access_logs(tmp_path / "access.jsonl", HttpConfig())("88.118")
        for kw, scheme, ssl in (({"access_log": log}, "http", False),
                                ({"ssl_context": pki.server_context(files)}, "https",
                                 pki.client_context(files.ca_cert))):
            runner = await server.serve(NodeAPI(node), "127.0.0.1", 0, **kw)
            url = f"{scheme}://127.0.0.1:{server.bound_port(runner)}{target(SEEDED[0])}"
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as s:
                    for _ in range(3):
                        async with s.get(url) as resp:
                            assert resp.status == 200
                assert runner.server.answered == 0 and type(runner.server) is FastServer
            finally:
                await runner.cleanup()
        assert len((tmp_path / "access.jsonl").read_text().splitlines()) == 3
    finally:
        await pair.close()
        await node.close()


def test_other_aiohttp_falls_back(monkeypatch, caplog):
    node = SecondaryNode("gz", open_store("memory:"), ["88.118"])
    monkeypatch.setattr(aiohttp, "__version__", "3.15.0")
    assert fast_http.missing() is not None
    assert fast_http.server_class(NodeAPI(node), HttpConfig()) is web.Server
    assert "fast path off" in caplog.text


async def test_keep_alive_timer(arrivals):
    """A connection the fast path keeps busy stays open; an idle one is closed."""
    node = await seeded_node()
    api = NodeAPI(node)
    runner = await server.serve(api, "127.0.0.1", 0, HttpConfig(keepalive=1.0))
    try:
        port = server.bound_port(runner)
        hot = get(target(SEEDED[0]))
        await exchange(port, [hot], arrivals)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(hot)
        await read_responses(reader, [b"GET"])
        conn = runner.server.connections[-1]
        conn._next_keepalive_close_time = conn._loop.time() - 1  # as if long idle...
        before = runner.server.answered
        writer.write(hot)  # ... then used, by the fast path
        await read_responses(reader, [b"GET"])
        assert runner.server.answered == before + 1
        conn._process_keepalive()  # the timer fires now: the fast answer pushed it past now
        assert conn.transport is not None
        conn._next_keepalive_close_time = conn._loop.time()
        conn._process_keepalive()  # idle past its time: closed, as aiohttp closes it
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await runner.cleanup()
        await node.close()


async def test_mirror_reads_through_the_fast_path(arrivals):
    """A mirror answers the hot GET as its node does; its writes stay refused (aiohttp's)."""
    node = await seeded_node()
    mirror = MirrorNode("gz~Shanghai", node, "127.0.0.1:1", "http://127.0.0.1:2", Config())
    pair = await serve_pair(mirror)
    pair.node = node  # its counters are the node's
    try:
        hot = get(target(SEEDED[0]))
        put = get(target(SEEDED[0]), "Content-Length: 0", method="PUT")
        chunks = [hot, hot, put, hot]
        plain, fast = await pair.both(chunks, arrivals)
        assert plain == fast and pair.answered >= 2 and b"http://127.0.0.1:2" in plain
    finally:
        await pair.close()
        await node.close()

