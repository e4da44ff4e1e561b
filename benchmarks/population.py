#!/usr/bin/env python
"""Synthetic vs stored resolve, CPU per request: ``python benchmarks/population.py [--seconds 4]
[--rounds 3] [--count 10000]``.

Runs ``idsim up --preset mini --population full`` (LMDB) and, at the secondary node serving
``88.118`` (straight to its HTTP port, no recursive cache), registers ``--count`` new
identifiers ``<prefix>/ST…`` under its largest enterprise, whose values are those of synthetic records (same template, same
size). It then measures, in interleaved rounds, the server CPU per request (user + system of
the host process serving that node, ``cpu_per_request.cpu_us_per_request``) of GETs of random
stored identifiers and of random synthetic ones (drawn over the whole population), with the
same wrk script. It prints the medians and the ratio synthetic / stored (target ≤ 1.1×), and
the bare aiohttp reference of ``cpu_per_request`` measured in the same rounds.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs, readme_sections, wrk  # noqa: E402
from benchmarks.cpu_per_request import REFERENCE_SERVER, cpu_us_per_request  # noqa: E402
from resolver import records  # noqa: E402
from resolver.auth import basic_header  # noqa: E402
from resolver.population import EnterprisePopulation  # noqa: E402
from resolver.templates import template_of  # noqa: E402
from topology.tomlio import load  # noqa: E402

NODE = "88.118"  # the secondary node measured; its largest enterprise's identifiers
PATHS_LUA = """
-- GET the paths listed one a line in the file IDSIM_PATHS, at random
local paths = {}
for line in io.lines(os.getenv("IDSIM_PATHS")) do paths[#paths + 1] = line end
local seeded, next_id = false, 0
function setup(thread) thread:set("tid", next_id); next_id = next_id + 1 end
request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6) + 7919 * (tid or 0))
    seeded = true
  end
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def start_cluster(tmp: Path) -> tuple[dict, Path]:
    port = procs.free_port(20000, 31000)
    data = tmp / "up"
    up = procs.spawn([sys.executable, "-m", "topology.cli", "up", "--preset", "mini",
                      "--population", "full", "--workers", "2", "--port", str(port),
                      "--data", str(data)], stdout=subprocess.DEVNULL, cwd=HERE.parent)
    deadline = time.monotonic() + 120
    while not (data / "cluster.json").exists():
        if up.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"idsim up did not start; see {data / 'logs'}")
        time.sleep(0.2)  # polling a subprocess
    return json.loads((data / "cluster.json").read_text()), data


def register(url: str, authorization: str, items: list[dict]) -> None:
    for start in range(0, len(items), 2000):
        body = json.dumps({"handles": items[start:start + 2000]}).encode()
        req = urllib.request.Request(f"{url}/api/batch/register", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": authorization})
        with urllib.request.urlopen(req, timeout=60) as resp:
            doc = json.loads(resp.read())
        if doc["failed"]:
            raise RuntimeError(f"registering stored identifiers failed: {doc['results'][:2]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=10_000, help="stored identifiers (and the "
                   "number of distinct synthetic ones drawn)")
    p.add_argument("--readme", action="store_true",
                   help="write the figures into benchmarks/README.md (its marked section)")
    args = p.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="idsim-population-"))
    (tmp / "paths.lua").write_text(PATHS_LUA)
    try:
        ref_port = procs.free_port()
        ref = procs.spawn([sys.executable, "-c", REFERENCE_SERVER, str(ref_port)])
        procs.wait_port(ref_port, proc=ref)
        state, data = start_cluster(tmp)
        topo = load(data / "topology.toml")
        ent = max(topo.enterprises_of(NODE), key=lambda e: e.identifiers)
        PREFIX = ent.prefix
        pop = EnterprisePopulation(PREFIX, ent.identifiers,
                                   template_of(topo.templates_by_industry(), ent.industry),
                                   topo.seed)
        login = json.loads((data / "logins.json").read_text())["enterprises"][PREFIX]
        node_url = login["httpUrl"]
        pid = next(p["pid"] for p in state["processes"] if NODE in p["nodes"])
        rng = random.Random(1)
        ordinals = [rng.randrange(pop.count) for _ in range(args.count)]
        stored = [f"{PREFIX}/ST{i:07d}" for i in range(args.count)]
        register(node_url, basic_header(login["username"], login["secret"]), [
            {"handle": h, "values": [v.to_json() for v in records.decode(pop.record(o))[1]]}
            for h, o in zip(stored, ordinals)])
        for name, handles in (("stored", stored),
                              ("synthetic", [f"{PREFIX}/{pop.suffix(o)}" for o in ordinals])):
            (tmp / f"{name}.txt").write_text("".join(f"/api/handles/{h}\n" for h in handles))
        script = str(tmp / "paths.lua")
        runs = {
            "reference GET": (ref.pid, f"http://127.0.0.1:{ref_port}/api/handles/88.118.8/X",
                              None, {}),
            "stored GET": (pid, node_url, script, {"IDSIM_PATHS": str(tmp / "stored.txt")}),
            "synthetic GET": (pid, node_url, script, {"IDSIM_PATHS": str(tmp / "synthetic.txt")}),
        }
        for name, (rpid, url, lua, env) in runs.items():  # warm LMDB pages and the code
            wrk.run(url, 1, script=lua, env=env, threads=1, connections=32)
        got: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (rpid, url, lua, env) in runs.items():
                got[name].append(cpu_us_per_request(rpid, url, args.seconds, lua, env))
            procs.log(f"round {r + 1}/{args.rounds}: " +
                      ", ".join(f"{n} {v[-1]:.1f} µs" for n, v in got.items()))
        med = {name: statistics.median(v) for name, v in got.items()}
        procs.log(f"\n{'server CPU per request (median)':<34}{'µs':>8}{'× reference':>13}")
        for name in runs:
            procs.log(f"{name:<34}{med[name]:>8.1f}{med[name] / med['reference GET']:>12.2f}×")
        ratio = med["synthetic GET"] / med["stored GET"]
        procs.log(f"\nsynthetic / stored: {ratio:.3f}× (target ≤ 1.1×; population of "
                  f"{PREFIX}: {pop.count:,}, {args.count:,} stored)")
        if args.readme:
            rows = "\n".join(f"| {name} | {med[name]:.1f} | {med[name] / med['reference GET']:.2f}× |"
                             for name in runs)
            readme_sections.write("population", f"""\
## Synthetic population (`benchmarks/population.py`)

{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, `python benchmarks/population.py
--seconds {args.seconds:g} --rounds {args.rounds}`: server CPU per resolve at secondary node
{NODE} of `idsim up --preset mini --population full` (LMDB), medians of {args.rounds}
interleaved rounds; synthetic identifiers of {PREFIX} (population {pop.count:,}) against
{args.count:,} stored identifiers of the same records.

| request | µs CPU | × bare aiohttp |
| --- | ---: | ---: |
{rows}

**synthetic / stored: {ratio:.3f}×** (target ≤ 1.1×: {"PASS" if ratio <= 1.1 else "MISS"}).
""")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
