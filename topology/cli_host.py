"""``idsim host --topology FILE --nodes top,recursive,88.101 [--data DIR]``: one host's share
of a network whose nodes sit on several hosts (issue 12 part 5), in the foreground.

The topology file gives every node its address, so nodes can be on different machines
(``host = "10.0.0.2"`` in their tables). Each machine runs ``idsim host`` with the same file
and names its own nodes (``--nodes`` takes names — ``top``, ``recursive``,
``recursive-<city>``, node codes — or ``@ADDRESS`` for every node served on that address).
The nodes run in host processes under the one supervisor (``topology.supervisor``), as with
``idsim up``: each recursive node alone in a process, the others together, each group in
``--processes`` processes (default one per core) sharing its ports; they restart with
back-off when they exit; Ctrl-C or SIGTERM (``idsim down --data DIR``) stops them.

Shared secrets: every node proves who it is over RPC with its key in ``logins.json`` (and
nodes check each other's), so every host needs the same ``logins.json``. The first host makes
it with ``--new-logins``; copy it to the ``--data`` directory of every other host before
starting them there, keeping it private (``scp -p DIR/logins.json other:DIR/``; mode 0600).
With ``https`` addresses, copy ``DIR/pki/`` too (``ca.crt``, ``node.crt`` and ``node.key``:
the node certificate names every host of the topology; ``ca.key`` may stay on the first).
Start the host of the top-level node first, or soon enough: the others retry registering
with it for ``host.register_deadline`` seconds.

Config: as ``idsim up`` (defaults, the topology file's sections, ``--config``, ``--set``),
written to ``<data>/config.toml`` for the host processes; ``<data>/cluster.json`` records this
share, so ``idsim status --data DIR`` shows the whole network from here.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from resolver.config import write_toml
from resolver.roles import Role
from resolver.rpc_auth import primary_of, role_of
from topology.cli_client import DEFAULT_DATA, UserError
from topology.cli_config import add_config_args, effective_config

__all__ = ["add_host_command", "share_names", "share_plan"]


def add_host_command(sub) -> None:
    p = sub.add_parser("host", help="run one host's share of a network spread over hosts")
    p.add_argument("--topology", required=True,
                   help="the topology TOML file, the same on every host")
    p.add_argument("--nodes", required=True, metavar="NAME,NAME,…",
                   help="the nodes this host runs: top, recursive, recursive-<city>, node codes,"
                        " or @ADDRESS for every node on that address (e.g. @127.0.0.2)")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="this host's data directory (holds the shared logins.json)")
    p.add_argument("--new-logins", action="store_true",
                   help="make logins.json (node keys, logins) if missing: on the first host "
                        "only, then copy it to every other host's --data")
    p.add_argument("--store", default="lmdb", choices=["lmdb", "memory"],
                   help="lmdb: durable, in <data>/<node>; memory: gone when it stops")
    p.add_argument("--processes", type=int, default=None,
                   help="processes serving each of this host's nodes, sharing its ports "
                        "(SO_REUSEPORT; default: one per core, 1 with --store memory)")
    add_config_args(p)
    p.set_defaults(func=cmd_host)


def share_names(topo, spec: str) -> list[str]:
    """The node names ``--nodes`` asks for, in topology order; UserError naming unknowns."""
    known = topo.node_names()
    wanted: set[str] = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.startswith("@"):
            here = [n for n in known if topo.address_of(n).host == item[1:]]
            if not here:
                raise UserError(f"--nodes: no node of the topology is on {item[1:]}")
            wanted.update(here)
        elif item in known:
            wanted.add(item)
        else:
            raise UserError(f"--nodes: no node {item!r} in the topology (its nodes: "
                            f"{', '.join(known[:8])}{' …' if len(known) > 8 else ''})")
    if not wanted:
        raise UserError("--nodes: name at least one node")
    return [n for n in known if n in wanted]


def share_plan(names: list[str], processes: int = 1) -> list[list[str]]:
    """Host processes for a share: each recursive node alone, the other nodes together (so
    the top-level and a recursive node never share a process, as in ``cluster.plan_workers``),
    each group in ``processes`` processes sharing its ports (the copies after the first round),
    but mirrors apart from their primaries and in one process each (one follower applies a
    mirror's log; as ``topology.mirrors.plan``): each standby top-level node alone, the
    secondary nodes' mirrors together in one more process."""
    def kind(n: str) -> str:  # issue 11: a process lost must not lose a primary and its mirror
        role = role_of(n)
        if role == Role.MIRROR:
            return "standby" if primary_of(n) == Role.TOP.value else "mirror"
        return "alone" if role == Role.RECURSIVE else "rest"
    rest, mirrors = ([n for n in names if kind(n) == k] for k in ("rest", "mirror"))
    shared = [[n] for n in names if kind(n) == "alone"] + ([rest] if rest else [])
    return (shared * max(1, processes) + [[n] for n in names if kind(n) == "standby"]
            + ([mirrors] if mirrors else []))


def share_processes(args) -> int:
    """``--processes``, or its default: one per core (1 for a memory store, one process's)."""
    from topology.cluster import default_processes
    memory = args.store == "memory"
    n = args.processes if args.processes is not None else 1 if memory else default_processes()
    if n < 1 or (memory and n > 1):
        raise UserError("--processes is at least 1, and 1 with --store memory")
    return n


def shared_logins(topo, data: Path, names: list[str], make: bool) -> None:
    """Check (or with ``make`` create) ``<data>/logins.json``: the keys every node needs."""
    from topology.cluster import make_logins
    path = data / "logins.json"
    old = json.loads(path.read_text()) if path.exists() else None
    if old is None and not make:
        raise UserError(f"{path} is missing: copy it from the host that made it (idsim host "
                        "--new-logins), e.g. scp -p thathost:DATA/logins.json " + str(path))
    if make:
        logins = make_logins(topo, old)
        for prefix, login in (old or {}).get("enterprises", {}).items():  # allocated later
            logins["enterprises"].setdefault(prefix, login)
        path.write_text(json.dumps(logins, indent=2))
        path.chmod(0o600)
        return
    keys = old.get("rpc") if isinstance(old.get("rpc"), dict) else {}
    missing = [n for n in topo.node_names() if n not in keys]
    if missing:
        raise UserError(f"{path} has no RPC key for {', '.join(missing[:5])}: it was made for "
                        "another topology; copy the current one from the first host")


def cmd_host(args) -> int:
    from topology import pki, readiness
    from topology.cli import wide_console
    from topology.cluster import running_pids, write_state
    from topology.supervisor import OnExit, Supervisor, host_command
    from topology.tomlio import load, save
    from topology.validation import validate
    console = wide_console()
    data = Path(args.data)
    if running_pids(data, console.print):
        raise UserError(f"something already runs from {data}: stop it with idsim down "
                        f"--data {data}")
    try:
        topo = load(args.topology)
        validate(topo)
        config = effective_config(args)
    except (OSError, ValueError) as exc:  # TopologyError and ConfigError too
        raise UserError(f"cannot start: {exc}") from None
    names = share_names(topo, args.nodes)
    processes = share_processes(args)
    data.mkdir(parents=True, exist_ok=True)
    shared_logins(topo, data, names, args.new_logins)
    if topo.uses_tls:
        if args.new_logins:
            from datetime import datetime, timezone
            pki.ensure(pki.directory(data), {a.host for a in topo.addresses()},
                       datetime.now(timezone.utc))
        elif not pki.directory(data).ca_cert.exists():
            raise UserError(f"https addresses need {pki.directory(data).dir}: copy ca.crt, "
                            "node.crt and node.key from the host that made them (idsim host "
                            "--new-logins)")
    save(topo, data / "topology.toml")
    write_toml(config, data / "config.toml")
    data = data.resolve()
    sup = Supervisor(data / "logs", on_exit=OnExit.RESTART, config=config.host,
                     on_restart=lambda _: write_state(data, topo, sup.children),
                     say=lambda msg: console.print(msg, style="yellow", markup=False,
                                                   highlight=False))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    t0 = time.perf_counter()
    try:
        try:
            for i, group in enumerate(share_plan(names, processes)):
                sup.spawn(f"host-{i}", host_command(
                    data / "topology.toml", data, group, "--store", args.store,
                    "--config", str(data / "config.toml"),
                    *(["--reuse-port"] if processes > 1 else [])), group)
            sup.wait_ready(*sup.children)
            readiness.wait_ready([topo.address_of(n).http_url for n in names], config,
                                 config.host.ready_timeout, pki.client_context_for(data))
        except RuntimeError as exc:
            console.print(f"[red]could not start:[/] {exc}")
            return 1
        write_state(data, topo, sup.children)
        console.print(f"{topo.name}: this host's {len(names)} node(s) ready in "
                      f"{time.perf_counter() - t0:.1f} s", markup=False)
        for n in names:
            city = topo.place_of(n)[0]
            console.print(f"  {n:<20} {str(role_of(n)):<10} {city:<12} "
                          f"{topo.address_of(n).http_url}", markup=False, highlight=False)
        console.print("Ctrl-C stops this host's nodes; the others keep theirs.")
        while not sup.failed.is_set():
            sup.failed.wait(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        sup.stop()
        (data / "cluster.json").unlink(missing_ok=True)
