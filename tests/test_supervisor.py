"""The launcher's supervision, piece by piece: the restart back-off (a FakeClock, no sleeping),
which nodes share a process, the supervisor on small stand-in processes that speak the host's
JSON-lines protocol, and ``cluster.json`` (atomic writes; live or stale; ``idsim down``).

The end-to-end cases (``kill -9`` of ``idsim up``, a host killed and restarted) are in
``test_cli_up.py``. Every wait here is for a specific state (``Supervisor.wait_until``,
``wait_ready``), never a sleep.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from resolver.clock import FakeClock
from resolver.config import Config
from resolver.roles import Role
from topology import cli, cluster
from topology.presets import get_preset
from topology.supervisor import Backoff, OnExit, Supervisor, terminate

pytestmark = pytest.mark.timeout(60)

# stand-ins for ``python -m topology.host``: the same stdout protocol, stdin from the launcher
READY = r"""
import json, sys
print(json.dumps({"event": "seeded", "node": "88.1", "count": 3}), flush=True)
print("a line that is not an event", flush=True)
print(json.dumps({"event": "ready", "nodes": ["88.1"]}), flush=True)
sys.stdin.read()  # serve until the launcher goes
"""
FAILS = r"""
import json, sys
print("Traceback: the port is taken", file=sys.stderr, flush=True)
print(json.dumps({"event": "error", "message": "OSError: address already in use"}), flush=True)
sys.exit(3)
"""
DEAF = r"""
import json, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(json.dumps({"event": "ready"}), flush=True)
sys.stdin.read()
"""
SILENT = "import sys; sys.stdin.read()"


def host_config(**kw):
    return dataclasses.replace(Config().host, **kw)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def supervisors():
    made: list[Supervisor] = []

    def make(tmp: Path, **kw) -> Supervisor:
        made.append(Supervisor(tmp / "logs", say=said.append, **kw))
        return made[-1]
    said: list[str] = []
    make.said = said
    yield make
    for sup in made:
        sup.stop(timeout=2)


# ------------------------------------------------------------------ back-off (pure)

def test_backoff_doubles_up_to_the_cap_and_resets_after_a_long_run():
    clock = FakeClock(100.0)
    backoff = Backoff(host_config(restart_delay=0.5, restart_max_delay=10.0,
                                  restart_reset_after=30.0), clock)
    delays = []
    for _ in range(7):  # a process that dies a second after every start
        backoff.started()
        clock.advance(1.0)
        delays.append(backoff.next_delay())
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.started()
    clock.advance(29.9)  # not long enough to count as healthy
    assert backoff.next_delay() == 10.0
    backoff.started()
    clock.advance(30.0)
    assert backoff.next_delay() == 0.5
    backoff.started()
    clock.advance(1.0)
    assert backoff.next_delay() == 1.0


# ------------------------------------------------------------------ who shares a process

@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
def test_top_and_recursive_never_share_a_process(workers):
    topo = get_preset("mini")
    plan = cluster.plan_workers(topo, workers)
    for nodes in plan:
        assert not (Role.TOP in nodes and Role.RECURSIVE in nodes), plan
    assert sorted(n for p in plan for n in p) == sorted(
        [Role.TOP, Role.RECURSIVE, *(s.code for s in topo.secondaries)])
    assert [Role.RECURSIVE] in plan  # the clients' entry point runs alone


def test_plan_spreads_secondaries_and_adds_recursive_processes():
    topo = get_preset("mini")  # 88.101, 88.118, 88.201
    assert cluster.plan_workers(topo, 4) == [["top"], ["recursive"], ["88.101", "88.201"],
                                             ["88.118"]]
    assert cluster.plan_workers(topo, 2, recursive_processes=3) == [
        ["top", "88.101", "88.118", "88.201"], ["recursive"], ["recursive"], ["recursive"]]


# ------------------------------------------------------------------ the supervisor

def test_events_readiness_and_log(tmp_path, supervisors):
    events = []
    sup = supervisors(tmp_path, on_event=lambda child, ev: events.append((child.label, ev)))
    child = sup.spawn("host-0", py(READY + "print('bye', file=sys.stderr)"), ["88.1"])
    sup.wait_ready(child, timeout=30)
    assert child.alive() and child.ready and child.nodes == ("88.1",)
    assert [ev["event"] for _, ev in events] == ["seeded", "ready"]
    assert events[0] == ("host-0", {"event": "seeded", "node": "88.1", "count": 3})
    assert sup.pids() == [child.pid]
    sup.stop(timeout=5)  # closing stdin ends it; SIGTERM first anyway
    assert not child.alive()
    assert child.log == tmp_path / "logs" / "host-0.log"


def test_a_failed_start_raises_with_the_log_and_is_not_restarted(tmp_path, supervisors):
    sup = supervisors(tmp_path, on_exit=OnExit.RESTART, config=host_config(restart_delay=0.01))
    good = sup.spawn("good", py(READY))
    bad = sup.spawn("bad", py(FAILS))
    with pytest.raises(RuntimeError) as err:
        sup.wait_ready(good, bad, timeout=30)
    assert "address already in use" in str(err.value)
    assert "Traceback: the port is taken" in str(err.value)  # the tail of its log
    assert sup.wait_until(lambda: bad.exits == [3], 30)
    assert bad.restarts == 0 and not bad.alive()


def test_wait_ready_times_out_naming_the_slow_process(tmp_path, supervisors):
    sup = supervisors(tmp_path)
    slow = sup.spawn("slow", py(SILENT), ["top"])
    with pytest.raises(RuntimeError, match=r"not ready after .*slow \(top\)"):
        sup.wait_ready(slow, timeout=0.2)


def test_an_exit_after_ready_is_restarted_and_noted(tmp_path, supervisors):
    restarted = []
    sup = supervisors(tmp_path, on_exit=OnExit.RESTART, config=host_config(restart_delay=0.01),
                      on_restart=lambda child: restarted.append(child.pid))
    other = sup.spawn("host-0", py(READY), ["top"])
    child = sup.spawn("host-1", py(READY), ["88.118"])
    sup.wait_ready(other, child, timeout=30)
    first = child.pid
    os.kill(first, signal.SIGKILL)
    assert sup.wait_until(lambda: child.restarts == 1 and child.ready, 30)
    assert child.pid != first and restarted == [child.pid]  # called with the new pid in place
    assert child.exits == [-signal.SIGKILL]
    assert other.alive() and other.restarts == 0  # the others keep running
    log = child.log.read_text()
    assert f"host-1 (88.118) pid {first} exited (signal SIGKILL); restarting in 0.0 s" in log
    assert "restart 1 of host-1" in log
    said = "\n".join(supervisors.said)
    assert "restarting in" in said and f"restarted as pid {child.pid}" in said
    assert "serving again" in said


def test_keep_leaves_it_down_and_stop_flags_the_network(tmp_path, supervisors):
    keep = supervisors(tmp_path / "keep", on_exit=OnExit.KEEP)
    child = keep.spawn("host-0", py(READY))
    keep.wait_ready(child, timeout=30)
    child.proc.kill()
    assert keep.wait_until(lambda: bool(child.exits), 30)
    assert child.restarts == 0 and not child.alive() and not keep.failed.is_set()
    assert any("left down" in msg for msg in supervisors.said)

    stop = supervisors(tmp_path / "stop", on_exit=OnExit.STOP)
    child = stop.spawn("host-0", py(READY))
    stop.wait_ready(child, timeout=30)
    child.proc.kill()
    assert stop.failed.wait(30)
    assert child.restarts == 0


def test_stop_kills_what_ignores_sigterm_and_cancels_a_pending_restart(tmp_path, supervisors):
    sup = supervisors(tmp_path, on_exit=OnExit.RESTART, config=host_config(restart_delay=60))
    deaf = sup.spawn("deaf", py(DEAF))
    crashed = sup.spawn("crashed", py(READY))
    sup.wait_ready(deaf, crashed, timeout=30)
    first = crashed.pid
    crashed.proc.kill()
    assert sup.wait_until(lambda: bool(crashed.exits), 30)  # now waiting 60 s to restart
    sup.stop(timeout=0.5)
    assert deaf.proc.returncode == -signal.SIGKILL
    assert crashed.restarts == 0 and crashed.pid == first  # the restart never happened
    with pytest.raises(RuntimeError):
        sup.spawn("late", py(READY))


def test_terminate_handles_processes_found_by_pid(tmp_path):
    proc = subprocess.Popen(py(SILENT), stdin=subprocess.PIPE)
    try:
        found = psutil.Process(proc.pid)
        terminate([found], 10)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ cluster.json

def test_cluster_json_is_replaced_atomically(tmp_path, monkeypatch):
    topo = get_preset("mini")
    state = tmp_path / "cluster.json"
    state.write_text('{"old": true}')
    real_replace, replaced = os.replace, []

    def spy(src, dst):
        replaced.append((Path(src), Path(dst), json.loads(Path(src).read_text())))
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    cluster.write_state(tmp_path, topo, [])
    [(src, dst, doc)] = replaced
    assert dst == state and src.parent == tmp_path and src != state
    assert doc == json.loads(state.read_text()) and doc["topology"] == "mini"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.json"]

    def broken(src, dst):  # the write is interrupted before the rename: old file intact
        raise OSError("disk gone")
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        cluster.write_state(tmp_path, get_preset("mini", base_port=9000), [])
    assert json.loads(state.read_text()) == doc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.json"]


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        started.append(subprocess.Popen([*py(SILENT), *args], stdin=subprocess.PIPE))
        return started[-1]
    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(py("pass"))
    proc.wait()
    return proc.pid


def recorded(data: Path, pids: list[int], launcher: int) -> dict:
    state = {"topology": "mini", "pids": pids, "launcher": launcher, "launcherStarted": 0.0}
    (data / "cluster.json").write_text(json.dumps(state))
    return state


def test_a_cluster_json_whose_processes_are_gone_is_stale(tmp_path, processes):
    data = tmp_path / "data"
    data.mkdir()
    stranger = processes()  # alive, but not a host of this data directory
    recorded(data, [dead_pid(), stranger.pid], launcher=dead_pid())
    said = []
    assert cluster.running_pids(data, said.append) == []
    assert not (data / "cluster.json").exists() and "none of its processes" in said[0]

    ours = processes("topology.host", str(data.resolve()))
    recorded(data, [ours.pid, stranger.pid], launcher=dead_pid())
    assert cluster.running_pids(data, said.append) == [ours.pid]
    assert (data / "cluster.json").exists()


def test_down_stops_recorded_hosts_when_the_launcher_is_gone(tmp_path, processes, capsys):
    data = tmp_path / "data"
    data.mkdir()
    ours = [processes("topology.host", str(data.resolve()), n) for n in ("top", "88.118")]
    stranger = processes("topology.host", str(tmp_path / "elsewhere"))  # another cluster's
    reused = processes()  # a recorded pid now used by some other program
    recorded(data, [p.pid for p in ours] + [stranger.pid, reused.pid], launcher=dead_pid())
    assert cli.main(["down", "--data", str(data)]) == 0
    assert all(p.wait(10) == -signal.SIGTERM for p in ours)
    assert stranger.poll() is None and reused.poll() is None  # not ours: untouched
    assert not (data / "cluster.json").exists()
    assert f"pids {ours[0].pid}, {ours[1].pid}" in capsys.readouterr().out
