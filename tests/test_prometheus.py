"""A real Prometheus server (Debian's ``prometheus``) scrapes a running ``mini`` network with
the scrape config ``idsim up`` writes, and a series is read back through its HTTP API.

The network is the in-process one of ``network_fixtures`` (real ports); Prometheus runs as a
subprocess on a free loopback port with its own storage directory, and is polled with a
deadline (bounded: ``DEADLINE`` s), then stopped. Skipped, with the reason printed, when the
binary is missing and cannot be installed.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from benchmarks import tools
from benchmarks.procs import free_port
from network_fixtures import Net, net  # noqa: F401  (net: fixture)
from topology import demo
from topology.prometheus_config import write

DEADLINE = 60.0  # s for Prometheus to start and scrape every node
POLL = 0.25      # s between two questions to Prometheus while waiting


def prometheus_binary() -> str:
    try:
        return tools.ensure("prometheus", ["prometheus"])
    except RuntimeError as exc:
        print(f"skipping: {exc}")
        pytest.skip(str(exc))


async def query(n: Net, base: str, promql: str) -> list:
    """The result vector of an instant query ([] while Prometheus is not answering yet)."""
    try:
        async with n.http.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
            if resp.status != 200:
                return []
            doc = await resp.json()
    except (OSError, asyncio.TimeoutError):
        return []
    return doc["data"]["result"] if doc.get("status") == "success" else []


async def wait_for(n: Net, base: str, promql: str, done, proc) -> list:
    deadline = time.monotonic() + DEADLINE
    result: list = []
    while time.monotonic() < deadline:
        assert proc.returncode is None, "prometheus exited"
        result = await query(n, base, promql)
        if result and done(result):
            return result
        await asyncio.sleep(POLL)  # polling a subprocess, bounded by DEADLINE
    raise AssertionError(f"{promql}: not there within {DEADLINE}s (last: {result})")


async def test_prometheus_scrapes_every_node_and_reads_a_series_back(net: Net,
                                                                     tmp_path: Path) -> None:
    binary = prometheus_binary()
    resolves = 7
    for i in range(resolves):
        status, _ = await net.get(f"{net.url}/api/handles/88.118.8/{demo.suffix(i)}")
        assert status == 200
    config = write(net.topo, tmp_path / "prometheus.yml", interval=1)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        nodes = 2 + len(net.topo.secondaries)
        up = await wait_for(net, base, "up == 1", lambda r: len(r) == nodes, proc)
        assert {r["metric"]["job"] for r in up} == {"idsim-recursive", "idsim-top",
                                                     "idsim-secondary"}
        got = await wait_for(
            net, base, 'sum(idsim_requests_total{node="recursive",op="resolve"})',
            lambda r: float(r[0]["value"][1]) >= resolves, proc)
        assert float(got[0]["value"][1]) == resolves
        records = await query(net, base, "idsim_records")
        assert {r["metric"]["node"] for r in records} == {"top", *(s.code for s in
                                                                   net.topo.secondaries)}
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
