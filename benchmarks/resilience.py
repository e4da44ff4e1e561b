#!/usr/bin/env python
"""Issue 11's "Done when", measured on loopback: ``python benchmarks/resilience.py [--quick]``.

Two ``idsim up --preset mini --mirrors --workers 4`` clusters (88.118 and the top-level node
each alone in a host process; 88.118's mirror and the standby top-level node ``top~Nanjing``
in processes of their own), with short TTLs set for the test (``--set``): answers at most
``--answer-ttl`` s (so warm answers expire and are refreshed during a run), HS_SITE values,
``0.NA/`` records and delegations ``--delegation-ttl`` s. "Killed" is ``idsim fault kill``:
SIGKILL of the node's host process.

- cluster R (``--on-exit restart``: the supervisor starts a killed process again)
  e. writes to 88.118 over HTTP (``--write-rate`` a second for ``--write-seconds``, open loop),
     88.118 SIGKILLed half way and restarted by the supervisor: every acknowledged write
     (201) is read back at the restarted primary, and the mirror's LMDB converges to the
     primary's (``resolver.replication.digest``: count and SHA-256, read from both stores).
  a. warm identifiers (every demo identifier, resolved once) asked through the recursive
     node (``--rate`` a second) while 88.118 is killed every ``--every`` s for ``--seconds``.
- cluster K (``--on-exit keep``: a killed process stays down)
  b. 88.118 killed; its identifiers never resolved before asked through the recursive node:
     the share that resolves, and the recursive node's ``idsim_failovers_total{to="mirror"}``
     rising by as many (the answers came from the mirror).
  c. the top-level node killed for longer than the delegation TTL: prefixes located before
     (new identifiers under them) and prefixes never located, through the recursive node;
     ``idsim_failovers_total{to="standby_top"}`` must rise.
- d. mirror lag p99 at ``--lag-rate`` writes/s: ``benchmarks/replication_lag.py``'s
  ``run_primary`` (imported: a primary in this process, a mirror in a child process).

Each figure is printed with its parameters and PASS/MISS against the issue's threshold; the
exit code is 1 when any misses. Bounded: every wait polls up to a deadline; every process is
stopped in ``finally``. ``tests/test_resilience_e2e.py`` runs the same functions, scaled down.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import procs  # noqa: E402
from benchmarks.resilience_cluster import (CLIENT_TIMEOUT, VICTIM, Up, alive, get,  # noqa: E402
                                           ids, put, resolves)
from resolver import auth  # noqa: E402
from resolver.config import Config  # noqa: E402
from resolver.replication import digest  # noqa: E402
from resolver.store import open_store  # noqa: E402

__all__ = ["Up", "QUICK", "parser", "warm_under_kills", "cold_from_mirror", "top_down",
           "mirror_lag", "writes_survive_sigkill"]


def figure(name: str, value: float, threshold: str, ok: bool, params: str, detail: str) -> dict:
    line = (f"{name}: {value:.3f}% {detail}  [{params}]  threshold {threshold}: "
            f"{'PASS' if ok else 'MISS'}")
    print(line, flush=True)
    return {"name": name, "value": value, "ok": ok, "line": line}


# ---------------------------------------------------------------- the five behaviours
def warm_under_kills(up: Up, seconds: float, every: float, rate: float) -> dict:
    """a. every demo identifier resolved once, then asked round-robin at ``rate``/s while
    88.118 is killed every ``every`` s (the supervisor restarts it) for ``seconds``."""
    warm = ids(up.prefixes(), 0, int(up.state["perEnterprise"]))
    assert resolves(up, warm) == len(warm), "warm-up: not every identifier resolved"
    results: list[bool] = []
    stop = threading.Event()

    def client(k: int, n: int) -> None:
        begin, i = time.monotonic(), k
        while not stop.is_set():
            h = warm[i % len(warm)]
            status, body = get(f"{up.rec}/api/handles/{h}")
            results.append(status == 200 and body.get("handle") == h)
            i += n
            delay = begin + (i - k) / n / (rate / n) - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    threads = [threading.Thread(target=client, args=(k, 4), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    before = up.failovers("mirror")
    begin, ticks, kills = time.monotonic(), 0, 0
    try:
        while time.monotonic() - begin < seconds:
            if alive(up.pid_of(VICTIM)):  # else still down: the supervisor's back-off
                up.kill(VICTIM)
                kills += 1
            ticks += 1
            next_kill = begin + ticks * every
            while time.monotonic() < min(next_kill, begin + seconds):
                time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT + 1)
    ok, from_mirror = sum(results), up.failovers("mirror") - before
    share = 100.0 * ok / max(1, len(results))
    return figure("a. warm identifiers, a secondary killed periodically", share, ">= 99.9 %",
                  share >= 99.9 and len(results) > 0,
                  f"--seconds {seconds:g} --every {every:g} --rate {rate:g}",
                  f"({ok}/{len(results)} resolved; {len(warm)} identifiers; {kills} SIGKILLs "
                  f"of {VICTIM}, {ticks - kills} times still down from the last one; "
                  f"failovers to the mirror +{from_mirror:g})")


def cold_from_mirror(up: Up, count: int) -> dict:
    """b. 88.118 killed (kept down); ``count`` of its identifiers never resolved before."""
    cold = ids(up.prefixes(VICTIM), 1, int(up.state["perEnterprise"]))[:count]
    if len(cold) < count:
        raise ValueError(f"{VICTIM} holds {len(cold)} never-resolved demo identifiers, "
                         f"fewer than --cold {count}: raise --demo")
    before = up.failovers("mirror")
    up.kill(VICTIM)
    ok = resolves(up, cold)
    from_mirror = up.failovers("mirror", at_least=before + ok) - before
    share = 100.0 * ok / len(cold)
    return figure("b. never-resolved identifiers of a killed node with a mirror", share,
                  ">= 99 %, from the mirror", share >= 99 and from_mirror >= ok,
                  f"--cold {count}", f"({ok}/{len(cold)} resolved; failovers to the mirror "
                  f"+{from_mirror:g})")


def top_down(up: Up, delegation_ttl: float) -> dict:
    """c. half the prefixes (those of 88.118 among them) located, the top-level node killed
    for longer than the delegation TTL: new identifiers under located prefixes, and
    identifiers under prefixes never located (through the standby top-level node)."""
    others = [p for p in up.prefixes() if not p.startswith(VICTIM + ".")]
    fresh = others[::2]                                 # never located by the recursive node
    located = [p for p in up.prefixes() if p not in fresh]
    assert resolves(up, ids(located, 0, 1)) == len(located), "locating prefixes failed"
    before = up.failovers("standby_top")
    up.kill("top")
    expired = time.monotonic() + delegation_ttl + 1.0    # past every delegation's TTL
    while time.monotonic() < expired:
        time.sleep(0.1)
    again = resolves(up, ids(located, 2, 3))
    new = resolves(up, ids(fresh, 0, 1))
    via_standby = up.failovers("standby_top", at_least=before + 1) - before
    share = 100.0 * again / len(located)
    ok = again == len(located) and new == len(fresh) and via_standby >= 1
    return figure("c. top-level node down past the delegation TTL", share,
                  "100 % of located prefixes, new ones through the standby", ok,
                  f"--delegation-ttl {delegation_ttl:g}",
                  f"(located {again}/{len(located)}; never located {new}/{len(fresh)}; "
                  f"failovers to the standby top +{via_standby:g})")


def mirror_lag(rate: float, seconds: float) -> dict:
    """d. ``benchmarks/replication_lag.py``'s measurement (imported)."""
    from benchmarks.replication_lag import quantile, run_primary
    with tempfile.TemporaryDirectory(prefix="idsim-res-lag-") as tmp:
        r = asyncio.run(run_primary(rate, seconds, Path(tmp)))
    lags, m = r["mirror"]["lags"], r["mirror"]
    p99 = quantile(lags, 0.99)
    same = (m["count"], m["digest"]) == (r["count"], r["digest"])
    line = (f"d. mirror lag p99: {p99 * 1e3:.1f} ms (p50 {quantile(lags, .5) * 1e3:.1f} ms, "
            f"{len(lags)} entries; {r['writes']} writes in {r['elapsed']:.1f} s; digest "
            f"{'equal' if same else 'DIFFERENT'})  [--lag-rate {rate:g} --lag-seconds "
            f"{seconds:g}]  threshold < 1 s: {'PASS' if p99 < 1 and same else 'MISS'}")
    print(line, flush=True)
    return {"name": "d. mirror lag", "value": p99, "ok": p99 < 1 and same, "line": line}


