"""Places (issue 10 part 1): every node has a city with coordinates, the topology TOML carries
them, validation refuses a city it cannot place, and a network may hold several recursive
nodes in different cities, each with its own ports, process, RPC identity and reports; each
one resolves, and ``idsim status`` and the dashboard show every node's city.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from network_fixtures import FakeClock, free_topology
from resolver.config import Config
from resolver.roles import Role
from resolver.rpc_auth import Caller, role_of
from resolver import errors
from test_cli_up import REPO, Up, check_demo_record, get_json
from topology import demo, places
from topology.cluster import make_logins, plan_workers
from topology.model import NodeAddress, Place, RecursiveSpec, TopologyError
from topology.presets import get_preset, guangzhou_2021, mini
from topology.tomlio import from_toml, to_toml
from topology.validation import validate
from topology.wiring import start_nodes

CLI = [sys.executable, "-m", "topology.cli"]


# ------------------------------------------------------------------ the table

def test_every_preset_city_and_the_big_ones_have_coordinates() -> None:
    for topo in (guangzhou_2021(), mini()):
        for name in topo.node_names():
            city, lat, lon = topo.place_of(name)
            assert places.coordinates(city) == (lat, lon)
            assert 18 < lat < 54 and 73 < lon < 135, (name, city)  # inside China's extent
    for city in ("Beijing", "Shanghai", "Chengdu", "Wuhan", "Xi'an", "Chongqing"):
        assert places.known(city)
    # spellings fold: case, spaces, hyphens and apostrophes
    assert places.canonical("xian") == places.canonical("XI AN") == "Xi'an"
    assert places.coordinates("beijing") == places.CITIES["Beijing"]
    # Beijing is north-east of Guangzhou, Chengdu west of it
    gz, bj, cd = (places.coordinates(c) for c in ("Guangzhou", "Beijing", "Chengdu"))
    assert bj[0] > gz[0] + 15 and bj[1] > gz[1] and cd[1] < gz[1] - 8
    with pytest.raises(KeyError, match="unknown city 'Atlantis'"):
        places.coordinates("Atlantis")


def test_explicit_coordinates_override_the_city() -> None:
    t = mini()
    s = dataclasses.replace(t.secondaries[0], lat=23.5, lon=113.5)
    t = dataclasses.replace(t, secondaries=(s, *t.secondaries[1:]),
                            top_place=Place("Nowhere", 30.0, 100.0))
    validate(t)
    assert t.place_of(s.code) == ("Guangzhou", 23.5, 113.5)
    assert t.place_of("top") == ("Nowhere", 30.0, 100.0)
    assert t.place_of("recursive") == ("Guangzhou", *places.CITIES["Guangzhou"])


# ------------------------------------------------------------------ TOML and validation

def test_toml_round_trip_with_cities_coordinates_and_several_recursive_nodes() -> None:
    t = mini(recursive_cities=["Guangzhou", "Beijing", "xian"])
    s = dataclasses.replace(t.secondaries[1], lat=22.9, lon=113.1)
    extra = RecursiveSpec("recursive-lab", Place("Lab", 31.0, 121.0), NodeAddress(
        "127.0.0.3", 18000, 19000))
    t = dataclasses.replace(t, secondaries=(t.secondaries[0], s, t.secondaries[2]),
                            top_place=Place("Guangzhou", 23.1, 113.3),
                            more_recursive=(*t.more_recursive, extra))
    validate(t)
    text = to_toml(t)
    assert from_toml(text) == t
    assert 'city = "Beijing"' in text and "[[more_recursive]]" in text
    assert 'name = "recursive-xian"' in text and "city = \"Xi'an\"" in text
    assert "lat = 22.9" in text and "lon = 121.0" in text
    # every node's city is written: 3 secondaries, top, 4 recursive nodes
    assert text.count("city = ") == 8


def test_a_file_from_before_places_is_in_guangzhou_and_bad_fields_are_named() -> None:
    text = to_toml(mini()).replace('city = "Guangzhou"\n\n[recursive]', '\n[recursive]', 1)
    assert "[top]\nhost" in text and from_toml(text).top_place == Place("Guangzhou")
    bad = to_toml(mini()).replace('[top]\n', '[top]\nlat = "north"\nzone = 1\n', 1)
    with pytest.raises(TopologyError) as exc:
        from_toml(bad)
    assert any("[top]: field 'lat' must be a number" in p for p in exc.value.problems)
    assert any("[top]: unknown key 'zone'" in p for p in exc.value.problems)


def test_validation_refuses_places_it_cannot_place_and_bad_recursive_names() -> None:
    t = mini(recursive_cities=["Guangzhou", "Beijing"])
    s0 = dataclasses.replace(t.secondaries[0], city="Atlantis")
    s1 = dataclasses.replace(t.secondaries[1], city="Atlantis", lat=10.0, lon=20.0)  # fine
    s2 = dataclasses.replace(t.secondaries[2], lat=95.0, lon=None)
    odd = RecursiveSpec("resolver-2", Place("Shanghai"), NodeAddress("127.0.0.1", 18000, 19000))
    twin = dataclasses.replace(t.more_recursive[0], address=NodeAddress("127.0.0.1", 18001, 19001))
    bad = dataclasses.replace(t, secondaries=(s0, s1, s2), more_recursive=(
        *t.more_recursive, odd, twin), top_place=Place("", None, None))
    with pytest.raises(TopologyError) as exc:
        validate(bad)
    text = "\n".join(exc.value.problems)
    assert "secondary node '88.101': unknown city 'Atlantis'" in text
    assert "'88.118'" not in text  # an unknown city with coordinates is placed
    assert "secondary node '88.201': give both lat and lon" in text
    assert "lat 95.0 is outside -90..90" in text
    assert "top-level node: city must be a non-empty string" in text
    assert "recursive node 'resolver-2': name must be recursive-<lowercase slug>" in text
    assert "recursive node name 'recursive-beijing' is used 2 times" in text


def test_further_recursive_nodes_get_ports_after_the_others_and_processes_of_their_own() -> None:
    t = get_preset("mini", base_port=20000,
                   recursive_cities=["Beijing", "Shanghai", "Chengdu", "Shanghai"])
    validate(t)  # every port distinct
    assert t.recursive_place.city == "Beijing" and t.recursive.http_port == 20000
    assert [(r.name, r.address.http_port, r.address.rpc_port) for r in t.more_recursive] == [
        ("recursive-shanghai", 20005, 21005), ("recursive-chengdu", 20006, 21006),
        ("recursive-shanghai-2", 20007, 21007)]
    assert t.counts()["recursive_nodes"] == 4
    # with the default single recursive node nothing moved
    assert mini(base_port=20000).secondaries == t.secondaries
    plan = plan_workers(t, workers=4)
    for name in ("recursive", "recursive-shanghai", "recursive-chengdu", "recursive-shanghai-2"):
        assert [name] in plan
    assert sum(len(p) for p in plan) == len(t.node_names())
    logins = make_logins(t)
    assert set(logins["rpc"]) == set(t.node_names())  # each node its own RPC key


def test_a_recursive_node_reports_for_itself_only() -> None:
    from resolver.top import TopNode
    from resolver.store import open_store
    assert role_of("recursive-beijing") == Role.RECURSIVE and role_of("88.118") == Role.SECONDARY
    top = TopNode("top", open_store("memory:", Config().store), "88", Config(),
                  clock=FakeClock())
    bj = Caller("recursive-beijing", Role.RECURSIVE)
    top.report_from(bj, "recursive-beijing@123", {"resolutions": 4})
    assert top.statistics()["recursive"] == {"recursive-beijing@123": {"resolutions": 4}}
    for code in ("recursive@123", "recursive-shanghai@1", "88.118"):
        with pytest.raises(errors.HandleError):
            top.report_from(bj, code, {"resolutions": 1})


# ------------------------------------------------------------------ running networks

async def test_each_recursive_node_resolves_and_the_dashboard_lists_them_with_cities(
        tmp_path) -> None:
    import aiohttp
    for _ in range(5):  # a lost port race: another free range
        topo = free_topology("mini", recursive_cities=["Guangzhou", "Beijing", "Chengdu"])
        try:
            running = await start_nodes(topo, topo.node_names(), Config(), data_dir=tmp_path,
                                        logins=make_logins(topo), store="memory",
                                        clock=FakeClock())
            break
        except OSError:
            continue
    handle = f"88.118.8/{demo.suffix(0)}"
    try:
        async with aiohttp.ClientSession() as http:
            for r in topo.recursives():
                async with http.get(f"{r.address.http_url}/api/handles/{handle}") as resp:
                    assert resp.status == 200
                    check_demo_record(await resp.json(), handle)
                assert running.nodes[r.name].stats["upstream_calls"] >= 1  # each its own cache
            beijing = topo.more_recursive[0].address.http_url
            async with http.get(f"{beijing}/dashboard/data") as resp:
                doc = await resp.json()
        cities = {n["name"]: n["city"] for n in doc["nodes"]}
        assert cities["recursive"] == "Guangzhou" and cities["recursive-beijing"] == "Beijing"
        assert cities["recursive-chengdu"] == "Chengdu" and cities["top"] == "Guangzhou"
        assert cities["88.201"] == "Shenzhen"
    finally:
        await running.close()


@contextmanager
def idsim_up(args: list[str], data: Path, log: Path):
    with open(log, "w") as out:
        proc = subprocess.Popen(CLI + ["up", *args, "--data", str(data)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    up = Up(proc, data, log)
    try:
        yield up
    finally:
        up.kill_all()


@pytest.mark.timeout(120)
def test_idsim_up_with_recursive_cities_and_status_shows_every_city(tmp_path: Path) -> None:
    port = free_topology("mini", recursive_cities=["Guangzhou", "Beijing"]).recursive.http_port
    data = tmp_path / "data"
    with idsim_up(["--preset", "mini", "--port", str(port), "--workers", "2",
                   "--recursive-cities", "Guangzhou,Beijing"], data, tmp_path / "up.log") as up:
        state = up.wait_ready()
        by_name = {n["name"]: n for n in state["nodes"]}
        assert by_name["recursive-beijing"]["city"] == "Beijing"
        assert by_name["recursive-beijing"]["httpUrl"] == f"http://127.0.0.1:{port + 5}"
        assert set(state["recursiveUrls"]) == {"recursive", "recursive-beijing"}
        procs = [p["nodes"] for p in state["processes"]]
        assert ["recursive"] in procs and ["recursive-beijing"] in procs
        handle = state["examples"][0]
        for url in state["recursiveUrls"].values():
            status, body = get_json(f"{url}/api/handles/{handle}")
            assert status == 200
            check_demo_record(body, handle)
        run = subprocess.run(CLI + ["status", "--data", str(data), "--interval", "0.2"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        rows = {line.split()[1]: line for line in run.stdout.splitlines()
                if line.startswith("│")}
        assert "Beijing" in rows["recursive-beijing"] and "Guangzhou" in rows["top"]
        assert "Shenzhen" in rows["88.201"] and "ready" in rows["recursive-beijing"]
        topo_text = (data / "topology.toml").read_text()
        assert 'name = "recursive-beijing"' in topo_text and 'city = "Beijing"' in topo_text
        assert up.interrupt() == 0
