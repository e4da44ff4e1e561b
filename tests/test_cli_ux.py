"""The CLI as a first-time user meets it (issue 9, part 6), one test per rough edge found.

Commands run in-process through ``topology.cli.main`` where no cluster is needed (usage
errors exit through ``SystemExit(2)``), and against a real ``idsim up --preset mini`` (a
launcher subprocess on free ports below 32768, its output piped to a file: not a terminal)
where one is. Every process started here is killed in ``finally``; waits poll a condition
up to a deadline.
"""
from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmarks import tools
from benchmarks.network import free_preset
from benchmarks.procs import free_port
from network_fixtures import basic_token
from test_cli_up import Up, assert_stopped, get_json, send_json  # noqa: I001 - tests/ is on sys.path
from topology.cli import build_parser, main
from topology.cluster import default_processes

REPO = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|CRITICAL) "
                   r"\S+ \[[^\]]+\] \S")
PROGRESS = re.compile(r"\d[\d,]* requests +[\d,]+ req/s +[\d,]+ failures +p99 \d+ ms")

pytestmark = pytest.mark.timeout(120)


def launch(data: Path, tag: str, *args: str) -> Up:
    log = data.parent / f"up-{tag}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "up", "--preset", "mini", "--workers", "2",
             "--data", str(data), *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    return Up(proc, data, log)


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def allocate(state: dict, data: Path, prefix: str) -> dict:
    """POST /api/admin/prefixes at 88.118 as its node admin; the answer (with the secret)."""
    admin = json.loads((data / "logins.json").read_text())["nodes"]["88.118"]
    url = next(n["httpUrl"] for n in state["nodes"] if n["name"] == "88.118")
    status, body = send_json("POST", f"{url}/api/admin/prefixes", {"prefix": prefix},
                             basic_token(admin["username"], admin["secret"]))
    assert status == 201, body
    return body


