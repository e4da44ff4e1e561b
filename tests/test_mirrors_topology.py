"""Mirrors and the standby top-level node in the network's description (issue 11, topology
side): ``idsim up --mirrors`` gives every secondary node of guangzhou-2021 one mirror in
another city and adds a standby top-level node; mirrors survive the TOML round trip, are
validated, get ports after every other node's, run in host processes apart from their
primaries, have RPC keys (role ``mirror``), are listed in cluster.json, reach the top-level
node's HS_SITE through ``Site.mirrors`` and the recursive nodes as ``standby_tops``; and
``idsim status`` shows their replication lag.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from resolver import health, observe
from resolver.clock import SYSTEM
from resolver.config import Config
from resolver.link import Links
from resolver.roles import Role
from resolver.rpc_auth import primary_of, role_of
from topology import mirrors, readiness, wiring
from topology.cli import build_parser
from topology.cluster import make_logins, plan_workers, write_state
from topology.model import TopologyError
from topology.presets import guangzhou_2021, mini
from topology.tomlio import from_toml, to_toml
from topology.validation import validate
from topology.wan_presets import addresses as wan_addresses
from topology.wan_presets import places as wan_places

BASE = 21000  # ports are only computed here, never bound


def gz_mirrored():
    return mirrors.with_mirrors(guangzhou_2021()).with_ports(BASE)


# ------------------------------------------------------------------ the --mirrors preset

def test_every_secondary_has_one_mirror_elsewhere_and_there_is_a_standby_top() -> None:
    t = gz_mirrored()
    validate(t)
    assert len(t.secondaries) == 33
    for s in t.secondaries:
        (m,) = mirrors.mirrors_of(t, s.code)
        assert m.place.city != s.city and role_of(m.name) == Role.MIRROR
        assert primary_of(m.name) == s.code and m.name == f"{s.code}~{m.place.city}"
    (standby,) = mirrors.standby_tops(t)
    assert standby.name == f"top~{standby.place.city}" and role_of(standby.name) == Role.MIRROR
    assert standby.place.city != t.top_place.city
    # the load spreads: the mirror cities hold 9, 8, 8, 8 of the 33
    per_city = Counter(m.place.city for m in t.mirrors if m.primary != "top")
    assert max(per_city.values()) - min(per_city.values()) <= 1 and len(per_city) > 1
    # ports follow every other node's, all distinct; the WAN model knows where each is
    others = {p for a in t.addresses()[:len(t.addresses()) - len(t.mirrors)]
              for p in (a.http_port, a.rpc_port)}
    ports = [p for m in t.mirrors for p in (m.address.http_port, m.address.rpc_port)]
    assert len(set(ports)) == len(ports) and not set(ports) & others
    assert min(m.address.http_port for m in t.mirrors) > max(
        a.http_port for a in t.addresses()[:-len(t.mirrors)])
    where = wan_places(t)
    assert where["88.118~" + mirrors.mirrors_of(t, "88.118")[0].place.city].lat > 28  # north
    assert wan_addresses(t)[standby.address.rpc_addr] == standby.name
    # the same arguments, the same topology; --tls reaches the mirrors too
    assert gz_mirrored() == t
    assert all(m.address.scheme == "https" for m in t.with_scheme("https").mirrors)


def test_up_mirrors_flag_and_without_it_nothing_changes() -> None:
    assert build_parser().parse_args(["up", "--mirrors"]).mirrors is True
    assert build_parser().parse_args(["up"]).mirrors is False
    plain = guangzhou_2021().with_ports(BASE)
    assert plain.mirrors == () and mirrors.plan(plain, 4) == []
    # a mirror in its primary's city would not survive that city's outage: never chosen
    one_city = mirrors.with_mirrors(mini(), cities=("Guangzhou", "Beijing"))
    cities = {m.primary: m.place.city for m in one_city.mirrors}
    assert cities == {"88.101": "Beijing", "88.118": "Beijing", "88.201": "Guangzhou",
                      "top": "Nanjing"}


# ------------------------------------------------------------------ TOML

def test_toml_round_trip_keeps_mirrors_and_names_bad_fields() -> None:
    t = mirrors.with_mirrors(mini()).with_ports(BASE)
    text = to_toml(t)
    assert text.count("[[mirrors]]") == len(t.mirrors) == 4
    assert from_toml(text) == t
    moved = dataclasses.replace(t.mirrors[0], place=dataclasses.replace(
        t.mirrors[0].place, lat=40.0, lon=116.0))
    t2 = dataclasses.replace(t, mirrors=(moved, *t.mirrors[1:]))
    assert from_toml(to_toml(t2)) == t2
    bad = text.replace('primary = "88.101"', 'primary = 88101\ncolour = "red"', 1)
    with pytest.raises(TopologyError) as err:
        from_toml(bad)
    assert any("mirrors[0]" in p and "'primary'" in p for p in err.value.problems)
    assert any("mirrors[0]" in p and "'colour'" in p for p in err.value.problems)


# ------------------------------------------------------------------ validation

def test_validation_names_each_mirror_problem() -> None:
    t = mirrors.with_mirrors(mini()).with_ports(BASE)
    validate(t)
    first = t.mirrors[0]  # 88.101's, in Beijing
    same_city = mirrors.mirror("88.101", "Guangzhou", first.address)
    clash = dataclasses.replace(mirrors.mirror("88.118", "Chengdu", first.address),
                                address=t.top)  # the top-level node's ports
    bad = dataclasses.replace(t, mirrors=(
        same_city,
        dataclasses.replace(first, name="88.101~Paris"),  # name not <primary>~<city>
        first, first,  # twice
        mirrors.mirror("88.999", "Wuhan", first.address),  # no such primary
        clash,
        mirrors.mirror("88.201", "Atlantis", t.mirrors[2].address)))  # no coordinates
    with pytest.raises(TopologyError) as err:
        validate(bad)
    problems = "\n".join(err.value.problems)
    assert "mirror '88.101~Guangzhou': in Guangzhou, the city of its primary 88.101" in problems
    assert "mirror '88.101~Paris': name must be '88.101~Beijing'" in problems
    assert "mirror name '88.101~Beijing' is used 2 times" in problems
    assert "mirror '88.999~Wuhan': unknown primary '88.999'" in problems
    assert f"{t.top.host}:{t.top.http_port} is used by 2 endpoints" in problems
    assert "mirror 88.118~Chengdu http" in problems
    assert "mirror '88.201~Atlantis': unknown city 'Atlantis'" in problems


# ------------------------------------------------------------------ processes and logins

@pytest.mark.parametrize("workers", [1, 2, 3, 4, 6])
def test_plan_never_puts_a_mirror_with_its_primary(workers: int) -> None:
    t = gz_mirrored()
    plan = plan_workers(t, workers)
    names = [n for p in plan for n in p]
    assert sorted(names) == sorted(t.node_names())  # every node once
    for process in plan:
        held = set(process)
        for name in process:
            if role_of(name) == Role.MIRROR:
                assert primary_of(name) not in held, (workers, process)
    standby = [p for p in plan if any(n.startswith("top~") for n in p)]
    assert standby == [["top~Nanjing"]]  # alone: losing another process never loses it
    assert len(plan) == len(plan_workers(guangzhou_2021().with_ports(BASE), workers)) + 1 + \
        max(1, min(33, workers - 2))


def test_logins_hold_an_rpc_key_for_every_mirror_kept_across_restarts() -> None:
    t = gz_mirrored()
    logins = make_logins(t)
    assert set(logins["rpc"]) == set(t.node_names())
    for m in t.mirrors:
        assert len(bytes.fromhex(logins["rpc"][m.name])) == 32
        assert role_of(m.name) == Role.MIRROR
    assert make_logins(t, logins)["rpc"] == logins["rpc"]
    assert "88.118~Wuhan" not in logins["nodes"]  # a mirror owns no prefix, no admin login


def test_cluster_json_lists_mirrors_and_the_standby_top(tmp_path: Path) -> None:
    t = gz_mirrored()
    write_state(tmp_path, t, [])
    state = json.loads((tmp_path / "cluster.json").read_text())
    rows = {n["name"]: n for n in state["nodes"]}
    m = mirrors.mirrors_of(t, "88.118")[0]
    assert rows[m.name] == {"name": m.name, "role": "mirror", "primary": "88.118",
                            "industry": "home-appliances", "city": m.place.city,
                            "httpUrl": m.address.http_url, "rpc": m.address.rpc_addr}
    assert rows["top~Nanjing"]["primary"] == "top"
    assert state["standbyTopUrls"] == {"top~Nanjing": mirrors.standby_tops(t)[0].address.http_url}


# ------------------------------------------------------------------ wiring

def test_the_top_learns_each_secondarys_mirrors_through_its_site() -> None:
    t = gz_mirrored()
    site = wiring.site_for(t, "88.118")
    (m,) = mirrors.mirrors_of(t, "88.118")
    assert site.mirrors == ((m.address.http_url, m.address.rpc_addr),)
    assert wiring.site_for(guangzhou_2021().with_ports(BASE), "88.118").mirrors == ()


class FakeMirrorNode:
    """Stands for resolver.mirror.MirrorNode: records how the wiring built it."""
    built: list = []

    def __init__(self, name, node, primary_rpc, primary_http, config, *, clock, trust,
                 link=None):
        self.name, self.node, self.role, self.link = name, node, Role.MIRROR, link
        self.primary = (primary_rpc, primary_http)
        self.trust, self.started, self.ready = trust, False, False
        FakeMirrorNode.built.append(self)

    async def start(self):
        self.started = True

    def lag_seconds(self) -> float:
        return 0.25

    async def close(self):
        await self.node.close()


def test_a_mirror_is_its_primarys_node_on_its_own_store(tmp_path: Path, monkeypatch) -> None:
    from resolver.nodes import SecondaryNode
    from resolver.top import TopNode
    monkeypatch.setitem(sys.modules, "resolver.mirror",
                        types.SimpleNamespace(MirrorNode=FakeMirrorNode))
    t = mirrors.with_mirrors(mini()).with_ports(BASE)
    (m,) = mirrors.mirrors_of(t, "88.118")
    (standby,) = mirrors.standby_tops(t)

    async def build(name):
        return await wiring._build_mirror(t, name, Config(), data_dir=tmp_path, store="lmdb",
                                          clock=asyncio.get_running_loop().time,
                                          case_sensitive=False, keyring=None,
                                          links=Links(None, SYSTEM, {}))

    async def main():
        mirror, top = await build(m.name), await build(standby.name)
        try:  # replication crosses the WAN link between the two cities (faults cut it too)
            assert (mirror.link.src, mirror.link.dst) == (m.name, "88.118")
            assert (top.link.src, top.link.dst) == (standby.name, "top")
            assert isinstance(mirror.node, SecondaryNode) and mirror.node.homed == ["88.118"]
            assert mirror.primary == (t.secondary("88.118").address.rpc_addr,
                                      t.secondary("88.118").address.http_url)
            assert mirror.started and (tmp_path / m.name).is_dir()  # its own LMDB directory
            assert isinstance(top.node, TopNode) and top.primary == (t.top.rpc_addr,
                                                                     t.top.http_url)
            # not bootstrapped, not seeded: everything it holds comes from its primary
            assert sum(n for _, n in mirror.node.store.groups()) == 0
            check = readiness.replica_following(mirror)
            with pytest.raises(health.NotReady, match="copying its primary's dump"):
                await check()
            mirror.ready = True
            assert "0.250 s behind" in await check()
        finally:
            await mirror.close()
            await top.close()
    asyncio.run(main())


# ------------------------------------------------------------------ idsim status

EXPOSITION = """\
# TYPE idsim_replication_lag_seconds gauge
idsim_replication_lag_seconds{node="88.118~Wuhan",process="1"} 0.25
idsim_replication_lag_seconds{node="88.118~Wuhan",process="2"} 0.5
idsim_replication_lag_seconds{node="top~Nanjing"} 0.0
idsim_records{node="88.118~Wuhan"} 42
"""


def test_status_shows_each_mirrors_lag_from_its_metrics() -> None:
    from rich.console import Console
    from topology.status_view import COLUMNS, table
    found = observe.parse(EXPOSITION)
    assert found["88.118~Wuhan"].lag == 0.5  # the process furthest behind
    assert observe.view(None, found["88.118~Wuhan"], 0).doc()["lag"] == 0.5
    assert observe.view(found["top~Nanjing"], found["top~Nanjing"], 1.0).lag == 0.0
    assert "lag" in COLUMNS
    row = {"city": "", "metrics": True, "rate": None, "p99": None, "hitRatio": None,
           "up": True, "ready": True, "reason": ""}
    snap = {"nodes": [
        dict(row, name="88.118", role="secondary", url="http://h:1", records=42.0, lag=None),
        dict(row, name="88.118~Wuhan", role="mirror", url="http://h:2", records=42.0,
             lag=observe.view(None, found["88.118~Wuhan"], 0).lag),
        dict(row, name="top~Nanjing", role="mirror", url="http://h:3", records=None,
             lag=0.0)]}
    console = Console(width=200, record=True)
    console.print(table(snap, "t"))
    lines = {line.split()[1]: line for line in console.export_text().splitlines()
             if "http://h:" in line}
    assert "0.50 s" in lines["88.118~Wuhan"] and "mirror" in lines["88.118~Wuhan"]
    assert "standby top" in lines["top~Nanjing"] and "0.00 s" in lines["top~Nanjing"]
    assert " s " not in lines["88.118"].replace("0.50 s", "")  # a primary has no lag


def test_recursive_nodes_learn_the_standby_top(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    class Recording:  # stands for RecursiveNode, whose standby_tops is another branch's
        def __init__(self, name, top_rpc, config, **kw):
            seen[name] = (top_rpc, kw.get("standby_tops"))

    monkeypatch.setattr(wiring, "RecursiveNode", Recording)
    with_standby = mirrors.with_mirrors(mini()).with_ports(BASE)
    plain = mini().with_ports(BASE)

    async def build(topo):
        await wiring._build(topo, "recursive", Config(), data_dir=tmp_path, logins={},
                            store="memory", clock=asyncio.get_running_loop().time,
                            progress=None, case_sensitive=False, tls=None, keyring=None)
    asyncio.run(build(with_standby))
    assert seen["recursive"] == (with_standby.top.rpc_addr,
                                 [mirrors.standby_tops(with_standby)[0].address.rpc_addr])
    asyncio.run(build(plain))
    assert seen["recursive"] == (plain.top.rpc_addr, None)  # none: built as before


def test_idsim_up_prepares_mirrors_in_every_file_it_writes(tmp_path: Path) -> None:
    import random
    from topology.cluster import Cluster
    from topology.ports import find_ports_in_use
    from topology.tomlio import load
    rng = random.Random()
    for _ in range(50):
        topo = mirrors.with_mirrors(mini()).with_ports(rng.randrange(20000, 29000))
        if not find_ports_in_use(topo):
            break
    Cluster(topo, tmp_path).prepare()
    assert load(tmp_path / "topology.toml").mirrors == topo.mirrors
    keys = json.loads((tmp_path / "logins.json").read_text())["rpc"]
    assert {m.name for m in topo.mirrors} <= set(keys)
    scrape = (tmp_path / "prometheus.yml").read_text()
    assert '"idsim-mirror"' in scrape
    assert f"127.0.0.1:{topo.mirrors[-1].address.http_port}" in scrape
    waited = Cluster(topo, tmp_path).node_urls()  # idsim up waits on every mirror's /readyz
    assert {m.address.http_url for m in topo.mirrors} <= set(waited)
