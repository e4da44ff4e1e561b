"""``idsim fault …`` against ``idsim up --preset mini`` as a user runs them (subprocesses).

One launcher with four host processes (top | recursive | 88.101 88.201 | 88.118). Bounded:
every wait polls a condition up to a deadline; every process is killed in ``finally``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resolver.config import Config
from test_cli_up import REPO, answers, base_port, get_json, idsim_up  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(180)


def fault(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topology.cli", "fault", *args,
                           "--data", str(data)], cwd=REPO, capture_output=True, text=True,
                          timeout=90)


def timed_get(url: str, timeout: float) -> tuple[object, float]:
    start = time.monotonic()
    try:
        status = get_json(url, timeout=timeout)[0]
    except OSError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - start


def test_fault_commands_on_a_running_cluster(tmp_path: Path, base_port: int) -> None:  # noqa: F811
    data = tmp_path / "data"
    rpc_timeout = Config().rpc.timeout
    with idsim_up(base_port, data, "f", workers=4) as up:
        state = up.wait_ready()
        rec = state["recursiveUrl"]
        ex = {e.rpartition(".")[0]: e for e in state["examples"]}  # node -> a handle
        cold = [ex["88.118"].replace("SN000000000", f"SN00000000{i}") for i in range(1, 4)]
        run = fault(data, "down", "88.118")
        assert run.returncode == 0 and "88.118: down" in run.stdout, run.stderr
        assert "88.118: down" in fault(data, "list").stdout
        status, took = timed_get(f"{rec}/api/handles/{cold[0]}", timeout=30)
        assert status == 503 and took < rpc_timeout + 3, (status, took)
        assert get_json(f"{rec}/api/handles/{ex['88.101']}")[0] == 200  # the others serve
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "topology.cli", "status", "--data", str(data), "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=60).stdout)
        assert status["faults"] == [{"kind": "down", "node": "88.118"}]

        run = fault(data, "clear")
        assert run.returncode == 0 and "cleared 1 fault" in run.stdout, run.stderr
        assert fault(data, "list").stdout.strip() == "no active faults"
        deadline = time.monotonic() + 10  # past the recursive node's retry window
        while get_json(f"{rec}/api/handles/{cold[1]}", timeout=10)[0] != 200:
            assert time.monotonic() < deadline, "88.118 not resolvable after clear"
            time.sleep(0.2)

        # user mistakes: one line, exit 2
        for args in (["down", "88.999"], ["errors", "88.118", "--rate", "2"],
                     ["slow", "88.118", "--delay", "soon"]):
            run = fault(data, *args)
            assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run

        # kill: every process serving 88.118 (one per core) goes down; the supervisor
        # (--on-exit restart, the default) starts each again
        victims = {p["pid"] for p in state["processes"] if p["nodes"] == ["88.118"]}
        run = fault(data, "kill", "88.118")
        assert run.returncode == 0, run.stderr
        assert {int(w) for w in run.stdout.split("(")[0].split()[3:]} == victims, run.stdout
        deadline = time.monotonic() + 30
        while True:
            now = json.loads((data / "cluster.json").read_text())
            back = {p["pid"] for p in now["processes"] if p["nodes"] == ["88.118"]}
            url = next(n["httpUrl"] for n in now["nodes"] if n["name"] == "88.118")
            if len(back) == len(victims) and not back & victims \
                    and answers(f"{url}/api/handles/{ex['88.118']}") \
                    and all((data / "control" / f"{pid}.json").exists() for pid in back):
                break
            assert time.monotonic() < deadline, f"88.118 not restarted:\n{up.output()}"
            time.sleep(0.2)
        up.host_pids.update(back)
        assert not any((data / "control" / f"{pid}.json").exists() for pid in victims)

        # restart: stop them and wait until the launcher has each serving again
        run = fault(data, "restart", "88.118")
        assert run.returncode == 0 and "serving again as pid" in run.stdout, run.stderr
        newest = {int(w) for w in run.stdout.rsplit("pid", 1)[1].split()}
        up.host_pids.update(newest)
        assert len(newest) == len(back) and not newest & back
        assert get_json(f"{rec}/api/handles/{cold[2]}")[0] == 200
