"""Load testing: the workload sampler's distribution, the summary, and a real Locust run."""
from __future__ import annotations

import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loadtest import runner
from loadtest.workload import RAMP_STAGES, Workload, stage_at
from network_fixtures import free_topology  # noqa: I001 - tests/ is on sys.path

PREFIXES = ["88.118.8", "88.101.1", "88.201.7"]


def sample_known(w: Workload, n: int) -> Counter:
    return Counter(w.known(w.rank()) for _ in range(n))


def test_every_identifier_drawn_is_registered():
    w = Workload(PREFIXES, 50, unknown_share=0.0, rng=random.Random(1))
    registered = {f"{p}/SN{i:09d}" for p in PREFIXES for i in range(50)}
    drawn = {w.sample()[0] for _ in range(5000)}
    assert drawn <= registered


def test_ranks_map_to_distinct_identifiers():
    for per_prefix in (1, 7, 50, 333):
        w = Workload(PREFIXES, per_prefix)
        ids = [w.known(r) for r in range(1, w.total + 1)]
        assert len(set(ids)) == w.total


def test_popularity_is_zipf_like():
    w = Workload(PREFIXES, 1000, s=1.1, unknown_share=0.0, rng=random.Random(7))
    counts = sample_known(w, 200_000)
    top = [w.known(r) for r in (1, 2, 4)]
    # P(r) ∝ r^-s: rank 1 is drawn about 2^1.1 ≈ 2.1x as often as rank 2, 4^1.1 ≈ 4.6x rank 4
    assert 1.6 < counts[top[0]] / counts[top[1]] < 2.8
    assert 3.3 < counts[top[0]] / counts[top[2]] < 6.5
    # heavy head: the top 1% of 3,000 identifiers draws well over a third of the lookups
    head = sum(counts[w.known(r)] for r in range(1, 31))
    assert head / 200_000 > 0.35
    # popular identifiers are spread over every prefix, not bunched under the first
    assert {w.known(r).split("/")[0] for r in range(1, 10)} == set(PREFIXES)


def test_exponent_zero_is_uniform():
    w = Workload(PREFIXES, 10, s=0.0, unknown_share=0.0, rng=random.Random(3))
    counts = sample_known(w, 60_000)
    assert len(counts) == 30
    assert max(counts.values()) / min(counts.values()) < 1.3


def test_unknown_share_and_their_shape():
    w = Workload(PREFIXES, 100, unknown_share=0.2, rng=random.Random(5))
    draws = [w.sample() for _ in range(20_000)]
    unknown = [h for h, known in draws if not known]
    assert 0.18 < len(unknown) / len(draws) < 0.22
    assert all(h.split("/")[0] in PREFIXES and "/MISSING-" in h for h in unknown)


def test_same_seed_same_draws():
    a = Workload(PREFIXES, 100, rng=random.Random(11))
    b = Workload(PREFIXES, 100, rng=random.Random(11))
    assert [a.sample() for _ in range(100)] == [b.sample() for _ in range(100)]


def test_bad_workloads_are_refused():
    with pytest.raises(ValueError):
        Workload([], 10)
    with pytest.raises(ValueError):
        Workload(PREFIXES, 0)
    with pytest.raises(ValueError):
        Workload(PREFIXES, 10, unknown_share=1.5)


def test_new_suffixes_do_not_collide():
    w = Workload(PREFIXES, 1, rng=random.Random())
    batch = w.new_suffixes("LT", 100) + w.new_suffixes("LT", 100)
    assert len(set(batch)) == 200


def test_ramp_shape_steps_up_then_stops():
    # Locust is never imported into the test process (gevent would patch asyncio's world)
    seen = [stage_at(RAMP_STAGES, t) for t in (0, 9, 10, 30, 50, 60)]
    assert [s[0] if s else None for s in seen] == [10, 10, 25, 50, 10, None]
    assert "locust" not in sys.modules


STATS_CSV = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
GET,resolve,1000,0,7,8.1,1,90,540,333.3,0.0,7,8,9,10,12,17,40,110,120,130,130
PUT,register,30,1,14,15.0,5,40,50,10.0,0.3,14,15,16,17,20,22,27,27,40,40,40
,Aggregated,1030,1,8,8.3,1,90,525,343.3,0.3,8,9,10,11,13,19,40,110,120,130,130
"""


def test_summary_reads_locust_csv_and_warns_when_saturated(tmp_path):
    path = tmp_path / "run_stats.csv"
    path.write_text(STATS_CSV)
    rows, total = runner.parse_stats(path)
    assert [r.name for r in rows] == ["resolve", "register"]
    assert (total.requests, total.failures, total.rps, total.p99) == (1030, 1, 343.3, 110)
    calm = runner.Result(rows, total, cpu_per_process=0.4, processes=1, seconds=3)
    busy = runner.Result(rows, total, cpu_per_process=0.97, processes=2, seconds=3)
    assert "WARNING" not in runner.table(calm)
    assert "saturated" in runner.table(busy) and busy.saturated


@pytest.mark.timeout(180)
def test_idsim_load_runs_the_mixed_scenario_without_failures(tmp_path):
    """What a user runs: ``idsim load`` starts a cluster, drives it with Locust, summarises."""
    base = free_topology().recursive.http_port
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "topology.cli", "load", "--preset", "mini", "--port", str(base),
         "--data", str(data), "--time", "6s", "--users", "12", "--scenario", "mixed"],
        capture_output=True, text=True, timeout=170, cwd=Path(__file__).parent.parent)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"resolve", "register", "stats", "Aggregated"} <= lines, out
    aggregated = next(line for line in proc.stdout.splitlines() if line.startswith("Aggregated"))
    count, failures = (int(x) for x in aggregated.split()[1:3])
    assert count > 100 and failures == 0, out
    assert not (data / "cluster.json").exists()  # the cluster it started is stopped again
    # piped, not a terminal: no live progress line; the run's files are kept
    assert not re.search(r"\d requests +[\d,]+ req/s", proc.stdout), out
    [run] = list((data / "runs").iterdir())
    assert {"run_stats.csv", "report.html"} <= {p.name for p in run.iterdir()}
    assert f"{run} (report.html)" in proc.stdout
