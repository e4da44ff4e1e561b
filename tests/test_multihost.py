"""Nodes on several hosts (issue 12 part 5): one topology file places the top-level and the
recursive node on 127.0.0.1 and the secondary nodes on 127.0.0.2 (Linux routes all of 127/8
to the loopback interface); two ``idsim host`` shares, each with its own data directory and
the same copied ``logins.json``, run them, and a client resolves through the recursive node
on one address identifiers whose node serves on the other.

Every process started here is killed in ``finally``; waits poll up to a deadline.
"""
from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from network_fixtures import free_topology
from test_cli_up import REPO, Up, check_demo_record, get_json
from topology import demo
from topology.ports import find_ports_in_use
from topology.tomlio import save

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-m", "topology.cli"]
OTHER = "127.0.0.2"


def two_host_topology(tmp_path: Path) -> Path:
    """mini with its secondary nodes on 127.0.0.2, written to a file; ports free on both."""
    for _ in range(20):
        topo = free_topology("mini")
        topo = dataclasses.replace(topo, secondaries=tuple(
            dataclasses.replace(s, address=dataclasses.replace(s.address, host=OTHER))
            for s in topo.secondaries))
        if not find_ports_in_use(topo):
            path = tmp_path / "net.toml"
            save(topo, path)
            return path
    pytest.skip(f"no free ports on 127.0.0.1 and {OTHER}")


@contextmanager
def idsim_host(topology: Path, nodes: str, data: Path, *extra: str):
    log = data.parent / f"host-{data.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(CLI + ["host", "--topology", str(topology), "--nodes", nodes,
                                       "--data", str(data), "--store", "memory", *extra],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    share = Up(proc, data, log)
    try:
        yield share
    finally:
        share.kill_all()


def listens(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def test_two_shares_on_two_addresses_resolve_across_them(tmp_path: Path) -> None:
    topology = two_host_topology(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    with ExitStack() as stack:
        a = stack.enter_context(idsim_host(topology, "top,recursive", first, "--new-logins"))
        a.wait_ready()
        # the second host has the first's logins.json, copied as a user would (scp -p)
        second.mkdir()
        shutil.copy2(first / "logins.json", second / "logins.json")
        b = stack.enter_context(idsim_host(topology, f"@{OTHER}", second))
        state = b.wait_ready()
        assert [p["nodes"] for p in state["processes"]] == [["88.101", "88.118", "88.201"]]
        urls = {n["name"]: n["httpUrl"] for n in state["nodes"]}
        port = int(urls["88.118"].rsplit(":", 1)[1])
        assert urls["88.118"].startswith(f"http://{OTHER}:")
        assert listens(OTHER, port) and not listens("127.0.0.1", port)
        handle = f"88.118.8/{demo.suffix(1)}"
        status, body = get_json(f"{urls['recursive']}/api/handles/{handle}")
        assert status == 200, body
        check_demo_record(body, handle)
        # the top-level node sends clients to the node on the other address
        status, body = get_json(f"{urls['top']}/api/handles/0.NA/88.118.8")
        assert status == 200 and OTHER in str(body["values"])
        assert a.interrupt() == 0 and b.interrupt() == 0
    assert not (first / "cluster.json").exists() and not (second / "cluster.json").exists()


def test_a_share_without_the_shared_logins_or_with_unknown_nodes_is_refused(
        tmp_path: Path) -> None:
    topology = two_host_topology(tmp_path)
    run = subprocess.run(CLI + ["host", "--topology", str(topology), "--nodes", "top",
                                "--data", str(tmp_path / "d")], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "logins.json is missing: copy it" in run.stderr
    run = subprocess.run(CLI + ["host", "--topology", str(topology), "--nodes", "top,88.999",
                                "--data", str(tmp_path / "d")], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "no node '88.999' in the topology" in run.stderr
