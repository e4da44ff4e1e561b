"""Run wrk and read its report.

``parse`` is pure (text in, ``WrkResult`` out) so it can be tested without wrk; ``run`` starts
wrk bounded in time (``-d`` plus a hard subprocess timeout) against a loopback URL.

Lua scripts may print extra lines ``IDSIM key=value ...`` from their ``done`` hook (e.g. how
many answers were 201); those land in ``WrkResult.extra``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from benchmarks import procs

_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_METRIC = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}

_TIME = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")
_COUNT = re.compile(r"^([0-9.]+)([kKMG]?)$")
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([0-9.]+(?:us|ms|s|m|h)), ([0-9.]+\w*) read")
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([0-9.]+(?:us|ms|s|m|h))\s*$")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_RPS = re.compile(r"^Requests/sec:\s*([0-9.]+)", re.M)
_LATENCY = re.compile(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)")
_THREAD_RPS = re.compile(r"^\s*Req/Sec\s+(\S+)\s+(\S+)\s+(\S+)")
_EXTRA = re.compile(r"^IDSIM\s+(.*)$", re.M)


class WrkError(RuntimeError):
    pass


def to_ms(text: str) -> float:
    """A wrk duration (``333.00us``, ``1.31ms``, ``2.05s``, ``1.00m``) in milliseconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def to_count(text: str) -> float:
    """A wrk count with an optional metric suffix (``55.87k``, ``1.20M``, ``812``)."""
    m = _COUNT.match(text.strip())
    if not m:
        raise ValueError(f"not a wrk count: {text!r}")
    return float(m.group(1)) * _METRIC[m.group(2)]


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    percentiles_ms: dict[float, float]
    avg_ms: float | None = None
    max_ms: float | None = None
    thread_rps: float | None = None      # mean requests/s of one wrk thread ("Req/Sec 31.30k")
    thread_rps_max: float | None = None
    non2xx: int = 0          # wrk counts answers with status > 399 here
    socket_errors: dict[str, int] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def p50(self) -> float | None:
        return self.percentiles_ms.get(50.0)

    @property
    def p99(self) -> float | None:
        return self.percentiles_ms.get(99.0)

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict:
        return {"requests": self.requests, "seconds": self.seconds, "rps": self.rps,
                "p50_ms": self.p50, "p99_ms": self.p99, "avg_ms": self.avg_ms,
                "max_ms": self.max_ms, "thread_rps": self.thread_rps,
                "thread_rps_max": self.thread_rps_max, "percentiles_ms": {str(k): v for k, v in
                                                          self.percentiles_ms.items()},
                "non2xx": self.non2xx, "socket_errors": self.socket_errors, "extra": self.extra}


def parse(text: str) -> WrkResult:
    """Read wrk's report (run with ``--latency``). Raises WrkError if it has no summary."""
    req = next((m for m in map(_REQUESTS.match, text.splitlines()) if m), None)
    rps = _RPS.search(text)
    if req is None or rps is None:
        raise WrkError("wrk printed no summary:\n" + text[-1500:])
    percentiles = {}
    for line in text.splitlines():
        m = _PERCENTILE.match(line)
        if m:
            percentiles[float(m.group(1))] = to_ms(m.group(2))
    avg = mx = t_avg = t_max = None
    for line in text.splitlines():
        m = _LATENCY.match(line)
        if m and avg is None:
            avg, mx = to_ms(m.group(1)), to_ms(m.group(3))
        m = _THREAD_RPS.match(line)
        if m and t_avg is None:
            t_avg, t_max = to_count(m.group(1)), to_count(m.group(3))
    non2xx = _NON2XX.search(text)
    sock = _SOCKET.search(text)
    socket_errors = ({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"),
                                                 sock.groups())} if sock else {})
    extra: dict[str, str] = {}
    for m in _EXTRA.finditer(text):
        for pair in m.group(1).split():
            k, _, v = pair.partition("=")
            extra[k] = v
    return WrkResult(requests=int(req.group(1)), seconds=to_ms(req.group(2)) / 1000.0,
                     rps=float(rps.group(1)), percentiles_ms=percentiles, avg_ms=avg, max_ms=mx,
                     thread_rps=t_avg, thread_rps_max=t_max,
                     non2xx=int(non2xx.group(1)) if non2xx else 0, socket_errors=socket_errors,
                     extra=extra)


def binary() -> str | None:
    return shutil.which("wrk")


def run(url: str, seconds: float, *, script: str | None = None, env: dict | None = None,
        threads: int = 2, connections: int = 64, timeout_s: int = 5) -> WrkResult:
    """``wrk -t2 -c64 -d<seconds>s --latency [-s script] url``, killed if it overruns."""
    exe = binary()
    if exe is None:
        raise WrkError("wrk is not installed")
    cmd = [exe, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           f"--timeout={timeout_s}s", "--latency"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    proc = procs.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env={**os.environ, **(env or {})})
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk overran its {seconds} s run: {' '.join(cmd)}") from None
    finally:
        procs.stop(proc)  # on a timeout or Ctrl-C; once it has exited, only forgets it
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {out[-1500:]}")
    return parse(out)
