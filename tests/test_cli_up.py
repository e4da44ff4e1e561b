"""``idsim up`` as a user runs it: a launcher subprocess with host processes under it.

Each test starts ``python -m topology.cli up --preset mini`` on free ports (below 32768) with
its own data directory, waits for the ``cluster.json`` its launcher writes, talks HTTP to the
nodes, and stops the launcher with SIGINT (Ctrl-C), ``idsim down`` or SIGKILL. Every process
started here is killed in ``finally`` whatever happens. Waits poll a condition up to a
deadline; none orders events by sleeping.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from benchmarks.network import free_preset
from network_fixtures import basic_token
from topology import demo
from topology.cluster import default_processes

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

pytestmark = pytest.mark.timeout(120)


class Up:
    """One ``idsim up`` launcher and what it told us."""

    def __init__(self, proc: subprocess.Popen, data: Path, log: Path) -> None:
        self.proc = proc
        self.data = data
        self.log = log
        self.state: dict = {}
        self.host_pids: set[int] = set()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def wait_ready(self) -> dict:
        path = self.data / "cluster.json"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"idsim up exited with {self.proc.returncode}:\n{self.output()}")
            state = json.loads(path.read_text()) if path.exists() else {}
            if state.get("launcher") == self.proc.pid:  # not a stale one from an earlier run
                self.state = state
                self.host_pids.update(self.state["pids"])
                self._note_children()
                return self.state
            self._note_children()
            time.sleep(0.2)
        pytest.fail(f"no cluster.json after {READY_TIMEOUT:.0f} s:\n{self.output()}")

    def _note_children(self) -> None:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return
        self.host_pids.update(k.pid for k in kids)

    def interrupt(self) -> int:
        """Ctrl-C the launcher; its exit code (fails when it takes longer than STOP_TIMEOUT)."""
        self._note_children()
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"idsim up still running {STOP_TIMEOUT:.0f} s after SIGINT:\n{self.output()}")

    def kill_all(self) -> None:
        """Kill the launcher and every host process it started that is still alive."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.host_pids:
            if is_our_host(pid, self.data):
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    pass


def is_our_host(pid: int, data: Path) -> bool:
    """True when ``pid`` is a live (not zombie) host process serving ``data``."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return "topology.host" in cmd and str(data) in cmd


@contextmanager
def idsim_up(base: int, data: Path, tag: str, workers: int = 2, *extra: str):
    log = data.parent / f"up-{tag}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "up", "--preset", "mini", "--port", str(base),
             "--data", str(data), "--workers", str(workers), *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # our SIGINT reaches the launcher only
    up = Up(proc, data, log)
    try:
        yield up
    finally:
        up.kill_all()


def get_json(url: str, timeout: float = 10.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def put_json(url: str, body: dict, authorization: str) -> tuple[int, dict]:
    return send_json("PUT", url, body, authorization)


def send_json(method: str, url: str, body: dict, authorization: str) -> tuple[int, dict]:
    """One JSON request with Basic credentials: (status, JSON answer), errors included."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": authorization})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def check_demo_record(body: dict, handle: str) -> None:
    assert body["responseCode"] == 1 and body["handle"] == handle
    by_type = {v["type"]: v["data"]["value"] for v in body["values"]}
    assert by_type["URL"] == f"https://ex.com/{handle}"
    assert by_type["CHECKSUM"].startswith("sha1:")


def assert_stopped(up: Up) -> None:
    assert up.host_pids, "no host process was seen"
    deadline = time.monotonic() + 5
    while any(is_our_host(pid, up.data) for pid in up.host_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in up.host_pids if is_our_host(pid, up.data)]
    assert not left, f"topology.host processes left running: {left}"
    assert not (up.data / "cluster.json").exists(), "cluster.json left behind"


@pytest.fixture
def base_port() -> int:
    return free_preset("mini").recursive.http_port


