"""Mirrors (issue 11 parts 2 and 4): a mirror resolves what its primary wrote, refuses every
write naming the primary, only a primary's own mirrors may read its log, HS_SITE lists the
primary and its mirrors, and a standby top-level node answers ``delegate``."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from conftest import basic_token
from resolver import auth, errors, record_input, server
from resolver.config import Config, HttpConfig
from resolver.identifiers import make_key
from resolver.mirror import MirrorNode, WriteRefused
from resolver.nodes import SecondaryNode
from resolver.replication import ReadLog, digest
from resolver.resolution import Site
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import Caller, Keyring, Trust, role_of
from resolver.store import open_store
from resolver.top import TopNode
from resolver.web import NodeAPI
from benchmarks.procs import free_port

pytestmark = pytest.mark.timeout(120)
NAMES = ["top", "top~Beijing", "recursive", "88.118", "88.118~Beijing", "88.119~Shanghai"]
KEYS = Keyring({name: bytes([i + 1]) * 32 for i, name in enumerate(NAMES)})
PRIMARY_HTTP = "http://127.0.0.1:20001"
SECRET = "node-secret"
ADMIN = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")
RECURSIVE = Caller("recursive", role_of("recursive"))


class Pair:
    """A primary secondary node serving RPC, and a mirror of it on its own LMDB store."""

    def __init__(self, tmp: Path) -> None:
        # a short long-poll: a test's own steps wait for the background loop's poll to end
        self.tmp, self.config = tmp, Config().with_values("test", {"replication":
                                                                   {"poll_wait": 0.2}})

    async def start(self) -> "Pair":
        self.primary = SecondaryNode("88.118", open_store(f"lmdb:{self.tmp / 'primary'}"),
                                     ["88.118"], self.config)
        await self.primary.bootstrap(SECRET)
        self.rpc = await RpcServer(self.primary.rpc_handlers(), self.config.rpc,
                                   trust=Trust("88.118", KEYS)).start("127.0.0.1", free_port())
        self.mirror = self.open_mirror()
        return self

    @property
    def primary_rpc(self) -> str:
        return f"127.0.0.1:{self.rpc.port}"

    def open_mirror(self) -> MirrorNode:
        inner = SecondaryNode("88.118", open_store(f"lmdb:{self.tmp / 'mirror'}"), ["88.118"],
                              self.config)
        mirror = MirrorNode("88.118~Beijing", inner, self.primary_rpc, PRIMARY_HTTP,
                            self.config, trust=Trust("88.118~Beijing", KEYS))
        return mirror

    async def catch_up(self, mirror: MirrorNode | None = None) -> None:
        """Step the mirror (its real RPC path, no background task) until it is caught up."""
        mirror = mirror or self.mirror
        for _ in range(1000):
            await mirror.step(0)
            if mirror.follower.caught_up:
                return
        raise AssertionError("the mirror never caught up")

    async def write(self, text: str, url: str) -> None:
        handle = self.primary.parse(text)
        values = record_input.values_from_json([{"index": 1, "type": "URL",
                                            "data": {"format": "string", "value": url}}],
                                          now=0, max_data=1 << 16)
        await self.primary.put(handle, values, identity=ADMIN)

    async def close(self) -> None:
        await self.mirror.close()
        await self.rpc.close()
        await self.primary.close()


@pytest.fixture
async def pair(tmp_path):
    p = await Pair(tmp_path).start()
    await p.mirror.start()  # the background loop; tests also step it by hand
    yield p
    await p.close()


@pytest.fixture
async def mirror_http(pair):
    srv = RawTestServer(NodeAPI(pair.mirror), host="127.0.0.1")
    await srv.start_server(**server.server_limits(HttpConfig()))
    cli = TestClient(srv)
    await cli.start_server()
    yield cli
    await cli.close()


async def converged(pair: Pair) -> None:
    """Wait (bounded) until the background follower has the primary's content."""
    for _ in range(200):
        if digest(pair.mirror.store) == digest(pair.primary.store):
            return
        await asyncio.wait_for(pair.mirror.store.commit_signal().wait(), 10)
    raise AssertionError("the mirror did not converge")


