"""Capacity search (``loadtest.capacity``, ``idsim capacity``): the stepping and judging logic
with a fake measurement, and on the mini network a knee, the files, and ``--min-rate`` failing.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from loadtest.capacity import StepResult, engine, processes_for, search, users_for
from network_fixtures import free_topology  # noqa: I001 - tests/ is on sys.path
from resolver.config import CapacityConfig

REPO = Path(__file__).resolve().parent.parent
CONFIG = replace(CapacityConfig(), start_rate=100, step_rate=100, max_rate=1000)


def fake(knee: float, *, errors_from: float = 1e9, saturated_from: float = 1e9):
    """A network whose p99 is 10 ms up to ``knee`` req/s and 500 ms beyond; records calls."""
    calls = []

    def measure(rate: float, processes: int, users: int) -> StepResult:
        calls.append((rate, processes, users))
        n = int(rate * 5)
        failed = n // 10 if rate >= errors_from else 0
        return StepResult(rate, rate, 2.0, 10.0 if rate <= knee else 500.0, 9.0, n, failed, 0,
                          0, engine(processes), saturated=rate >= saturated_from)
    return measure, calls


def test_the_search_stops_at_the_first_step_past_the_slo():
    measure, calls = fake(450)
    cap = search(measure, CONFIG, 50, cores=2)
    assert [r for r, _, _ in calls] == [100, 200, 300, 400, 500]
    assert cap.rate == 400 and cap.knee.rate == 500
    assert "p99 500.0 ms > 50 ms" in cap.knee.why
    assert cap.verdict(None) and cap.verdict(400) and not cap.verdict(401)
    assert json.loads(json.dumps(cap.to_dict()))["capacity"] == 400


def test_errors_past_the_ratio_end_the_search_too():
    measure, _ = fake(10_000, errors_from=300)
    cap = search(measure, CONFIG, 50, cores=2)
    assert cap.rate == 200 and "errors 10.0% > 1.0%" in cap.knee.why


def test_a_network_that_holds_every_step_has_no_knee_and_none_held_is_zero():
    measure, calls = fake(10_000)
    cap = search(measure, CONFIG, 50, cores=2)
    assert cap.knee is None and cap.rate == 1000 and len(calls) == 10
    measure, _ = fake(0)
    assert search(measure, CONFIG, 50, cores=2).rate == 0


def test_a_saturated_generator_is_reported_as_a_lower_bound():
    measure, _ = fake(250, saturated_from=300)
    cap = search(measure, CONFIG, 50, cores=2)
    assert cap.generator_bound and "saturated (a lower bound)" in cap.knee.why


def test_sizing_users_by_littles_law_and_processes_by_rate():
    assert users_for(5000, 50) == 500 and users_for(10, 50) == 10
    cfg = replace(CONFIG, per_process=4000)
    assert [processes_for(r, cfg, 2) for r in (100, 4000, 4001, 20000)] == [1, 1, 2, 2]
    assert processes_for(20000, cfg, 8) == 5
    measure, calls = fake(10_000)
    search(measure, replace(CONFIG, per_process=250, max_rate=300), 50, cores=2)
    assert [p for _, p, _ in calls] == [1, 1, 2]
    assert "distributed" in engine(2) and "1 process" in engine(1)


@pytest.mark.timeout(120)
def test_idsim_capacity_finds_a_knee_on_the_mini_network_and_fails_below_min_rate(tmp_path):
    """88.118 answers 50 ms late (``fault_control``), the answer cache is off and at most 4
    requests are in flight: about a third of resolves hold a user 50 ms, so the queue (and
    the corrected p99) takes off a few hundred req/s up, well inside --max-rate."""
    from resolver.config import Config
    from topology import fault_control
    from topology.cluster import Cluster

    data = tmp_path / "data"
    cluster = Cluster(free_topology(), data, store="lmdb",
                      config=Config().with_values("test", {"cache": {"answer_entries": 0}}))
    cluster.start()
    try:
        fault_control.apply(data, {"kind": "slow", "node": "88.118", "delay": 0.05})
        proc = subprocess.run(
            [sys.executable, "-m", "topology.cli", "capacity", "--data", str(data),
             "--users", "4", "--max-p99", "150ms", "--start-rate", "100", "--step-rate", "100",
             "--max-rate", "1500", "--step-time", "3", "--min-rate", "1500"],
            capture_output=True, text=True, timeout=110, cwd=REPO)
    finally:
        cluster.stop()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    found = float(re.search(r"^capacity: ([\d.]+) req/s held p99 <= 150 ms \(engine: Locust, "
                            r"1 process\)$", proc.stdout, re.M)[1])
    assert 100 <= found < 1500, out
    assert "FAILED: capacity" in out and "below --min-rate 1500" in out
    [run] = list((data / "runs").iterdir())
    doc = json.loads((run / "capacity.json").read_text())
    assert doc["capacity"] == found and doc["knee"] == found + 100
    held = [s for s in doc["steps"] if s["held"]]
    assert all(s["p99"] <= 150 for s in held)
    assert doc["steps"][-1]["p99"] > 150 or doc["steps"][-1]["errorRatio"] > 0.01
    assert (run / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    rec = json.loads((run / "run.json").read_text())  # the run record: inputs, then results
    assert rec["kind"] == "capacity" and rec["options"]["min_rate"] == 1500
    assert json.loads((run / "results.json").read_text())["capacity"] == found


def test_idsim_capacity_without_a_running_cluster_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "topology.cli", "capacity", "--data",
                           str(tmp_path / "none"), "--max-p99", "50ms"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "no cluster running from" in proc.stderr, proc.stderr
    bad = subprocess.run([sys.executable, "-m", "topology.cli", "capacity", "--data",
                          str(tmp_path / "none"), "--max-p99", "soon"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "--max-p99: not a duration" in bad.stderr, bad.stderr
