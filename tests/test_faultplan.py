"""Fault plans: parsing and validation, schedule and phases, a plan applied on schedule on a
FakeClock, early stop, the per-phase load summary, ``idsim fault run`` and ``idsim load --faults``.

The applier is a fake that records what it was asked and when (the clock's time): the real one,
``topology.fault_control``, is another module's (tests/test_fault_cli.py) and the whole chain is
in tests/test_weather_e2e.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import phases as load_phases
from network_fixtures import FakeClock, free_topology  # noqa: I001 - tests/ is on sys.path
from topology import cli_faultplan, cli_load
from topology.cli_client import UserError
from topology.faultplan import (Phase, PlanError, check_nodes, load_plan, parse_plan, phases,
                                run_plan, schedule)

REPO = Path(__file__).resolve().parent.parent
PLANS = REPO / "plans"

OVERLAP = """
name = "two faults that overlap"
[[fault]]
at = "10s"
for = "20s"
kind = "down"
node = "88.118"

[[fault]]
at = "20s"
for = "20s"
kind = "slow"
node = "88.201"
delay = "200ms"
jitter = "50ms"
"""


def fault(**kw) -> str:
    """One [[fault]] table from keyword arguments (``for_`` is ``for``)."""
    lines = ["[[fault]]"]
    for key, value in kw.items():
        lines.append(f"{key.rstrip('_')} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


class FakeApplier:
    """Records ``(time, call, argument)`` on the clock it is given; fails on a node if told."""

    def __init__(self, clock, fail_on: str | None = None) -> None:
        self.clock, self.fail_on, self.calls = clock, fail_on, []

    def apply(self, spec: dict) -> None:
        self.calls.append((self.clock(), "apply", spec))
        if spec.get("node") == self.fail_on:
            raise RuntimeError(f"node {self.fail_on} did not answer")

    def clear(self, node: str) -> None:
        self.calls.append((self.clock(), "clear", node))


class SteppingClock(FakeClock):
    """A FakeClock whose sleeps move it: a whole timeline runs at once, at exact times."""

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


# ------------------------------------------------------------------ parsing and validation

def test_a_plan_parses_with_every_kind():
    text = (fault(at="0s", for_="5s", kind="down", node="88.118")
            + fault(at=1, for_="2m", kind="refuse", node="88.101")
            + fault(at="1.5s", for_="5s", kind="slow", node="88.201", delay="200ms")
            + fault(at="2s", for_="5s", kind="errors", node="88.201", rate=0.1)
            + fault(at="3s", for_="5s", kind="partition", a="88.118", b="top")
            + fault(at="4s", for_="10s", kind="kill", node="88.101")
            + fault(at="1h", kind="restart", node="88.118"))
    plan = parse_plan(text)
    specs = [f.spec() for f in plan.faults]
    assert specs == [
        {"kind": "down", "node": "88.118"},
        {"kind": "refuse", "node": "88.101"},
        {"kind": "slow", "node": "88.201", "delay": 0.2, "jitter": 0.0},
        {"kind": "errors", "node": "88.201", "rate": 0.1},
        {"kind": "partition", "node": "88.118", "peer": "top"},
        {"kind": "kill", "node": "88.101"},
        {"kind": "restart", "node": "88.118"},
    ]
    assert [f.at for f in plan.faults] == [0, 1, 1.5, 2, 3, 4, 3600]
    assert plan.faults[1].duration == 120 and plan.faults[6].duration is None
    assert plan.end == 3600


@pytest.mark.parametrize("text, says", [
    (fault(at="30s", for_="20s", kind="down"), "fault 1 (down): node must name a node"),
    (fault(at="30s", kind="down", node="88.118"), "fault 1 (down 88.118): down needs a positive for"),
    (fault(at="soon", for_="1s", kind="down", node="88.118"), "fault 1 (down 88.118): not a duration"),
    (fault(at="-1s", for_="1s", kind="down", node="88.118"), "must be finite and not negative"),
    (fault(for_="1s", kind="down", node="88.118"), "fault 1 (down 88.118): missing at"),
    (fault(at="1s", for_="1s", kind="melt", node="88.118"), "fault 1 (melt 88.118): kind must be one of"),
    (fault(at="1s", for_="1s", kind="slow", node="88.201"), "slow needs a positive delay"),
    (fault(at="1s", for_="1s", kind="errors", node="88.201", rate=1.5), "rate must be a share"),
    (fault(at="1s", for_="1s", kind="errors", node="88.201"), "rate must be a share"),
    (fault(at="1s", for_="1s", kind="down", node="88.118", delay="1s"), "down takes no delay"),
    (fault(at="1s", for_="1s", kind="down", node="88.118", colour="red"), "unknown key(s) colour"),
    (fault(at="1s", for_="1s", kind="partition", a="88.118", b="88.118"), "two different nodes"),
    (fault(at="1s", for_="1s", kind="restart", node="88.118"), "restart happens at once"),
    (fault(at="1s", for_="1s", kind="partition", a="88.118"),
     "fault 1 (partition 88.118): b must name a node"),
    ("fault = [1]\n", "fault 1: each [[fault]] is a table"),
    ("name = 'nothing'\n", "no faults"),
    ("[[fault]\n", "not TOML"),
    ("speed = 3\n" + fault(at="1s", for_="1s", kind="down", node="x"), "unknown top-level key"),
])
def test_a_bad_plan_is_refused_naming_the_entry(text, says):
    with pytest.raises(PlanError) as err:
        parse_plan(text, source="plan.toml")
    assert says in str(err.value)


def test_the_error_names_the_entry_that_is_wrong_not_the_first():
    text = (fault(at="1s", for_="1s", kind="down", node="88.118")
            + fault(at="2s", for_="1s", kind="slow", node="88.201", delay="fast"))
    with pytest.raises(PlanError, match=r"^fault 2 \(slow 88.201\): not a duration: 'fast'"):
        parse_plan(text)


def test_nodes_the_cluster_lacks_are_named():
    plan = parse_plan(fault(at="1s", for_="1s", kind="partition", a="88.118", b="88.999"))
    check_nodes(plan, {"88.118", "88.999"})
    with pytest.raises(PlanError, match=r"fault 1 \(partition 88.118\|88.999\): no node '88.999'"):
        check_nodes(plan, {"88.118", "top"})


def test_a_missing_file_is_one_plan_error(tmp_path):
    with pytest.raises(PlanError, match="cannot read the plan"):
        load_plan(tmp_path / "nope.toml")


def test_every_shipped_plan_is_valid_and_explained_in_the_readme():
    readme = (REPO / "README.md").read_text()
    shipped = sorted(PLANS.glob("*.toml"))
    assert {p.name for p in shipped} >= {"secondary-down.toml", "top-down.toml",
                                        "slow-shenzhen.toml", "partition.toml"}
    for path in shipped:
        plan = load_plan(path)
        check_nodes(plan, {"recursive", "top", "88.101", "88.118", "88.201"})  # the mini preset
        assert f"plans/{path.name}" in readme
    down = load_plan(PLANS / "secondary-down.toml").faults
    assert [(f.kind, f.node, f.at, f.duration) for f in down] == [("down", "88.118", 30, 20)]


# ------------------------------------------------------------------ schedule and phases

def test_schedule_applies_at_at_and_clears_at_at_plus_for():
    plan = parse_plan(OVERLAP)
    assert [(e.t, e.action, e.fault.index) for e in schedule(plan)] == [
        (10, "apply", 1), (20, "apply", 2), (30, "clear", 1), (40, "clear", 2)]


def test_at_one_time_a_clear_comes_before_an_apply():
    plan = parse_plan(fault(at="10s", for_="5s", kind="down", node="88.118")
                      + fault(at="15s", for_="5s", kind="refuse", node="88.118"))
    assert [(e.t, e.action, e.fault.index) for e in schedule(plan)] == [
        (10, "apply", 1), (15, "clear", 1), (15, "apply", 2), (20, "clear", 2)]


def test_phases_cut_at_every_event_time_and_name_what_is_active():
    assert phases(parse_plan(OVERLAP)) == [
        Phase("before", 0, 10),
        Phase("during down 88.118", 10, 20),
        Phase("during down 88.118 + slow 88.201 200ms", 20, 30),
        Phase("during slow 88.201 200ms", 30, 40),
        Phase("after", 40, math.inf),
    ]
    gap = parse_plan(fault(at="0s", for_="5s", kind="down", node="88.118")
                     + fault(at="8s", for_="2s", kind="errors", node="88.201", rate=0.5)
                     + fault(at="12s", kind="restart", node="88.101"))
    assert [(p.name, p.start, p.end) for p in phases(gap)] == [
        ("during down 88.118", 0, 5), ("between", 5, 8), ("during errors 88.201 0.5", 8, 10),
        ("between", 10, 12), ("after", 12, math.inf)]


# ------------------------------------------------------------------ the runner

async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_plan_is_applied_on_schedule_on_the_fake_clock():
    clock = FakeClock(1000.0)
    applier = FakeApplier(clock)
    lines = []
    task = asyncio.create_task(run_plan(parse_plan(OVERLAP), applier, clock,
                                        on_event=lambda d: lines.append(d.line())))
    await settle()
    clock.advance(9.999)
    await settle()
    assert applier.calls == []  # nothing before its time
    for t in (10, 20, 30, 40):
        clock.set(1000 + t)
        await settle()
    done = await asyncio.wait_for(task, 1)
    slow = {"kind": "slow", "node": "88.201", "delay": 0.2, "jitter": 0.05}
    assert applier.calls == [
        (1010, "apply", {"kind": "down", "node": "88.118"}),
        (1020, "apply", slow),
        (1030, "clear", "88.118"),
        (1040, "clear", "88.201"),
    ]
    assert [d.t for d in done] == [10, 20, 30, 40] and all(d.error is None for d in done)
    assert lines[0] == "  10.0 s  apply down 88.118 (fault 1)"
    assert clock.pending == 0


async def test_clearing_one_of_two_faults_on_a_node_puts_the_other_back():
    clock = SteppingClock(0.0)
    applier = FakeApplier(clock)
    plan = parse_plan(fault(at="0s", for_="30s", kind="slow", node="88.201", delay="100ms")
                      + fault(at="10s", for_="5s", kind="partition", a="88.118", b="88.201")
                      + fault(at="20s", for_="5s", kind="kill", node="88.118"))
    await run_plan(plan, applier, clock)
    slow = {"kind": "slow", "node": "88.201", "delay": 0.1, "jitter": 0.0}
    assert applier.calls == [
        (0, "apply", slow),
        (10, "apply", {"kind": "partition", "node": "88.118", "peer": "88.201"}),
        (15, "clear", "88.118"), (15, "clear", "88.201"), (15, "apply", slow),
        (20, "apply", {"kind": "kill", "node": "88.118"}),
        (25, "apply", {"kind": "restart", "node": "88.118"}),  # a kill's end restarts the node
        (30, "clear", "88.201"),
    ]


async def test_stopping_early_clears_everything_in_effect():
    clock = FakeClock(0.0)
    applier = FakeApplier(clock)
    plan = parse_plan(OVERLAP + fault(at="22s", for_="100s", kind="kill", node="88.101"))
    task = asyncio.create_task(run_plan(plan, applier, clock))
    await settle()  # the plan starts at 0
    for t in (10, 20, 22, 25):
        clock.set(t)
        await settle()
    task.cancel()  # what Ctrl-C does to asyncio.run's task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert applier.calls[3:] == [  # the latest first; nothing left scheduled
        (25, "apply", {"kind": "restart", "node": "88.101"}),
        (25, "clear", "88.201"),
        (25, "clear", "88.118"),
    ]
    clock.advance(1000)
    assert len(applier.calls) == 6


async def test_a_fault_the_cluster_refuses_is_reported_and_the_plan_goes_on():
    clock = SteppingClock(0.0)
    applier = FakeApplier(clock, fail_on="88.118")
    done = await run_plan(parse_plan(OVERLAP), applier, clock)
    assert done[0].error == "node 88.118 did not answer"
    assert done[0].line().endswith("FAILED: node 88.118 did not answer")
    assert [d.error is None for d in done] == [False, True, True, True]


# ------------------------------------------------------------------ per-phase figures

def test_per_phase_summary_from_synthetic_records():
    cut = phases(parse_plan(OVERLAP))
    t0 = 5000.0
    records = []
    for i in range(1000):            # before: 1000 requests, 1 ms .. 10 ms, all ok
        records.append((t0 + i * 0.01, 1 + 9 * i / 999, True))
    for i in range(100):             # down 88.118: half fail after a 2 s timeout
        records.append((t0 + 10 + i * 0.1, 2000.0 if i % 2 else 3.0, i % 2 == 0))
    records.append((t0 + 45, 4.0, True))   # after
    records.append((t0 - 1, 7.0, True))    # before the plan's start: counts as before
    rows = load_phases.summarise(iter(records), cut, t0)
    assert [(r.name, r.requests, r.ok) for r in rows] == [
        ("before", 1001, 1001), ("during down 88.118", 100, 50),
        ("during down 88.118 + slow 88.201 200ms", 0, 0), ("during slow 88.201 200ms", 0, 0),
        ("after", 1, 1)]
    before, down, both, _, after = rows
    assert before.p50 == pytest.approx(5.5, rel=0.01) and before.p99 == pytest.approx(9.9, rel=0.01)
    assert down.success == 0.5 and down.p50 == pytest.approx(3.0, rel=0.01)
    assert down.p99 == pytest.approx(2000, rel=0.01)
    assert both.success is None and both.p50 is None
    text = load_phases.table(rows, run_seconds=50)
    assert "during down 88.118" in text and "50.0%" in text and "40–50 s" in text
    assert text.splitlines()[3].split()[-3:] == ["-", "-", "-"]


def test_request_records_round_trip_through_files(tmp_path):
    data = b"".join(load_phases.RECORD.pack(t, t * 2, t % 2 == 0) for t in range(5))
    (tmp_path / "requests-1.bin").write_bytes(data)
    (tmp_path / "requests-2.bin").write_bytes(data[: load_phases.RECORD.size + 3])  # torn
    got = list(load_phases.read(tmp_path))
    assert got == [(t, t * 2, t % 2 == 0) for t in range(5)] + [(0, 0, True)]


# ------------------------------------------------------------------ the commands

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def fault_run_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_faultplan.add_run_command(parser.add_subparsers(dest="fault_cmd"))
    return parser.parse_args(argv)


def test_idsim_fault_run_prints_each_event_at_its_time(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cluster.json").write_text(json.dumps(
        {"nodes": [{"name": n} for n in ("recursive", "top", "88.118", "88.201")]}))
    args = fault_run_args(["run", str(write(tmp_path, OVERLAP)), "--data", str(data)])
    assert args.func is cli_faultplan.cmd_fault_run
    clock = SteppingClock(0.0)
    said = []
    code = args.func(args, applier=FakeApplier(clock), clock=clock, say=said.append)
    assert code == 0
    assert said[1:] == ["  10.0 s  apply down 88.118 (fault 1)",
                        "  20.0 s  apply slow 88.201 200ms (fault 2)",
                        "  30.0 s  clear down 88.118 (fault 1)",
                        "  40.0 s  clear slow 88.201 200ms (fault 2)",
                        "plan done: 4 event(s)"]
    # a node the cluster lacks, or no cluster at all: one line, before anything is applied
    bad = fault_run_args(["run", str(write(tmp_path, OVERLAP.replace("88.201", "88.999"))),
                          "--data", str(data)])
    with pytest.raises(UserError, match=r"fault 2 \(slow 88.999\): no node '88.999'"):
        bad.func(bad, applier=FakeApplier(clock), clock=clock, say=said.append)
    none = fault_run_args(["run", str(write(tmp_path, OVERLAP)), "--data", str(tmp_path)])
    with pytest.raises(UserError, match="no cluster running from"):
        none.func(none, applier=FakeApplier(clock), clock=clock, say=said.append)


def test_idsim_load_refuses_a_bad_plan_before_starting_anything(tmp_path):
    cli = [sys.executable, "-m", "topology.cli", "load", "--data", str(tmp_path / "data"),
           "--preset", "mini", "--time", "20s", "--faults"]
    bad = write(tmp_path, fault(at="30s", for_="20s", kind="down"))
    run = subprocess.run(cli + [str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().startswith("idsim load: fault 1 (down): node must name")
    late = write(tmp_path, fault(at="30s", for_="20s", kind="down", node="88.118"))
    run = subprocess.run(cli + [str(late)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "runs until 50 s, after the load stops (20 s)" in run.stderr
    assert not (tmp_path / "data" / "cluster.json").exists()


@pytest.mark.timeout(120)
def test_idsim_load_with_faults_applies_the_plan_and_summarises_each_phase(
        tmp_path, monkeypatch, capsys):
    """``idsim load --faults`` in-process (a fake applier; the cluster and Locust are real)."""
    import time

    from topology import cli

    class WallApplier(FakeApplier):
        def __init__(self) -> None:
            super().__init__(time.time)

    applier = WallApplier()
    monkeypatch.setattr(cli_load, "make_applier", lambda data: applier)
    plan = write(tmp_path, fault(at="2s", for_="3s", kind="slow", node="88.118", delay="50ms"))
    base = free_topology().recursive.http_port
    code = cli.main(["load", "--preset", "mini", "--port", str(base), "--data",
                     str(tmp_path / "data"), "--time", "8s", "--users", "4",
                     "--scenario", "resolve", "--faults", str(plan)])
    out = capsys.readouterr().out
    assert code == 0, out
    (t_apply, call, spec), (t_clear, call2, node) = applier.calls
    assert (call, spec["node"], call2, node) == ("apply", "88.118", "clear", "88.118")
    assert 2.9 <= t_clear - t_apply <= 3.6, applier.calls   # cleared 3 s after it was applied
    assert re.search(r"^ +2\.\d s  apply slow 88\.118 50ms \(fault 1\)$", out, re.M), out
    assert re.search(r"^ +5\.\d s  clear slow 88\.118 50ms \(fault 1\)$", out, re.M), out
    table = out[out.index("per phase of the fault plan"):].splitlines()[2:5]
    assert [line.split()[0] for line in table] == ["before", "during", "after"]
    for line in table:
        requests = int(line.split()[-4])
        assert requests > 0, out
    [run] = list((tmp_path / "data" / "runs").iterdir())
    assert list((run / "requests").glob("requests-*.bin"))
