"""The WAN model's presets and its setup from a topology: ``idsim up --wan china|off|FILE``.

* ``WAN_PRESETS``: named sets of ``[wan]`` values (``china``: links between Chinese cities);
* ``wan_layer(spec)``: the config layer ``--wan`` makes (a preset, ``off``, or a TOML file
  whose ``[wan]`` values go over the ``china`` preset and whose ``[matrix.CityA] CityB = ms``
  tables are the custom matrix);
* ``CITY_COORDS`` and ``places(topo)``: where each node is. The coordinates table is the one
  place cities get coordinates here (replace it with ``topology.places`` once that exists);
  the top-level and recursive nodes are placed in ``TOP_CITY`` / ``RECURSIVE_CITY``;
* ``build_links(config, topo, clock)``: the ``resolver.link.Links`` a host process applies,
  or None when ``[wan] enabled`` is 0 (then nothing is delayed anywhere).

Invariants: a preset only sets keys of ``resolver.config.WanConfig``; the matrix file is read
here, never by ``resolver.wan`` (pure); an unreadable ``--wan`` file is a ValueError saying
which file and why.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from resolver.clock import Clock
from resolver.config import Config
from resolver.link import Links
from resolver.wan import Place, WanModel, parse_matrix
from topology.model import Topology

__all__ = ["CITY_COORDS", "RECURSIVE_CITY", "TOP_CITY", "WAN_PRESETS", "build_links",
           "load_matrix", "places", "wan_flags", "wan_layer"]

# City -> (latitude, longitude), degrees: city centres (rounded to 0.01 deg). Every city of the
# guangzhou-2021 and mini presets, and the other places a recursive node may be.
CITY_COORDS: dict[str, tuple[float, float]] = {
    "Guangzhou": (23.13, 113.26), "Shenzhen": (22.54, 114.06), "Foshan": (23.02, 113.12),
    "Dongguan": (23.02, 113.75), "Zhuhai": (22.27, 113.58), "Huizhou": (23.11, 114.42),
    "Zhongshan": (22.52, 113.39), "Jiangmen": (22.58, 113.08), "Shantou": (23.35, 116.68),
    "Zhaoqing": (23.05, 112.47), "Changsha": (28.23, 112.94), "Xiamen": (24.48, 118.09),
    "Nanning": (22.82, 108.37), "Haikou": (20.04, 110.32), "Beijing": (39.90, 116.41),
    "Shanghai": (31.23, 121.47), "Chengdu": (30.57, 104.07), "Wuhan": (30.59, 114.31),
    "Chongqing": (29.56, 106.55), "Hangzhou": (30.27, 120.16), "Nanjing": (32.06, 118.80),
    "Xi'an": (34.34, 108.94), "Tianjin": (39.13, 117.20), "Shenyang": (41.81, 123.43),
    "Harbin": (45.80, 126.53), "Kunming": (24.88, 102.83), "Urumqi": (43.83, 87.62),
    "Lhasa": (29.65, 91.17), "Hong Kong": (22.32, 114.17), "Macau": (22.20, 113.54),
}
TOP_CITY = "Guangzhou"        # the guangzhou-2021 network's top-level node
RECURSIVE_CITY = "Guangzhou"  # its recursive node

# [wan] values of each preset (the rest: resolver.config.WanConfig's defaults).
WAN_PRESETS: dict[str, dict[str, Any]] = {
    "china": {
        "route_factor": 2.0,       # fibre path / great circle (see the README)
        "fibre_km_per_ms": 200.0,
        "base_ms": 1.0,            # switching and the last metres at each end, one way
        "intra_city_ms": 0.5,      # two data centres of one city
        "jitter_median_ms": 0.5,
        "jitter_p99_ms": 5.0,
        "loss": 0.001,             # one transmission in a thousand costs an RTO
        "rto_ms": 200.0,
        "max_retries": 6,
        "bandwidth_mbps": 100.0,   # a node's leased line: 10 KB cost 0.8 ms
    },
}


def wan_layer(spec: str) -> dict[str, dict[str, Any]]:
    """The config layer of ``--wan SPEC``: ``off``, a preset name, or a TOML file."""
    if spec == "off":
        return {"wan": {"enabled": 0}}
    if spec in WAN_PRESETS:
        return {"wan": {**WAN_PRESETS[spec], "enabled": 1}}
    path = Path(spec)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"--wan {spec}: not off, {', '.join(WAN_PRESETS)} or a readable "
                         f"TOML file ({exc})") from None
    values = dict(doc.get("wan", {}))
    if "matrix" in doc:  # inline: this file is the matrix file
        parse_matrix(doc["matrix"])  # malformed: say so now, not in every host process
        values["matrix"] = str(path.resolve())
    elif isinstance(values.get("matrix"), str) and values["matrix"]:
        values["matrix"] = str((path.parent / values["matrix"]).resolve())
    return {"wan": {**WAN_PRESETS["china"], "enabled": 1, **values}}


def wan_flags(args) -> dict:
    """The labelled layer ``--wan`` makes (see ``topology.cli_config.effective_config``)."""
    spec = getattr(args, "wan", None)
    return {} if spec is None else {"--wan": wan_layer(spec)}


def load_matrix(path: str) -> dict[tuple[str, str], float]:
    """The ``[matrix]`` tables of a TOML file, as ``resolver.wan.parse_matrix`` reads them."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"wan.matrix {path}: {exc}") from None
    return parse_matrix(doc.get("matrix", {}))


def place_of(city: str) -> Place:
    try:
        lat, lon = CITY_COORDS[city]
    except KeyError:
        raise ValueError(f"no coordinates for city {city!r} (known: "
                         f"{', '.join(sorted(CITY_COORDS))})") from None
    return Place(city, lat, lon)


def places(topo: Topology) -> dict[str, Place]:
    """Node name (``top``, ``recursive``, a secondary's code) -> its place."""
    out = {"top": place_of(TOP_CITY), "recursive": place_of(RECURSIVE_CITY)}
    for s in topo.secondaries:
        out[s.code] = place_of(s.city)
    return out


def addresses(topo: Topology) -> dict[str, str]:
    """RPC address -> node name, for every node of the topology."""
    out = {topo.top.rpc_addr: "top", topo.recursive.rpc_addr: "recursive"}
    for s in topo.secondaries:
        out[s.address.rpc_addr] = s.code
    return out


def build_links(config: Config, topo: Topology, clock: Clock) -> Links | None:
    """The links of a host process when ``[wan] enabled``; None (nothing delayed) otherwise."""
    wan = config.wan
    if not wan.enabled:
        return None
    matrix = load_matrix(wan.matrix) if wan.matrix else {}
    return Links(WanModel(wan, places(topo), matrix), clock, addresses(topo))
