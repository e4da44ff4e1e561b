"""Run a Locust scenario headless and summarise it, with the load generator's own CPU use.

One Locust process tops out near 5k requests/s on a 2-core box, below what one node serves:
when Locust itself is saturated its numbers measure Locust, so the summary says so.

Each run keeps its files in its own directory (``idsim load``: ``<data>/runs/<time>/``):
Locust's CSV files (``run_stats.csv``, ``run_stats_history.csv``, ``run_failures.csv``,
``run_exceptions.csv``), its HTML report (``report.html``) and its log (``locust.log``).
While it runs, ``on_progress`` (if given) is called about twice a second with the seconds
elapsed and the totals so far (the ``Aggregated`` row Locust rewrites every second), or
None before the first one.

With a fault plan (``idsim load --faults``) the plan starts with Locust and its events are
applied on time by this process (``topology.faultplan.PlanRun``, on the wall clock; whatever
is in effect when the run ends or is interrupted is cleared); each Locust process records its
requests under ``requests/`` and the result has the plan's per-phase figures
(``loadtest.phases``).
"""
from __future__ import annotations

import csv
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import psutil

HERE = Path(__file__).resolve().parent
SCENARIOS = {
    "resolve": (HERE / "locustfile.py", ["Resolver"]),
    "register": (HERE / "locustfile.py", ["Registrant"]),
    "mixed": (HERE / "locustfile.py", ["Resolver", "Registrant", "Operator"]),
    "ramp": (HERE / "locustfile_ramp.py", ["Resolver", "Registrant", "Operator"]),
    "day": (HERE / "day_users.py", ["DayUser"]),  # a national day (loadtest.day)
}
SATURATED = 0.90  # share of one core per Locust process


@dataclass
class Row:
    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


@dataclass
class Result:
    rows: list[Row]
    total: Row
    cpu_per_process: float  # mean share of one core used by each Locust process
    processes: int
    seconds: float
    out: Path | None = None  # the run's CSV files, HTML report and log
    phases: list | None = None  # with a fault plan: loadtest.phases.PhaseRow per phase
    faults: list | None = None  # with a fault plan: the events run (faultplan.Done)
    open: object | None = None  # open model (rate=): the merged loadtest.openmodel.OpenStats

    @property
    def saturated(self) -> bool:
        return self.cpu_per_process >= SATURATED


def parse_stats(path: Path) -> tuple[list[Row], Row]:
    rows, total = [], None
    with path.open() as f:
        for rec in csv.DictReader(f):
            def pct(key: str) -> float:  # "N/A" without requests
                return float(rec[key]) if rec[key] not in ("", "N/A") else 0.0
            row = Row(rec["Name"], int(rec["Request Count"]), int(rec["Failure Count"]),
                      float(rec["Requests/s"]), pct("50%"), pct("95%"), pct("99%"))
            if rec["Name"] == "Aggregated":
                total = row
            else:
                rows.append(row)
    if total is None:
        raise RuntimeError(f"no Aggregated row in {path}")
    return rows, total


def run_dir(data_dir: str | Path) -> Path:
    """A new directory for one run: ``<data>/runs/<local time>`` (``-2``… if taken)."""
    base = Path(data_dir) / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 100):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory next to {base}")


def totals(path: Path) -> Row | None:
    """The Aggregated row of a stats CSV Locust may be rewriting, or None."""
    try:
        return parse_stats(path)[1]
    except (OSError, RuntimeError, ValueError, KeyError):
        return None


