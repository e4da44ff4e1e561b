"""Tests for the topology package: model, validation, ports, TOML I/O and presets."""
from __future__ import annotations

import dataclasses
import hashlib
import socket
import statistics
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.config import Config, ConfigError, layered
from topology.model import Enterprise, Industry, NodeAddress, SecondarySpec, Topology, TopologyError
from topology.ports import find_ports_in_use
from topology.presets import PRESETS, get_preset, guangzhou_2021, mini
from topology.tomlio import from_toml, load, load_with_config, save, to_toml
from topology.validation import validate


@pytest.fixture(scope="module")
def gz() -> Topology:
    return guangzhou_2021()


@pytest.fixture(scope="module")
def gz_toml(gz: Topology) -> str:
    return to_toml(gz)


def _problems(topology: Topology) -> list[str]:
    with pytest.raises(TopologyError) as info:
        validate(topology)
    return info.value.problems


# --------------------------------------------------------------------------------------------
# Presets: the published shape


def test_guangzhou_counts(gz: Topology) -> None:
    c = gz.counts()
    assert c["top_level_nodes"] == 1
    assert c["recursive_nodes"] == 1
    assert c["secondary_nodes"] == 33
    assert c["industries"] == 25
    assert c["industries_served"] == 25
    assert c["enterprises"] == 4065
    assert c["identifiers"] == 4065 * 10
    assert gz.nodes_by_city()["Guangzhou"] == 15
    assert sum(n for city, n in gz.nodes_by_city().items() if city != "Guangzhou") == 18
    assert c["cities"] == len(gz.nodes_by_city()) >= 10


def test_guangzhou_is_valid(gz: Topology) -> None:
    validate(gz)


def test_guangzhou_every_industry_served(gz: Topology) -> None:
    per_industry = Counter(n.industry for n in gz.secondaries)
    assert set(per_industry) == {i.code for i in gz.industries}
    assert all(n >= 1 for n in per_industry.values())
    assert sorted(per_industry.values()).count(2) == 8
    assert max(per_industry.values()) == 2


def test_guangzhou_industries_include_clusters(gz: Topology) -> None:
    names = {i.name for i in gz.industries}
    for expected in ("Smart Home Appliances", "Green Petrochemicals", "Intelligent Robotics",
                     "Semiconductors and Integrated Circuits", "Precision Instruments and Equipment"):
        assert expected in names
    assert len({i.code for i in gz.industries}) == 25


def test_guangzhou_enterprise_spread(gz: Topology) -> None:
    per_node = gz.enterprises_per_node()
    assert set(per_node) == {n.code for n in gz.secondaries}
    counts = sorted(per_node.values())
    assert sum(counts) == 4065
    assert counts[0] >= 20
    # Heavy-tailed: the largest node far above the median.
    assert counts[-1] > 3 * statistics.median(counts)


def test_guangzhou_codes_and_names(gz: Topology) -> None:
    for node in gz.secondaries:
        national, number = node.code.split(".")
        assert national == "88" and len(number) == 3 and number.isdigit()
        assert node.name == f"{node.city} {gz.industry(node.industry).name} Secondary Node"
        ents = gz.enterprises_of(node.code)
        assert [e.prefix for e in ents] == [f"{node.code}.{i}" for i in range(1, len(ents) + 1)]
        assert all(e.industry == node.industry for e in ents)
    assert gz.secondary("88.118").name == "Guangzhou Smart Home Appliances Secondary Node"
    assert gz.enterprise("88.118.8").node == "88.118"
    assert len({e.name for e in gz.enterprises}) == 4065


def test_guangzhou_ports(gz: Topology) -> None:
    assert gz.recursive == NodeAddress("127.0.0.1", 8000, 9000)
    assert gz.top == NodeAddress("127.0.0.1", 8001, 9001)
    assert [n.address.http_port for n in gz.secondaries] == list(range(8002, 8035))
    assert gz.top.http_url == "http://127.0.0.1:8001"
    assert gz.top.rpc_addr == "127.0.0.1:9001"


def test_guangzhou_pinned(gz_toml: str) -> None:
    # The preset's exact contents and their TOML text, byte for byte: a change to either
    # changes every simulated network built from it.
    digest = hashlib.sha256(gz_toml.encode()).hexdigest()
    assert digest == "e2ff74cfd79afe84ff67a2e90452065b03eccae3fd29a5f33e48490fec356c27"