def writes_survive_sigkill(up: Up, rate: float, seconds: float) -> dict:
    """e. open-loop PUTs to an 88.118 prefix; 88.118 SIGKILLed half way, the supervisor
    restarts it; every acknowledged write must be there, and the mirror must converge."""
    prefix = up.prefixes(VICTIM)[0]
    login = json.loads((up.data / "logins.json").read_text())["enterprises"][prefix]
    token = auth.basic_header(login["username"], login["secret"])
    url = up.nodes[VICTIM]["httpUrl"]
    acked: list[str] = []

    def write(i: int) -> None:
        h = f"{prefix}/W{i:07d}"
        status = put(f"{url}/api/handles/{h}", {"values": [{"index": 1, "type": "URL",
                                                           "data": f"https://ex.com/{i}"}]}, token)
        if status in (200, 201):
            acked.append(h)
    total, killed, old = int(rate * seconds), False, None
    begin = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        for i in range(total):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not killed and i >= total // 2:
                old, killed = up.kill(VICTIM), True
            pool.submit(write, i)
    probe = f"{url}/api/handles/{up.state['examples'][1]}"
    up.wait_back(VICTIM, old, probe)
    lost = [h for h in acked if get(f"{url}/api/handles/{h}")[0] != 200]
    config = Config()
    stores = [open_store(f"lmdb:{up.data / n}", config.store, config.replication)
              for n in (VICTIM, up.mirror_of(VICTIM)["name"])]
    try:
        deadline = time.monotonic() + 60
        while (sums := [digest(s) for s in stores])[0] != sums[1]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for s in stores:
            s.env.close()
    same = sums[0] == sums[1]
    ok = not lost and same and len(acked) > 0
    return figure("e. acknowledged writes after SIGKILL+restart of a primary with a mirror",
                  100.0 * (len(acked) - len(lost)) / max(1, len(acked)),
                  "0 lost, mirror converges", ok,
                  f"--write-rate {rate:g} --write-seconds {seconds:g}",
                  f"({len(acked)}/{total} acknowledged, {len(lost)} lost; primary "
                  f"{sums[0][0]} records, mirror {sums[1][0]}; digest "
                  f"{'equal' if same else 'DIFFERENT'})")


