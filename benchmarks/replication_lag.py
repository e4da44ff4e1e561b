#!/usr/bin/env python
"""Mirror lag while the primary takes writes: ``python benchmarks/replication_lag.py
[--rate 1000] [--seconds 20]`` (issue 11's target: lag p99 under 1 s at 1,000 writes/s).

This process runs a primary secondary node (88.118, LMDB with fsync, its msgpack-RPC server on
loopback) and writes ``--rate`` identifiers a second through ``SecondaryNode.put`` (the path
an HTTP PUT takes), open-loop (on a schedule, not waiting for earlier writes), for
``--seconds``. A second process runs a ``MirrorNode`` (its own LMDB) that dumps and then
follows the primary's log by long-poll over RPC, and records, for every log entry it applies,
now minus the entry's commit time at the primary (both processes read one host clock).

Printed: the writes done and their own commit latency (p50/p99: the reference, measured in
the same run), the mirror's per-entry lag p50/p99/max and the ratio of lag p99 to the write's
commit p99, the largest ``lag_seconds()`` the mirror reported (sampled every 0.1 s), and the
final check: the mirror's record count and content digest against the primary's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks.procs import free_port  # noqa: E402
from resolver import auth, record_input
from resolver.config import Config  # noqa: E402
from resolver.nodes import SecondaryNode  # noqa: E402
from resolver.replication import digest  # noqa: E402
from resolver.rpc import RpcServer  # noqa: E402
from resolver.rpc_auth import Keyring, Trust  # noqa: E402
from resolver.store import open_store  # noqa: E402

PRIMARY, MIRROR = "88.118", "88.118~Beijing"
KEYS = {PRIMARY: "11" * 32, MIRROR: "22" * 32}
ADMIN = auth.Identity(auth.SECRET_INDEX, "0.NA/88.118")


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def run_mirror(data: str, primary_rpc: str) -> None:
    """The mirror process: follow until told to stop (a line on stdin), then catch up and
    print one JSON line: per-entry lags, the largest lag_seconds() seen, count and digest."""
    from resolver.mirror import MirrorNode
    config = Config()
    node = SecondaryNode(PRIMARY, open_store(f"lmdb:{data}", config.store, config.replication),
                         [PRIMARY], config)
    mirror = MirrorNode(MIRROR, node, primary_rpc, "http://127.0.0.1:1", config,
                        trust=Trust(MIRROR, Keyring({k: bytes.fromhex(v)
                                                     for k, v in KEYS.items()})))
    lags: list[float] = []
    mirror.observe = lags.append
    await mirror.start()
    stop = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
        None, sys.stdin.readline))
    print("ready", flush=True)
    gauge = 0.0
    while not stop.done():
        gauge = max(gauge, mirror.lag_seconds())
        await asyncio.sleep(0.1)
    target = int(stop.result())  # the primary's last sequence number
    deadline = time.monotonic() + 60
    while mirror.follower.position.seq < target and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    count, hexdigest = digest(node.store)
    print(json.dumps({"lags": lags, "gauge_max": gauge, "count": count, "digest": hexdigest,
                      "seq": mirror.follower.position.seq, "redumps": mirror.follower.redumps}),
          flush=True)
    await mirror.close()


async def run_primary(rate: float, seconds: float, tmp: Path) -> dict:
    config = Config()
    node = SecondaryNode(PRIMARY, open_store(f"lmdb:{tmp / 'primary'}", config.store,
                                             config.replication), [PRIMARY], config)
    await node.bootstrap("bench-secret")
    rpc = await RpcServer(node.rpc_handlers(), config.rpc, trust=Trust(
        PRIMARY, Keyring({k: bytes.fromhex(v) for k, v in KEYS.items()}))).start(
        "127.0.0.1", free_port())
    child = subprocess.Popen([sys.executable, __file__, "--mirror", str(tmp / "mirror"),
                              f"127.0.0.1:{rpc.port}"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        commit: list[float] = []
        values = record_input.values_from_json([{"index": 1, "type": "URL", "data": {
            "format": "string", "value": "https://example.com/item"}}], now=0, max_data=1 << 16)

        async def write(i: int) -> None:
            start = time.perf_counter()
            await node.put(node.parse(f"88.118/bench-{i}"), values, identity=ADMIN)
            commit.append(time.perf_counter() - start)
        total, tasks = int(rate * seconds), set()
        begin = time.monotonic()
        for i in range(total):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(write(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - begin
        last = node.store.log_read(2**63 - 1, 0).last
        child.stdin.write(f"{last}\n")
        child.stdin.flush()
        out = json.loads(await asyncio.get_running_loop().run_in_executor(
            None, child.stdout.readline))
        child.wait(timeout=30)
        count, hexdigest = digest(node.store)
        return {"writes": total, "elapsed": elapsed, "commit": commit, "mirror": out,
                "count": count, "digest": hexdigest, "seq": last}
    finally:
        child.kill()
        await rpc.close()
        await node.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="writes per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--mirror", nargs=2, metavar=("DIR", "PRIMARY_RPC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mirror:
        asyncio.run(run_mirror(*args.mirror))
        return
    with tempfile.TemporaryDirectory(prefix="idsim-repl-") as tmp:
        r = asyncio.run(run_primary(args.rate, args.seconds, Path(tmp)))
    m, commit, lags = r["mirror"], r["commit"], r["mirror"]["lags"]
    print(f"primary: {r['writes']} writes in {r['elapsed']:.1f} s "
          f"({r['writes'] / r['elapsed']:.0f}/s asked {args.rate:.0f}/s); write commit "
          f"p50 {quantile(commit, .5) * 1e3:.1f} ms, p99 {quantile(commit, .99) * 1e3:.1f} ms")
    print(f"mirror lag per entry ({len(lags)} entries): p50 {quantile(lags, .5) * 1e3:.1f} ms, "
          f"p99 {quantile(lags, .99) * 1e3:.1f} ms, max {max(lags, default=0) * 1e3:.1f} ms; "
          f"mean {statistics.fmean(lags) * 1e3 if lags else 0:.1f} ms")
    print(f"lag p99 / write commit p99 = "
          f"{quantile(lags, .99) / max(quantile(commit, .99), 1e-9):.2f}; "
          f"largest lag_seconds() sampled: {m['gauge_max']:.3f} s; re-dumps: {m['redumps']}")
    same = (m["count"], m["digest"]) == (r["count"], r["digest"])
    print(f"final: primary {r['count']} records seq {r['seq']}, mirror {m['count']} records "
          f"seq {m['seq']}; digest {'equal' if same else 'DIFFERENT'}")
    print(f"target lag p99 < 1 s: {'met' if quantile(lags, .99) < 1 else 'NOT met'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