def poll(predicate, seconds: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while not (got := predicate()):
        assert time.monotonic() < deadline, f"no {what} after {seconds:.0f} s"
        time.sleep(0.05)
    return got


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One ``idsim up --access-log`` whose data directory is ``<root>/idsim-data``."""
    data = tmp_path_factory.mktemp("ux") / "idsim-data"
    port = free_preset("mini").recursive.http_port
    up = launch(data, "1", "--port", str(port), "--access-log")
    try:
        up.wait_ready()
        yield up
    finally:
        up.kill_all()


# ------------------------------------------------------------------ without a cluster

@pytest.mark.parametrize("argv", [
    ["resolve", "not a handle"],
    ["resolve", "88.118.8/X", "--via", "http://127.0.0.1:{closed}"],
    ["resolve", "88.118.8/X", "--via", "127.0.0.1:{closed}"],
    ["resolve", "88.118.8/X", "--via", "http://[::1"],
    ["resolve", "88.118.8/X", "--via", "http://127.0.0.1:{closed}/a b"],
    ["load", "--time", "abc"],
    ["load", "--time", "-5s"],
    ["register", "88.118.8/X", "--url", "https://ex.com", "--value", "BAD"],
    ["register", "88.118.8/X", "--url", "https://ex.com", "--via", "http://127.0.0.1:{closed}",
     "--user", "300:0.NA/88.118.8", "--secret", "not-a-real-secret"],
    ["register", "no slash", "--url", "https://ex.com"],
    ["up", "--topology", "{tmp}/missing.toml", "--data", "{tmp}/d"],
    ["up", "--preset", "nosuch"],
    ["up", "--access-log-sample", "2"],
    ["node", "--port", "eighty"],
])
def test_user_errors_are_one_line_and_exit_2(argv, tmp_path, capsys):
    closed = free_port()  # nothing listens there
    code = run_main([a.format(closed=closed, tmp=tmp_path) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"idsim {argv[0]}") and "Traceback" not in err


def test_a_node_on_a_taken_port_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        run = subprocess.run([sys.executable, "-m", "topology.cli", "node", "--demo", "0",
                              "--port", str(taken.getsockname()[1]), "--data", str(tmp_path)],
                             cwd=REPO, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "address already in use" in run.stderr, run.stderr


def test_register_value_needs_a_type_and_an_equals_sign(capsys):
    for bad in ("BAD", "=text"):
        assert run_main(["register", "88.118.8/X", "--url", "https://ex.com",
                         "--value", bad, "--via", "http://127.0.0.1:1"]) == 2
        assert "TYPE=TEXT" in capsys.readouterr().err


def test_every_option_has_help_text():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    walk(build_parser(), "idsim")
    assert not missing, f"options without help: {missing}"


def test_locust_web_ui_binds_loopback_unless_told_otherwise(tmp_path):
    port = free_port()
    with open(tmp_path / "locust.log", "w") as out:
        proc = psutil.Popen([sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py",
                             "--host", "http://127.0.0.1:1", "--web-port", str(port)],
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            env={k: v for k, v in os.environ.items() if k != "LOCUST_WEB_HOST"})
    try:
        def listening():
            if proc.poll() is not None:
                pytest.fail((tmp_path / "locust.log").read_text())
            conns = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
            return [c.laddr for c in conns("tcp")
                    if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        addrs = poll(listening, 60, "web UI listening")
        assert [a.ip for a in addrs] == ["127.0.0.1"]
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.timeout(180)
def test_load_shows_progress_on_a_terminal_and_keeps_csv_and_html(tmp_path):
    data = tmp_path / "idsim-data"
    port = free_preset("mini").recursive.http_port
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "topology.cli", "load", "--preset", "mini", "--port", str(port),
         "--data", str(data), "--time", "5s", "--users", "4", "--scenario", "resolve"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
        env=dict(os.environ, TERM="xterm", COLUMNS="150"), start_new_session=True)
    os.close(slave)
    shown = b""
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other end is closed
                    break
                if not chunk:
                    break
                shown += chunk
        assert proc.wait(30) == 0, shown.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert len(PROGRESS.findall(text)) >= 2, text  # redrawn while it runs
    [run] = list((data / "runs").iterdir())
    assert re.fullmatch(r"\d{8}-\d{6}", run.name)
    assert {"run_stats.csv", "run_stats_history.csv", "report.html"} <= {
        p.name for p in run.iterdir()}
    assert "<html" in (run / "report.html").read_text(errors="replace").lower()
    assert "Aggregated" in (run / "run_stats.csv").read_text()
    assert str(run) in text


# ------------------------------------------------------------------ against a cluster

def test_resolve_finds_the_cluster_running_from_data(cluster, capsys):
    example = cluster.state["examples"][0]
    assert main(["resolve", example, "--data", str(cluster.data)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["handle"] == example
    assert f"via {cluster.state['recursiveUrl']}" in err


def test_register_with_a_bad_value_stores_nothing(cluster, capsys):
    handle = "88.118.8/UX-BAD-VALUE"
    code = run_main(["register", handle, "--url", "https://ex.com/bad", "--value", "BAD",
                     "--data", str(cluster.data)])
    assert code == 2
    status, _ = get_json(f"{cluster.state['recursiveUrl']}/api/handles/{handle}")
    assert status == 404


def test_node_table_keeps_whole_urls_when_output_is_not_a_terminal(cluster):
    shown = cluster.output()
    for node in cluster.state["nodes"]:
        assert any(node["httpUrl"] in line and node["rpc"] in line
                   for line in shown.splitlines()), (node, shown)


def test_admin_api_prefix_gets_its_login_in_logins_json(cluster, capsys):
    created = allocate(cluster.state, cluster.data, "88.118.70")
    login = json.loads((cluster.data / "logins.json").read_text())["enterprises"]["88.118.70"]
    assert login["username"] == created["username"] == "300:0.NA/88.118.70"
    assert login["secret"] == created["secret"] and login["node"] == "88.118"
    assert (cluster.data / "logins.json").stat().st_mode & 0o777 == 0o600
    assert main(["register", "88.118.70/UX-1", "--url", "https://ex.com/ux-1",
                 "--data", str(cluster.data)]) == 0
    assert "as 300:0.NA/88.118.70" in capsys.readouterr().err
    status, body = get_json(f"{cluster.state['recursiveUrl']}/api/handles/88.118.70/UX-1")
    assert status == 200, body


def test_stats_say_since_when_they_count_and_what_they_count(cluster):
    top = next(n["httpUrl"] for n in cluster.state["nodes"] if n["name"] == "top")
    node = next(n["httpUrl"] for n in cluster.state["nodes"] if n["name"] == "88.118")
    _, mine = get_json(f"{node}/api/stats")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", mine["since"])
    assert {"since", "registrations", "identifiers"} <= set(mine["notes"])
    assert "not count" in mine["notes"]["registrations"]

    def reported():
        doc = get_json(f"{top}/api/stats")[1]
        return doc if all(r["since"] for r in doc["nodes"]) else None
    network = poll(reported, 10, "reports with since")
    assert {"since", "registrations", "identifiers"} <= set(network["notes"])
    assert [r["since"] for r in network["nodes"] if r["node"] == "88.118"] == [mine["since"]]


def test_readme_curl_put_says_its_content_type_and_works(cluster):
    readme = (REPO / "README.md").read_text()
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "curl -X PUT" in b]
    assert "-H 'Content-Type: application/json'" in block
    tools.ensure("curl", ["curl"])
    script = block.replace("http://127.0.0.1:8000", cluster.state["recursiveUrl"])
    run = subprocess.run(["bash", "-ec", script], cwd=cluster.data.parent, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["responseCode"] == 1, run.stdout
    handle = re.search(r"/api/handles/(\S+)", block).group(1)
    status, body = get_json(f"{cluster.state['recursiveUrl']}/api/handles/{handle}")
    assert status == 200 and body["values"][0]["data"]["value"].startswith("https://")


def test_hosts_log_start_and_ready_and_access_lines(cluster):
    logs = cluster.data / "logs"
    assert f"logs: {logs} (access logs: access-host-*.jsonl)" in cluster.output()
    # a request aiohttp's parser rejects gets its 400 and no log line (no traceback)
    node = next(n["httpUrl"] for n in cluster.state["nodes"] if n["name"] == "88.118")
    with socket.create_connection(("127.0.0.1", int(node.rpartition(":")[2])), 10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n")
        assert sock.recv(100).split(b"\r\n")[0].endswith(b" 400 Bad Request")
    hosts = sorted(logs.glob("host-*.log"))
    lines = [x for p in hosts for x in p.read_text().splitlines()]
    assert lines and all(STAMP.match(x) for x in lines), lines
    for node in cluster.state["nodes"]:
        assert any(f"[{node['name']}] ready: serving {node['httpUrl']}" in x for x in lines)
    # --workers 2: top and secondaries | recursive, each in default_processes() processes
    assert sum(" starting pid " in x for x in lines) == 2 * default_processes()

    path = f"/api/handles/{cluster.state['examples'][1]}"
    assert get_json(cluster.state["recursiveUrl"] + path)[0] == 200

    def written():
        return [rec for p in logs.glob("access-host-*.jsonl")
                for rec in map(json.loads, p.read_text().splitlines()) if rec["path"] == path]
    [rec] = poll(written, 10, "access line")
    assert rec["node"] == "recursive" and rec["status"] == 200 and rec["method"] == "GET"


def test_up_reuses_the_port_its_data_ran_on_and_keeps_allocated_logins(tmp_path):
    data = tmp_path / "idsim-data"
    port = free_preset("mini").recursive.http_port
    up = launch(data, "1", "--port", str(port))
    try:
        state = up.wait_ready()
        created = allocate(state, data, "88.118.71")
        assert up.interrupt() == 0, up.output()
        assert_stopped(up)
    finally:
        up.kill_all()
    stops = [x for p in (data / "logs").glob("host-*.log") for x in p.read_text().splitlines()]
    hosts = 2 * default_processes()  # --workers 2, each group in default_processes()
    assert sum(x.endswith("stopping (SIGTERM)") for x in stops) == hosts, stops
    assert sum(x.endswith("] stopped") for x in stops) == hosts, stops

    again = launch(data, "2")  # no --port
    try:
        state = again.wait_ready()
        assert state["recursiveUrl"] == f"http://127.0.0.1:{port}"
        assert f"port {port}: the one" in " ".join(again.output().split())
        logins = json.loads((data / "logins.json").read_text())["enterprises"]
        assert logins["88.118.71"]["secret"] == created["secret"]
        assert again.interrupt() == 0, again.output()
    finally:
        again.kill_all()