def test_guangzhou_deterministic() -> None:
    assert guangzhou_2021(seed=5) == guangzhou_2021(seed=5)
    assert to_toml(guangzhou_2021(seed=5)) == to_toml(guangzhou_2021(seed=5))


def test_guangzhou_other_seed_same_counts_different_spread(gz: Topology) -> None:
    other = guangzhou_2021(seed=7)
    assert other.counts() == gz.counts()
    assert other.secondaries == gz.secondaries
    assert other.enterprises_per_node() != gz.enterprises_per_node()
    assert min(other.enterprises_per_node().values()) >= 20
    validate(other)


def test_guangzhou_parameters() -> None:
    t = guangzhou_2021(base_port=12000, identifiers_per_enterprise=3)
    assert t.recursive.http_port == 12000 and t.recursive.rpc_port == 13000
    assert t.counts()["identifiers"] == 4065 * 3
    validate(t)


def test_mini() -> None:
    m = mini()
    validate(m)
    c = m.counts()
    assert (c["secondary_nodes"], c["industries"], c["enterprises"]) == (3, 3, 12)
    assert m.enterprise("88.118.8").node == "88.118"
    assert all(n >= 2 for n in m.enterprises_per_node().values())
    assert mini(seed=3) == mini(seed=3)
    for seed in range(20):
        t = mini(seed=seed)
        validate(t)
        assert len(t.enterprises) == 12 and t.enterprise("88.118.8")


def test_get_preset() -> None:
    assert set(PRESETS) == {"guangzhou-2021", "mini"}
    assert get_preset("mini", seed=4) == mini(seed=4)
    assert get_preset("guangzhou_2021", base_port=9500) == guangzhou_2021(base_port=9500)
    with pytest.raises(TopologyError) as info:
        get_preset("shanghai")
    assert "guangzhou-2021" in str(info.value) and "mini" in str(info.value)


# --------------------------------------------------------------------------------------------
# Lookups


def test_node_for_prefix(gz: Topology) -> None:
    assert gz.node_for_prefix("88.118.8").code == "88.118"
    assert gz.node_for_prefix("88.118.8/SN-0001").code == "88.118"
    assert gz.node_for_prefix("88.118.8.5").code == "88.118"
    assert gz.node_for_prefix("88.118").code == "88.118"
    assert gz.node_for_prefix("88.1180.1") is None  # the trap: not under 88.118
    assert gz.node_for_prefix("88.11.8") is None
    assert gz.node_for_prefix("88") is None
    assert gz.node_for_prefix("86.118.8") is None
    assert gz.node_for_prefix("") is None


def test_node_for_prefix_longest_match() -> None:
    # Overlapping codes are invalid, but the lookup still picks the longest match.
    m = mini()
    extra = dataclasses.replace(m.secondaries[1], code="88.118.8", name="inner")
    t = dataclasses.replace(m, secondaries=m.secondaries + (extra,))
    assert t.node_for_prefix("88.118.8.1").name == "inner"
    assert t.node_for_prefix("88.118.9").code == "88.118"
    assert t.node_for_prefix("88.118.80").code == "88.118"


@given(st.lists(st.integers(0, 9999), min_size=1, max_size=4))
def test_node_for_prefix_property(segments: list[int]) -> None:
    t = mini()
    prefix = ".".join(["88", *map(str, segments)])
    node = t.node_for_prefix(prefix)
    owners = [n for n in t.secondaries if prefix == n.code or prefix.startswith(n.code + ".")]
    assert node == (owners[0] if owners else None)


def test_enterprises_of_and_secondary(gz: Topology) -> None:
    assert sum(len(gz.enterprises_of(n.code)) for n in gz.secondaries) == 4065
    assert gz.enterprises_of("88.999") == ()
    with pytest.raises(KeyError):
        gz.secondary("88.999")


# --------------------------------------------------------------------------------------------
# validate


def test_validate_duplicate_node_code() -> None:
    m = mini()
    dup = dataclasses.replace(m.secondaries[2], code="88.101")
    probs = _problems(dataclasses.replace(m, secondaries=m.secondaries[:2] + (dup,)))
    assert any("'88.101'" in p and "2 times" in p for p in probs)


