"""Run records (issue 13 part 4): what a load run records, ``--again`` replays, ``idsim report``.

Two real ``idsim load`` runs on the mini network (a run, then ``--again`` of it; each starts
and stops its own cluster on free ports below 32768, 3 s of load each) are shared by the
tests that need them; the rest use records written by ``loadtest.records`` from a fake
Locust result, and call ``topology.cli.main`` in process.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.network import free_preset
from loadtest import records, runner
from loadtest.phases import PhaseRow
from topology.cli import main
from topology.presets import get_preset
from topology.tomlio import save

REPO = Path(__file__).resolve().parent.parent
STATS = """Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
GET,resolve,{n},{f},7,8.1,1,90,540,{rps},0.0,7,8,9,10,12,17,40,{p99},120,130,130
,Aggregated,{n},{f},8,8.3,1,90,525,{rps},0.3,8,9,10,11,13,19,40,{p99},120,130,130
"""


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def idsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topology.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=100, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """``idsim load`` then ``idsim load --again runs/<time>`` of it: (data, first, second)."""
    data = tmp_path_factory.mktemp("records") / "idsim-data"
    port = free_preset("mini").recursive.http_port
    first = idsim("load", "--preset", "mini", "--port", str(port), "--data", str(data),
                  "--time", "3s", "--users", "3", "--scenario", "resolve", "--seed", "7")
    assert first.returncode == 0, first.stdout + first.stderr
    [run_a] = list((data / "runs").iterdir())
    again = idsim("load", "--data", str(data), "--again", f"runs/{run_a.name}")
    assert again.returncode == 0, again.stdout + again.stderr
    [run_b] = [p for p in (data / "runs").iterdir() if p != run_a]
    return data, run_a, run_b, again.stdout


@pytest.mark.timeout(120)
def test_a_load_run_records_its_inputs_and_results(two_runs):
    data, run, _, _ = two_runs
    rec = json.loads((run / "run.json").read_text())
    assert rec["kind"] == "load"
    assert rec["options"] == {"scenario": "resolve", "time": 3.0, "users": 3, "spawn_rate": 50,
                              "processes": 1, "seed": 7, "rate": None, "rate_shape": None,
                              "compress": None, "share": None}
    assert rec["topology"]["name"] == "mini"
    assert rec["topology"]["digest"] == records.topology_digest(data / "topology.toml")
    assert (run / "topology.toml").exists() and (run / "config.toml").exists()
    assert rec["versions"]["locust"] and rec["versions"]["python"] == sys.version.split()[0]
    assert rec["git"] is None or len(rec["git"].split("+")[0]) == 40
    assert rec["command"][:2] == ["idsim", "load"] and "--seed" in rec["command"]
    res = json.loads((run / "results.json").read_text())
    _, total = runner.parse_stats(run / "run_stats.csv")
    assert res["total"]["requests"] == total.requests > 0
    assert {r["name"] for r in res["rows"]} >= {"resolve"} and res["failures"] == []
    assert (run / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "report.html").exists()


@pytest.mark.timeout(120)
def test_again_replays_the_same_inputs(two_runs):
    _, run_a, run_b, out = two_runs
    a, b = (json.loads((r / "run.json").read_text()) for r in (run_a, run_b))
    assert f"replaying {run_a}" in out
    assert a["command"] != b["command"]  # the second was asked with --again ...
    for rec in (a, b):
        del rec["time"], rec["command"]
    assert a == b  # ... and ran with every input of the first, seed included


@pytest.mark.timeout(120)
def test_report_shows_both_runs_and_their_ratios(two_runs, capsys):
    data, run_a, run_b, _ = two_runs
    assert run_main(["report", "--data", str(data), run_a.name, run_b.name]) == 0
    text = capsys.readouterr().out
    ta, tb = (json.loads((r / "results.json").read_text())["total"] for r in (run_a, run_b))
    line = next(ln for ln in text.splitlines() if ln.split()[:2] == ["Aggregated", "requests"])
    assert line.split()[2:] == [f"{ta['requests']:,}", f"{tb['requests']:,}",
                                f"{tb['requests'] / ta['requests']:.2f}x"]
    assert "inputs: the same" in text
    assert run_main(["report", "--json", str(run_a), str(run_b)]) == 0
    doc = json.loads(capsys.readouterr().out)
    agg = next(r for r in doc["rows"] if r["name"] == "Aggregated")["metrics"]["rps"]
    assert agg["a"] == ta["rps"] and agg["b"] == tb["rps"]
    assert agg["ratio"] == pytest.approx(tb["rps"] / ta["rps"])


# ------------------------------------------------------------------ records of fake runs

def fake_run(out: Path, data: Path, *, n: int, p99: int, rps: float, faults: Path | None = None,
             users: int = 10, phases: list | None = None) -> Path:
    """A run record as ``idsim load`` writes it, from a Locust CSV written here."""
    out.mkdir(parents=True)
    (out / "run_stats.csv").write_text(STATS.format(n=n, f=0, rps=rps, p99=p99))
    rows, total = runner.parse_stats(out / "run_stats.csv")
    args = argparse.Namespace(scenario="resolve", time=30.0, users=users, spawn_rate=50,
                              processes=1, seed=3, faults=str(faults) if faults else None)
    records.write_inputs(out, data, kind="load", options=records.options_of(args),
                         faults=faults, argv=["idsim", "load"])
    result = runner.Result(rows, total, 0.5, 1, 30.0, out, phases=phases)
    records.record_result(out, result)
    return out


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "idsim-data"
    d.mkdir()
    save(get_preset("mini").with_ports(20000), d / "topology.toml")
    return d


def phase_rows(p99_during: float) -> list:
    return [PhaseRow("before", 0, 10, 100, 100, 1.0, 2.0),
            PhaseRow("88.118 down", 10, 20, 100, 60, 1.5, p99_during),
            PhaseRow("after", 20, math.inf, 100, 100, 1.0, 2.0)]


def test_report_compares_a_baseline_with_a_secondary_node_failure(data, tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    plan.write_text((REPO / "plans" / "secondary-down.toml").read_text())
    base = fake_run(data / "runs" / "base", data, n=1000, p99=10, rps=100.0,
                    phases=phase_rows(4.0))
    down = fake_run(data / "runs" / "down", data, n=800, p99=30, rps=80.0, faults=plan,
                    phases=phase_rows(12.0))
    res = json.loads((down / "results.json").read_text())
    assert res["phases"][2]["end"] is None and res["phases"][1]["success"] == 0.6
    assert run_main(["report", "--data", str(data), "base", "down"]) == 0
    text = capsys.readouterr().out
    assert "faults.file: null -> \"faults.toml\"" in text
    assert "users" not in text  # equal inputs are not listed
    rows = [ln.split() for ln in text.splitlines()]
    assert ["resolve", "p99", "10", "30", "3.00x"] in rows
    assert ["Aggregated", "rps", "100", "80", "0.80x"] in rows
    assert ["down", "p99", "4", "12", "3.00x"] in [r[-5:] for r in rows if r[:2] == ["88.118",
                                                                                      "down"]]


def test_again_takes_the_recorded_options_and_plan(data, tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text((REPO / "plans" / "secondary-down.toml").read_text())
    run = fake_run(data / "runs" / "r1", data, n=10, p99=1, rps=1.0, faults=plan, users=17)
    args = argparse.Namespace(scenario="mixed", time=5.0, users=50, spawn_rate=50, processes=1,
                              seed=None, faults=None)
    records.replay(args, records.find_run("r1", data))
    assert (args.scenario, args.time, args.users, args.seed) == ("resolve", 30.0, 17, 3)
    assert Path(args.faults) == run / "faults.toml"
    assert Path(args.faults).read_text() == plan.read_text()
    again = data / "runs" / "r2"
    records.write_inputs(again, data, kind="load", options=records.options_of(args),
                         faults=args.faults, argv=["idsim", "load", "--again", "r1"])
    a, b = records.read_inputs(run), records.read_inputs(again)
    assert b["faults"]["source"] == str(plan)  # the original plan file, not the run's copy
    for rec in (a, b):
        del rec["time"], rec["command"]
    assert a == b


def test_a_replay_refuses_another_network_but_not_other_ports(data, tmp_path):
    run = fake_run(data / "runs" / "r1", data, n=10, p99=1, rps=1.0)
    rec = records.read_inputs(run)
    moved, other = tmp_path / "moved", tmp_path / "other"
    moved.mkdir()
    other.mkdir()
    save(get_preset("mini").with_ports(25000), moved / "topology.toml")
    save(get_preset("guangzhou-2021").with_ports(20000), other / "topology.toml")
    assert records.check_same_network(rec, moved) == []
    with pytest.raises(records.RecordError, match="not the network this run ran against"):
        records.check_same_network(rec, other)


def test_a_replay_warns_when_the_configuration_changed(data, tmp_path):
    from resolver.config import Config, layered, write_toml
    write_toml(Config(), data / "config.toml")
    run = fake_run(data / "runs" / "r1", data, n=10, p99=1, rps=1.0)
    assert records.check_same_network(records.read_inputs(run), data) == []
    write_toml(layered([("test", {"cache": {"answer_entries": 7}})]), data / "config.toml")
    [warning] = records.check_same_network(records.read_inputs(run), data)
    assert "configuration" in warning


@pytest.mark.parametrize("argv", [
    ["report", "{data}/runs/nosuch", "{data}/runs/r1"],
    ["report", "r1", "empty"],
    ["report", "r1", "unfinished"],
    ["load", "--again", "nosuch"],
    ["load", "--again", "empty"],
])
def test_a_missing_or_unusable_run_is_one_line_and_exit_2(argv, data, capsys):
    fake_run(data / "runs" / "r1", data, n=10, p99=1, rps=1.0)
    (data / "runs" / "empty").mkdir()
    unfinished = data / "runs" / "unfinished"
    records.write_inputs(unfinished, data, kind="load", options={}, argv=["idsim", "load"])
    code = run_main([a.format(data=data) for a in argv] + ["--data", str(data)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"idsim {argv[0]}"), err
    assert "Traceback" not in err
