"""The shape of a simulated identifier resolution network, as plain frozen data.

An identifier such as ``88.118.8/SN-0001`` reads, left to right: national prefix ``88``,
secondary node code ``88.118``, enterprise prefix ``88.118.8``, then ``/`` and the
enterprise's own suffix. The network has one top-level node, any number of secondary nodes
(each owning exactly one node code and serving the enterprise prefixes under it) and one
recursive node, the entry point clients talk to.

Everything here is data and pure logic. The single exception is `find_ports_in_use`, which
binds sockets to see which addresses are taken; `validate` never touches the network.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re
import socket
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "Enterprise",
    "Industry",
    "NodeAddress",
    "SecondaryNode",
    "Topology",
    "TopologyError",
    "find_ports_in_use",
    "from_toml",
    "is_code",
    "is_under",
    "load",
    "save",
    "to_toml",
    "validate",
]

# A node code or enterprise prefix: a national prefix (``88`` in China, but any digits are
# accepted) followed by at least one ``.digits`` segment.
_CODE_RE = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_SLUG_RE = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*")

MIN_PORT = 1
MAX_PORT = 65535


class TopologyError(ValueError):
    """A topology (or its TOML text) is malformed.

    ``problems`` lists every individual problem found, each naming the offending item; the
    message repeats them one per line.
    """

    def __init__(self, message: str, problems: list[str] | tuple[str, ...] = ()) -> None:
        self.summary = message
        self.problems: list[str] = list(problems)
        if self.problems:
            message = f"{message} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# Codes


def is_code(text: object) -> bool:
    """True if *text* is a dotted digit code such as ``88.118`` or ``86.5.12``."""
    return isinstance(text, str) and _CODE_RE.fullmatch(text) is not None


def is_under(child: str, parent: str, *, strict: bool = False) -> bool:
    """True if *child* equals *parent* or extends it by whole dotted segments.

    ``is_under("88.118.8", "88.118")`` is true, ``is_under("88.1180.1", "88.118")`` is not.
    With ``strict=True`` equality does not count.
    """
    if child == parent:
        return not strict
    return child.startswith(parent + ".")


def _ancestors(code: str) -> list[str]:
    """Proper dotted prefixes of *code*, longest first: ``88.118.8`` → ``88.118``, ``88``."""
    parts = code.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class Industry:
    code: str  # short slug, e.g. "electronics"
    name: str


@dataclass(frozen=True, slots=True)
class NodeAddress:
    host: str
    http_port: int
    rpc_port: int

    @property
    def http_url(self) -> str:
        return f"http://{_host_for_url(self.host)}:{self.http_port}"

    @property
    def rpc_addr(self) -> str:
        return f"{_host_for_url(self.host)}:{self.rpc_port}"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class SecondaryNode:
    code: str  # node code, e.g. "88.118"
    name: str
    city: str
    industry: str  # Industry.code
    address: NodeAddress


@dataclass(frozen=True, slots=True)
class Enterprise:
    prefix: str  # enterprise prefix, e.g. "88.118.8"
    name: str
    node: str  # SecondaryNode.code
    industry: str  # Industry.code


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    seed: int
    top: NodeAddress
    recursive: NodeAddress
    industries: tuple[Industry, ...]
    secondaries: tuple[SecondaryNode, ...]
    enterprises: tuple[Enterprise, ...]
    identifiers_per_enterprise: int = 10

    def __post_init__(self) -> None:
        # Accept lists from callers but always store tuples, so topologies stay hashable and
        # compare equal however they were built.
        for field in ("industries", "secondaries", "enterprises"):
            value = getattr(self, field)
            if not isinstance(value, tuple):
                object.__setattr__(self, field, tuple(value))

    # -- lookups ---------------------------------------------------------------------------

    def secondary(self, code: str) -> SecondaryNode:
        """The secondary node with node code *code*; KeyError if there is none."""
        for node in self.secondaries:
            if node.code == code:
                return node
        raise KeyError(f"no secondary node with code {code!r}")

    def industry(self, code: str) -> Industry:
        """The industry with slug *code*; KeyError if there is none."""
        for ind in self.industries:
            if ind.code == code:
                return ind
        raise KeyError(f"no industry with code {code!r}")

    def enterprise(self, prefix: str) -> Enterprise:
        """The enterprise with prefix *prefix*; KeyError if there is none."""
        for ent in self.enterprises:
            if ent.prefix == prefix:
                return ent
        raise KeyError(f"no enterprise with prefix {prefix!r}")

    def enterprises_of(self, node_code: str) -> tuple[Enterprise, ...]:
        """Enterprises registered with the secondary node *node_code*, in topology order."""
        return tuple(e for e in self.enterprises if e.node == node_code)

    def node_for_prefix(self, prefix: str) -> SecondaryNode | None:
        """The secondary node responsible for *prefix*, or None.

        That is the node whose code is the longest dotted-segment prefix of *prefix* (a node
        also answers for its own code). A full identifier is accepted too: everything from the
        first ``/`` on is ignored. ``88.1180.1`` is not under ``88.118``.
        """
        prefix = prefix.split("/", 1)[0]
        by_code = {n.code: n for n in self.secondaries}
        for candidate in [prefix, *_ancestors(prefix)]:
            node = by_code.get(candidate)
            if node is not None:
                return node
        return None

    # -- summaries -------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Headline numbers, in the terms the published statistics use."""
        return {
            "top_level_nodes": 1,
            "recursive_nodes": 1,
            "secondary_nodes": len(self.secondaries),
            "industries": len(self.industries),
            "industries_served": len({n.industry for n in self.secondaries}),
            "cities": len({n.city for n in self.secondaries}),
            "enterprises": len(self.enterprises),
            "identifiers": len(self.enterprises) * self.identifiers_per_enterprise,
        }

    def nodes_by_city(self) -> dict[str, int]:
        """Number of secondary nodes per city, most first (ties by name)."""
        c = Counter(n.city for n in self.secondaries)
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    def enterprises_per_node(self) -> dict[str, int]:
        """Number of enterprises per secondary node code, in secondary-node order."""
        c = Counter(e.node for e in self.enterprises)
        return {n.code: c.get(n.code, 0) for n in self.secondaries}

    # -- re-addressing ---------------------------------------------------------------------

    def with_ports(
        self, base_port: int = 8000, host: str = "127.0.0.1", rpc_base: int | None = None
    ) -> Topology:
        """A copy with every node re-addressed on *host* with consecutive ports.

        HTTP ports: recursive node ``base_port``, top-level node ``base_port + 1``, secondary
        node *i* (in topology order) ``base_port + 2 + i``. RPC ports use the same offsets from
        *rpc_base*, which defaults to ``base_port + 1000``. Raises TopologyError if a port
        would fall outside 1..65535 or the HTTP and RPC ranges would overlap.
        """
        rpc = base_port + 1000 if rpc_base is None else rpc_base
        span = len(self.secondaries) + 2
        problems = []
        for label, start in (("base_port", base_port), ("rpc_base", rpc)):
            if isinstance(start, bool) or not isinstance(start, int):
                problems.append(f"{label} must be an integer, got {start!r}")
            elif start < MIN_PORT or start + span - 1 > MAX_PORT:
                problems.append(
                    f"{label} {start}: ports {start}..{start + span - 1} for {span} nodes "
                    f"must lie within {MIN_PORT}..{MAX_PORT}"
                )
        if not problems and base_port < rpc + span and rpc < base_port + span:
            problems.append(
                f"HTTP ports {base_port}..{base_port + span - 1} overlap RPC ports "
                f"{rpc}..{rpc + span - 1}"
            )
        if problems:
            raise TopologyError("cannot re-address topology", problems)
        return dataclasses.replace(
            self,
            recursive=NodeAddress(host, base_port, rpc),
            top=NodeAddress(host, base_port + 1, rpc + 1),
            secondaries=tuple(
                dataclasses.replace(n, address=NodeAddress(host, base_port + 2 + i, rpc + 2 + i))
                for i, n in enumerate(self.secondaries)
            ),
        )

    def endpoints(self) -> list[tuple[str, str, int]]:
        """Every listening endpoint as ``(label, host, port)``, HTTP and RPC, all nodes."""
        out: list[tuple[str, str, int]] = []
        nodes = [("recursive node", self.recursive), ("top-level node", self.top)]
        nodes += [(f"secondary node {n.code}", n.address) for n in self.secondaries]
        for label, addr in nodes:
            out.append((f"{label} http", addr.host, addr.http_port))
            out.append((f"{label} rpc", addr.host, addr.rpc_port))
        return out


