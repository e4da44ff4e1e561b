"""Child processes the benchmark starts, and their clean-up on any exit.

Every child is started in its own session (so a terminal's Ctrl-C reaches only us and we stop
the children in order) and registered here; ``stop_all`` runs from ``finally`` blocks, from
``atexit`` and on SIGTERM/SIGHUP. Children are stopped by their own process-group id only,
with the supervisor's one stop (``topology.supervisor.terminate``). The idsim host
processes are not started here but by ``topology.supervisor`` (see ``benchmarks.network``).
"""
from __future__ import annotations

import atexit
import random
import signal
import socket
import subprocess
import time

import psutil

from topology.supervisor import terminate

_children: list[subprocess.Popen] = []


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    kw.setdefault("text", True)
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    _children.append(proc)
    return proc


def forget(proc: subprocess.Popen) -> None:
    if proc in _children:
        _children.remove(proc)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL if it does not go in ``timeout``."""
    terminate([proc], timeout, group=True)
    forget(proc)


def stop_all() -> None:
    for proc in reversed(list(_children)):
        stop(proc)
    # children started by library code (loadtest.runner's Locust) are not in the registry
    terminate(psutil.Process().children(), 5)


def install_handlers() -> None:
    """Clean up at interpreter exit and turn SIGTERM/SIGHUP into a normal exit (finally runs)."""
    atexit.register(stop_all)

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
    # Ctrl-C: even when started from a shell that set SIGINT to "ignore" (background jobs)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def rss_anon_kib(pid: int) -> int | None:
    """Anonymous resident memory of a process (``RssAnon`` in /proc/PID/status), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids) -> float:
    """User + system CPU seconds (all threads) the processes ``pids`` have spent so far, with
    their children (nginx's workers); a process that is gone counts 0. Taken before and after
    a load run, the difference over the requests answered is the CPU per request."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                total += sum(p.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A loopback port that binds now, below the kernel's ephemeral range (32768-60999), so
    client sockets (wrk's, ours) can never be holding it when a server binds it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def log(msg: str) -> None:
    print(msg, flush=True)
