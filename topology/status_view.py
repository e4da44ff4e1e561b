"""``idsim status [--watch] [--json]``: every node of the cluster running from ``--data``, up or
down, ready or why not, with requests/s, p99, answer-cache hit ratio, records and, for a
mirror (issue 11: role ``mirror``, or ``standby top`` for a mirror of the top-level node), its
replication lag (``idsim_replication_lag_seconds``, scraped with the other figures).

The figures are a ``resolver.watch.Watcher`` snapshot, the dashboard's too: rates are over
the interval between two scrapes (``--interval``, default ``observe.status_interval``), so
a one-shot status scrapes twice. ``--watch`` refreshes until Ctrl-C (exit 0): a rich ``Live``
table on a terminal, the table printed again each interval otherwise. Output that is not a
terminal is never cut to 80 columns. The config is the cluster's own (``<data>/config.toml``,
written by ``idsim up``), else the defaults.

Exit code (one-shot): 0 when every node is up and ready, 1 otherwise or with no cluster.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from resolver import config as configuration
from resolver.clock import SYSTEM
from resolver.roles import Role
from resolver.rpc_auth import primary_of
from resolver.watch import NodeInfo, Watcher
from topology import pki
from topology.cluster import read_state

WIDE = 400  # columns for output that is not a terminal: lines are never cut or wrapped


def cluster_config(data: Path) -> configuration.Config:
    path = Path(data) / "config.toml"
    if not path.exists():
        return configuration.Config()
    return configuration.layered([(str(path), configuration.read_toml(path))])


def nodes_of(state: dict) -> list[NodeInfo]:
    return [NodeInfo(n["name"], n["role"], n["httpUrl"], n.get("city", ""),
                     n.get("industry", ""), n.get("title", "")) for n in state["nodes"]]


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def role_shown(n: dict) -> str:
    """A node's role as the table says it: a mirror of ``top`` is the ``standby top``."""
    if n["role"] == Role.MIRROR and primary_of(n["name"]) == Role.TOP:
        return "standby top"
    return n["role"]


def cells(n: dict) -> list[str]:
    """One node's row: node, role, city, state, req/s, p99, hit, records, lag, URL."""
    state = "ready" if n["ready"] else ("up, not ready" if n["up"] else "DOWN")
    records = n["records"] if n["records"] is not None else n.get("identifiers")
    lag = n.get("lag")
    return [n["name"], role_shown(n), n.get("city") or "", state, _num(n["rate"], ",.1f"),
            "–" if n["p99"] is None else f"{n['p99'] * 1000:.1f} ms",
            "–" if n["hitRatio"] is None else f"{n['hitRatio']:.1%}",
            _num(records, ",.0f"), "–" if lag is None else f"{lag:.2f} s", n["url"]]


COLUMNS = ("node", "role", "city", "state", "req/s", "p99", "hit ratio", "records", "lag",
           "URL")  # lag: a mirror's replication lag (issue 11)
NARROW = ("node", "state", "req/s", "p99", "hit ratio", "records")  # a terminal under FULL
FULL = 120  # columns the whole table needs


def table(snapshot: dict, title: str | None, width: int = WIDE):
    from rich.table import Table
    shown = COLUMNS if width >= FULL else NARROW
    t = Table(title=title, title_justify="left")
    for col in shown:
        t.add_column(col, justify="right" if col in ("req/s", "p99", "hit ratio", "records",
                                                     "lag") else "left", no_wrap=True)
    for n in snapshot["nodes"]:
        row = dict(zip(COLUMNS, cells(n)))
        style = None if n["ready"] else ("yellow" if n["up"] else "red")
        t.add_row(*(row[c] for c in shown), style=style)
    return t


def headline(state: dict, snap: dict) -> str:
    ready = sum(n["ready"] for n in snap["nodes"])
    up = sum(n["up"] for n in snap["nodes"])
    t = snap["totals"]
    over = f"over {snap['interval']:.1f} s" if snap["interval"] else "no rates yet"
    rate = t["resolutionsPerSecond"]
    return (f"{state['topology']}: {up}/{len(snap['nodes'])} nodes up, {ready} ready; "
            f"{_num(t['enterprises'], ',')} enterprises, {_num(t['identifiers'], ',')} "
            f"identifiers, {_num(rate, ',.1f')} resolutions/s ({over})")