# --------------------------------------------------------------------------------------------
# Validation


def validate(topology: Topology) -> None:
    """Check *topology* for consistency; raise TopologyError listing every problem found.

    Checks: code syntax (node codes and enterprise prefixes are dotted digit segments,
    industry codes are slugs); duplicate industry codes, node codes and enterprise prefixes;
    node codes overlapping (one a dotted prefix of another); nodes and enterprises referring
    to unknown industries; enterprises referring to unknown nodes or whose prefix is not
    strictly under their node's code; ports outside 1..65535; one (host, port) used twice
    anywhere among all nodes' HTTP and RPC ports. Nothing here touches the network — see
    `find_ports_in_use` for that.
    """
    problems: list[str] = []
    add = problems.append
    t = topology

    if isinstance(t.seed, bool) or not isinstance(t.seed, int):
        add(f"network seed must be an integer, got {t.seed!r}")
    ipe = t.identifiers_per_enterprise
    if isinstance(ipe, bool) or not isinstance(ipe, int) or ipe < 0:
        add(f"identifiers_per_enterprise must be a non-negative integer, got {ipe!r}")

    # Industries.
    industry_codes = Counter(i.code for i in t.industries)
    for ind in t.industries:
        if not (isinstance(ind.code, str) and _SLUG_RE.fullmatch(ind.code)):
            add(f"industry {ind.code!r} ({ind.name!r}): code is not a lowercase slug")
    for code, n in industry_codes.items():
        if n > 1:
            add(f"industry code {code!r} is used {n} times")

    # Secondary nodes.
    node_codes = Counter(n.code for n in t.secondaries)
    for node in t.secondaries:
        if not is_code(node.code):
            add(f"secondary node {node.code!r} ({node.name!r}): code is not dotted digit segments "
                "like '88.118'")
        if node.industry not in industry_codes:
            add(f"secondary node {node.code!r}: unknown industry {node.industry!r}")
    for code, n in node_codes.items():
        if n > 1:
            add(f"secondary node code {code!r} is used {n} times")
    valid_codes = {c for c in node_codes if is_code(c)}
    for code in sorted(valid_codes):
        for anc in _ancestors(code):
            if anc in valid_codes:
                add(f"secondary node codes overlap: {code!r} lies under {anc!r}")

    # Enterprises.
    prefixes = Counter(e.prefix for e in t.enterprises)
    for ent in t.enterprises:
        what = f"enterprise {ent.prefix!r}"
        if not is_code(ent.prefix):
            add(f"{what} ({ent.name!r}): prefix is not dotted digit segments like '88.118.8'")
        if ent.node not in node_codes:
            add(f"{what}: unknown secondary node {ent.node!r}")
        elif isinstance(ent.prefix, str) and isinstance(ent.node, str) and not is_under(
            ent.prefix, ent.node, strict=True
        ):
            add(f"{what}: prefix is not under its node's code {ent.node!r}")
        if ent.industry not in industry_codes:
            add(f"{what}: unknown industry {ent.industry!r}")
    for prefix, n in prefixes.items():
        if n > 1:
            add(f"enterprise prefix {prefix!r} is used {n} times")

    # Addresses.
    users: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
    for label, host, port in t.endpoints():
        if not isinstance(host, str) or not host:
            add(f"{label}: host must be a non-empty string, got {host!r}")
            continue
        if isinstance(port, bool) or not isinstance(port, int):
            add(f"{label}: port must be an integer, got {port!r}")
            continue
        if not MIN_PORT <= port <= MAX_PORT:
            add(f"{label}: port {port} is outside {MIN_PORT}..{MAX_PORT}")
            continue
        users[(host.lower(), port)].append(label)
    for (host, port), labels in users.items():
        if len(labels) > 1:
            add(f"address {host}:{port} is used by {len(labels)} endpoints: {', '.join(labels)}")

    if problems:
        raise TopologyError(f"invalid topology {t.name!r}", problems)