def test_validate_duplicate_enterprise_prefix() -> None:
    m = mini()
    e0 = m.enterprises[0]
    dup = dataclasses.replace(e0, name="Copycat Co., Ltd.")
    probs = _problems(dataclasses.replace(m, enterprises=m.enterprises + (dup,)))
    assert any(repr(e0.prefix) in p and "2 times" in p for p in probs)


def test_validate_enterprise_not_under_node() -> None:
    m = mini()
    bad = Enterprise("88.1180.1", "Trap Co., Ltd.", "88.118", "home-appliances")
    probs = _problems(dataclasses.replace(m, enterprises=m.enterprises + (bad,)))
    assert any("'88.1180.1'" in p and "not under" in p and "'88.118'" in p for p in probs)
    # The node's own code is not an enterprise prefix under it either.
    bad = Enterprise("88.118", "Same Co., Ltd.", "88.118", "home-appliances")
    probs = _problems(dataclasses.replace(m, enterprises=m.enterprises + (bad,)))
    assert any("enterprise '88.118'" in p and "not under" in p for p in probs)


def test_validate_unknown_references() -> None:
    m = mini()
    ghost_node = Enterprise("88.777.1", "Ghost Co., Ltd.", "88.777", "home-appliances")
    ghost_ind = Enterprise("88.118.99", "Odd Co., Ltd.", "88.118", "spaceflight")
    node = dataclasses.replace(m.secondaries[0], industry="whaling")
    t = dataclasses.replace(
        m,
        secondaries=(node, *m.secondaries[1:]),
        enterprises=m.enterprises + (ghost_node, ghost_ind),
    )
    probs = _problems(t)
    assert any("'88.777.1'" in p and "unknown secondary node '88.777'" in p for p in probs)
    assert any("'88.118.99'" in p and "unknown industry 'spaceflight'" in p for p in probs)
    assert any("secondary node '88.101'" in p and "unknown industry 'whaling'" in p for p in probs)


def test_validate_overlapping_codes() -> None:
    m = mini()
    inner = dataclasses.replace(m.secondaries[2], code="88.118.5")
    probs = _problems(dataclasses.replace(m, secondaries=m.secondaries[:2] + (inner,)))
    assert any("overlap" in p and "'88.118.5'" in p and "'88.118'" in p for p in probs)


def test_validate_no_false_overlap() -> None:
    m = mini()
    near = dataclasses.replace(m.secondaries[2], code="88.1180")
    t = dataclasses.replace(
        m,
        secondaries=m.secondaries[:2] + (near,),
        enterprises=tuple(
            dataclasses.replace(e, prefix="88.1180." + e.prefix.rsplit(".", 1)[1], node="88.1180")
            if e.node == "88.201" else e
            for e in m.enterprises
        ),
    )
    validate(t)


def test_validate_duplicate_address() -> None:
    m = mini()
    node = m.secondaries[0]
    clash = dataclasses.replace(node, address=NodeAddress("127.0.0.1", m.top.http_port, node.address.rpc_port))
    probs = _problems(dataclasses.replace(m, secondaries=(clash, *m.secondaries[1:])))
    assert any(f"127.0.0.1:{m.top.http_port}" in p and "top-level node http" in p
               and "secondary node 88.101 http" in p for p in probs)
    # An HTTP port clashing with another node's RPC port counts too.
    rec = NodeAddress("127.0.0.1", m.top.rpc_port, m.recursive.rpc_port)
    probs = _problems(dataclasses.replace(m, recursive=rec))
    assert any("recursive node http" in p and "top-level node rpc" in p for p in probs)
    # The same port on different hosts is fine.
    validate(dataclasses.replace(m, recursive=NodeAddress("127.0.0.2", m.top.http_port, 1)))


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_validate_port_range(port: int) -> None:
    m = mini()
    probs = _problems(dataclasses.replace(m, top=NodeAddress("127.0.0.1", port, m.top.rpc_port)))
    assert any("top-level node http" in p and str(port) in p and "outside" in p for p in probs)


@pytest.mark.parametrize("code", ["88", "88.", "88..1", "88.1a", "abc", "88.118 ", "", ".88.1"])
def test_validate_bad_node_code(code: str) -> None:
    m = mini()
    node = dataclasses.replace(m.secondaries[0], code=code)
    probs = _problems(dataclasses.replace(m, secondaries=(node, *m.secondaries[1:])))
    assert any(f"secondary node {code!r}" in p and "dotted digit" in p for p in probs)


