"""A node's port held only by a TIME-WAIT socket of one of our own clients does not keep the
node from starting.

Our node-to-node clients take local ports from the kernel's ephemeral range (32768-60999),
which can overlap a topology's ports (``idsim up --port 58000``). A client that closes first
leaves its port in TIME-WAIT for a minute; on Linux that blocks every later bind of the port
unless the client socket had SO_REUSEADDR and the server binds with SO_REUSEADDR. So every
outgoing socket comes from ``resolver.net.client_socket`` and every server binds with
SO_REUSEADDR. The TIME-WAIT sockets here are made on ports below 32768, with that factory.
"""
from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import uvloop
from aiohttp import web

from resolver import net, server
from resolver.clock import FakeClock
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import Keyring, Trust
from topology.presets import get_preset

REPO = Path(__file__).resolve().parent.parent
TIME_WAIT, LISTEN = "06", "0A"  # socket states in /proc/net/tcp


def tcp_states(port: int) -> list[str]:
    """The states of the IPv4 TCP sockets whose local port is ``port``."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            states.append(fields[3])
    return states


def leave_time_wait(port: int) -> None:
    """Leave a TIME-WAIT socket on 127.0.0.1:port, made as our clients make theirs.

    The client socket comes from ``net.client_socket``, is bound to ``port``, connects to a
    listener and closes first, so its end of the connection is the one left in TIME-WAIT.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = net.client_socket((socket.AF_INET, socket.SOCK_STREAM, 0, "",
                                    ("127.0.0.1", port)))
        client.setblocking(True)
        client.bind(("127.0.0.1", port))
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            client.close()  # our client closes first ...
            assert accepted.recv(1) == b""
    # ... and once the peer's close came back, the client's end is in TIME-WAIT
    assert tcp_states(port) == [TIME_WAIT], f"no TIME-WAIT on {port}: {tcp_states(port)}"


def can_bind(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port (with SO_REUSEADDR, as servers do)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port below the ephemeral range that nothing holds, not even a TIME-WAIT."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        if not tcp_states(port) and can_bind(port):
            return port
    raise RuntimeError("no free port below 32000")


# ------------------------------------------------------------------------- address helper


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("[::1]:9000", ("::1", 9000)),
    ("node.example:0", ("node.example", 0)),
    ("[2001:db8::5]:65535", ("2001:db8::5", 65535)),
])
def test_split_address(text, expected):
    assert net.split_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:", "host:http", "host:65536",
                                  "host:-1", ""])
def test_split_address_rejects_what_has_no_port(text):
    with pytest.raises(ValueError, match="expected host:port"):
        net.split_address(text)


# ------------------------------------------------------------------------- socket level


def test_client_sockets_set_reuseaddr():
    sock = net.client_socket((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 1)))
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getblocking() is False


async def test_time_wait_of_our_client_does_not_block_an_rpc_server():
    port = free_port()
    leave_time_wait(port)
    srv = await RpcServer({"add": lambda a, b: a + b}).start("127.0.0.1", port)
    try:
        async with RpcClient("127.0.0.1", port, clock=FakeClock()) as c:
            assert await c.call("add", 2, 3) == 5
    finally:
        await srv.close()
    assert TIME_WAIT in tcp_states(port)  # the TIME-WAIT was there all along


async def test_time_wait_of_our_client_does_not_block_an_http_server():
    port = free_port()
    leave_time_wait(port)

    async def hello(request):
        return web.Response(text="hello")

    runner = await server.serve(hello, "127.0.0.1", port)
    try:
        async with net.client_session() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert await resp.text() == "hello"
    finally:
        await runner.cleanup()