# --------------------------------------------------------------------------------------------
# The one piece of I/O


def find_ports_in_use(topology: Topology) -> list[str]:
    """Try to bind every endpoint of *topology*; describe those that cannot be bound.

    Each description reads ``"<node> <http|rpc> host:port: <reason>"``; the reason is
    ``address already in use`` for a taken port, otherwise the OS error (for example a host
    that is not a local address, or a privileged port). Sockets are bound with SO_REUSEADDR,
    as servers bind, and closed at once. Ports outside 1..65535 are skipped; `validate`
    reports those.
    """
    found = []
    for label, host, port in topology.endpoints():
        if isinstance(port, bool) or not isinstance(port, int) or not MIN_PORT <= port <= MAX_PORT:
            continue
        reason = _bind_problem(host, port)
        if reason is not None:
            found.append(f"{label} {host}:{port}: {reason}")
    return found


def _bind_problem(host: str, port: int) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve host ({exc})"
    family, socktype, proto, _, sockaddr = infos[0]
    try:
        sock = socket.socket(family, socktype, proto)
    except OSError as exc:
        return f"cannot create socket ({exc.strerror or exc})"
    with sock:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let us bind a port in use
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "address already in use"
            return f"cannot bind ({exc.strerror or exc})"
    return None


# --------------------------------------------------------------------------------------------
# TOML