async def test_a_mirror_resolves_what_its_primary_wrote_and_reports_its_lag(pair, mirror_http):
    await pair.write("88.118/SN-1", "https://example.com/1")
    await converged(pair)
    resp = await mirror_http.get("/api/handles/88.118/SN-1")
    assert resp.status == 200
    assert (await resp.json())["values"][0]["data"]["value"] == "https://example.com/1"
    await pair.write("88.118/SN-1", "https://example.com/changed")  # followed, not dumped
    await converged(pair)
    resp = await mirror_http.get("/api/handles/88.118/SN-1")
    assert (await resp.json())["values"][0]["data"]["value"] == "https://example.com/changed"
    rpc = pair.mirror.rpc_handlers()
    assert set(rpc) == {"resolve"}  # reads only: no stats, no replication of its own
    assert b"https://example.com/changed" in rpc["resolve"].fn(RECURSIVE, "88.118/SN-1")
    await pair.catch_up()
    text = (await (await mirror_http.get("/metrics")).text())
    assert 'idsim_replication_lag_seconds{node="88.118~Beijing"} 0.0' in text


async def test_a_restarted_mirror_resumes_from_its_position_and_converges(tmp_path):
    pair = await Pair(tmp_path).start()
    try:
        await pair.write("88.118/A", "https://a")
        await pair.catch_up()
        await pair.mirror.close()
        await pair.write("88.118/B", "https://b")  # while the mirror is down
        pair.mirror = pair.open_mirror()
        assert isinstance(pair.mirror.follower.need(), ReadLog)  # no new dump
        await pair.catch_up()
        assert digest(pair.mirror.store) == digest(pair.primary.store)
        assert pair.mirror.follower.redumps == 0
    finally:
        await pair.close()


async def test_a_partition_between_mirror_and_primary_stops_replication_until_lifted(tmp_path):
    """The mirror calls its primary through the WAN link between their cities
    (``resolver.link``): a partition (a fault) cuts replication like any other call, and the
    mirror converges once it is lifted."""
    from resolver.clock import FakeClock
    from resolver.errors import PeerUnavailable
    from resolver.link import Links
    cut, clock = {"on": True}, FakeClock()
    links = Links(None, clock, {}, blocked=lambda src, dst: cut["on"])
    pair = await Pair(tmp_path).start()
    try:
        pair.mirror = MirrorNode("88.118~Beijing", pair.mirror.node, pair.primary_rpc,
                                 PRIMARY_HTTP, pair.config, clock=clock,
                                 trust=Trust("88.118~Beijing", KEYS),
                                 link=links.between("88.118~Beijing", "88.118"))
        await pair.write("88.118/PART-1", "https://a")
        with pytest.raises(PeerUnavailable):
            await pair.mirror.step(0)
        assert pair.mirror.store.get(make_key("88.118/PART-1", False)) is None
        cut["on"] = False
        clock.advance(pair.config.rpc.retry_after)  # the client's wait before connecting again
        await pair.catch_up()
        assert digest(pair.mirror.store) == digest(pair.primary.store)
    finally:
        await pair.close()


@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/api/handles/88.118/SN-1", [{"index": 1, "type": "URL",
                                          "data": {"format": "string", "value": "x"}}]),
    ("DELETE", "/api/handles/88.118/SN-1", None),
    ("POST", "/api/batch/register", {"88.118/SN-2": []}),
    ("POST", "/api/admin/prefixes", {"prefix": "88.118.9"}),
])
async def test_a_mirror_refuses_every_write_naming_its_primary(pair, mirror_http, method, path,
                                                                body):
    await pair.write("88.118/SN-1", "https://example.com/1")
    await converged(pair)
    before = digest(pair.mirror.store)
    resp = await mirror_http.request(method, path, json=body, headers={
        "Authorization": basic_token(f"{auth.SECRET_INDEX}:0.NA/88.118", SECRET)})
    doc = await resp.json()
    assert resp.status == 403 and doc["responseCode"] == errors.SERVER_NOT_RESP
    assert doc["primary"] == PRIMARY_HTTP and PRIMARY_HTTP in doc["message"]
    assert digest(pair.mirror.store) == before