async def test_rpc_client_and_http_session_connect_with_reuseaddr():
    release = asyncio.Event()

    async def hello(request):  # holds the connection open until the client has looked at it
        resp = web.StreamResponse()
        await resp.prepare(request)
        await release.wait()
        await resp.write(b"hello")
        return resp

    runner = await server.serve(hello, "127.0.0.1", 0)
    srv = await RpcServer({"add": lambda a, b: a + b}).start()
    try:
        async with RpcClient("127.0.0.1", srv.port, clock=FakeClock()) as c:
            assert await c.call("add", 1, 1) == 2
            sock = c._conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        async with net.client_session() as session:
            async with session.get(f"http://127.0.0.1:{server.bound_port(runner)}/") as resp:
                sock = resp.connection.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
                release.set()
                assert await resp.text() == "hello"
    finally:
        await srv.close()
        await runner.cleanup()


async def _listening_sockets_reuse_address() -> list[int]:
    async def hello(request):
        return web.Response()

    runner = await server.serve(hello, "127.0.0.1", 0)
    srv = await RpcServer({}).start()
    try:
        socks = [s for site in runner.sites for s in site._server.sockets]
        socks += srv._server.sockets
        return [s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) for s in socks]
    finally:
        await srv.close()
        await runner.cleanup()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_servers_bind_with_reuseaddr(loop_factory):
    """What lets them bind next to our clients' TIME-WAIT (and what ``find_ports_in_use``
    assumes when it probes with SO_REUSEADDR), under both event loops nodes run on."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(_listening_sockets_reuse_address()) == [1, 1]


# ------------------------------------------------------------------------- idsim up


def start_up(base: int, data: Path) -> subprocess.Popen:
    log = open(data.parent / "up.log", "w")
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "up", "--preset", "mini", "--store", "memory",
             "--workers", "1", "--data", str(data), "--port", str(base)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # our SIGINT reaches the launcher only


def wait_ready(proc: subprocess.Popen, data: Path, log: Path, timeout: float = 60.0) -> dict:
    state_path = data / "cluster.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"idsim up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if state_path.exists():
            try:
                return json.loads(state_path.read_text())
            except ValueError:  # caught mid-write
                pass
        time.sleep(0.2)  # polling a file another process writes
    pytest.fail(f"no cluster.json after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, pids: set[int]) -> None:
    try:
        pids.update(k.pid for k in psutil.Process(proc.pid).children(recursive=True))
    except psutil.Error:
        pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in pids:  # host processes, should any outlive the launcher
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def free_mini_base() -> int:
    """A base port whose mini topology (base..base+4, base+1000..base+1004) is all free and
    below the ephemeral range."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 31000)
        ports = [port for _, _, port in get_preset("mini", base_port=base).endpoints()]
        if max(ports) < 32768 and all(not tcp_states(p) and can_bind(p) for p in ports):
            return base
    raise RuntimeError("no free port range for mini below 32768")


@pytest.mark.timeout(120)
def test_idsim_up_starts_on_ports_held_by_our_clients_time_wait(tmp_path: Path):
    base = free_mini_base()
    topo = get_preset("mini", base_port=base)
    rpc_port, http_port = topo.top.rpc_port, topo.recursive.http_port
    leave_time_wait(rpc_port)  # the case seen: a node's RPC port ...
    leave_time_wait(http_port)  # ... and the same for an HTTP port
    data = tmp_path / "data"
    proc = start_up(base, data)
    pids: set[int] = set()
    try:
        state = wait_ready(proc, data, tmp_path / "up.log")
        pids.update(state["pids"])
        # the top-level node answers on the RPC port that was in TIME-WAIT ...
        prefix = state["examples"][0].partition("/")[0]

        keys = Keyring.from_logins(json.loads((data / "logins.json").read_text()))

        async def delegate() -> list:  # asked as the recursive node: RPC is authenticated
            async with RpcClient("127.0.0.1", rpc_port, trust=Trust("recursive", keys)) as c:
                return await c.call("delegate", prefix)

        site, ttl = asyncio.run(delegate())
        assert site[0] == prefix and ttl > 0
        # ... and the recursive node on the HTTP port that was
        url = f"http://127.0.0.1:{http_port}/api/handles/{state['examples'][0]}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["handle"] == state["examples"][0]
    finally:
        stop(proc, pids)
