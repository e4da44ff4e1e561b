"""nginx returning a fixed Handle-like answer: the ceiling the resolve rates are compared with.

Two worker processes (all cores, as idsim uses them), no access log, run in the foreground as
our child with everything (config, pid, logs, temp files) in one temporary directory.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks import procs

# What a resolve answer looks like (one URL value), ~200 bytes.
ANSWER = json.dumps({
    "responseCode": 1, "handle": "88.118.8/SN000000001",
    "values": [{"index": 1, "type": "URL",
                "data": {"format": "string", "value": "https://ex.com/88.118.8/SN000000001"},
                "ttl": 86400, "timestamp": "2024-01-01T00:00:00Z"}]},
    separators=(",", ":"))


def config(port: int, workdir: Path) -> str:
    tmp = workdir / "tmp"
    return f"""\
worker_processes 2;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{ANSWER}';
        }}
    }}
}}
"""


def start(binary: str, workdir: Path, port: int) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(config(port, workdir))
    log = open(workdir / "stderr.log", "w")
    proc = procs.spawn([binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")],
                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        procs.wait_port(port, proc=proc)
    except RuntimeError as exc:
        procs.stop(proc)
        logs = [p.read_text()[-1500:] for p in (workdir / "stderr.log", workdir / "error.log")
                if p.exists()]
        raise RuntimeError(f"nginx did not start: {exc}\n" + "\n".join(logs)) from None
    return proc