def run(args: argparse.Namespace, tmp: Path) -> list[dict]:
    out = []
    up = Up(tmp / "restart", "restart", args.demo, args.answer_ttl, args.delegation_ttl)
    try:
        out.append(writes_survive_sigkill(up, args.write_rate, args.write_seconds))
        out.append(warm_under_kills(up, args.seconds, args.every, args.rate))
    finally:
        up.stop()
    up = Up(tmp / "keep", "keep", args.demo, args.answer_ttl, args.delegation_ttl)
    try:
        out.append(cold_from_mirror(up, args.cold))
        out.append(top_down(up, args.delegation_ttl))
    finally:
        up.stop()
    out.append(mirror_lag(args.lag_rate, args.lag_seconds))
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the CI scale: kills every 2 s for "
                    "12 s, 100 cold identifiers, 300 writes/s for 3 s")
    ap.add_argument("--seconds", type=float, default=120.0, help="a: how long 88.118 is killed")
    ap.add_argument("--every", type=float, default=10.0, help="a: s between kills")
    ap.add_argument("--rate", type=float, default=100.0, help="a: resolves per second")
    ap.add_argument("--cold", type=int, default=300, help="b: never-resolved identifiers")
    ap.add_argument("--demo", type=int, default=101, help="demo identifiers per enterprise")
    ap.add_argument("--answer-ttl", type=int, default=2, help="cache.max_ttl, s")
    ap.add_argument("--delegation-ttl", type=int, default=3, help="site/prefix/delegation TTL")
    ap.add_argument("--lag-rate", type=float, default=1000.0, help="d: writes per second")
    ap.add_argument("--lag-seconds", type=float, default=20.0)
    ap.add_argument("--write-rate", type=float, default=200.0, help="e: writes per second")
    ap.add_argument("--write-seconds", type=float, default=10.0)
    ap.add_argument("--data", type=Path, help="keep the clusters' data and logs here "
                    "(default: a temporary directory, removed)")
    return ap


QUICK = {"seconds": 12.0, "every": 2.0, "cold": 100, "demo": 35, "lag_rate": 300.0,
         "lag_seconds": 3.0, "write_rate": 100.0, "write_seconds": 3.0}


def main() -> None:
    args = parser().parse_args()
    if args.quick:
        vars(args).update(QUICK)
    procs.install_handlers()
    if args.data:
        args.data.mkdir(parents=True, exist_ok=True)
        results = run(args, args.data)
    else:
        with tempfile.TemporaryDirectory(prefix="idsim-resilience-") as tmp:
            results = run(args, Path(tmp))
    missed = [r["name"] for r in results if not r["ok"]]
    print("all PASS" if not missed else f"MISS: {', '.join(missed)}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
