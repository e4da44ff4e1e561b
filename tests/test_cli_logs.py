"""Logs an operator reads: the access log of ``serve`` (JSON lines, sampled, rotated) and the
host processes' log format. In-process servers on port 0 (127.0.0.1), a seeded RNG for the
sample and an injected clock for the times; the running cluster's logs are checked in
``test_cli_ux``."""
from __future__ import annotations

import io
import json
import logging
import random
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from resolver import server
from resolver.access_log import AccessLog, access_logs, line_file
from resolver.config import HttpConfig
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.web import NodeAPI
from topology import logs

T0 = 1_764_612_000.25  # 2025-12-01T18:00:00.250Z


def fixed_clock() -> float:
    return T0


async def get_all(port: int, paths: list[str]) -> list[int]:
    async with aiohttp.ClientSession() as http:
        out = []
        for path in paths:
            async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                await resp.read()
                out.append(resp.status)
        return out


async def serve_node(access_log) -> web.ServerRunner:
    node = SecondaryNode("88.118", open_store("memory:"), ["88.118"])
    await node.bootstrap("node-admin-secret")
    return await server.serve(NodeAPI(node), "127.0.0.1", 0, HttpConfig(),
                              access_log=access_log)


async def test_every_request_is_one_json_line_with_its_facts(tmp_path):
    path = tmp_path / "access.jsonl"
    runner = await serve_node(access_logs(path, HttpConfig(), clock=fixed_clock)("88.118"))
    try:
        port = server.bound_port(runner)
        statuses = await get_all(port, ["/api/stats", "/api/handles/88.118.8/NOPE?pretty",
                                        "/api/nothing"])
    finally:
        await runner.cleanup()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["status"] for x in lines] == statuses == [200, 404, 404]
    assert [x["path"] for x in lines] == ["/api/stats", "/api/handles/88.118.8/NOPE?pretty",
                                          "/api/nothing"]
    for x in lines:
        assert set(x) == {"time", "node", "remote", "method", "path", "status", "bytes", "ms"}
        assert x["time"] == "2025-12-01T18:00:00.250Z" and x["node"] == "88.118"
        assert x["remote"] == "127.0.0.1" and x["method"] == "GET"
        assert x["bytes"] > 0 and x["ms"] >= 0


async def test_no_access_log_means_aiohttp_logs_nothing_either(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    runner = await serve_node(None)
    try:
        await get_all(server.bound_port(runner), ["/api/stats"])
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.name.startswith(("aiohttp.access",
                                                                 "idsim.access"))]
    assert server.access_logging(None) == {"access_log": None}  # aiohttp's own is off


async def test_sampling_writes_the_share_the_rng_draws(tmp_path):
    config = replace(HttpConfig(), access_sample=0.25)
    path = tmp_path / "sampled.jsonl"
    runner = await serve_node(access_logs(path, config, rng=random.Random(7))("88.118"))
    try:
        await get_all(server.bound_port(runner), [f"/api/handles/88.118.8/N{i}"
                                                  for i in range(200)])
    finally:
        await runner.cleanup()
    draws = random.Random(7)
    expected = [i for i in range(200) if draws.random() < 0.25]
    written = [json.loads(x)["path"] for x in path.read_text().splitlines()]
    assert written == [f"/api/handles/88.118.8/N{i}" for i in expected]
    assert 25 < len(written) < 75


def test_files_rotate_at_the_configured_size_keeping_the_configured_count(tmp_path):
    config = replace(HttpConfig(), access_max_bytes=2000, access_backups=2)
    path = tmp_path / "access.jsonl"
    log = AccessLog("88.118", line_file(path, config), config, clock=fixed_clock)

    class Req:
        remote, method, path_qs = "127.0.0.1", "GET", "/api/handles/88.118.8/X"

    class Resp:
        status, body_length = 200, 10
    for _ in range(100):
        log.write(Req, Resp, 0.001)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["access.jsonl", "access.jsonl.1", "access.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    for f in files:
        for line in (tmp_path / f).read_text().splitlines():
            assert json.loads(line)["node"] == "88.118"


def test_log_lines_have_iso_time_level_logger_and_node():
    stream = io.StringIO()
    handler = logs.setup(["top", "88.101"], stream=stream)
    try:
        logging.getLogger("idsim.host").info("ready")
        logging.getLogger("idsim.host").warning("one node", extra={"node": "88.101"})
        logging.getLogger("idsim.host").debug("not shown")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    stamp, level, name, node, message = first.split(" ", 4)
    assert stamp.endswith("Z") and stamp[10] == "T" and len(stamp) == len("2026-12-01T18:30:00.123Z")
    assert (level, name, node, message) == ("INFO", "idsim.host", "[top,88.101]", "ready")
    assert second.split(" ", 1)[1] == "WARNING idsim.host [88.101] one node"


@pytest.mark.parametrize("exc, kept", [(BadHttpMessage("bad request line"), False),
                                       (RuntimeError("a bug"), True)])
def test_parser_rejections_are_not_logged_but_real_errors_are(exc, kept):
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                               "Error handling request", (), (type(exc), exc, None))
    assert logs.ParserNoise().filter(record) is kept