def test_validate_bad_enterprise_prefix() -> None:
    m = mini()
    bad = Enterprise("88.118.x", "X Co., Ltd.", "88.118", "home-appliances")
    probs = _problems(dataclasses.replace(m, enterprises=m.enterprises + (bad,)))
    assert any("'88.118.x'" in p and "dotted digit" in p for p in probs)


def test_validate_accepts_other_national_prefixes() -> None:
    t = Topology(
        name="other",
        seed=0,
        top=NodeAddress("127.0.0.1", 7001, 8001),
        recursive=NodeAddress("127.0.0.1", 7000, 8000),
        industries=(Industry("ceramics", "Ceramics"),),
        secondaries=(SecondarySpec("86.5", "N", "Foshan", "ceramics",
                                   NodeAddress("127.0.0.1", 7002, 8002)),),
        enterprises=(Enterprise("86.5.12", "E", "86.5", "ceramics"),),
    )
    validate(t)
    assert t.node_for_prefix("86.5.12/x").code == "86.5"


def test_validate_duplicate_industry_and_bad_slug() -> None:
    m = mini()
    t = dataclasses.replace(m, industries=m.industries + (m.industries[0], Industry("Bad Slug", "x")))
    probs = _problems(t)
    assert any(repr(m.industries[0].code) in p and "2 times" in p for p in probs)
    assert any("'Bad Slug'" in p and "slug" in p for p in probs)


def test_validate_reports_all_problems_at_once() -> None:
    m = mini()
    dup_node = dataclasses.replace(m.secondaries[2], code="88.101")
    t = dataclasses.replace(
        m,
        top=NodeAddress("127.0.0.1", 70000, m.top.rpc_port),
        secondaries=m.secondaries[:2] + (dup_node,),
        enterprises=m.enterprises + (
            Enterprise("88.118.99", "A", "88.118", "spaceflight"),
            Enterprise("88.1180.1", "B", "88.118", "home-appliances"),
        ),
    )
    with pytest.raises(TopologyError) as info:
        validate(t)
    probs = info.value.problems
    assert len(probs) >= 5
    message = str(info.value)
    for needle in ("70000", "'88.101' is used 2 times", "spaceflight", "'88.1180.1'"):
        assert needle in message
    # Enterprises of the vanished node 88.201 point at an unknown node, each reported.
    assert sum("unknown secondary node '88.201'" in p for p in probs) == len(m.enterprises_of("88.201"))
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------------------------
# with_ports / find_ports_in_use


def test_with_ports_unique(gz: Topology) -> None:
    t = gz.with_ports(base_port=20000, host="127.0.0.2", rpc_base=30000)
    ports = [p for _, _, p in t.endpoints()]
    assert len(ports) == len(set(ports)) == 2 * 35
    assert t.recursive == NodeAddress("127.0.0.2", 20000, 30000)
    assert t.top == NodeAddress("127.0.0.2", 20001, 30001)
    assert t.secondaries[0].address == NodeAddress("127.0.0.2", 20002, 30002)
    assert t.secondaries[-1].address == NodeAddress("127.0.0.2", 20034, 30034)
    assert t.enterprises == gz.enterprises
    validate(t)
    assert gz.with_ports() == gz


def test_with_ports_rejects_bad_ranges(gz: Topology) -> None:
    with pytest.raises(TopologyError):
        gz.with_ports(base_port=65520)
    with pytest.raises(TopologyError):
        gz.with_ports(base_port=0)
    with pytest.raises(TopologyError):
        gz.with_ports(base_port=8000, rpc_base=8010)  # overlaps the HTTP range


@settings(max_examples=50, deadline=None)
@given(base=st.integers(1, 30000), host=st.sampled_from(["127.0.0.1", "localhost", "::1"]))
def test_with_ports_property(base: int, host: str) -> None:
    t = mini().with_ports(base_port=base, host=host)
    validate(t)
    assert len({p for _, _, p in t.endpoints()}) == 10


def test_ipv6_urls() -> None:
    a = NodeAddress("::1", 8000, 9000)
    assert a.http_url == "http://[::1]:8000"
    assert a.rpc_addr == "[::1]:9000"


