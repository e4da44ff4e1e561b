"""Hypothesis fuzz of a node's RPC server: garbage bytes, huge length headers, deep nesting,
every method with bad arguments (as an outsider and as each kind of node), unauthenticated
calls. Bounded (``max_examples``, no per-example deadline; a test timeout guards the whole).

After every example the server still answers an authenticated client; no bad argument is an
internal error (code 2: a handler that raised something other than a HandleError); no
exception escapes to the event loop; and the log stays within the throttle's burst.
A longer run: ``IDSIM_FUZZ_EXAMPLES=6000 python -m pytest tests/test_hostile_rpc.py`` (about
two minutes).
"""
from __future__ import annotations

import asyncio
import logging
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver import errors
from resolver.clock import FakeClock
from resolver.config import Config
from resolver.resolution import Site
from resolver.rpc import RpcClient, RpcServer
from resolver.rpc_auth import Keyring, Trust
from resolver.store import open_store
from resolver.top import TopNode
from rpc_helpers import Raw, pack

pytestmark = pytest.mark.timeout(600)
EXAMPLES = int(os.environ.get("IDSIM_FUZZ_EXAMPLES", "200"))
KEYS = Keyring({"top": b"t" * 32, "recursive": b"r" * 32, "88.118": b"s" * 32})
SITE = Site("88.118", "http://127.0.0.1:1", "127.0.0.1:2")
METHODS = ["resolve", "stats", "delegate", "register_prefixes", "report", "nope", ""]

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**64 - 1)
           | st.floats() | st.text(max_size=20) | st.binary(max_size=20)
           | st.sampled_from(["88.118", "88.118.8", "0.NA/88.118", "recursive@1", "top",
                              SITE.http_url, SITE.rpc_addr]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-2**63, 2**64 - 1),
                                      inner, max_size=4),
                      max_leaves=12)
params = st.integers(min_value=0, max_value=3).flatmap(  # arities 0..3 equally often
    lambda n: st.lists(values, min_size=n, max_size=n))
calls = st.builds(lambda kind, msgid, method, params: [0, msgid, method, params] if kind
                  else [2, method, params],
                  st.booleans(), st.integers(min_value=0, max_value=2**32 - 1),
                  st.sampled_from(METHODS), params)
huge = st.builds(lambda head, n: head + n.to_bytes(4, "big"),
                 st.sampled_from([b"\xc6", b"\xdb", b"\xdd", b"\xdf", b"\xc9"]),
                 st.integers(min_value=2**22, max_value=2**32 - 1))
deep = st.integers(min_value=1, max_value=3000).map(lambda n: b"\x91" * n + b"\xc0")
call_lists = st.lists(calls, min_size=1, max_size=4).map(lambda ms: pack(*ms))
payloads = (st.binary(max_size=300) | huge | deep | call_lists | call_lists | call_lists
            | st.tuples(st.lists(calls, max_size=2), st.binary(max_size=40)).map(
                lambda t: pack(*t[0]) + t[1]))


class Target:
    """A top-level node's RPC server in one long-lived loop, probed example after example."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.escaped: list = []
        self.lines = 0  # warning lines the server wrote, in all
        counter = logging.Handler(logging.WARNING)
        counter.emit = lambda record: setattr(self, "lines", self.lines + 1)
        logging.getLogger("resolver.rpc").addHandler(counter)
        self._counter = counter
        self.runner.run(self._start())

    async def _start(self) -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: self.escaped.append(ctx))
        self.clock = FakeClock()
        self.top = TopNode("top", open_store("memory:"), "88", Config(), clock=self.clock)
        await self.top.bootstrap("top-secret")
        await self.top.add_node("88.118", SITE, "node-secret")
        self.server = await RpcServer(self.top.rpc_handlers(), self.top.config.rpc,
                                      trust=Trust("top", KEYS), clock=self.clock).start()
        self.checker = RpcClient("127.0.0.1", self.server.port, clock=self.clock,
                                 trust=Trust("recursive", KEYS))

    async def probe(self, payload: bytes, who: str | None) -> list[int]:
        """The error codes of the answers to ``payload`` (sent as ``who``, or unproven)."""
        codes = []
        raw = await Raw.open(self.server.port)
        try:
            if who is not None:
                await raw.prove(Trust(who, KEYS))
            raw.writer.write(payload)
            raw.writer.write_eof()  # the server closes at the end of the stream
            while (msg := await raw.next()) is not None:
                if type(msg) is list and msg[:1] == [1] and msg[2] is not None:
                    codes.append(msg[2][0])
        except ConnectionResetError:
            pass
        finally:
            raw.close()
        site, ttl = await self.checker.call("delegate", "88.118")  # still serving
        assert site[0] == "88.118" and ttl > 0
        return codes

    def close(self) -> None:
        logging.getLogger("resolver.rpc").removeHandler(self._counter)

        async def stop():
            await self.checker.close()
            await self.server.close()
            await self.top.close()
        self.runner.run(stop())
        self.runner.close()


@pytest.fixture(scope="module")
def target():
    t = Target()
    yield t
    t.close()


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(payload=payloads, who=st.sampled_from([None, "recursive", "88.118", "top", "recursive",
                                             "88.118"]))
def test_the_server_survives_anything(target, payload, who):
    codes = target.runner.run(asyncio.wait_for(target.probe(payload, who), 20))
    assert not target.escaped, target.escaped[:3]
    assert errors.ERROR not in codes  # every bad argument is a HandleError
    assert target.server.connections <= 2  # what was sent never lingers past its close


def test_the_log_stayed_within_the_throttle(target):
    # the fuzz ran on a FakeClock that never moved: one window, one burst of lines
    assert target.server.connections_opened > 100  # the fuzz ran (same module, before this)
    assert 0 < target.lines <= target.server.config.log_burst
    assert target.server.warnings_dropped > 0


