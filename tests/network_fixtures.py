"""Helpers for tests that run whole networks: the fake clock, free ports for a topology, Basic auth
as pyhandle sends it, and an in-process ``mini`` cluster (every node in the test's own loop).

Import what you need: ``from network_fixtures import net, Net, FakeClock, ...`` (importing
``net`` into a test module makes it a fixture there).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from resolver import auth
from resolver.config import Config
from resolver.clock import FakeClock  # re-exported: tests import it from here too
from topology.cluster import make_logins
from topology.wiring import Running, start_nodes
from topology.model import Topology
from topology.ports import find_ports_in_use
from topology.presets import get_preset

PORT_LOW, PORT_HIGH = 20000, 30000  # below the ephemeral range (32768-60999), RPC ports +1000


def free_topology(preset: str = "mini", *, tries: int = 50, **kw) -> Topology:
    """The preset re-addressed on a random base port whose every HTTP and RPC port binds."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(PORT_LOW, PORT_HIGH)
        topo = get_preset(preset, base_port=base, **kw)
        if not find_ports_in_use(topo):
            return topo
    raise RuntimeError(f"no free port range for {preset} after {tries} tries")


basic_token = auth.basic_header  # pyhandle's Authorization value; the name tests import


@dataclass
class Net:
    topo: Topology
    logins: dict
    host: Running
    clock: FakeClock
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        """The recursive node's HTTP URL."""
        return self.topo.recursive.http_url

    @property
    def top_url(self) -> str:
        return self.topo.top.http_url

    @property
    def recursive(self):
        return self.host.nodes["recursive"]

    @property
    def top(self):
        return self.host.nodes["top"]

    def node_url(self, prefix: str) -> str:
        """The HTTP URL of the secondary node serving ``prefix``."""
        return self.topo.node_for_prefix(prefix).address.http_url

    def auth(self, prefix: str) -> dict[str, str]:
        login = self.logins["enterprises"][prefix]
        return {"Authorization": basic_token(login["username"], login["secret"])}

    def upstream(self) -> int:
        return self.recursive.stats["upstream_calls"]

    async def get(self, url: str, **kw) -> tuple[int, dict]:
        async with self.http.get(url, **kw) as resp:
            return resp.status, await resp.json(content_type=None)


async def start_net(tmp_path: Path, clock: FakeClock, *, attempts: int = 5):
    """Start every node of a ``mini`` topology on free ports; retry on a lost port race."""
    last: Exception | None = None
    for _ in range(attempts):
        topo = free_topology("mini")
        logins = make_logins(topo)
        names = ["top", "recursive", *(s.code for s in topo.secondaries)]
        try:
            host = await start_nodes(topo, names, Config(), data_dir=tmp_path, logins=logins,
                                     store="memory", clock=clock)
        except OSError as exc:  # someone took a port between the check and the bind
            last = exc
            continue
        return topo, logins, host
    raise RuntimeError(f"could not start the mini network: {last}")


@pytest.fixture
async def net(tmp_path):
    clock = FakeClock()
    topo, logins, host = await start_net(tmp_path, clock)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    try:
        yield Net(topo, logins, host, clock, http)
    finally:
        await http.close()
        await host.close()