def test_find_ports_in_use_detects_bound_port() -> None:
    m = mini()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t = dataclasses.replace(m, recursive=NodeAddress("127.0.0.1", port, m.recursive.rpc_port))
        found = find_ports_in_use(t)
        hits = [d for d in found if d.startswith("recursive node http")]
        assert hits == [f"recursive node http 127.0.0.1:{port}: address already in use"]


def test_find_ports_in_use_free_port_not_reported() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = mini()
    t = dataclasses.replace(m, recursive=NodeAddress("127.0.0.1", port, m.recursive.rpc_port))
    assert not any(d.startswith("recursive node http") for d in find_ports_in_use(t))


# --------------------------------------------------------------------------------------------
# TOML


def test_toml_round_trip_guangzhou(gz: Topology, gz_toml: str) -> None:
    assert from_toml(gz_toml) == gz


def test_toml_round_trip_mini() -> None:
    m = mini()
    assert from_toml(to_toml(m)) == m


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), base=st.integers(1, 60000),
       ipe=st.integers(0, 1000))
def test_toml_round_trip_property(seed: int, base: int, ipe: int) -> None:
    m = mini(seed=seed, base_port=base % 30000 + 1, identifiers_per_enterprise=ipe)
    assert from_toml(to_toml(m)) == m


def test_toml_round_trip_awkward_strings() -> None:
    m = mini()
    node = dataclasses.replace(m.secondaries[0], name='Quote " and \\ back\nslash 广州', city="Guǎngzhōu")
    t = dataclasses.replace(m, name="weird\nname", secondaries=(node, *m.secondaries[1:]))
    assert from_toml(to_toml(t)) == t


def test_toml_layout_readable(gz_toml: str) -> None:
    lines = gz_toml.splitlines()
    for header in ("[network]", "[top]", "[recursive]"):
        assert lines.count(header) == 1
    assert lines.count("[[industries]]") == 25
    assert lines.count("[[secondaries]]") == 33
    assert lines.count("[[enterprises]]") == 4065
    assert 'code = "88.118"' in lines
    assert 'prefix = "88.118.8"' in lines


def test_save_and_load(tmp_path, gz: Topology) -> None:
    path = tmp_path / "gz.toml"
    save(gz, path)
    assert load(path) == gz
    assert [p.name for p in tmp_path.iterdir()] == ["gz.toml"]
    path.write_text("[network]\nname = 1\n", encoding="utf-8")
    with pytest.raises(TopologyError) as info:
        load(path)
    assert str(path) in str(info.value) and info.value.problems


def _mini_doc() -> str:
    return to_toml(mini())


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (lambda s: s.replace('name = "mini"\n', "", 1), ["[network]", "'name'"]),
        (lambda s: s.replace("seed = 1\n", 'seed = "one"\n', 1), ["[network]", "'seed'", "integer"]),
        (lambda s: s.replace("seed = 1\n", "seed = true\n", 1), ["'seed'", "boolean"]),
        (lambda s: s.replace("[top]\n", "[topp]\n", 1), ["[top]", "missing"]),
        (lambda s: s.replace('code = "88.118"\n', "", 1), ["secondaries[1]", "'code'"]),
        (lambda s: s.replace('host = "127.0.0.1"\nhttp_port = 8003', 'host = "127.0.0.1"\nhttp_port = "x"', 1),
         ["secondaries[1] (88.118)", "'http_port'"]),
        (lambda s: s.replace('node = "88.118"', "node = 88.118", 1), ["enterprises[", "'node'", "float"]),
        (lambda s: s + "\n[[enterprises]]\nprefix = 5\n", ["enterprises[12]", "'prefix'", "'name'"]),
        (lambda s: s + "\nextra = 1\n", ["unknown key"]),
        (lambda s: s.replace("[[industries]]\n", "[[industries]]\ncolour = \"red\"\n", 1),
         ["industries[0]", "'colour'"]),
        (lambda s: "industries = 3\n" + s.replace("[[industries]]", "[[xx]]"), ["industries", "array of tables"]),
        (lambda s: "network = 3\n" + s.replace("[network]", "[xnetwork]", 1), ["[network]", "table"]),
        (lambda s: s + "\n[[[broken\n", ["invalid TOML"]),
        (lambda s: "", ["[network]", "[top]", "[recursive]"]),
    ],
)
def test_from_toml_errors(mutate, needles: list[str]) -> None:
    text = mutate(_mini_doc())
    with pytest.raises(TopologyError) as info:
        from_toml(text)
    message = str(info.value)
    for needle in needles:
        assert needle in message