_NETWORK_KEYS = ("name", "seed", "identifiers_per_enterprise")
_ADDRESS_KEYS = ("host", "http_port", "rpc_port")
_INDUSTRY_KEYS = ("code", "name")
_SECONDARY_KEYS = ("code", "name", "city", "industry", *_ADDRESS_KEYS)
_ENTERPRISE_KEYS = ("prefix", "name", "node", "industry")
_TOP_KEYS = ("network", "top", "recursive", "industries", "secondaries", "enterprises")


def _address_dict(a: NodeAddress) -> dict[str, Any]:
    return {"host": a.host, "http_port": a.http_port, "rpc_port": a.rpc_port}


def to_toml(topology: Topology) -> str:
    """Render *topology* as hand-readable TOML; `from_toml` reads it back unchanged.

    Layout: ``[network]``, ``[top]``, ``[recursive]``, then one ``[[industries]]``,
    ``[[secondaries]]`` (address fields inline) or ``[[enterprises]]`` table per entry.
    """
    t = topology
    sections: list[tuple[str, dict[str, Any]]] = [
        ("[network]", {
            "name": t.name,
            "seed": t.seed,
            "identifiers_per_enterprise": t.identifiers_per_enterprise,
        }),
        ("[top]", _address_dict(t.top)),
        ("[recursive]", _address_dict(t.recursive)),
    ]
    sections += [("[[industries]]", {"code": i.code, "name": i.name}) for i in t.industries]
    sections += [
        ("[[secondaries]]", {"code": n.code, "name": n.name, "city": n.city,
                             "industry": n.industry, **_address_dict(n.address)})
        for n in t.secondaries
    ]
    sections += [
        ("[[enterprises]]", {"prefix": e.prefix, "name": e.name, "node": e.node,
                             "industry": e.industry})
        for e in t.enterprises
    ]
    label = " ".join(str(t.name).split())  # a comment must stay on one line
    chunks = [
        f"# idsim topology {label}: {len(t.secondaries)} secondary nodes, "
        f"{len(t.industries)} industries, {len(t.enterprises)} enterprises\n"
    ]
    try:
        # Each table holds scalars only, so tomli_w renders it as plain `key = value` lines.
        chunks += [f"{head}\n{tomli_w.dumps(body)}" for head, body in sections]
    except TypeError as exc:  # e.g. a None where a string belongs
        raise TopologyError(f"cannot write topology {t.name!r} as TOML: {exc}") from None
    return "\n".join(chunks)


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
        )


_KIND_NAMES = {str: "a string", int: "an integer"}


def _type_name(value: object) -> str:
    return {
        str: "string", int: "integer", bool: "boolean", float: "float", list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def from_toml(text: str) -> Topology:
    """Parse TOML written by `to_toml` (or by hand in the same layout).

    Raises TopologyError, naming the section and field, for TOML syntax errors, missing
    sections or fields, wrongly typed values and unknown keys. It checks structure only:
    call `validate` for consistency.
    """
    if not isinstance(text, str):
        raise TopologyError(f"from_toml expects TOML text as str, got {_type_name(text)}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"invalid TOML: {exc}") from None

    r = _Reader()
    r.unknown(doc, _TOP_KEYS, "document")

    name = seed = None
    ipe = 10
    network = r.table(doc, "network")
    if network is not None:
        r.unknown(network, _NETWORK_KEYS, "[network]")
        name = r.field(network, "name", str, "[network]")
        seed = r.field(network, "seed", int, "[network]")
        ipe = r.field(network, "identifiers_per_enterprise", int, "[network]", default=10)

    addresses = {}
    for key in ("top", "recursive"):
        tbl = r.table(doc, key)
        if tbl is not None:
            r.unknown(tbl, _ADDRESS_KEYS, f"[{key}]")
            addresses[key] = r.address(tbl, f"[{key}]")

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
        secondaries.append(SecondaryNode(
            code=r.field(tbl, "code", str, where),
            name=r.field(tbl, "name", str, where),
            city=r.field(tbl, "city", str, where),
            industry=r.field(tbl, "industry", str, where),
            address=r.address(tbl, where),
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
        ))

    if r.problems:
        raise TopologyError("invalid topology TOML", r.problems)
    return Topology(
        name=name,
        seed=seed,
        top=addresses["top"],
        recursive=addresses["recursive"],
        industries=tuple(industries),
        secondaries=tuple(secondaries),
        enterprises=tuple(enterprises),
        identifiers_per_enterprise=ipe,
    )


def load(path: str | os.PathLike[str]) -> Topology:
    """Read a topology from the TOML file *path* (structure checked, not validated)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return from_toml(text)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc.summary}", exc.problems) from None


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