async def test_a_mirrors_methods_refuse_writes_too(pair):
    handle = pair.mirror.parse("88.118/SN-1")
    with pytest.raises(WriteRefused) as refused:
        await pair.mirror.put(handle, [], identity=ADMIN)
    assert refused.value.body()["primary"] == PRIMARY_HTTP
    for call in (pair.mirror.delete(handle, identity=ADMIN),
                 pair.mirror.register_many([], identity=ADMIN),
                 pair.mirror.create_prefix("88.118.9", identity=ADMIN)):
        with pytest.raises(WriteRefused):
            await call


@pytest.mark.parametrize("who", ["88.119~Shanghai", "recursive", "top"])
async def test_only_a_primarys_own_mirrors_may_read_its_log(pair, who):
    for method, params in (("repl_dump", [None]), ("repl_log", [b"", 0, 0])):
        async with RpcClient("127.0.0.1", pair.rpc.port, trust=Trust(who, KEYS)) as client:
            with pytest.raises(errors.HandleError) as refused:
                await client.call(method, *params)
            assert refused.value.code == errors.INSUFFICIENT_PERMISSIONS
    async with RpcClient("127.0.0.1", pair.rpc.port,
                         trust=Trust("88.118~Beijing", KEYS)) as client:
        assert (await client.call("repl_dump", None))[3] is False  # its own mirror may


# ---------------------------------------------------------------------- the top-level node
MIRRORS = (("http://127.0.0.1:20011", "127.0.0.1:21011"),
           ("https://127.0.0.1:20012", "127.0.0.1:21012"))
SITE = Site("88.118", "http://127.0.0.1:20001", "127.0.0.1:21001", MIRRORS)


async def test_hs_site_lists_the_primary_and_its_mirrors_and_delegate_returns_them():
    top = TopNode("top", open_store("memory:"), "88", Config())
    await top.bootstrap("top-secret")
    await top.add_node("88.118", SITE, SECRET)
    sites = [v for v in top.values_of("0.NA/88.118") if v.type == "HS_SITE"]
    assert [v.value["primaryMask"]["primary"] for v in sites] == [True, False, False]
    assert top.delegate("88.118.8") == (SITE, top.config.cache.site_ttl)
    caller = Caller("88.118", role_of("88.118"))
    await top.register_prefixes(caller, ["88.118.8"], [SITE.prefix, SITE.http_url,
                                                       SITE.rpc_addr])
    site, _ = top.delegate("88.118.8.1")
    assert site.prefix == "88.118.8" and site.mirrors == MIRRORS  # its node's mirrors too
    wire = top.rpc_handlers()["delegate"].fn(RECURSIVE, "88.118.8")[0]
    assert Site.from_wire(wire) == site


async def test_a_standby_top_level_node_answers_delegate_from_the_replicated_records(tmp_path):
    config = Config()
    top = TopNode("top", open_store(f"lmdb:{tmp_path / 'top'}"), "88", config)
    await top.bootstrap("top-secret")
    await top.add_node("88.118", SITE, SECRET)
    rpc = await RpcServer(top.rpc_handlers(), config.rpc, trust=Trust("top", KEYS)).start(
        "127.0.0.1", free_port())
    standby = MirrorNode("top~Beijing", TopNode("top", open_store(f"lmdb:{tmp_path / 'sb'}"),
                                                "88", config),
                         f"127.0.0.1:{rpc.port}", "http://127.0.0.1:20000", config,
                         trust=Trust("top~Beijing", KEYS))
    try:  # stepped by hand (no background loop)
        for _ in range(1000):
            await standby.step(0)
            if standby.follower.caught_up:
                break
        handlers = standby.rpc_handlers()
        assert set(handlers) == {"resolve", "delegate"}  # registrations go to the primary
        wire, ttl = handlers["delegate"].fn(RECURSIVE, "88.118.8")
        assert Site.from_wire(wire) == SITE
        with pytest.raises(WriteRefused):
            await standby.register_prefixes(Caller("88.118", role_of("88.118")), [], [])
    finally:
        await standby.close()
        await rpc.close()
        await top.close()