def test_from_toml_not_text() -> None:
    with pytest.raises(TopologyError):
        from_toml(b"[network]")  # type: ignore[arg-type]


def test_from_toml_reports_several_problems() -> None:
    text = _mini_doc().replace("seed = 1\n", 'seed = "x"\n', 1).replace('city = "Shenzhen"\n', "", 1)
    with pytest.raises(TopologyError) as info:
        from_toml(text)
    assert len(info.value.problems) == 2


def test_from_toml_defaults_and_hand_written() -> None:
    text = """
[network]
name = "hand"
seed = 3

[top]
host = "127.0.0.1"
http_port = 7001
rpc_port = 7101

[recursive]
host = "127.0.0.1"
http_port = 7000
rpc_port = 7100

[[industries]]
code = "ceramics"
name = "Building Ceramics"

[[secondaries]]
code = "88.213"
name = "Foshan Building Ceramics Secondary Node"
city = "Foshan"
industry = "ceramics"
host = "127.0.0.1"
http_port = 7002
rpc_port = 7102
"""
    t = from_toml(text)
    assert t.identifiers_per_enterprise == 10
    assert t.enterprises == ()
    validate(t)
    assert from_toml(to_toml(t)) == t


def test_toml_layout_one_table_per_entry_even_when_short() -> None:
    # Each entry of mini fits on one line; it is still written as its own [[...]] table.
    lines = to_toml(mini()).splitlines()
    assert lines.count("[[industries]]") == 3
    assert lines.count("[[secondaries]]") == 3
    assert lines.count("[[enterprises]]") == 12
    assert not any(line.startswith(("industries =", "secondaries =", "enterprises =")) for line in lines)
    assert lines[0].startswith("# idsim topology mini: 3 secondary nodes")


_CONFIG_SECTIONS = """
[cache]
answer_entries = 0
negative_ttl = 5

[rpc]
timeout = 1.5
"""


def test_load_with_config_returns_config_sections(tmp_path) -> None:
    path = tmp_path / "net.toml"
    path.write_text(to_toml(mini()) + _CONFIG_SECTIONS, encoding="utf-8")
    topology, layer = load_with_config(path)
    assert topology == mini()
    assert layer == {"cache": {"answer_entries": 0, "negative_ttl": 5}, "rpc": {"timeout": 1.5}}
    config = layered([(str(path), layer)])
    assert (config.cache.answer_entries, config.cache.negative_ttl, config.rpc.timeout) == (0, 5, 1.5)
    assert config.source("cache.answer_entries") == str(path)
    assert load(path) == mini()  # the topology readers accept the sections too


def test_load_with_config_without_sections(tmp_path) -> None:
    path = tmp_path / "net.toml"
    save(mini(), path)
    assert load_with_config(path) == (mini(), {})


def test_from_toml_accepts_every_config_section() -> None:
    sections = "".join(f"\n[{name}]\n" for name in Config().as_dict())
    assert from_toml(to_toml(mini()) + sections) == mini()


def test_config_section_values_are_judged_by_layered(tmp_path) -> None:
    path = tmp_path / "net.toml"
    path.write_text(to_toml(mini()) + "\n[cache]\nanswer_entrys = 1\n", encoding="utf-8")
    _, layer = load_with_config(path)
    with pytest.raises(ConfigError) as info:
        layered([(str(path), layer)])
    assert "cache.answer_entrys" in str(info.value)


def test_unknown_section_still_reported(tmp_path) -> None:
    path = tmp_path / "net.toml"
    path.write_text(to_toml(mini()) + "\n[cachee]\nanswer_entries = 0\n", encoding="utf-8")
    with pytest.raises(TopologyError) as info:
        load_with_config(path)
    assert str(path) in str(info.value)
    assert info.value.problems == ["document: unknown key 'cachee'"]


def test_to_toml_rejects_unwritable() -> None:
    t = dataclasses.replace(mini(), name=None)  # type: ignore[arg-type]
    with pytest.raises(TopologyError):
        to_toml(t)
