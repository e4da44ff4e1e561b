#!/usr/bin/env python
"""What RPC authentication costs: ``python benchmarks/rpc_auth_cost.py [--rounds 5]``.

One secondary node (memory store, one seeded record) served twice in this process, under
uvloop: as ``idsim up`` serves it (``trust``: the handshake, roles, ``resolve`` answering the
public record only) and, as the reference measured in the same rounds, an open server whose
``resolve`` hands out the stored bytes as main did before authentication. Client and server
share the process, so the CPU figures (``time.process_time``) are both ends together.

Two figures, each the median over interleaved rounds with its ratio to the reference:
- a connection: connect, (handshake,) one ``resolve``, close;
- a ``resolve`` call on an open connection (the recursive node's cold path), 100 in flight;
and, against that awaited call, the same call sent with ``RpcClient.call_soon`` (answered by
callback: what the recursive node's fast misses use).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from resolver import records  # noqa: E402
from resolver.nodes import SecondaryNode  # noqa: E402
from resolver.rpc import RpcClient, RpcServer  # noqa: E402
from resolver.rpc_auth import Keyring, Trust, new_key  # noqa: E402
from resolver.store import open_store  # noqa: E402

HANDLE = "88.118.8/SN000000042"


async def setup():
    node = SecondaryNode("88.118", open_store("memory:"), ["88.118"])
    await node.bootstrap("admin-secret")
    values = [records.Value(1, "URL", "https://ex.com/42"), records.Value(2, "EMAIL", "qa@ex.com"),
              records.admin_value("0.NA/88.118.8", 200)]
    await node._store([(node.key(HANDLE), records.encode(HANDLE, values))])
    keys = Keyring({n: bytes.fromhex(new_key()) for n in ("88.118", "recursive")})
    reference = await RpcServer({"resolve": lambda text: node.lookup(node.parse(text))}).start()
    trusted = await RpcServer(node.rpc_handlers(), trust=Trust("88.118", keys)).start()
    return node, reference, trusted, Trust("recursive", keys)


async def per_connection(port: int, trust, n: int) -> float:
    """CPU µs per connect + first resolve + close."""
    start = time.process_time()
    for _ in range(n):
        async with RpcClient("127.0.0.1", port, trust=trust) as c:
            await c.call("resolve", HANDLE)
    return (time.process_time() - start) / n * 1e6


async def per_call(port: int, trust, n: int) -> float:
    """CPU µs per resolve on an open connection, 100 calls in flight."""
    async with RpcClient("127.0.0.1", port, trust=trust) as c:
        await c.call("resolve", HANDLE)
        start = time.process_time()
        for _ in range(n // 100):
            await asyncio.gather(*(c.call("resolve", HANDLE) for _ in range(100)))
        return (time.process_time() - start) / (n // 100 * 100) * 1e6


async def per_call_soon(port: int, trust, n: int) -> float:
    """CPU µs per resolve sent with ``call_soon`` (answered by callback: no task, no future;
    the recursive node's fast misses), 100 in flight, on an open connection."""
    async with RpcClient("127.0.0.1", port, trust=trust) as c:
        await c.call("resolve", HANDLE)
        loop = asyncio.get_running_loop()
        start = time.process_time()
        for _ in range(n // 100):
            batch, left = loop.create_future(), [100]

            def done(error, result, batch=batch, left=left):
                left[0] -= 1
                if (error is not None or not left[0]) and not batch.done():
                    batch.set_result(error)
            for _ in range(100):
                assert c.call_soon("resolve", (HANDLE,), done)
            if (error := await batch) is not None:
                raise error
        return (time.process_time() - start) / (n // 100 * 100) * 1e6


async def main(rounds: int, connections: int, calls: int) -> None:
    node, reference, trusted, trust = await setup()
    figures: dict[str, list[float]] = {k: [] for k in ("conn_ref", "conn_auth", "call_ref",
                                                       "call_auth", "soon_auth")}
    try:
        for _ in range(rounds):  # interleaved: the box's load hits both alike
            figures["conn_ref"].append(await per_connection(reference.port, None, connections))
            figures["conn_auth"].append(await per_connection(trusted.port, trust, connections))
            figures["call_ref"].append(await per_call(reference.port, None, calls))
            figures["call_auth"].append(await per_call(trusted.port, trust, calls))
            figures["soon_auth"].append(await per_call_soon(trusted.port, trust, calls))
    finally:
        await reference.close()
        await trusted.close()
        await node.close()
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"rounds {rounds}, {connections} connections and {calls} calls per round "
          f"(CPU of client + server, µs, median)")
    print(f"{'':28}{'reference':>12}{'authenticated':>15}{'ratio':>8}")
    for label, ref, auth in (("connect + resolve + close", "conn_ref", "conn_auth"),
                             ("resolve on an open conn.", "call_ref", "call_auth")):
        print(f"{label:28}{med[ref]:>12.1f}{med[auth]:>15.1f}{med[auth] / med[ref]:>7.2f}×")
    print(f"handshake per connection: {med['conn_auth'] - med['conn_ref']:.1f} µs CPU")
    print(f"resolve by callback (call_soon), authenticated: {med['soon_auth']:.1f} µs, "
          f"{med['soon_auth'] / med['call_auth']:.2f}× an awaited call")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--connections", type=int, default=300)
    p.add_argument("--calls", type=int, default=20_000)
    args = p.parse_args()
    uvloop.run(main(args.rounds, args.connections, args.calls))