# ---------------------------------------------------------------------- a primary killed
PRIMARY_SCRIPT = """
import asyncio, sys
from resolver import server
from resolver.config import Config
from resolver.nodes import SecondaryNode
from resolver.rpc import RpcServer
from resolver.rpc_auth import Keyring, Trust
from resolver.store import open_store
from resolver.web import NodeAPI

async def main(data, http_port, rpc_port, keys):
    config = Config()
    node = SecondaryNode("88.118", open_store("lmdb:" + data), ["88.118"], config)
    await node.bootstrap(%r)
    await server.serve(NodeAPI(node), "127.0.0.1", int(http_port), config.http)
    keyring = Keyring({k: bytes.fromhex(v) for k, v in (p.split("=") for p in keys.split(","))})
    await RpcServer(node.rpc_handlers(), config.rpc, trust=Trust("88.118", keyring)).start(
        "127.0.0.1", int(rpc_port))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
""" % SECRET


async def test_a_sigkilled_primary_loses_no_acknowledged_write_and_its_mirror_converges(
        tmp_path):
    import subprocess
    import sys

    import aiohttp
    http_port, rpc_port = free_port(), free_port()
    keys = ",".join(f"{n}={KEYS.key(n).hex()}" for n in ("88.118", "88.118~Beijing"))
    args = [sys.executable, "-c", PRIMARY_SCRIPT, str(tmp_path / "primary"), str(http_port),
            str(rpc_port), keys]
    loop = asyncio.get_running_loop()

    async def launch() -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 60)
        assert line.strip() == "ready"
        return proc
    proc = await launch()
    config = Config().with_values("test", {"replication": {"poll_wait": 0.5, "retry": 0.1}})
    mirror = MirrorNode("88.118~Beijing", SecondaryNode(
        "88.118", open_store(f"lmdb:{tmp_path / 'mirror'}"), ["88.118"], config),
        f"127.0.0.1:{rpc_port}", f"http://127.0.0.1:{http_port}", config,
        trust=Trust("88.118~Beijing", KEYS))
    await mirror.start()
    acked: list[str] = []
    headers = {"Authorization": basic_token(f"{auth.SECRET_INDEX}:0.NA/88.118", SECRET)}
    body = [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x"}}]
    try:
        async with aiohttp.ClientSession() as http:
            async def writer(w: int) -> None:
                for i in range(1000):
                    text = f"88.118/w{w}-{i}"
                    try:
                        async with http.put(f"http://127.0.0.1:{http_port}/api/handles/{text}",
                                            json=body, headers=headers) as resp:
                            if resp.status in (200, 201):
                                acked.append(text)
                    except aiohttp.ClientError:
                        return  # the primary died under this write: not acknowledged
            writers = [asyncio.ensure_future(writer(w)) for w in range(8)]
            while len(acked) < 200 and not all(w.done() for w in writers):  # kill it
                # mid-stream, with writes in flight
                await asyncio.wait(writers, timeout=0.05)
            proc.kill()
            proc.wait(timeout=30)
            await asyncio.wait_for(asyncio.gather(*writers), 60)
        proc = await launch()  # the same data directory and ports
        primary = open_store(f"lmdb:{tmp_path / 'primary'}")
        try:
            missing = [t for t in acked if primary.get(make_key(t, False)) is None]
            assert acked and not missing  # every acknowledged write survived the SIGKILL
            last = primary.log_read(2**63 - 1, 0).last
            for _ in range(600):  # bounded: the mirror reconnects and catches up
                if mirror.follower.position.seq >= last:
                    break
                await asyncio.wait_for(mirror.store.commit_signal().wait(), 30)
            assert digest(mirror.store) == digest(primary)
        finally:
            await primary.close()
    finally:
        proc.kill()
        await mirror.close()