def notes(snap: dict) -> list[str]:
    out = [f"  {n['name']}: {n['reason']}" for n in snap["nodes"] if n["up"] and not n["ready"]]
    if not any(n["metrics"] for n in snap["nodes"] if n["up"]):
        out.append("  (no node answers /metrics: requests/s, p99 and hit ratio unknown)")
    return out


def active_faults(data: Path) -> list[dict] | None:
    """The cluster's active faults (``idsim fault``), None when its control APIs don't say."""
    from topology import fault_control
    try:
        return fault_control.active(data)
    except fault_control.FaultControlError:
        return None


def fault_notes(faults: list[dict] | None) -> list[str]:
    """One line of active faults, or none."""
    from topology.cli_fault import describe
    return [f"  faults: {'; '.join(map(describe, faults))}"] if faults else []


def run_status(args) -> int:
    state = read_state(args.data)
    if state is None:
        print(f"no cluster running from {args.data} (start one with: idsim up)", file=sys.stderr)
        return 1
    config = cluster_config(Path(args.data))
    interval = args.interval if args.interval is not None else config.observe.status_interval
    watcher = Watcher(config, SYSTEM, ssl_context=pki.client_context_for(args.data))
    nodes = nodes_of(state)

    async def snap() -> dict:
        doc = await watcher.snapshot(state["topUrl"], nodes)
        doc["faultNotes"] = fault_notes(await asyncio.to_thread(active_faults, Path(args.data)))
        return doc

    from rich.console import Console
    terminal = sys.stdout.isatty()
    console = Console() if terminal else Console(width=WIDE, no_color=True)
    if args.watch:
        try:
            asyncio.run(watch(snap, state, console, interval, terminal))
        except KeyboardInterrupt:
            pass
        return 0

    async def twice() -> dict:
        await snap()
        await asyncio.sleep(interval)
        return await snap()
    snapshot = asyncio.run(twice())
    if args.json:
        by_name = {n["name"]: n for n in snapshot["nodes"]}
        for n in state["nodes"]:
            n.update({k: v for k, v in by_name[n["name"]].items()
                      if k in ("up", "ready", "reason", "metrics", "rate", "p99", "hitRatio",
                               "records", "identifiers", "lag")})
        state["totals"] = snapshot["totals"]
        state["faults"] = active_faults(Path(args.data))  # w3: idsim fault
        print(json.dumps(state, indent=2))
    else:
        console.print(headline(state, snapshot), markup=False, highlight=False)
        console.print(table(snapshot, None, console.width))
        for line in notes(snapshot) + fault_notes(active_faults(Path(args.data))):
            console.print(line, markup=False, highlight=False)
        recs = state.get("recursiveUrls") or {"recursive": state["recursiveUrl"]}
        console.print(f"recursive node{'s' if len(recs) > 1 else ''} "
                      + ", ".join(f"{n} {u}" for n, u in recs.items())
                      + f"; logins in {state['logins']}", markup=False, highlight=False)
        for name, url in (state.get("standbyTopUrls") or {}).items():  # issue 11
            console.print(f"standby top-level node {name} {url}", markup=False,
                          highlight=False)
        for p in state.get("processes", []):
            console.print(f"  pid {p['pid']:<8} {p['label']:<8} restarts {p['restarts']:<3} "
                          f"{' '.join(p['nodes'])}  (log {p['log']})", markup=False,
                          highlight=False)
    return 0 if all(n["up"] and n["ready"] for n in snapshot["nodes"]) else 1


async def watch(snap, state: dict, console, interval: float, terminal: bool) -> None:
    """Refresh every ``interval`` seconds until cancelled (Ctrl-C)."""
    def render(s: dict):
        from rich.console import Group
        from rich.text import Text
        stamp = time.strftime("%H:%M:%S")
        return Group(Text(f"{headline(state, s)}  [{stamp}]"), table(s, None, console.width),
                     *(Text(line) for line in notes(s) + s.get("faultNotes", [])))
    first = await snap()
    if terminal:
        from rich.live import Live
        with Live(render(first), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await snap()), refresh=True)
    else:
        console.print(render(first))
        sys.stdout.flush()
        while True:
            await asyncio.sleep(interval)
            console.print(render(await snap()))
            sys.stdout.flush()
