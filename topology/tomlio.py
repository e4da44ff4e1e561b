"""A `Topology` as a hand-readable TOML file, and back.

Layout, in this order: ``[network]`` (name, seed, identifiers_per_enterprise), ``[top]`` and
``[recursive]`` (host, http_port, rpc_port, city, optional lat/lon), then one
``[[industries]]``, ``[[secondaries]]`` (address and place fields inline), ``[[enterprises]]``
(an enterprise's ``identifiers``: its synthetic population, written when not 0) or
``[[more_recursive]]`` (further recursive nodes: name, place, address) or ``[[mirrors]]``
(``topology.mirrors``: name, primary, place, address) table per entry, and
the industry templates as ``[templates.<industry>]`` (``name``) with
``[templates.<industry>.fields]`` (field = "type"; ``[network] population`` full|demo|none
written when not demo). Every node's ``city`` is written; ``lat``/``lon`` only when the node
overrides its city's coordinates (`topology.places`). A ``[top]``/``[recursive]`` without a
city (files from before places) is in Guangzhou. A file may also hold node
configuration sections (``[cache]``, ``[rpc]``, ... — `resolver.config.SECTIONS`);
`load_with_config` returns them as a config layer, the other readers ignore them.

Invariants: ``from_toml(to_toml(t)) == t`` for every topology whose fields have their
declared types; the whole document is written by one ``tomli_w.dumps`` call; reading checks
structure only (sections, fields, types, unknown keys), reporting every problem in one
`TopologyError`, and leaves consistency to `topology.validation.validate`. `save` replaces
the file atomically.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from resolver import templates as industry_templates
from resolver.config import SECTIONS, config_sections

from .mirrors import MirrorSpec
from .model import (Enterprise, Industry, NodeAddress, Place, RecursiveSpec, SecondarySpec,
                    Topology, TopologyError)

__all__ = ["from_toml", "load", "load_with_config", "save", "to_toml"]

_NETWORK_KEYS = ("name", "seed", "identifiers_per_enterprise", "population")
_ADDRESS_KEYS = ("host", "http_port", "rpc_port", "scheme")  # scheme: optional, "http"
_INDUSTRY_KEYS = ("code", "name")
_PLACE_KEYS = ("city", "lat", "lon")  # lat, lon: optional, override the city's coordinates
_SECONDARY_KEYS = ("code", "name", "city", "industry", *_ADDRESS_KEYS, "lat", "lon")
_ENTERPRISE_KEYS = ("prefix", "name", "node", "industry", "identifiers")
_RECURSIVE_KEYS = ("name", *_PLACE_KEYS, *_ADDRESS_KEYS)
_MIRROR_KEYS = ("name", "primary", *_PLACE_KEYS, *_ADDRESS_KEYS)
_TOPOLOGY_KEYS = ("network", "top", "recursive", "industries", "secondaries", "enterprises",
                  "more_recursive", "templates", "mirrors")
_DOCUMENT_KEYS = (*_TOPOLOGY_KEYS, *SECTIONS)

# tomli_w writes an array of tables inline (``industries = [{...}, ...]``) when every entry,
# indented, fits in 100 columns. An indent wider than that keeps each entry a ``[[...]]``
# table. The indent is used for nothing else here: a topology holds no other arrays.
_NO_INLINE_INDENT = 101


def _address_dict(a: NodeAddress) -> dict[str, Any]:
    scheme = {} if a.scheme == "http" else {"scheme": a.scheme}  # written only when not http
    return {"host": a.host, "http_port": a.http_port, "rpc_port": a.rpc_port, **scheme}


def _place_dict(city: str, lat: float | None, lon: float | None) -> dict[str, Any]:
    coords = {k: v for k, v in (("lat", lat), ("lon", lon)) if v is not None}
    return {"city": city, **coords}


def _document(t: Topology) -> dict[str, Any]:
    """The TOML document for *t*, as one dict in file order (empty arrays left out)."""
    doc: dict[str, Any] = {
        "network": {
            "name": t.name,
            "seed": t.seed,
            "identifiers_per_enterprise": t.identifiers_per_enterprise,
            **({} if t.population == "demo" else {"population": t.population}),
        },
        "top": {**_address_dict(t.top), **_place_dict(*_fields(t.top_place))},
        "recursive": {**_address_dict(t.recursive), **_place_dict(*_fields(t.recursive_place))},
        "industries": [{"code": i.code, "name": i.name} for i in t.industries],
        # [templates.<industry>] name and a fields table, field = "type"
        "templates": {tp.industry: industry_templates.to_spec(tp) for tp in t.templates},
        "secondaries": [
            {"code": n.code, "name": n.name, "city": n.city, "industry": n.industry,
             **_address_dict(n.address), **_place_dict(n.city, n.lat, n.lon)}
            for n in t.secondaries
        ],
        "enterprises": [
            {"prefix": e.prefix, "name": e.name, "node": e.node, "industry": e.industry,
             **({"identifiers": e.identifiers} if e.identifiers else {})}  # population
            for e in t.enterprises
        ],
        "more_recursive": [{"name": r.name, **_place_dict(*_fields(r.place)),
                            **_address_dict(r.address)} for r in t.more_recursive],
        "mirrors": [{"name": m.name, "primary": m.primary, **_place_dict(*_fields(m.place)),
                     **_address_dict(m.address)} for m in t.mirrors],
    }
    return {key: value for key, value in doc.items() if value not in ([], {})}


def _fields(p: Place) -> tuple[str, float | None, float | None]:
    return p.city, p.lat, p.lon


def to_toml(topology: Topology) -> str:
    """Render *topology* as hand-readable TOML (layout above); `from_toml` reads it back."""
    t = topology
    label = " ".join(str(t.name).split())  # a comment must stay on one line
    header = (f"# idsim topology {label}: {len(t.secondaries)} secondary nodes, "
              f"{len(t.industries)} industries, {len(t.enterprises)} enterprises\n\n")
    try:
        return header + tomli_w.dumps(_document(t), indent=_NO_INLINE_INDENT)
    except TypeError as exc:  # e.g. a None where a string belongs
        raise TopologyError(f"cannot write topology {t.name!r} as TOML: {exc}") from None


class _Reader:
    """Pulls typed fields out of parsed TOML, collecting every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def table(self, doc: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any] | None:
        if key not in doc:
            if required:
                self.problems.append(f"[{key}]: section is missing")
            return None
        value = doc[key]
        if not isinstance(value, dict):
            self.problems.append(f"[{key}]: expected a table, got {_type_name(value)}")
            return None
        return value

    def array(self, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
        if key not in doc:
            return []  # a topology may have no entries of a kind; validate() judges that
        value = doc[key]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problems.append(f"[[{key}]]: expected an array of tables, got {_type_name(value)}")
            return []
        return value

    def unknown(self, tbl: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in tbl:
            if key not in allowed:
                self.problems.append(f"{where}: unknown key {key!r}")

    def field(self, tbl: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
        if key not in tbl:
            if default is not ...:
                return default
            self.problems.append(f"{where}: missing field {key!r}")
            return None
        value = tbl[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.problems.append(
                f"{where}: field {key!r} must be {_KIND_NAMES[kind]}, got {_type_name(value)} {value!r}"
            )
            return None
        return value

    def address(self, tbl: dict[str, Any], where: str) -> NodeAddress:
        return NodeAddress(
            host=self.field(tbl, "host", str, where),
            http_port=self.field(tbl, "http_port", int, where),
            rpc_port=self.field(tbl, "rpc_port", int, where),
            scheme=self.field(tbl, "scheme", str, where, default="http"),
        )

    def coordinate(self, tbl: dict[str, Any], key: str, where: str) -> float | None:
        value = tbl.get(key)
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return None if value is None else float(value)
        self.problems.append(f"{where}: field {key!r} must be a number of degrees, got "
                             f"{_type_name(value)} {value!r}")
        return None

    def place(self, tbl: dict[str, Any], where: str, default_city: Any = ...) -> Place:
        return Place(self.field(tbl, "city", str, where, default=default_city),
                     self.coordinate(tbl, "lat", where), self.coordinate(tbl, "lon", where))


_KIND_NAMES = {str: "a string", int: "an integer"}


def _type_name(value: object) -> str:
    return {
        str: "string", int: "integer", bool: "boolean", float: "float", list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def from_toml(text: str) -> Topology:
    """Parse TOML written by `to_toml` (or by hand in the same layout).

    Raises TopologyError, naming the section and field, for TOML syntax errors, missing
    sections or fields, wrongly typed values and unknown keys. Config sections are allowed
    and ignored here (see `load_with_config`). It checks structure only: call `validate` for
    consistency.
    """
    return _parse(text)[0]


def load(path: str | os.PathLike[str]) -> Topology:
    """Read a topology from the TOML file *path* (structure checked, not validated)."""
    return load_with_config(path)[0]


def load_with_config(path: str | os.PathLike[str]) -> tuple[Topology, dict[str, Any]]:
    """Read the topology in *path* and its config sections, as a config layer.

    The layer is ``{section: {key: value}}`` for the sections of `resolver.config.SECTIONS`
    present in the file (``{}`` if none); `resolver.config.layered` checks its keys and
    values. Problems with the topology raise TopologyError prefixed with *path*.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return _parse(text)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc.summary}", exc.problems) from None


def _parse(text: str) -> tuple[Topology, dict[str, Any]]:
    """The topology of TOML *text* and its config sections (see `from_toml`)."""
    if not isinstance(text, str):
        raise TopologyError(f"from_toml expects TOML text as str, got {_type_name(text)}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"invalid TOML: {exc}") from None

    r = _Reader()
    r.unknown(doc, _DOCUMENT_KEYS, "document")

    name = seed = None
    ipe, population = 10, "demo"
    network = r.table(doc, "network")
    if network is not None:
        r.unknown(network, _NETWORK_KEYS, "[network]")
        name = r.field(network, "name", str, "[network]")
        seed = r.field(network, "seed", int, "[network]")
        ipe = r.field(network, "identifiers_per_enterprise", int, "[network]", default=10)
        population = r.field(network, "population", str, "[network]", default="demo")

    addresses, where_at = {}, {}
    for key in ("top", "recursive"):
        tbl = r.table(doc, key)
        if tbl is not None:
            r.unknown(tbl, (*_ADDRESS_KEYS, *_PLACE_KEYS), f"[{key}]")
            addresses[key] = r.address(tbl, f"[{key}]")
            where_at[key] = r.place(tbl, f"[{key}]", default_city="Guangzhou")

    industries = []
    for i, tbl in enumerate(r.array(doc, "industries")):
        where = f"industries[{i}]"
        r.unknown(tbl, _INDUSTRY_KEYS, where)
        industries.append(Industry(code=r.field(tbl, "code", str, where),
                                   name=r.field(tbl, "name", str, where)))

    secondaries = []
    for i, tbl in enumerate(r.array(doc, "secondaries")):
        where = f"secondaries[{i}]" + (f" ({tbl['code']})" if isinstance(tbl.get("code"), str) else "")
        r.unknown(tbl, _SECONDARY_KEYS, where)
        secondaries.append(SecondarySpec(
            code=r.field(tbl, "code", str, where),
            name=r.field(tbl, "name", str, where),
            city=r.field(tbl, "city", str, where),
            industry=r.field(tbl, "industry", str, where),
            address=r.address(tbl, where),
            lat=r.coordinate(tbl, "lat", where),
            lon=r.coordinate(tbl, "lon", where),
        ))

    enterprises = []
    for i, tbl in enumerate(r.array(doc, "enterprises")):
        where = f"enterprises[{i}]" + (f" ({tbl['prefix']})" if isinstance(tbl.get("prefix"), str) else "")
        r.unknown(tbl, _ENTERPRISE_KEYS, where)
        enterprises.append(Enterprise(
            prefix=r.field(tbl, "prefix", str, where),
            name=r.field(tbl, "name", str, where),
            node=r.field(tbl, "node", str, where),
            industry=r.field(tbl, "industry", str, where),
            identifiers=r.field(tbl, "identifiers", int, where, default=0),
        ))

    more = []
    for i, tbl in enumerate(r.array(doc, "more_recursive")):
        where = f"more_recursive[{i}]" + (f" ({tbl['name']})" if isinstance(tbl.get("name"), str)
                                          else "")
        r.unknown(tbl, _RECURSIVE_KEYS, where)
        more.append(RecursiveSpec(r.field(tbl, "name", str, where), r.place(tbl, where),
                                  r.address(tbl, where)))

    mirrors = []
    for i, tbl in enumerate(r.array(doc, "mirrors")):
        where = f"mirrors[{i}]" + (f" ({tbl['name']})" if isinstance(tbl.get("name"), str)
                                   else "")
        r.unknown(tbl, _MIRROR_KEYS, where)
        mirrors.append(MirrorSpec(r.field(tbl, "name", str, where),
                                  r.field(tbl, "primary", str, where), r.place(tbl, where),
                                  r.address(tbl, where)))

    templates = []
    for code, spec in (r.table(doc, "templates", required=False) or {}).items():
        try:
            templates.append(industry_templates.from_spec(code, spec))
        except ValueError as exc:
            r.problems.append(str(exc))

    if r.problems:
        raise TopologyError("invalid topology TOML", r.problems)
    topology = Topology(
        name=name,
        seed=seed,
        top=addresses["top"],
        recursive=addresses["recursive"],
        industries=tuple(industries),
        secondaries=tuple(secondaries),
        enterprises=tuple(enterprises),
        identifiers_per_enterprise=ipe,
        top_place=where_at["top"],
        recursive_place=where_at["recursive"],
        more_recursive=tuple(more),
        templates=tuple(templates),
        population=population,
        mirrors=tuple(mirrors),
    )
    return topology, config_sections(doc)


def save(topology: Topology, path: str | os.PathLike[str]) -> None:
    """Write *topology* as TOML to *path*, atomically (temporary file then rename)."""
    path = Path(path)
    text = to_toml(topology)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
