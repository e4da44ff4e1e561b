"""Seams between issue 11's pieces found while measuring it (benchmarks/resilience.py):

- a secondary node's restart re-registers its enterprise prefixes at the same site: the
  top-level node must not rewrite (and so re-replicate to its standby) records that are as
  they were, but must when the site changed (a mirror added);
- ``idsim host``'s share plan must never put a mirror in its primary's process;
- the dashboard lists the mirrors (they send no reports, so the top-level node's rows lack
  them) as mirrors, not as recursive nodes.
"""
from __future__ import annotations

import dataclasses

from resolver.config import Config
from resolver.resolution import Site
from resolver.roles import Role
from resolver.rpc_auth import Caller, primary_of, role_of
from resolver.store import open_store
from resolver.top import TopNode
from topology import mirrors
from topology.cli_host import share_plan
from topology.presets import get_preset
from topology.readiness import core_nodes

MIRRORS = (("http://127.0.0.1:20011", "127.0.0.1:21011"),)
SITE = Site("88.118", "http://127.0.0.1:20001", "127.0.0.1:21001", MIRRORS)
NODE = Caller("88.118", role_of("88.118"))
WIRE = [SITE.prefix, SITE.http_url, SITE.rpc_addr]


def last_seq(top: TopNode) -> int:
    return top.store.log_read(0, 1).last


async def test_re_registering_prefixes_at_the_same_site_writes_nothing() -> None:
    top = TopNode("top", open_store("memory:"), "88", Config())
    await top.bootstrap("top-secret")
    await top.add_node("88.118", SITE, "node-secret")
    assert await top.register_prefixes(NODE, ["88.118.8", "88.118.12"], WIRE) == 2
    before, record = last_seq(top), top.values_of("0.NA/88.118.8")
    # the node restarts: the same prefixes at the same site
    assert await top.register_prefixes(NODE, ["88.118.8", "88.118.12"], WIRE) == 0
    assert last_seq(top) == before               # no commit, nothing for the standby to copy
    assert top.values_of("0.NA/88.118.8") == record
    # one new prefix among known ones: only it is written
    assert await top.register_prefixes(NODE, ["88.118.8", "88.118.30"], WIRE) == 1
    assert last_seq(top) == before + 1
    # the node gets a second mirror (add_node at the top's start): its prefixes follow
    more = dataclasses.replace(SITE, mirrors=(*MIRRORS, ("http://127.0.0.1:20012",
                                                          "127.0.0.1:21012")))
    await top.add_node("88.118", more, "node-secret")
    await top.register_prefixes(NODE, ["88.118.8"], WIRE)
    site, _ = top.delegate("88.118.8.1")
    assert site.mirrors == more.mirrors
    await top.close()


def test_a_host_share_never_runs_a_mirror_with_its_primary() -> None:
    names = ["recursive", "top", "88.101", "88.118", "88.101~Beijing", "88.118~Shanghai",
             "top~Nanjing"]
    plan = share_plan(names)
    assert sorted(n for group in plan for n in group) == sorted(names)  # each node once
    for group in plan:
        mirrored = {primary_of(n) for n in group if role_of(n) == Role.MIRROR}
        assert not mirrored & set(group), plan                   # no primary with its mirror
        if "recursive" in group or "top~Nanjing" in group:
            assert len(group) == 1, plan                          # alone in their processes
    assert share_plan(["top", "88.101"]) == [["top", "88.101"]]  # no mirrors: as before


def test_the_dashboard_lists_mirrors_as_mirrors() -> None:
    topo = get_preset("mini", base_port=20000)
    with_mirrors = mirrors.with_mirrors(topo)
    assert with_mirrors.mirrors
    rows = {n.name: n for n in core_nodes(with_mirrors)}
    for m in with_mirrors.mirrors:
        row = rows[m.name]
        assert (row.role, row.city, row.url) == ("mirror", m.place.city, m.address.http_url)
        assert row.title == ("standby top-level node" if m.primary == "top"
                             else f"mirror of {m.primary}")
    assert {n.role for n in core_nodes(topo)} == {"recursive", "top"}  # none without mirrors
