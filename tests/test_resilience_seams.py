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


async def test_the_dashboard_page_labels_a_mirror_tile(tmp_path) -> None:
    """The page itself (headless Chromium) on a fixed data document: a mirror's tile says
    what it follows and that it is read-only, in a group of its own."""
    from aiohttp import web

    from benchmarks.procs import free_port
    from resolver.dashboard import asset
    from test_dashboard import chromium_or_skip
    chromium = chromium_or_skip()
    from playwright.async_api import async_playwright

    def node(name, role, city, title=""):
        return {"name": name, "role": role, "city": city, "industry": "", "title": title,
                "url": "http://127.0.0.1:1", "up": True, "ready": True, "reason": "",
                "metrics": False, "faults": []}
    doc = {"at": 0, "interval": None, "totals": {}, "statsAnswered": True, "refresh": 60,
           "nodes": [node("recursive", "recursive", "Guangzhou"), node("top", "top", "Guangzhou"),
                     node("88.118", "secondary", "Guangzhou", "Home Appliances"),
                     node("88.118~Shanghai", "mirror", "Shanghai", "mirror of 88.118"),
                     node("top~Nanjing", "mirror", "Nanjing", "standby top-level node")]}
    def static(name: str, kind: str):
        async def handler(request):
            return web.Response(body=asset(name), content_type=kind)
        return handler

    async def data(request):
        return web.json_response(doc)
    app = web.Application()
    app.router.add_get("/dashboard", static("dashboard.html", "text/html"))
    app.router.add_get("/dashboard/dashboard.js", static("dashboard.js", "text/javascript"))
    app.router.add_get("/dashboard/data", data)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{port}/dashboard")
                tile = page.locator('[data-node="88.118~Shanghai"] .ind')
                await tile.wait_for(timeout=10_000)
                assert await tile.text_content() == "mirror of 88.118, read-only"
                standby = page.locator('[data-node="top~Nanjing"] .ind')
                assert await standby.text_content() == "standby top-level node, read-only"
                group = page.locator(".group", has=page.locator('[data-node="top~Nanjing"]'))
                assert (await group.locator("h2").text_content()).startswith("mirrors")
                core = page.locator(".group", has=page.locator('[data-node="recursive"]'))
                assert await core.locator('[data-node="88.118~Shanghai"]').count() == 0
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
