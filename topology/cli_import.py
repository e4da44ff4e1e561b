"""``idsim import``: load identifiers into a secondary node, from a file or generated.

    idsim import ids.jsonl --data idsim-data --node 88.118     into a stopped node's LMDB
    idsim import ids.csv --via http://127.0.0.1:8001 --data idsim-data --node 88.118
    idsim import --generate 100000000 --prefix 88.118.8 --data idsim-data

Directly (the default) it writes ``<data>/<node>`` with ``topology.importer`` (sorted
appends, one transaction per ``store.import_transaction`` records, resumable); it refuses
while a cluster runs from ``--data`` or any process has that store open (a node serving it).
With ``--via URL`` it posts ``POST /api/batch/register`` batches of ``batch.max_register``
(overwriting, so a re-run repeats what was sent without duplicates) as the node's admin from
``<data>/logins.json``, or ``--user``/``--secret``. Bad lines are reported with their line
number and skipped; ``--strict`` stops at the first.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import psutil

from resolver import config as configuration
from resolver.store.lmdb import LmdbStore
from topology import importer
from topology.cli_client import DEFAULT_DATA, UserError, http
from topology.cli_config import add_config_args, effective_config
from topology.cluster import running_pids


def add_import_command(sub) -> None:
    p = sub.add_parser("import", help="load identifiers (JSON Lines, CSV or generated) into "
                                      "a secondary node")
    p.add_argument("file", nargs="?", help='JSON Lines of {"handle", "values": [...]} '
                   "(Handle's JSON values) or CSV of handle,url[,TYPE=TEXT...] (.csv)")
    p.add_argument("--format", choices=["jsonl", "csv"],
                   help="the file's format (default: csv for *.csv, else jsonl)")
    p.add_argument("--generate", type=int, metavar="N",
                   help="instead of a file, N synthetic identifiers under --prefix")
    p.add_argument("--prefix", default="88.118.8", help="prefix of --generate's identifiers")
    p.add_argument("--data", default=DEFAULT_DATA, help="data directory holding the node")
    p.add_argument("--node", default=None,
                   help="node code whose store to fill (default: the first two segments of "
                        "--prefix, e.g. 88.118)")
    p.add_argument("--via", metavar="URL",
                   help="import through this running node's HTTP API instead of its store")
    p.add_argument("--user", help="with --via: login (default: the node admin's from "
                                  "<data>/logins.json)")
    p.add_argument("--secret", default=os.environ.get("IDSIM_SECRET"),
                   help="with --via: the user's secret (default: $IDSIM_SECRET or logins.json)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad line")
    p.add_argument("--case-sensitive", action="store_true",
                   help="key handles by exact case (as the node was started)")
    add_config_args(p)
    p.set_defaults(func=cmd_import)


def refuse_if_running(data: Path, store_dir: Path) -> None:
    """UserError when a cluster runs from ``data`` or a process has the store open."""
    pids = running_pids(data, lambda _msg: None)
    if pids:
        raise UserError(f"a cluster is running from {data} (pids {', '.join(map(str, pids))}): "
                        "stop it (idsim down) or import through it with --via URL")
    lock = (store_dir / "lock.mdb").resolve()
    if not lock.exists():
        return
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if any(Path(f.path) == lock for f in proc.open_files()):
                raise UserError(f"process {proc.pid} has the store {store_dir} open (a node "
                                "serving it?): stop it or import with --via URL")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue


def progress_bar(total: int, what: str):
    from rich.progress import (BarColumn, Progress, ProgressColumn, TaskProgressColumn,
                               TextColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            ids, took = task.fields.get("ids", 0), task.elapsed or 0
            return Text(f"{ids:,} ids" + (f"  {ids / took:,.0f} ids/s" if took else ""))

    bar = Progress(TextColumn(what), BarColumn(), TaskProgressColumn(), Rate(),
                   TimeRemainingColumn(), transient=False)
    return bar, bar.add_task(what, total=total or 1, ids=0)


def cmd_import(args) -> int:
    if (args.file is None) == (args.generate is None):
        raise UserError("give a FILE or --generate N (one of them)")
    if args.generate is not None and not 0 < args.generate <= importer.CAPACITY:
        raise UserError(f"--generate takes 1..{importer.CAPACITY:,}")
    if args.file is not None and not Path(args.file).is_file():
        raise UserError(f"no such file: {args.file}")
    try:
        config = effective_config(args)
    except (configuration.ConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    node = args.node or ".".join(args.prefix.split(".")[:2])
    if args.via:
        return via_http(args, config, node)
    data = Path(args.data)
    store_dir = data / node
    refuse_if_running(data, store_dir)
    checker = importer.Checker(node, config, int(time.time()), args.case_sensitive)
    store = LmdbStore(str(store_dir), map_size_gib=config.store.lmdb_map_size_gib)
    txn = config.store.import_transaction
    t0 = time.perf_counter()
    summary = None
    try:
        if args.generate is not None:
            make = importer.local_encoder(checker, args.prefix)
            bar, task = progress_bar(args.generate, f"{args.prefix} → {store_dir}")
            with bar:
                bar.update(task, completed=0)
                summary = importer.import_generated(
                    store, args.prefix, args.generate, make, transaction=txn,
                    advance=lambda done, n: bar.update(task, completed=done, ids=n))
        else:
            path = Path(args.file)
            fmt = importer.format_of(path, args.format)
            bar, task = progress_bar(path.stat().st_size, f"{path.name} → {store_dir}")

            def report(line: int, message: str) -> None:
                bar.console.print(f"line {line}: {message}", markup=False, highlight=False)
            with bar:
                summary = importer.import_file(
                    store, path, fmt, checker, transaction=txn, strict=args.strict,
                    report=report,
                    advance=lambda off, n: bar.update(task, completed=off, ids=n))
    except importer.ImportStopped as exc:
        print(f"idsim import: stopped (--strict) at {exc}; what came before it is imported",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every committed transaction is kept; run the same command again "
              "to resume", file=sys.stderr)
        return 130
    finally:
        asyncio.run(store.close())
    took = time.perf_counter() - t0
    start = f" (resumed after {summary.resumed_at:,})" if summary.resumed_at else ""
    print(f"imported {summary.written:,} identifiers ({summary.new:,} new) in {took:.1f} s, "
          f"{summary.written / max(took, 1e-9):,.0f} ids/s{start}; {summary.bad:,} bad lines "
          f"skipped; {store_dir} holds {_count(store_dir, config):,} records")
    return 0 if summary.bad == 0 else 1


def _count(store_dir: Path, config) -> int:
    store = LmdbStore(str(store_dir), map_size_gib=config.store.lmdb_map_size_gib)
    try:
        return store.count()
    finally:
        asyncio.run(store.close())


def _login(args, node: str) -> tuple[str, str]:
    if args.user and args.secret:
        return args.user, args.secret
    path = Path(args.data) / "logins.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"no --user/--secret and cannot read {path}: {exc}") from None
    admin = (doc.get("nodes") or {}).get(node) or doc.get("node_admin")
    if not admin:
        raise UserError(f"{path} holds no admin login of node {node}: give --user/--secret")
    return admin["username"], admin["secret"]


def via_http(args, config, node: str) -> int:
    """Post batches of ``batch.max_register``; report refused items by line (or ordinal)."""
    user, secret = _login(args, node)
    url = f"{args.via.rstrip('/')}/api/batch/register"
    if args.generate is not None:
        rows = (importer.Row(i + 1, i + 1, f"{args.prefix}/{importer.local_suffix(i)}",
                             importer.local_values(args.prefix, i))
                for i in range(args.generate))
        total = args.generate
    else:
        path = Path(args.file)
        rows = importer.rows_of(path, importer.format_of(path, args.format))
        total = path.stat().st_size
    bar, task = progress_bar(total, f"→ {args.via}")
    written = bad = 0
    batch: list[importer.Row] = []

    def send() -> None:
        nonlocal written, bad
        status, doc = http("POST", url, {"overwrite": True, "handles": [
            {"handle": r.handle, "values": r.values} for r in batch]}, user, secret,
            data=args.data)
        if status != 200:
            raise UserError(f"{url} answered {status}: {doc.get('message', doc)}")
        for row, res in zip(batch, doc["results"]):
            if res.get("responseCode") == 1:
                written += 1
            else:
                bad += 1
                bar.console.print(f"line {row.line}: {res.get('message')}", markup=False)
        bar.update(task, completed=batch[-1].end, ids=written)
        batch.clear()

    with bar:
        for row in rows:
            if isinstance(row, importer.LineError):
                bad += 1
                bar.console.print(f"line {row.line}: {row.message}", markup=False)
                if args.strict:
                    return 1
                continue
            batch.append(row)
            if len(batch) >= config.batch.max_register:
                send()
            if args.strict and bad:
                return 1
        if batch:
            send()
    print(f"imported {written:,} identifiers through {args.via}; {bad:,} refused")
    return 0 if bad == 0 else 1