def run(scenario: str, host: str, data_dir: str, *, seconds: float, users: int = 50,
        spawn_rate: float = 50, processes: int = 1, extra: list[str] | None = None,
        out: Path | None = None,
        on_progress: Callable[[float, Row | None], None] | None = None,
        plan=None, applier=None, on_fault: Callable | None = None, rate=None) -> Result:
    """Run ``scenario`` against ``host``; its files go to ``out`` (default: a new
    ``run_dir(data_dir)``). With ``plan`` (a ``faultplan.Plan``) its faults are set through
    ``applier`` while Locust runs, ``on_fault`` is told of each event (``faultplan.Done``).
    With ``rate`` (an ``openmodel.Steps``) the open model runs instead: ``users`` resolvers
    start on its schedule (``loadtest.openusers``), for the shape's duration."""
    locustfile, classes = SCENARIOS[scenario]
    if rate is not None:  # open model (issue 13): the schedule sets when requests start
        from loadtest.openmodel import LEAD
        locustfile, classes = HERE / "locustfile_open.py", ["OpenResolver"]
        seconds, spawn_rate = rate.duration + LEAD + 1, max(spawn_rate, users * 20)
    out = Path(out) if out is not None else run_dir(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
           "--host", host, "-t", f"{int(seconds)}s", "--csv", str(out / "run"),
           "--csv-full-history", "--html", str(out / "report.html"), "--only-summary",
           "--stop-timeout", "5", "--idsim-data", data_dir, "--loglevel", "WARNING"]
    if scenario != "ramp":
        cmd += ["-u", str(users), "-r", str(spawn_rate)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    if plan is not None:
        (out / "requests").mkdir(exist_ok=True)
        cmd += ["--idsim-request-log", str(out / "requests")]
    if rate is not None:
        cmd += ["--idsim-rate", rate.spec(), "--idsim-shares", str(max(1, processes)),
                "--idsim-open-out", str(out / "open")]
    cmd += (extra or []) + classes
    t0 = time.monotonic()
    with open(out / "locust.log", "w") as log_file:
        proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_file)
    faults = None
    if plan is not None:
        from topology.faultplan import PlanRun
        faults = PlanRun(plan, applier, on_fault)
        faults.start(time.time())
    cpu_seen: dict[int, float] = {}
    try:
        while proc.poll() is None:
            try:
                for p in [proc, *proc.children(recursive=True)]:
                    t = p.cpu_times()
                    cpu_seen[p.pid] = t.user + t.system
            except psutil.Error:
                pass
            if on_progress is not None:
                on_progress(time.monotonic() - t0, totals(out / "run_stats.csv"))
            wait = 0.5
            if faults is not None:
                faults.run_due(time.time())
                if (due := faults.next_due()) is not None:
                    wait = min(wait, max(0.0, due - time.time()))
            time.sleep(wait)
    finally:
        if faults is not None:
            faults.stop(time.time())  # whatever is still in effect, on Ctrl-C too
    elapsed = time.monotonic() - t0
    stats = out / "run_stats.csv"
    if not stats.exists():
        log = (out / "locust.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"locust wrote no statistics (exit {proc.returncode}):\n{log}")
    rows, total = parse_stats(stats)
    workers = max(1, processes)
    result = Result(rows, total, sum(cpu_seen.values()) / elapsed / workers, workers, elapsed,
                    out)
    if faults is not None:
        from loadtest import phases
        from topology.faultplan import phases as plan_phases
        result.phases = phases.summarise(phases.read(out / "requests"), plan_phases(plan),
                                         faults.t0)
        result.faults = faults.done
    if rate is not None:
        result.open = read_open(out / "open")
        result.open.duration = rate.duration
    return result


def read_open(directory: Path):
    """The open model's statistics of every Locust process, merged (``OpenStats``)."""
    import json
    from loadtest.openmodel import OpenStats
    merged = OpenStats()
    for path in sorted(Path(directory).glob("open-*.json")):
        merged.add(OpenStats.from_dict(json.loads(path.read_text())))
    return merged


def table(result: Result) -> str:
    lines = [f"{'request':<28}{'count':>9}{'fail':>7}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for r in [*result.rows, result.total]:
        lines.append(f"{r.name[:27]:<28}{r.requests:>9}{r.failures:>7}{r.rps:>10.1f}"
                     f"{r.p50:>9.0f}{r.p95:>9.0f}{r.p99:>9.0f}")
    lines.append(f"Locust CPU: {result.cpu_per_process:.0%} of a core per process "
                 f"({result.processes} process{'es' if result.processes > 1 else ''})")
    if result.saturated:
        lines.append("WARNING: Locust itself is saturated: these rates measure the load generator, "
                     "not idsim. Add --processes or use the wrk benchmarks for capacity.")
    if result.open is not None:
        lines += ["", result.open.table()]
    if result.phases is not None:
        from loadtest.phases import table as phase_table
        lines += ["", "per phase of the fault plan (s from the start of the run; a request "
                      "counts in the phase it started in):",
                  phase_table(result.phases, result.seconds)]
    return "\n".join(lines)