def test_up_status_and_ctrl_c(tmp_path: Path, base_port: int) -> None:
    data = tmp_path / "data"
    with idsim_up(base_port, data, "1") as up:
        state = up.wait_ready()
        assert state["topology"] == "mini"
        # --workers 2: top and secondaries | recursive, each in default_processes() processes
        assert len(state["pids"]) == 2 * default_processes()
        assert state["recursiveUrl"] == f"http://127.0.0.1:{base_port}"
        examples = state["examples"]
        assert examples and all(e.endswith("/" + demo.suffix(0)) for e in examples)

        status, body = get_json(f"{state['recursiveUrl']}/api/handles/{examples[0]}")
        assert status == 200, body
        check_demo_record(body, examples[0])
        # every example resolves, whichever host process serves it
        for ex in examples[1:]:
            status, body = get_json(f"{state['recursiveUrl']}/api/handles/{ex}")
            assert status == 200, (ex, body)

        run = subprocess.run([sys.executable, "-m", "topology.cli", "status", "--data", str(data),
                              "--json"], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        shown = json.loads(run.stdout)
        names = {n["name"] for n in shown["nodes"]}
        assert names == {"recursive", "top", "88.101", "88.118", "88.201"}
        assert all(n["up"] is True for n in shown["nodes"]), shown["nodes"]
        logins = Path(shown["logins"])
        assert logins == (data / "logins.json").resolve() and logins.exists()
        assert logins.stat().st_mode & 0o777 == 0o600
        doc = json.loads(logins.read_text())
        assert set(doc) == {"top", "nodes", "enterprises", "rpc"}  # rpc: node keys
        assert len(doc["enterprises"]) == 12

        # register and resolve as a user does: the serving node and the login are found
        cli = [sys.executable, "-m", "topology.cli"]
        run = subprocess.run(cli + ["register", "88.118.8/CLI-1", "--url", "https://ex.com/cli",
                                    "--value", "EMAIL=qa@ex.com", "--data", str(data)],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads(run.stdout)["responseCode"] == 1
        run = subprocess.run(cli + ["resolve", "88.118.8/CLI-1", "--via", state["recursiveUrl"]],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        values = {v["type"]: v["data"]["value"] for v in json.loads(run.stdout)["values"]}
        assert values["URL"] == "https://ex.com/cli" and values["EMAIL"] == "qa@ex.com"
        run = subprocess.run(cli + ["register", "88.118.8/CLI-1", "--url", "https://ex.com/again",
                                    "--data", str(data)],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert run.returncode == 1 and json.loads(run.stdout)["responseCode"] == 101

        # a second cluster on the same ports refuses to start, and says why
        other = subprocess.run([sys.executable, "-m", "topology.cli", "up", "--preset", "mini",
                                "--port", str(base_port), "--data", str(tmp_path / "other"),
                                "--workers", "2"], cwd=REPO, capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
        assert other.returncode == 1
        assert "ports in use" in other.stdout + other.stderr
        # ...and one on the same data directory says that a cluster runs there, and how to stop it
        again = subprocess.run([sys.executable, "-m", "topology.cli", "up", "--preset", "mini",
                                "--port", str(base_port + 100), "--data", str(data)], cwd=REPO,
                               capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        assert again.returncode == 1
        said = " ".join(again.stdout.split())
        assert "already running" in said and f"idsim down --data {data}" in said
        assert all(str(pid) in said for pid in [up.proc.pid, *state["pids"]]), said

        code = up.interrupt()
        assert code == 0, up.output()
        assert_stopped(up)

        # with nothing running, status says so
        run = subprocess.run([sys.executable, "-m", "topology.cli", "status", "--data", str(data),
                              "--json"], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert run.returncode == 1


def test_restart_keeps_data_and_logins(tmp_path: Path, base_port: int) -> None:
    data = tmp_path / "data"
    with idsim_up(base_port, data, "1") as up:
        state = up.wait_ready()
        handle = state["examples"][0]
        url = f"{state['recursiveUrl']}/api/handles/{handle}"
        status, first = get_json(url)
        assert status == 200, first
        check_demo_record(first, handle)
        logins_before = json.loads((data / "logins.json").read_text())
        # an identifier registered by an enterprise must survive the restart too
        prefix = handle.partition("/")[0]
        login = logins_before["enterprises"][prefix]
        mine = f"{prefix}/REGISTERED-BEFORE-RESTART"
        status, body = put_json(f"{login['httpUrl']}/api/handles/{mine}",
                                {"values": [{"index": 1, "type": "URL",
                                             "data": "https://ex.com/kept"}]},
                                basic_token(login["username"], login["secret"]))
        assert status == 201, body
        assert up.interrupt() == 0, up.output()
        assert_stopped(up)

    with idsim_up(base_port, data, "2") as up:
        state = up.wait_ready()
        assert state["examples"][0] == handle
        status, again = get_json(url)
        assert status == 200, again
        assert again == first  # same record, same timestamps: read back from the stores
        status, body = get_json(f"{state['recursiveUrl']}/api/handles/{mine}")
        assert status == 200, body
        assert body["values"][0]["data"]["value"] == "https://ex.com/kept"
        logins_after = json.loads((data / "logins.json").read_text())
        assert logins_after == logins_before
        assert logins_after["enterprises"][prefix] == login
        # ...and the kept secret still works against the restarted node
        status, body = put_json(f"{login['httpUrl']}/api/handles/{prefix}/AFTER-RESTART",
                                {"values": [{"index": 1, "type": "URL",
                                             "data": "https://ex.com/after"}]},
                                basic_token(login["username"], login["secret"]))
        assert status == 201, body
        assert up.interrupt() == 0, up.output()
        assert_stopped(up)


def test_down_stops_a_cluster_started_elsewhere(tmp_path: Path, base_port: int) -> None:
    data = tmp_path / "data"
    with idsim_up(base_port, data, "1") as up:
        state = up.wait_ready()
        run = subprocess.run([sys.executable, "-m", "topology.cli", "down", "--data", str(data)],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        try:
            code = up.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"idsim up still running {STOP_TIMEOUT:.0f} s after idsim down")
        assert code == 0, up.output()
        assert_stopped(up)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{state['recursiveUrl']}/api/stats", timeout=2)


def wait_until_gone(pids: set[int], data: Path, seconds: float) -> list[int]:
    """Poll until none of ``pids`` is a live host process of ``data``; those left."""
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if is_our_host(p, data)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_kill_9_of_the_launcher_takes_its_hosts_with_it(tmp_path: Path, base_port: int) -> None:
    data = tmp_path / "data"
    with idsim_up(base_port, data, "1") as up:
        state = up.wait_ready()
        hosts = set(state["pids"])
        assert hosts and all(is_our_host(pid, data) for pid in hosts)
        up.proc.kill()
        up.proc.wait(10)
        left = wait_until_gone(hosts, data, 5.0)
        assert not left, f"host processes outlived their launcher: {left}"

    # the next idsim up on the same ports and data starts: the old cluster.json was stale
    with idsim_up(base_port, data, "2") as up:
        state = up.wait_ready()
        assert "none of its processes is running" in up.output()
        status, body = get_json(f"{state['recursiveUrl']}/api/handles/{state['examples'][0]}")
        assert status == 200, body
        assert up.interrupt() == 0, up.output()
        assert_stopped(up)


def answers(url: str) -> bool:
    try:
        return get_json(url, timeout=5)[0] == 200
    except OSError:
        return False


def test_a_killed_host_is_restarted_while_the_others_serve(tmp_path: Path,
                                                           base_port: int) -> None:
    data = tmp_path / "data"
    with idsim_up(base_port, data, "1", 4,  # top | recursive | 2 | 88.118, one process each
                  "--node-processes", "1") as up:
        state = up.wait_ready()
        http = {n["name"]: n["httpUrl"] for n in state["nodes"]}
        example = {ex.rpartition(".")[0]: ex for ex in state["examples"]}  # node -> handle
        [victim] = [p for p in state["processes"] if p["nodes"] == ["88.118"]]
        others = [f"{http['top']}/api/stats",
                  f"{http['88.101']}/api/handles/{example['88.101']}",
                  f"{http['88.201']}/api/handles/{example['88.201']}",
                  f"{http['recursive']}/api/handles/{example['88.201']}"]
        killed = f"{http['88.118']}/api/handles/{example['88.118']}"
        assert answers(killed)

        os.kill(victim["pid"], signal.SIGKILL)
        assert not wait_until_gone({victim["pid"]}, data, 10.0)
        deadline = time.monotonic() + 15
        while True:  # the other nodes answer throughout; the killed one comes back
            for url in others:
                status, body = get_json(url)
                assert status == 200, (url, body)
            if answers(killed):
                break
            assert time.monotonic() < deadline, f"88.118 not back:\n{up.output()}"
            time.sleep(0.1)
        assert up.proc.poll() is None  # the launcher kept running

        # cluster.json names the new process (rewritten before it could answer)
        state = json.loads((data / "cluster.json").read_text())
        [back] = [p for p in state["processes"] if p["nodes"] == ["88.118"]]
        assert back["pid"] != victim["pid"] and back["restarts"] == 1
        assert is_our_host(back["pid"], data) and back["pid"] in state["pids"]
        up.host_pids.add(back["pid"])
        said = " ".join(up.output().split())
        assert f"pid {victim['pid']} exited (signal SIGKILL); restarting in" in said
        assert "restart 1 of host-3" in Path(back["log"]).read_text()

        # idsim down finds and stops the new process too
        run = subprocess.run([sys.executable, "-m", "topology.cli", "down", "--data", str(data)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert str(back["pid"]) in run.stdout
        assert up.proc.wait(STOP_TIMEOUT) == 0, up.output()
        assert_stopped(up)
