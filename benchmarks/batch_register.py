#!/usr/bin/env python
"""Batch registration rate: ``python benchmarks/batch_register.py [--seconds 5] [--rounds 3]``.

Starts one ``idsim node`` (LMDB, durable writes; ``--processes N`` processes serving it,
default ``idsim node``'s own, one per core; extra ``idsim node`` options after ``--``) and,
in interleaved rounds, measures durable single registrations (wrk, ``register.lua``: one PUT
per identifier, 64 connections) and batch registrations (``POST /api/batch/register``,
msgpack batches of ``--size`` identifiers, ``--concurrency`` batches in flight; ``--json``
adds the same load as JSON). Prints medians: identifiers/s, the ratio of each batch rate to
the single-registration rate of the same run, the node's CPU per identifier (user + system,
all threads of all its processes: steadier than rates on a shared box, and what decides the
rate on a machine with spare cores) and the batch client's own (it shares this box's cores
with the node).
``load`` is the batch client ``benchmarks/run.py`` uses too.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, wrk  # noqa: E402
from benchmarks.cpu_per_request import start_node  # noqa: E402

MSGPACK = "application/msgpack"
VALUES = [{"index": 1, "type": "URL", "data": {"format": "string",
                                               "value": "https://ex.com/bench"}}]


async def load(url: str, auth_token: str, prefix: str, seconds: float, size: int,
               concurrency: int, *, as_msgpack: bool = True) -> dict:
    """``concurrency`` clients posting batches of ``size`` new identifiers for ``seconds``:
    identifiers registered per second, failures, batch latencies."""
    import aiohttp
    import msgpack
    import orjson

    tag = uuid.uuid4().hex[:10]
    ctype = MSGPACK if as_msgpack else "application/json"
    headers = {"Authorization": "Basic " + auth_token, "Content-Type": ctype, "Accept": ctype}
    dumps = msgpack_batch if as_msgpack else (lambda handles: orjson.dumps(
        {"handles": [{"handle": h, "values": VALUES} for h in handles]}))
    loads = msgpack.unpackb if as_msgpack else orjson.loads
    counter = itertools.count()
    totals = {"registered": 0, "failed": 0, "batches": 0, "http_errors": 0}
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds

    async def worker(session) -> None:
        while loop.time() < deadline:
            n = next(counter)
            body = dumps([f"{prefix}/BATCH-{tag}-{n}-{i}" for i in range(size)])
            t0 = loop.time()
            async with session.post(f"{url}/api/batch/register", data=body) as resp:
                raw = await resp.read()
            latencies.append((loop.time() - t0) * 1000)
            totals["batches"] += 1
            if resp.status != 200:
                totals["http_errors"] += 1
                continue
            doc = loads(raw)
            totals["registered"] += doc.get("registered", 0)
            totals["failed"] += doc.get("failed", 0)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = loop.time() - start
    latencies.sort()
    return {**totals, "seconds": elapsed, "rate": totals["registered"] / elapsed,
            "batch_size": size, "concurrency": concurrency,
            "batch_p50_ms": statistics.median(latencies) if latencies else None,
            "batch_max_ms": latencies[-1] if latencies else None}


def msgpack_batch(handles: list[str]) -> bytes:
    """``msgpack.packb({"handles": [{"handle": h, "values": VALUES}, ...]})``, spliced from
    pieces packed once (the client's CPU shares the machine with the node's)."""
    pack = _PACKER.pack
    return b"".join([_BATCH_HEAD, _PACKER.pack_array_header(len(handles)),
                     *[_ITEM_HEAD + pack(h) + _ITEM_TAIL for h in handles]])


def _pieces():
    import msgpack
    packer = msgpack.Packer()
    return (packer, packer.pack_map_header(1) + packer.pack("handles"),
            packer.pack_map_header(2) + packer.pack("handle"),
            packer.pack("values") + packer.pack(VALUES))


_PACKER, _BATCH_HEAD, _ITEM_HEAD, _ITEM_TAIL = _pieces()


def single_rate(url: str, auth_token: str, prefix: str, seconds: float) -> float:
    """Durable single registrations per second (wrk, one PUT each, all 201)."""
    res = wrk.run(url, seconds, script=str(HERE / "register.lua"), threads=1, connections=64,
                  env={"IDSIM_PREFIX": prefix, "IDSIM_AUTH": auth_token,
                       "IDSIM_TAG": uuid.uuid4().hex[:10]})
    created = int(res.extra.get("created", 0))
    if res.extra.get("other", "0") != "0":
        raise RuntimeError(f"single registrations answered {res.extra} (not all 201)")
    return created / res.seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=1000, help="identifiers per batch")
    p.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    p.add_argument("--json", action="store_true", help="also measure JSON batches")
    p.add_argument("--processes", type=int, default=None,
                   help="processes serving the node (default: idsim node's, one per core)")
    p.add_argument("node_args", nargs="*", help="extra idsim node options (after --)")
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-batch-"))
    prefix = "88.118.8"
    got: dict[str, list[float]] = {"single PUT": [], "batch msgpack": []}
    if args.json:
        got["batch JSON"] = []
    cpu: dict[str, list[float]] = {name: [] for name in got}
    client: dict[str, list[float]] = {name: [] for name in got}  # this process's µs per id
    processes = ("--processes", str(args.processes)) if args.processes else ()
    try:
        pid, url, token = start_node(tmp, "node", *processes, *args.node_args)
        node = psutil.Process(pid)
        spent = lambda: sum(sum(p.cpu_times()[:2]) for p in [node, *node.children(True)])
        for r in range(args.rounds):
            for name in got:
                before, mine = spent(), time.process_time()
                if name == "single PUT":
                    rate = single_rate(url, token, prefix, args.seconds)
                    count = rate * args.seconds
                else:
                    res = asyncio.run(load(url, token, prefix, args.seconds, args.size,
                                           args.concurrency, as_msgpack=name.endswith("msgpack")))
                    if res["failed"] or res["http_errors"]:
                        raise RuntimeError(f"{name}: {res['failed']} items failed, "
                                           f"{res['http_errors']} HTTP errors")
                    rate, count = res["rate"], res["registered"]
                got[name].append(rate)
                cpu[name].append((spent() - before) / max(1, count) * 1e6)
                client[name].append((time.process_time() - mine) / max(1, count) * 1e6)
            procs.log(f"round {r + 1}/{args.rounds}: " +
                      ", ".join(f"{n} {v[-1]:,.0f}/s" for n, v in got.items()))
        med = {name: statistics.median(v) for name, v in got.items()}
        procs.log(f"\n{'identifiers registered per second (median)':<44}{'ids/s':>10}"
                  f"{'× single':>10}{'CPU µs/id':>11}{'client µs/id':>14}")
        for name, rate in med.items():
            procs.log(f"{name:<44}{rate:>10,.0f}{rate / med['single PUT']:>9.1f}×"
                      f"{statistics.median(cpu[name]):>11.1f}" + (f"{'(wrk)':>14}" if name ==
                      "single PUT" else f"{statistics.median(client[name]):>14.1f}"))
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
