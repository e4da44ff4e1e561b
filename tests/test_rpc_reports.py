"""The top-level node's statistics reports: only known nodes, checked and bounded, and
``/api/stats`` answers whatever was stored.
"""
from __future__ import annotations

import tracemalloc

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from network_fixtures import FakeClock, Net, net  # noqa: F401  (net: fixture)
from resolver import errors
from resolver.config import Config, RpcConfig
from resolver.resolution import Site
from resolver.roles import Role
from resolver.rpc_auth import Caller
from resolver.store import open_store
from resolver.top import TopNode, check_stats
from rpc_helpers import as_node, errors_in, pack, raw_session

pytestmark = pytest.mark.timeout(120)
SECONDARY = Caller("88.118", Role.SECONDARY)
RECURSIVE = Caller("recursive", Role.RECURSIVE)


async def top_node(clock=None) -> TopNode:
    top = TopNode("top", open_store("memory:"), "88", clock=clock or FakeClock())
    await top.bootstrap("top-secret")
    for code in ("88.118", "88.201"):
        await top.add_node(code, Site(code, "http://127.0.0.1:1", "127.0.0.1:2"), "s",
                           {"name": code, "industry": "x", "city": "y"})
    return top


@pytest.mark.parametrize("stats", [
    [1], None, "x", {1: 2}, {"": 1}, {"k" * 65: 1}, {"n": -1}, {"n": 2**63}, {"n": float("nan")},
    {"n": float("inf")}, {"n": [1]}, {"n": {"deep": 1}}, {"n": b"bytes"}, {"t": "x" * 257},
    {f"k{i}": 1 for i in range(65)},
])
def test_malformed_reports_are_refused(stats):
    with pytest.raises(errors.HandleError) as info:
        check_stats(stats, RpcConfig())
    assert info.value.code == errors.INVALID_VALUE


def test_a_report_of_counts_bools_and_short_text_passes():
    stats = {"role": "secondary", "identifiers": 2**63 - 1, "rate": 1.5, "up": True}
    assert check_stats(stats, RpcConfig()) == stats


async def test_only_known_nodes_and_a_bounded_number_of_recursive_processes():
    top = await top_node()
    for code in ("zz", "88.999", "recursive@", "recursive@a/b", "88.118 "):
        with pytest.raises(errors.HandleError):
            top.report(code, {"identifiers": 1})
    limit = top.config.rpc.max_recursive_reports
    for i in range(limit + 10):
        top.clock.advance(1)
        top.report_from(RECURSIVE, f"recursive@{i}", {"resolutions": i})
    kept = sorted(int(c.split("@")[1]) for c in top.reports if c.startswith("recursive@"))
    assert kept == list(range(10, limit + 10))  # the ones reported longest ago made room
    with pytest.raises(errors.HandleError):
        top.report_from(RECURSIVE, "88.118", {"identifiers": 1})  # not its own


async def test_memory_stays_bounded_over_20000_bogus_reports():
    top = await top_node()
    codes = [f"99.{i}" for i in range(10_000)] + [f"recursive@{i}" for i in range(10_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for code in codes:
            try:
                top.report_from(RECURSIVE if code.startswith("r") else SECONDARY, code,
                                {"identifiers": 10**12, "pad": "x" * 200})
            except errors.HandleError:
                pass
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(top.reports) <= top.config.rpc.max_recursive_reports
    assert grown < 256 * 1024, grown  # a bound: 64 kept reports of ~1 KB, not 20,000
    stats = top.statistics()
    assert stats["totals"]["identifiers"] == 0  # no fake national totals
    assert stats["totals"]["recursiveResolutions"] == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=5), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    | st.binary(max_size=5), lambda c: st.lists(c, max_size=3)
    | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=5), max_size=5)
    | st.integers() | st.lists(st.integers(), max_size=2))
def test_statistics_renders_whatever_is_stored(stats):
    top = TopNode("top", open_store("memory:"), "88", nodes_info={"88.118": {}},
                  clock=FakeClock())
    top.reports = {"88.118": (stats, 0.0), "recursive@1": (stats, 0.0), "zz": (stats, 0.0)}
    doc = top.statistics()
    orjson.dumps(doc)  # what /api/stats sends: never a 500
    assert isinstance(doc["totals"]["identifiers"], (int, float))


async def test_the_reported_reproduction_no_longer_breaks_api_stats(net: Net):
    top_rpc = net.topo.top.rpc_port
    for call in ([2, "report", ["zz", [1]]], [0, 1, "report", ["88.101", {"identifiers": 10**12}]]):
        got = await raw_session(top_rpc, pack(call))  # refused, and the connection closed
        refusals = errors_in(got) + [m[2] for m in got if m[:2] == [2, "idsim.refused"]]
        assert [e[0] for e in refusals] == [errors.AUTHENTICATION_FAILED]
    async with as_node("88.118", net.logins, top_rpc) as c:
        c.notify("report", "88.118", [1])  # its own code, a malformed report: refused
        with pytest.raises(errors.HandleError) as info:
            await c.call("report", "88.118", {"n": [1]})
        assert info.value.code == errors.INVALID_VALUE
        with pytest.raises(errors.HandleError) as info:
            await c.call("report", "88.101", {"identifiers": 10**12})
        assert info.value.code == errors.INSUFFICIENT_PERMISSIONS
    status, body = await net.get(f"{net.top_url}/api/stats")
    assert status == 200, body
    assert body["totals"]["identifiers"] < 10**12
    assert "zz" not in {r["node"] for r in body["nodes"]}


def test_report_limits_come_from_config():
    config = Config().rpc
    assert (config.max_report_fields, config.max_recursive_reports) == (64, 64)
