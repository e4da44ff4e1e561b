"""``idsim status``: every node with its state and figures, the full table when the output is
not a terminal, ``--watch`` refreshing until Ctrl-C (exit 0); and ``resolver.watch``'s
snapshots over HTTP (rates between snapshots, one /metrics scrape per process once learned).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from resolver.clock import FakeClock
from resolver.config import Config
from resolver.watch import NodeInfo, Watcher
from test_cli_up import REPO, base_port, idsim_up  # noqa: F401  (base_port: fixture)
from topology.status_view import COLUMNS

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-m", "topology.cli"]


def test_status_table_and_watch(tmp_path: Path, base_port: int) -> None:
    data = tmp_path / "data"
    with idsim_up(base_port, data, "1") as up:
        state = up.wait_ready()
        run = subprocess.run(CLI + ["status", "--data", str(data), "--interval", "0.2"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        lines = run.stdout.splitlines()
        header = next(line for line in lines if "req/s" in line)
        assert all(col in header for col in COLUMNS)
        for n in state["nodes"]:  # each node on one line with its whole URL: nothing cut
            row = next(line for line in lines if f" {n['name']} " in line)
            assert n["httpUrl"] in row and "ready" in row, row
        assert max(map(len, lines)) > 80
        assert lines[0].startswith("mini: 5/5 nodes up, 5 ready; 12 enterprises")

        deadline = time.monotonic() + 60
        while True:  # the totals are the nodes' reports to the top-level node: they come in
            shown = json.loads(subprocess.run(  # within a report interval, later under load
                CLI + ["status", "--data", str(data), "--json", "--interval", "0.2"], cwd=REPO,
                capture_output=True, text=True, timeout=60).stdout)
            if shown["totals"]["identifiers"] == 120 or time.monotonic() > deadline:
                break
        assert all(n["up"] and n["ready"] for n in shown["nodes"])
        assert shown["totals"]["identifiers"] == 120

        log = tmp_path / "watch.out"
        with open(log, "w") as out:
            watch = subprocess.Popen(CLI + ["status", "--data", str(data), "--watch",
                                            "--interval", "0.2"], cwd=REPO, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while log.read_text().count("nodes up") < 3:  # refreshed at least twice
                assert watch.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            watch.send_signal(signal.SIGINT)
            assert watch.wait(10) == 0, log.read_text()
            assert "Traceback" not in log.read_text()
        finally:
            if watch.poll() is None:
                watch.kill()
        assert up.interrupt() == 0


EXPO = """# TYPE idsim_requests_total counter
idsim_requests_total{{node="a",role="secondary",op="resolve",process="0"}} {a}
idsim_requests_total{{node="b",role="secondary",op="resolve",process="0"}} {b}
# TYPE idsim_records gauge
idsim_records{{node="a",process="0"}} 5.0
idsim_records{{node="b",process="0"}} 7.0
"""


async def test_watcher_rates_and_one_scrape_per_process():
    """Nodes a and b share a process (one exposition names both); c is down."""
    hits: list[str] = []
    counts = {"a": 0, "b": 0}

    async def metrics(request):
        hits.append(request.match_info["n"])
        return web.Response(text=EXPO.format(**counts))

    async def ready(request):
        return web.json_response({"responseCode": 1})

    async def stats(request):
        return web.json_response({"totals": {"enterprises": 2, "identifiers": 12,
                                             "resolutions": counts["a"] + counts["b"]}})
    app = web.Application()
    app.router.add_get("/{n}/metrics", metrics)
    app.router.add_get("/{n}/readyz", ready)
    app.router.add_get("/top/api/stats", stats)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        base = f"http://127.0.0.1:{server.port}"
        nodes = [NodeInfo("a", "secondary", f"{base}/a"), NodeInfo("b", "secondary", f"{base}/b"),
                 NodeInfo("c", "secondary", "http://127.0.0.1:1")]
        clock = FakeClock()
        watcher = Watcher(Config(), clock)
        first = await watcher.snapshot(f"{base}/top", nodes)
        assert sorted(hits) == ["a", "b"]  # unknown grouping: every node asked
        assert [(n["up"], n["ready"], n["records"], n["rate"]) for n in first["nodes"]] == [
            (True, True, 5.0, None), (True, True, 7.0, None), (False, False, None, None)]
        counts.update(a=20, b=10)
        clock.advance(2.0)
        hits.clear()
        second = await watcher.snapshot(f"{base}/top", nodes)
        assert hits == ["a"]  # a's exposition also showed b
        assert [n["rate"] for n in second["nodes"]] == [10.0, 5.0, None]
        assert second["interval"] == 2.0
        assert second["totals"]["resolutionsPerSecond"] == 15.0
    finally:
        await server.close()


def test_the_table_shows_down_and_not_ready_nodes_and_why():
    from rich.console import Console
    from topology.status_view import notes, table
    node = {"role": "secondary", "city": "Guangzhou", "metrics": True, "rate": 12.25,
            "p99": 0.0042, "hitRatio": None, "records": 1234.0, "identifiers": None}
    snap = {"nodes": [
        dict(node, name="88.101", url="http://h:1", up=True, ready=True, reason=""),
        dict(node, name="88.118", url="http://h:2", up=True, ready=False,
             reason="not ready: top: top-level node http://h:0 unreachable"),
        dict(node, name="88.201", url="http://h:3", up=False, ready=False, reason="no answer",
             rate=None, p99=None, records=None)]}
    console = Console(width=200, record=True)
    console.print(table(snap, "t"))
    text = console.export_text()
    rows = {line.split()[1]: line for line in text.splitlines() if "http://h:" in line}
    assert "ready" in rows["88.101"] and "12.2" in rows["88.101"] and "4.2 ms" in rows["88.101"]
    assert "1,234" in rows["88.101"]
    assert "up, not ready" in rows["88.118"]
    assert "DOWN" in rows["88.201"] and "–" in rows["88.201"]
    assert notes(snap) == ["  88.118: not ready: top: top-level node http://h:0 unreachable"]
    narrow = Console(width=80, record=True)
    narrow.print(table(snap, "t", 80))
    shown = narrow.export_text()
    assert "http://h:" not in shown and "DOWN" in shown
