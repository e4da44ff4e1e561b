"""The benchmark suite runs end to end (``--quick``, about a minute) and every figure in it is
a real measurement: no target is asserted here (timings belong to the benchmark), only that
each scenario ran, answered correctly and was written out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import tools

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_quick_benchmark_runs_and_reports(tmp_path):
    try:  # the suite installs wrk and nginx itself; without a package registry it cannot
        tools.ensure("wrk", ["wrk"])
        tools.ensure("nginx", ["nginx-light", "nginx"])
    except RuntimeError as exc:
        pytest.skip(f"wrk/nginx unavailable: {exc}")
    run = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert res["mode"] == "quick" and res["unexpected_answers"] == 0
    summary = res["resolve"]["summary"]
    for scenario in ("nginx", "aiohttp", "warm", "warm_nometrics", "cold", "secondary"):
        assert summary[scenario]["rps"] > 0 and summary[scenario]["cpu_us"] > 0, scenario
        assert summary[scenario]["ratio_to_aiohttp"] > 0, scenario
    assert summary["register"]["rate"] > 0 and summary["register_one"]["rate"] > 0
    assert summary["batch"]["rate"] > 0 and summary["locust"]["rps"] > 0
    assert len(res["targets"]) == 13  # each judged on a value measured in this run
    assert all(isinstance(t["value"], float) and isinstance(t["passed"], bool)
               for t in res["targets"]), res["targets"]
    for png in ("resolve.png", "store_size.png"):
        assert (tmp_path / "results" / png).read_bytes()[:4] == b"\x89PNG"
    readme = (tmp_path / "README.md").read_text()
    assert "python benchmarks/run.py" in readme and "| figure |" in readme
    assert "bare aiohttp" in readme and ("PASS" in readme or "MISS" in readme)


@pytest.mark.timeout(300)
def test_cpu_per_request_runs_and_compares_with_its_reference():
    try:
        tools.ensure("wrk", ["wrk"])
    except RuntimeError as exc:
        pytest.skip(f"wrk unavailable: {exc}")
    run = subprocess.run([sys.executable, "benchmarks/cpu_per_request.py", "--seconds", "1",
                          "--rounds", "1"], cwd=REPO, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {line[:34].strip(): line.split()[-1] for line in run.stdout.splitlines()
            if line.endswith("×")}
    assert set(rows) == {"reference GET", "resolve GET", "reference PUT", "register PUT"}
    assert rows["reference GET"] == rows["reference PUT"] == "1.00×"
    assert float(rows["resolve GET"].rstrip("×")) > 0 and float(rows["register PUT"].rstrip("×")) > 0
