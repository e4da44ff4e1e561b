"""The WAN model's presets and its setup from a topology: ``idsim up --wan china|off|FILE``.

* ``WAN_PRESETS``: named sets of ``[wan]`` values (``china``: links between Chinese cities);
* ``wan_layer(spec)``: the config layer ``--wan`` makes (a preset, ``off``, or a TOML file
  whose ``[wan]`` values go over the ``china`` preset and whose ``[matrix.CityA] CityB = ms``
  tables are the custom matrix);
* ``places(topo)``: where each node is (the topology's cities and ``topology.places``);
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
from topology.places import coordinates

__all__ = ["WAN_PRESETS", "addresses", "place_of", "build_links", "load_matrix", "places", "wan_flags",
           "wan_layer"]

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
    """A city's place, from ``topology.places``; ValueError for a city it does not know."""
    try:
        return Place(city, *coordinates(city))
    except KeyError:
        raise ValueError(f"no coordinates for city {city!r} (add it to topology/places.py, or "
                         "give the node lat and lon)") from None


def places(topo: Topology) -> dict[str, Place]:
    """Node name (``top``, ``recursive``, ``recursive-<city>``, a secondary's code) -> its place,
    from the topology (``Topology.place_of``: explicit coordinates, else ``topology.places``)."""
    return {name: Place(*topo.place_of(name)) for name in topo.node_names()}


def addresses(topo: Topology) -> dict[str, str]:
    """RPC address -> node name, for every node of the topology."""
    return {topo.address_of(name).rpc_addr: name for name in topo.node_names()}


def build_links(config: Config, topo: Topology, clock: Clock) -> Links | None:
    """The links of a host process when ``[wan] enabled``; None (nothing delayed) otherwise."""
    wan = config.wan
    if not wan.enabled:
        return None
    matrix = load_matrix(wan.matrix) if wan.matrix else {}
    return Links(WanModel(wan, places(topo), matrix), clock, addresses(topo))
