#!/usr/bin/env python
"""100 million stored identifiers on one secondary node: ``python benchmarks/import_scale.py
[--sizes 1000000,100000000] [--seconds 10] [--rounds 3] [--preload] [--build-only]``.

1. Builds (or reuses) one store per size with ``idsim import``'s own code
   (``topology.importer.import_generated``: synthetic ``88.118.8/AXLE160100000``… records,
   sorted appends, durable transactions) under ``benchmarks/.cache/import-<N>/88.118``
   (git-ignored; delete it to free the disk). The build's rate is the import rate (ids/s)
   of a fresh run; a cached store reports the rate measured when it was built.
2. Imports 200,000 records from a JSON Lines file (every record parsed and validated as the
   HTTP API does) into a fresh store: the file import rate, against the generated rate.
3. Starts ``idsim node`` on each store in turn and, in interleaved rounds, runs wrk picking
   uniformly over the whole key range (``import_resolve.lua``): requests/s and the node's
   CPU per request (``cpu_per_request``'s method), each set against the smallest store in the
   same round; then the node's RssAnon and the store's disk bytes per identifier.
Prints one JSON document and writes it to ``benchmarks/results/import_scale.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, readme_sections, wrk  # noqa: E402
from benchmarks.procs import log  # noqa: E402
from resolver.config import Config  # noqa: E402
from resolver.store.lmdb import LmdbStore  # noqa: E402
from topology import importer  # noqa: E402

CACHE = HERE / ".cache"
NODE, PREFIX = "88.118", "88.118.8"
LUA = str(HERE / "import_resolve.lua")


def fingerprint(config: Config) -> str:
    """Changes with the key or record encoding (then cached stores are rebuilt)."""
    key, rec = importer.local_encoder(importer.Checker(NODE, config, 0), PREFIX)(0)
    return hashlib.sha1(key + b"|" + rec).hexdigest()[:16]


def build(size: int, config: Config) -> dict:
    d = CACHE / f"import-{size}"
    marker = d / "built.json"
    checker = importer.Checker(NODE, config, int(time.time()))
    fp = fingerprint(config)
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("fingerprint") == fp:
            log(f"  store of {size:,}: cached in {d}")
            return {**info, "cached": True}
    store_dir = d / NODE
    store = LmdbStore(str(store_dir), map_size_gib=config.store.lmdb_map_size_gib)
    log(f"  importing {size:,} identifiers into {store_dir} (resumes a partial build)")
    t0, c0 = time.monotonic(), cpu_seconds()
    last = [t0]

    def advance(done: int, written: int) -> None:
        if time.monotonic() - last[0] > 30 or done == size:
            last[0] = time.monotonic()
            log(f"    {done:,} / {size:,} ({written / (last[0] - t0):,.0f} ids/s)")
    try:
        summary = importer.import_generated(store, PREFIX, size,
                                            importer.local_encoder(checker, PREFIX),
                                            transaction=config.store.import_transaction,
                                            advance=advance)
    finally:
        asyncio.run(store.close())
    seconds = time.monotonic() - t0
    info = {"size": size, "fingerprint": fp, "dir": str(d), "written": summary.written,
            "build_seconds": seconds, "ids_per_s": summary.written / seconds,
            "ids_per_cpu_s": summary.written / (cpu_seconds() - c0),
            "resumed_at": summary.resumed_at,
            "disk_bytes": (store_dir / "data.mdb").stat().st_blocks * 512,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    marker.write_text(json.dumps(info))
    log(f"  built {size:,} in {seconds:.0f} s: {info['ids_per_s']:,.0f} ids/s")
    return {**info, "cached": False}


def cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def generate_rate(config: Config, n: int = 2_000_000) -> dict:
    """``import_generated`` into a fresh store against the floor of LMDB itself: the same
    records, encoded beforehand, appended with ``putmulti`` in transactions of the same size
    and synced the same way. Wall-clock and CPU (this process) rates."""
    make = importer.local_encoder(importer.Checker(NODE, config, int(time.time())), PREFIX)
    txn = config.store.import_transaction
    out = {}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        store = LmdbStore(str(Path(tmp) / "importer"), map_size_gib=8)
        t0, c0 = time.monotonic(), cpu_seconds()
        importer.import_generated(store, PREFIX, n, make, transaction=txn)
        out["importer"] = {"ids_per_s": n / (time.monotonic() - t0),
                           "ids_per_cpu_s": n / (cpu_seconds() - c0)}
        asyncio.run(store.close())
        items = [make(i) for i in range(n)]
        raw = LmdbStore(str(Path(tmp) / "raw"), map_size_gib=8)
        db = raw.env.open_db(b"records")
        t0, c0 = time.monotonic(), cpu_seconds()
        for lo in range(0, n, txn):
            with raw.env.begin(write=True, db=db) as w:
                w.cursor().putmulti(items[lo:lo + txn], append=True)
        out["raw_lmdb_append"] = {"ids_per_s": n / (time.monotonic() - t0),
                                  "ids_per_cpu_s": n / (cpu_seconds() - c0)}
        asyncio.run(raw.close())
    out["records"] = n
    out["ratio_to_raw"] = out["importer"]["ids_per_s"] / out["raw_lmdb_append"]["ids_per_s"]
    out["cpu_ratio_to_raw"] = (out["importer"]["ids_per_cpu_s"]
                               / out["raw_lmdb_append"]["ids_per_cpu_s"])
    return out


def file_rate(config: Config, n: int = 200_000) -> dict:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        path = Path(tmp) / "ids.jsonl"
        with open(path, "w") as f:
            for i in range(n):
                f.write(json.dumps({"handle": f"{PREFIX}/{importer.local_suffix(i)}",
                                    "values": importer.local_values(PREFIX, i)}) + "\n")
        store = LmdbStore(str(Path(tmp) / NODE), map_size_gib=4)
        checker = importer.Checker(NODE, config, int(time.time()))
        t0, c0 = time.monotonic(), cpu_seconds()
        s = importer.import_file(store, path, "jsonl", checker,
                                 transaction=config.store.import_transaction)
        took, cpu = time.monotonic() - t0, cpu_seconds() - c0
        asyncio.run(store.close())
    return {"records": s.written, "seconds": took, "ids_per_s": s.written / took,
            "ids_per_cpu_s": s.written / cpu}


def resident_share(path: Path) -> float | None:
    """Share of a file in the page cache now (util-linux ``fincore``), or None."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                              str(path)], capture_output=True, text=True, timeout=60).stdout
        return int(out.split()[0]) / path.stat().st_size
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def start_node(d: Path) -> tuple[subprocess.Popen, str]:
    port = procs.free_port()
    node = procs.spawn([sys.executable, "-m", "topology.cli", "node", "--code", NODE,
                        "--enterprise", PREFIX, "--demo", "0", "--port", str(port),
                        "--data", str(d)], stdout=subprocess.DEVNULL, cwd=HERE.parent)
    procs.wait_port(port, timeout=120, proc=node)
    return node, f"http://127.0.0.1:{port}"


