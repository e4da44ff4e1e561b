"""The one supervisor of the launcher's host processes: spawn, readiness events, logs,
restarts, stop. ``topology.cluster`` (``idsim up``) and ``benchmarks.network`` both use it.

A supervised process (``HostProcess``) speaks the host's JSON-lines protocol on stdout, one
object per line: ``{"event": "seeded"|"ready"|"error", ...}`` (other lines are ignored). Its
stderr goes to ``<log_dir>/<label>.log``: truncated at the first start, appended to on
restarts, and every exit or restart the supervisor sees is noted there too (timestamped
lines shaped as the host's own, ``topology.logs.line``).

Dying with the launcher: a host's stdin is a pipe whose write end only the launcher holds
(``subprocess`` closes inherited descriptors in other children). When the launcher exits,
even by SIGKILL, the kernel closes it and the host (``python -m topology.host --parent-pipe``)
reads EOF and stops itself. Unlike PR_SET_PDEATHSIG this works when the launcher is not the
direct parent, needs no ``preexec_fn`` in a threaded launcher, and does not fire when the
*thread* that forked ends (restarts are spawned from reader threads that then end).

Invariants:
- A process that exits or reports ``error`` before its first ``ready`` is a failed start:
  ``wait_ready`` raises with the tail of its log, and it is never restarted.
- After its first ``ready``, an exit the launcher did not ask for follows ``on_exit``:
  ``restart`` (after the ``Backoff`` delay; ``on_restart`` is called with the new pid in
  place), ``keep`` (left down) or ``stop`` (``failed`` is set; the owner stops everything).
- Once ``stop`` has begun nothing is restarted; ``stop`` SIGTERMs every live process, waits
  for them all up to one timeout, SIGKILLs the rest and reaps them (``terminate``).
- Callbacks (``on_event``, ``on_restart``, ``say``) run on the supervisor's reader threads;
  ``on_restart`` holds the supervisor's (re-entrant) lock, so ``stop`` cannot run between a
  restart and its callback. After ``stop`` returns no callback runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Callable, Iterable, Sequence

import psutil

from resolver.config import Config, HostConfig
from topology import logs


class OnExit(StrEnum):
    """What the supervisor does when a host process that was ready exits unasked."""
    RESTART = "restart"  # start it again after the back-off delay; the others keep serving
    KEEP = "keep"        # leave it down; the others keep serving
    STOP = "stop"        # set ``Supervisor.failed``: the owner stops the whole network


class Backoff:
    """Delays before restarting one process: ``restart_delay``, doubling on each restart up to
    ``restart_max_delay``, back to ``restart_delay`` once a run lasted ``restart_reset_after``
    seconds. Pure: time comes from the injected ``clock`` (seconds, as ``time.monotonic``)."""

    def __init__(self, config: HostConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._delay = config.restart_delay
        self._since: float | None = None

    def started(self) -> None:
        """The process (re)started now."""
        self._since = self.clock()

    def next_delay(self) -> float:
        """The process exited now: how long to wait before starting it again."""
        cfg = self.config
        if self._since is not None and self.clock() - self._since >= cfg.restart_reset_after:
            self._delay = cfg.restart_delay
        delay = self._delay
        self._delay = min(cfg.restart_max_delay, delay * 2)
        return delay


def host_command(topology: Path, data_dir: Path, nodes: Iterable[str], *flags: str) -> list[str]:
    """The command line of a host process serving ``nodes`` of the topology file, dying with
    its launcher (``--parent-pipe``)."""
    return [sys.executable, "-m", "topology.host", "--parent-pipe", "--topology", str(topology),
            "--data", str(data_dir), *flags, *map(str, nodes)]


@dataclass(eq=False)
class HostProcess:
    """One supervised process, across its restarts (``proc`` is the current one)."""
    label: str
    cmd: list[str]
    log: Path
    nodes: tuple[str, ...]
    backoff: Backoff
    proc: subprocess.Popen | None = None
    ready: bool = False            # the current run said ready
    was_ready: bool = False        # some run said ready: from then on exits follow on_exit
    failure: str | None = None     # why it failed to start
    restarts: int = 0
    exits: list[int] = field(default_factory=list)  # exit codes seen, oldest first

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def describe(self) -> str:
        return f"{self.label} ({' '.join(self.nodes)})" if self.nodes else self.label


class Supervisor:
    """Host processes started, watched and stopped together (see the module docstring)."""

    def __init__(self, log_dir: Path, *, on_exit: OnExit = OnExit.KEEP,
                 config: HostConfig | None = None,
                 on_event: Callable[[HostProcess, dict], None] | None = None,
                 on_restart: Callable[[HostProcess], None] | None = None,
                 say: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log_dir = Path(log_dir)
        self.on_exit = OnExit(on_exit)
        self.config = config or Config().host
        self.on_event = on_event
        self.on_restart = on_restart
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.clock = clock
        self.children: list[HostProcess] = []
        self.failed = threading.Event()   # a ready process exited under OnExit.STOP
        self._cond = threading.Condition(threading.RLock())  # on_restart runs holding it
        self._stopping = threading.Event()
        self._readers: list[threading.Thread] = []
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ start
    def spawn(self, label: str, cmd: list[str], nodes: Iterable[str] = ()) -> HostProcess:
        """Start ``cmd`` as a supervised process logging to ``<log_dir>/<label>.log``."""
        child = HostProcess(label, list(cmd), self.log_dir / f"{label}.log",
                            tuple(map(str, nodes)), Backoff(self.config, self.clock))
        with self._cond:
            if self._stopping.is_set():
                raise RuntimeError("the supervisor is stopping")
            child.log.write_text("")
            self._launch(child)
            self.children.append(child)
        return child

    def _launch(self, child: HostProcess, note: str = "") -> None:
        """Start a run of ``child`` (called with the lock held). Its stderr is opened for
        appending (O_APPEND), so the notes written beside it are never overwritten."""
        with open(child.log, "a") as err:
            if note:
                err.write(note + "\n")
                err.flush()
            proc = subprocess.Popen(child.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, text=True, start_new_session=True)
        child.proc, child.ready = proc, False
        child.backoff.started()
        reader = threading.Thread(target=self._read, args=(child, proc), daemon=True,
                                  name=f"supervise-{child.label}")
        self._readers.append(reader)
        reader.start()
        self._cond.notify_all()

    def wait_ready(self, *children: HostProcess, timeout: float | None = None) -> None:
        """Block until every one of ``children`` says ready; RuntimeError (with its log's
        tail) as soon as one fails to start, or when ``timeout`` (default: the config's
        ``ready_timeout``) passes."""
        timeout = self.config.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for child in children:
                    if child.failure is not None:
                        raise RuntimeError(f"host process {child.describe()} failed: "
                                           f"{child.failure}\n{child.log_tail()}")
                if all(child.ready for child in children):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    slow = [c.describe() for c in children if not c.ready]
                    raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(slow)}")
                self._cond.wait(left)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds (checked at every event, exit and restart, with
        the supervisor's state consistent); whether it did within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ watch
    def _read(self, child: HostProcess, proc: subprocess.Popen) -> None:
        """One run's reader thread: its events, then its exit."""
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not isinstance(ev, dict) or "event" not in ev:
                continue
            with self._cond:
                if ev["event"] == "ready":
                    back = child.was_ready
                    child.ready = child.was_ready = True
                    if back:
                        self._note(child, f"{child.describe()} is serving again "
                                          f"(pid {proc.pid}, restart {child.restarts})")
                elif ev["event"] == "error" and not child.was_ready:
                    child.failure = str(ev.get("message", "error"))
                self._cond.notify_all()
            if self.on_event:
                self.on_event(child, ev)
        self._exited(child, proc, proc.wait())

    def _exited(self, child: HostProcess, proc: subprocess.Popen, code: int) -> None:
        with self._cond:
            child.ready = False
            child.exits.append(code)
            self._cond.notify_all()
            if self._stopping.is_set():
                return
            if not child.was_ready:
                if child.failure is None:
                    child.failure = f"exit code {code}"
                return
            what = f"{child.describe()} pid {proc.pid} exited ({_exit_text(code)})"
            if self.on_exit is OnExit.KEEP:
                self._note(child, f"{what}; left down (on exit: keep)")
                return
            if self.on_exit is OnExit.STOP:
                self._note(child, f"{what}; stopping the network (on exit: stop)")
                self.failed.set()
                return
            delay = child.backoff.next_delay()
            self._note(child, f"{what}; restarting in {delay:.1f} s")
        if self._stopping.wait(delay):  # stop() during the back-off: no restart
            return
        with self._cond:
            if self._stopping.is_set():
                return
            child.restarts += 1
            self._launch(child, self._line(child, "INFO",
                                           f"restart {child.restarts} of {child.label}"))
            if self.on_restart:  # under the lock: stop() cannot slip in before it
                self.on_restart(child)
        self.say(f"{child.describe()} restarted as pid {child.pid}")

    def _note(self, child: HostProcess, msg: str) -> None:
        """Tell the console and the process's log."""
        with open(child.log, "a") as f:
            f.write(self._line(child, "WARNING", msg) + "\n")
        self.say(msg)

    @staticmethod
    def _line(child: HostProcess, level: str, msg: str) -> str:
        return logs.line(level, "idsim.supervisor", ",".join(child.nodes) or "-", msg,
                         time.time())

    # ------------------------------------------------------------------ stop
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    def stop(self, timeout: float | None = None) -> None:
        """Stop every process (SIGTERM, up to ``timeout`` — default the config's
        ``stop_timeout`` — then SIGKILL). Nothing restarts afterwards, and once it returns
        no callback runs any more (the reader threads have ended)."""
        with self._cond:
            self._stopping.set()
            procs = [c.proc for c in reversed(self.children) if c.proc is not None]
        terminate(procs, self.config.stop_timeout if timeout is None else timeout)
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(5.0)
        for proc in procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe:
                    pipe.close()


def terminate(procs: Sequence[subprocess.Popen | psutil.Process], timeout: float, *,
              group: bool = False) -> None:
    """The one stop: SIGTERM each live process (its process group with ``group``), wait for
    all of them up to ``timeout`` in all, SIGKILL those left, reap. Accepts our own children
    (``Popen``) and processes found by pid (``psutil.Process``)."""
    live = [p for p in procs if _running(p)]
    for p in live:
        _signal(p, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    for p in live:
        if not _wait(p, deadline - time.monotonic()):
            _signal(p, signal.SIGKILL, group)
            _wait(p, 5.0)


def _wait(p: subprocess.Popen | psutil.Process, timeout: float) -> bool:
    """Whether ``p`` ended within ``timeout``. Our children are reaped; a process found by
    pid is gone once it is a zombie (its parent, not us, reaps it)."""
    if isinstance(p, subprocess.Popen):
        try:
            p.wait(max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while _running(p):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _running(p: subprocess.Popen | psutil.Process) -> bool:
    if isinstance(p, subprocess.Popen):
        return p.poll() is None  # not yet reaped, so its pid (and group id) is still its own
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(p: subprocess.Popen | psutil.Process, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
    except (ProcessLookupError, PermissionError, psutil.Error):
        pass


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
