"""Several processes serving one node on one port (``SO_REUSEPORT``), as ``idsim node
--processes 2`` runs it: both answer, they share one LMDB store (a write through one is read
through the other, a changed secret counts in the other at once), a scrape of the port counts
both processes' requests; and ``idsim up`` spreads every node over ``default_processes()``.

A keep-alive connection stays with the process that accepted it, and ``/healthz`` names that
process (``boot``), so connections are sorted by process (new ones until both are found:
bounded, no sleeps).
"""
from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.procs import free_port
from resolver.config import AuthConfig
from resolver.roles import Role
from topology import cli, cluster
from topology.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
ENT = "88.118.8"
HANDLES = "/api/handles/"
DEADLINE = 60.0  # s for the node to start and for a scrape to show both processes


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class Node:
    """An ``idsim node --processes 2`` subprocess and a connection to each of its processes."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.data = tmp / "node"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "node", "--code", "88.118", "--enterprise",
             ENT, "--demo", "10", "--port", str(self.port), "--data", str(self.data),
             "--processes", "2", "--set", "metrics.share_every=0.2"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL)
        out = []
        for line in self.proc.stdout:  # ends at the banner (both processes serve) or at exit
            out.append(line)
            if "serving http://" in line:
                break
        assert "2 processes" in "".join(out), "".join(out)
        self.conns = self._one_per_process(2)
        login = json.loads((self.data / "logins.json").read_text())["enterprises"][0]
        self.user, self.secret = login["username"], login["secret"]

    def _one_per_process(self, want: int) -> list[http.client.HTTPConnection]:
        found: dict[str, http.client.HTTPConnection] = {}
        for _ in range(200):  # P(200 connections all on one of 2 processes) ~ 2**-199
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            boot = self.get(conn, "/healthz")[1]["boot"]
            if boot in found:
                conn.close()
            else:
                found[boot] = conn
            if len(found) == want:
                return list(found.values())
        raise AssertionError(f"connections reached {len(found)} process(es), not {want}")

    @staticmethod
    def request(conn, method: str, path: str, body: dict | None = None,
                auth: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {})
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data.startswith(b"{") else {"text": data}

    def get(self, conn, path: str) -> tuple[int, dict]:
        return self.request(conn, "GET", path)

    def stop(self) -> None:
        for conn in getattr(self, "conns", ()):
            conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node.__new__(Node)
    try:
        n.__init__(tmp_path_factory.mktemp("processes"))
        yield n
    finally:
        n.stop()


def url_value(text: str) -> dict:
    return {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": text}}]}


def test_two_processes_on_one_port_both_answer(node):
    for conn in node.conns:
        status, doc = node.get(conn, f"/api/handles/{ENT}/SN000000000")
        assert status == 200 and doc["handle"].upper() == f"{ENT}/SN000000000"


def test_a_write_in_one_process_is_read_in_the_other(node):
    a, b = node.conns
    auth = _basic(node.user, node.secret)
    status, _ = node.request(a, "PUT", f"/api/handles/{ENT}/CROSS-1",
                             url_value("https://ex.com/one"), auth)
    assert status in (200, 201)
    status, doc = node.get(b, f"/api/handles/{ENT}/CROSS-1")
    assert status == 200 and doc["values"][0]["data"]["value"] == "https://ex.com/one"
    status, _ = node.request(b, "DELETE", f"/api/handles/{ENT}/CROSS-1", auth=auth)
    assert status == 200
    assert node.get(a, f"/api/handles/{ENT}/CROSS-1")[0] == 404


def test_a_secret_changed_in_one_process_counts_in_the_other_at_once(node):
    a, b = node.conns
    old, new = _basic(node.user, node.secret), _basic(node.user, "a-new-secret-0123456789")
    # b has logged in with the old secret (and remembers that decision)
    assert node.request(b, "PUT", f"/api/handles/{ENT}/SECRET-1", url_value("https://ex.com/1"),
                        old)[0] in (200, 201)
    status, doc = node.request(a, "PUT", f"/api/handles/0.NA/{ENT}?index=300", {"values": [
        {"index": 300, "type": "HS_SECKEY",
         "data": {"format": "string", "value": "a-new-secret-0123456789"}}]}, old)
    assert status == 200, doc
    try:
        status, doc = node.request(b, "PUT", f"/api/handles/{ENT}/SECRET-1",
                                   url_value("https://ex.com/2"), old)
        assert status in (401, 403), doc  # the old secret no longer logs in, in b either
        assert node.request(b, "PUT", f"/api/handles/{ENT}/SECRET-1",
                            url_value("https://ex.com/3"), new)[0] == 200
    finally:  # the module's other tests log in with the old secret
        node.request(b, "PUT", f"/api/handles/0.NA/{ENT}?index=300", {"values": [
            {"index": 300, "type": "HS_SECKEY",
             "data": {"format": "string", "value": node.secret}}]}, new)


def test_failed_logins_are_limited_across_the_processes_not_per_process(node):
    """Each process keeps its own failed-login counts, and a client's connections reach both:
    each allows its share of ``[auth]`` limits, so an identity failing from one address is
    locked out after the configured number of failures, not that many per process."""
    limit = AuthConfig().identity_failures  # the node runs the defaults: half per process
    bad = _basic("300:0.NA/88.118.99", "not-the-secret")  # no such identity: never in use
    statuses = [node.request(node.conns[i % 2], "PUT", f"{HANDLES}{ENT}/LIMITED-{i}",
                             url_value("https://ex.com/no"), bad)[0] for i in range(limit + 4)]
    assert statuses.count(401) == limit, statuses  # not 2 * limit, as before
    assert statuses[limit:] == [429] * 4, statuses


def _resolves(text: str) -> dict[str, float]:
    """``{process: count}`` of the resolve requests an exposition shows."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("idsim_requests_total{") and 'op="resolve"' in line:
            process = line.split('process="', 1)[1].split('"', 1)[0]
            out[process] = float(line.rsplit(" ", 1)[1])
    return out


def _settled(node, a, b) -> dict[str, float]:
    """The resolve counts once both processes' views agree: each scrape has its own process's
    counts live and the other's as of its last snapshot, so a request an earlier test made may
    not have reached the other view yet."""
    deadline = time.monotonic() + DEADLINE
    while True:
        views = [_resolves(node.get(conn, "/metrics")[1]["text"].decode()) for conn in (a, b)]
        if views[0] == views[1]:
            return views[0]
        assert time.monotonic() < deadline, f"the processes' views never agreed: {views}"
        time.sleep(0.1)  # polling a subprocess


def test_a_scrape_of_the_port_counts_every_process(node):
    a, b = node.conns
    before = _settled(node, a, b)
    for conn, n in ((a, 3), (b, 5)):
        for _ in range(n):
            assert node.get(conn, f"/api/handles/{ENT}/SN000000001")[0] == 200
    deadline = time.monotonic() + DEADLINE
    while True:  # the other process's counts arrive with its next snapshot (share_every)
        got = []
        for conn in (a, b):
            now = _resolves(node.get(conn, "/metrics")[1]["text"].decode())
            got.append(sorted(now.get(p, 0) - before.get(p, 0) for p in now))
        if got == [[3, 5], [3, 5]]:
            break
        assert time.monotonic() < deadline, f"scrapes show {got}, not both processes' [3, 5]"
        time.sleep(0.1)  # polling a subprocess


def test_idsim_up_spreads_every_node_over_default_processes(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "default_processes", lambda: 3)
    args = cli.build_parser().parse_args(["up", "--preset", "mini", "--data", str(tmp_path)])
    nodes, workers = cli.up_processes(args)
    assert (nodes, args.recursive_processes) == (3, 3)
    topo = get_preset("mini")
    plan = cluster.Cluster(topo, tmp_path, workers=workers, node_processes=nodes,
                           recursive_processes=args.recursive_processes).plan()
    for name in topo.node_names():
        assert sum(name in p for p in plan) == (1 if name.startswith("recursive-") else 3), name
    assert not any(Role.TOP in p and Role.RECURSIVE in p for p in plan)
    memory = cli.build_parser().parse_args(["up", "--preset", "mini", "--store", "memory"])
    assert cli.up_processes(memory)[0] == 1  # a memory store is one process's own
    one = cli.build_parser().parse_args(["up", "--node-processes", "1"])
    assert cluster.plan_workers(topo, cli.up_processes(one)[1], 1, 1) == \
        cluster.plan_workers(topo, 3, 1)  # 1: today's layout, workers one per core
    up = cluster.Cluster(topo, tmp_path, workers=workers, node_processes=nodes,
                         recursive_processes=args.recursive_processes)
    for i, names in enumerate(up.plan()):  # each of 3 processes allows a third of the limits
        flags = " ".join(up.host_flags(i, names))
        shared = "--reuse-port" in flags
        assert shared == (up.processes_of(names[0]) == 3), (names, flags)
        assert ("--set auth.address_failures=17 --set auth.identity_failures=4" in flags) \
            == shared, flags


def test_default_processes_is_the_cores(monkeypatch):
    monkeypatch.setattr(cluster.os, "cpu_count", lambda: None)
    assert cluster.default_processes() == 1
    monkeypatch.setattr(cluster.os, "cpu_count", lambda: 6)
    assert cluster.default_processes() == 6


async def test_processes_of_one_node_report_it_whole(tmp_path):
    """Each process reports every process's counts, since the earliest started, so the
    report the top-level node keeps last is right; top-level processes share reports."""
    from resolver import metrics_share
    from resolver.clock import FakeClock
    from resolver.config import Config
    from resolver.nodes import SecondaryNode
    from resolver.store import open_store
    from resolver.top import TopNode
    clock = FakeClock(1000.0)
    config = Config()
    nodes = [SecondaryNode("88.118", open_store("memory:"), ["88.118"], config, clock=clock)
             for _ in range(2)]
    nodes[0].since, nodes[1].since = "2026-12-01T10:00:01Z", "2026-12-01T10:00:00Z"
    nodes[0].stats["resolutions"], nodes[1].stats["resolutions"] = 3, 5
    nodes[1].stats["registrations"] = 2
    shares = [metrics_share.Sharing(None, tmp_path, config.metrics, clock, node=n)
              for n in nodes]
    tops = [TopNode("top", open_store("memory:"), "88", config, clock=clock,
                    nodes_info={"88.118": {}}) for _ in range(2)]
    top_shares = [metrics_share.Sharing(None, tmp_path, config.metrics, clock, node=t)
                  for t in tops]
    try:
        assert [s.claim() for s in shares + top_shares] == [0, 1, 0, 1]
        for s in shares:
            s.write()
        for s in shares:
            stats = s.report_stats()
            assert (stats["resolutions"], stats["registrations"]) == (8, 2)
            assert stats["since"] == "2026-12-01T10:00:00Z"
        tops[1].report("88.118", shares[0].report_stats())
        top_shares[1].write()
        assert top_shares[0].merge_reports() == 1
        assert tops[0].statistics()["totals"]["resolutions"] == 8
        clock.advance(metrics_share.STALE_AFTER * config.metrics.share_every + 1)
        assert shares[0].report_stats()["resolutions"] == 3  # the other process is gone
    finally:
        for s in shares + top_shares:
            s.close()
        for n in nodes + tops:
            await n.close()


async def test_authority_memos_follow_what_another_process_wrote():
    """The store changed under the node (another process's write, no ``forget`` here): a
    remembered login and a remembered admin decision are decided again from the new bytes."""
    from resolver import auth, errors, records
    from resolver.authority import prefix_record
    from resolver.nodes import SecondaryNode
    from resolver.store import open_store
    node = SecondaryNode("88.118", open_store("memory:"), ["88.118"])
    await node.bootstrap("node-secret")
    admin = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")
    assert node.authenticate(admin, "node-secret") == admin
    assert node.administers(admin, "88.118.8")
    na = node.parse("0.NA/88.118")

    async def elsewhere(values) -> None:  # as another process writes: straight to the store
        await node.store.put_many([(na.key, records.encode(na.text, values))])
    await elsewhere(prefix_record(na.text, "changed-secret", now=0))
    with pytest.raises(errors.HandleError) as info:
        node.authenticate(admin, "node-secret")
    assert info.value.code == errors.AUTHENTICATION_FAILED
    assert node.authenticate(admin, "changed-secret") == admin
    other = auth.Identity(auth.SECRET_INDEX, "0.NA/88.999")
    await elsewhere([v if v.type != "HS_VLIST" else records.Value(
        v.index, v.type, [{"index": auth.SECRET_INDEX, "handle": other.handle}], v.format)
        for v in prefix_record(na.text, "changed-secret", now=0)])
    assert not node.administers(admin, "88.118.8")  # no longer in the admin group
    assert node.administers(other, "88.118.8")
    await node.close()


async def test_refuse_closes_and_reopens_ports_every_process_shares(tmp_path):
    """Two servings of the top-level node on the same HTTP and RPC ports (as two processes
    of it): a refuse fault closes both (the ports refuse), clearing it reopens both, each
    again beside the other (SO_REUSEPORT)."""
    import random
    import socket

    from benchmarks.network import free_preset
    from resolver.clock import SYSTEM
    from resolver.config import Config
    from resolver.fault_inject import Injector
    from resolver.faults import FaultState, fault_from
    from topology.wiring import start_nodes
    topo = free_preset("mini")
    logins = cluster.make_logins(topo)
    injectors = [Injector(FaultState(SYSTEM, random.Random(1)), SYSTEM) for _ in range(2)]
    runs = []
    try:
        for inj in injectors:
            runs.append(await start_nodes(topo, ["top"], Config(), data_dir=tmp_path,
                                          logins=logins, store="memory", reuse_port=True,
                                          faults=inj))

        def accepts(port: int) -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        ports = (topo.top.http_port, topo.top.rpc_port)
        assert all(map(accepts, ports))
        for inj in injectors:
            inj.state.set(fault_from({"kind": "refuse", "node": "top"}, SYSTEM()))
            await inj.update()
        assert not any(map(accepts, ports))
        for inj in injectors:
            inj.state.clear()
            await inj.update()  # the second reopens beside the first: SO_REUSEPORT
        assert all(map(accepts, ports))
        assert all(not t.refused for inj in injectors for t in inj.targets.values())
    finally:
        for run in runs:
            await run.close()