def faults(pid: int) -> tuple[int, int]:
    """(minor, major) page faults of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])


def resolve_round(node: subprocess.Popen, url: str, size: int, seconds: float) -> dict:
    proc = psutil.Process(node.pid)
    before = sum(proc.cpu_times()[:2])
    minor0, major0 = faults(node.pid)
    res = wrk.run(url, seconds, script=LUA, env={"IDSIM_PREFIX": PREFIX,
                                                  "IDSIM_COUNT": str(size)},
                  threads=1, connections=32)
    spent = sum(proc.cpu_times()[:2]) - before
    minor, major = faults(node.pid)
    if res.non2xx or any(res.socket_errors.values()):
        raise RuntimeError(f"{size}: {res.non2xx} error answers, {res.socket_errors}")
    return {"rps": res.rps, "cpu_us": spent / max(1, res.requests) * 1e6,
            "p50_ms": res.percentiles_ms.get(50.0), "p99_ms": res.percentiles_ms.get(99.0),
            "minor_faults_per_req": (minor - minor0) / max(1, res.requests),
            "major_faults_per_req": (major - major0) / max(1, res.requests)}




def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def markdown(out: dict) -> str:
    """The section of benchmarks/README.md these figures make."""
    sizes = sorted(out["resolve"], key=int)
    small, large = sizes[0], sizes[-1]
    s_, l_ = out["resolve"][small], out["resolve"][large]
    g, f = out["generate_import"], out["file_import"]
    build = {str(k): v for k, v in out["builds"].items()}[large]
    mib = 1024
    rows = [
        ("import, generated (`import_generated`, {:,} into a fresh store)".format(g["records"]),
         f"{g['importer']['ids_per_s']:,.0f} ids/s wall; "
         f"{g['importer']['ids_per_cpu_s']:,.0f} ids per CPU-second",
         "raw LMDB `putmulti` append of the same records, encoded beforehand",
         f"{g['ratio_to_raw']:.2f}× ({g['cpu_ratio_to_raw']:.2f}× in CPU)", "≥ 300,000 ids/s",
         f"wall {_verdict(g['importer']['ids_per_s'] >= 3e5)}, "
         f"CPU {_verdict(g['importer']['ids_per_cpu_s'] >= 3e5)}"),
        (f"import of the {int(large):,}-identifier store (its build"
         + (", cached" if build.get("cached") else "") + ")",
         f"{build['ids_per_s']:,.0f} ids/s wall ({build['build_seconds']:.0f} s)"
         + (f"; {build['ids_per_cpu_s']:,.0f} ids per CPU-second"
            if "ids_per_cpu_s" in build else ""), "generated import, 2M (CPU)",
         f"{build['ids_per_cpu_s'] / g['importer']['ids_per_cpu_s']:.2f}×"
         if "ids_per_cpu_s" in build else "", "≥ 300,000 ids/s",
         f"wall {_verdict(build['ids_per_s'] >= 3e5)}"
         + (f", CPU {_verdict(build['ids_per_cpu_s'] >= 3e5)}" if "ids_per_cpu_s" in build
            else "")),
        ("import from JSON Lines ({:,} records, each validated as the HTTP API does)"
         .format(f["records"]), f"{f['ids_per_s']:,.0f} ids/s wall; "
         f"{f['ids_per_cpu_s']:,.0f} ids per CPU-second", "generated import (CPU)",
         f"{f['ids_per_cpu_s'] / g['importer']['ids_per_cpu_s']:.2f}×", "", ""),
        (f"node RssAnon, {int(large):,} identifiers", f"{l_['rss_anon_kib'] / mib:.0f} MiB",
         f"{int(small):,} store: {s_['rss_anon_kib'] / mib:.0f} MiB",
         f"{l_['rss_anon_kib'] / s_['rss_anon_kib']:.2f}×", "", ""),
        (f"disk per identifier, {int(large):,}", f"{l_['disk_bytes_per_id']:.0f} B "
         f"({l_['disk_bytes_per_id'] * int(large) / 2**30:.1f} GiB)",
         f"{int(small):,} store: {s_['disk_bytes_per_id']:.0f} B",
         f"{l_['disk_bytes_per_id'] / s_['disk_bytes_per_id']:.2f}×", "", ""),
    ]
    for at, size in enumerate(sizes[1:], start=3):
        x = out["resolve"][size]
        rows[at:at] = [
            (f"resolve at one node, {int(size):,} identifiers",
             f"{x['rps']:,.0f} req/s (p99 {x['p99_ms']:.1f} ms), {x['cpu_us']:.0f} µs CPU/req; "
             f"page faults per request {x.get('minor_faults_per_req', 0):.2f} minor, "
             f"{x.get('major_faults_per_req', 0):.3f} major; page cache held "
             + (f"{x['page_cache_share']:.0%}" if x.get("page_cache_share") is not None
                else "?") + " of the store",
             f"{int(small):,} store: {s_['rps']:,.0f} req/s, {s_['cpu_us']:.0f} µs CPU/req",
             f"{x['rps_ratio']:.2f}× req/s, {x['cpu_ratio']:.2f}× CPU/req", "≥ 0.8×",
             _verdict(x["rps_ratio"] >= 0.8))]
    share = l_.get("page_cache_share")
    lines = ["## 100 million stored identifiers (`benchmarks/import_scale.py`)", "",
             f"{out['when']}, `python benchmarks/import_scale.py --sizes {','.join(sizes)}"
             f"{' --preload' if out.get('preload') else ''}`; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in out['load_average'])} (2 shared cores: wall "
             "rates wander, CPU per identifier/request holds). Page cache held "
             + (f"{share:.0%}" if share is not None else "an unknown share")
             + f" of the {int(large):,} store after the rounds.", "",
             "| figure | value | reference | ratio | target | result |",
             "| --- | ---: | --- | ---: | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Page faults show where a resolve's time goes: a major fault reads a page of "
              "the store from disk (not in the page cache), a minor fault maps a cached page "
              "into the node's memory map the first time the node touches it.", "",
              "Stores are cached in `benchmarks/.cache/import-<N>/` (git-ignored; the "
              "100M store is ~20 GB: delete it when done)."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,100000000")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--readme", action="store_true",
                    help="write the figures into benchmarks/README.md (its marked section)")
    ap.add_argument("--preload", action="store_true",
                    help="read each store file once before the rounds (page cache warm, as "
                         "benchmarks/run.py does); without it, what the cache holds")
    args = ap.parse_args()
    procs.install_handlers()
    config = Config()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    CACHE.mkdir(exist_ok=True)
    builds = {size: build(size, config) for size in sizes}
    if args.build_only:
        print(json.dumps(builds, indent=2))
        return 0
    out: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "builds": builds, "generate_import": generate_rate(config),
                 "file_import": file_rate(config)}
    if wrk.binary() is None:
        from benchmarks.tools import ensure
        ensure("wrk", ["wrk"])
    nodes = {}
    try:
        for size in sizes:
            nodes[size] = start_node(Path(builds[size]["dir"]))
        if args.preload:
            from benchmarks.stores import preload
            for size in reversed(sizes):  # the largest first: it must not evict the others
                log(f"  preloaded {size:,} in "
                    f"{preload(Path(builds[size]['dir']) / NODE):.0f} s")
        out["preload"] = args.preload
        for size in sizes:
            resolve_round(*nodes[size], size, 2)  # warm-up
        rounds: dict[int, list[dict]] = {s: [] for s in sizes}
        for r in range(args.rounds):
            for size in (sizes if r % 2 == 0 else sizes[::-1]):
                rounds[size].append(resolve_round(*nodes[size], size, args.seconds))
                log(f"  round {r + 1}, {size:,}: {rounds[size][-1]}")
        small = sizes[0]
        out["resolve"] = {str(s): {
            "rps": statistics.median(x["rps"] for x in rounds[s]),
            "p99_ms": statistics.median(x["p99_ms"] or 0 for x in rounds[s]),
            "cpu_us": statistics.median(x["cpu_us"] for x in rounds[s]),
            "minor_faults_per_req": statistics.median(x["minor_faults_per_req"]
                                                      for x in rounds[s]),
            "major_faults_per_req": statistics.median(x["major_faults_per_req"]
                                                      for x in rounds[s]),
            "rps_ratio": statistics.median(a["rps"] / b["rps"]
                                           for a, b in zip(rounds[s], rounds[small])),
            "cpu_ratio": statistics.median(a["cpu_us"] / b["cpu_us"]
                                           for a, b in zip(rounds[s], rounds[small])),
            "rss_anon_kib": procs.rss_anon_kib(nodes[s][0].pid),
            "page_cache_share": resident_share(Path(builds[s]["dir"]) / NODE / "data.mdb"),
            "disk_bytes_per_id": (Path(builds[s]["dir"]) / NODE / "data.mdb").stat().st_blocks
            * 512 / s} for s in sizes}
    finally:
        for node, _ in nodes.values():
            procs.stop(node)
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    (HERE / "results" / "import_scale.json").write_text(json.dumps(out, indent=2))
    if args.readme:
        readme_sections.write("import_scale", markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
