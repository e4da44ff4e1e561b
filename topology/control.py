"""The control API of one host process: set, clear and list the faults of the nodes it runs.

A small aiohttp application on a loopback address only (``CONTROL_HOST``; ``start`` refuses
any other address), every request authenticated with the cluster's control token
(``Authorization: Bearer <token>``, compared in constant time). The token lives in
``<data>/control/token`` (mode 0600, created once per data directory by the first host process
that needs it, atomically); each host process records where its API listens in
``<data>/control/<pid>.json`` (``{"pid", "url", "nodes"}``, mode 0600, removed at its stop),
where ``topology.fault_control`` finds it through the pids of ``cluster.json`` (a killed
process leaves its record; the next host process to start removes records of dead pids).

Endpoints (JSON): ``GET /faults`` -> ``{"faults": [...]}``; ``POST /faults`` with a fault spec
(``resolver.faults.fault_from``) -> the fault set; ``DELETE /faults[?node=N]`` -> the faults
cleared. A spec naming a node this process does not run is refused (404), except the peer of
a partition. Bad input: 400 with ``{"error": ...}``; never a 500.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path

from aiohttp import web

from resolver.config import FaultsConfig
from resolver.fault_inject import Injector
from resolver.faults import FaultError, fault_from

TOKEN_FILE = "token"
CONTROL_HOST = "127.0.0.1"  # an invariant, not a setting: the API never leaves the machine


def control_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "control"


def token(data_dir: Path) -> str:
    """The cluster's control token, created (0600, atomically: write then link) if missing."""
    where = control_dir(data_dir)
    where.mkdir(mode=0o700, exist_ok=True)
    path = where / TOKEN_FILE
    if not path.exists():
        tmp = where / f".token.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _json(doc: dict, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status)


class ControlAPI:
    """The endpoints over one ``Injector`` (the nodes ``nodes`` of this process)."""

    def __init__(self, injector: Injector, secret: str) -> None:
        self.injector = injector
        self.secret = secret.encode()

    @web.middleware
    async def guard(self, request: web.Request, handler):
        remote = request.remote or ""
        if not is_loopback(remote):
            return _json({"error": "the control API answers loopback clients only"}, 403)
        given = request.headers.get("Authorization", "")
        if not (given.startswith("Bearer ")
                and hmac.compare_digest(given[7:].strip().encode(), self.secret)):
            return _json({"error": "control token required: Authorization: Bearer <token> "
                                   "(<data>/control/token)"}, 401)
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        app.router.add_get("/faults", self.list)
        app.router.add_post("/faults", self.set)
        app.router.add_delete("/faults", self.clear)
        return app

    async def list(self, request: web.Request) -> web.Response:
        return _json({"nodes": sorted(self.injector.targets),
                      "faults": [f.to_json() for f in self.injector.state.active()]})

    async def set(self, request: web.Request) -> web.Response:
        try:
            spec = json.loads(await request.read() or b"null")
            fault = fault_from(spec, self.injector.clock())
        except (ValueError, FaultError) as exc:
            return _json({"error": str(exc)}, 400)
        if fault.node not in self.injector.targets and fault.peer not in self.injector.targets:
            return _json({"error": f"this process does not run {fault.node}: it runs "
                                   f"{', '.join(sorted(self.injector.targets))}"}, 404)
        self.injector.state.set(fault)
        await self.injector.update()
        return _json({"fault": fault.to_json()})

    async def clear(self, request: web.Request) -> web.Response:
        gone = self.injector.state.clear(request.query.get("node") or None)
        await self.injector.update()
        return _json({"cleared": [f.to_json() for f in gone]})


async def start(injector: Injector, data_dir: Path, config: FaultsConfig,
                host: str = CONTROL_HOST) -> tuple[web.AppRunner, str]:
    """Serve the control API of this process and record it in ``<data>/control/<pid>.json``;
    ``ValueError`` for a host that is not loopback. Returns the runner and the API's URL;
    ``stop`` undoes both."""
    if not is_loopback(host):
        raise ValueError(f"the control API binds loopback addresses only, not {host!r}")
    runner = web.AppRunner(ControlAPI(injector, token(data_dir)).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, config.control_port)
    await site.start()
    prune(data_dir)
    host, port = runner.addresses[0][:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    path = control_dir(data_dir) / f"{os.getpid()}.json"
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "url": url, "nodes": sorted(injector.targets)}, f)
    os.replace(path.with_suffix(".tmp"), path)
    return runner, url


def prune(data_dir: Path) -> None:
    """Remove the records of host processes that are gone (killed ones leave theirs)."""
    for path in control_dir(data_dir).glob("*.json"):
        try:
            os.kill(int(path.stem), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue


async def stop(runner: web.AppRunner, data_dir: Path) -> None:
    (control_dir(data_dir) / f"{os.getpid()}.json").unlink(missing_ok=True)
    await runner.cleanup()
