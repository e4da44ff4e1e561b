"""Run records: what a load run was asked to do and what it measured, kept in its directory.

Every ``idsim load`` run (and ``idsim capacity``, through ``write_inputs``/``write_results``)
keeps, in ``<data>/runs/<time>/`` next to Locust's CSV files and HTML report:

- ``run.json``: its inputs: ``kind`` (load, capacity), ``options`` (the replayed command-line
  options: scenario, time, users, spawn rate, processes, and whichever of seed, rate,
  rate shape and compress the command has), the topology (a copy, ``topology.toml``, and
  ``topology.digest``: a digest of the network without its addresses), the configuration
  (a copy, ``config.toml``, and a digest of its values), the fault plan (a copy,
  ``faults.toml``), the versions of idsim, Python and the libraries that shape the load, the git commit of the
  source when it is a checkout (None otherwise), the command line and the start time;
- ``results.json``: the summary table's rows and totals, Locust's failures, the per-phase
  rows and the fault events when a plan ran, the load generator's CPU;
- ``plot.png``: requests/s, p99 and failures/s over the run, from Locust's stats history.

Invariants: a record is written before the load starts (an interrupted run still says what
it was), its inputs are enough to replay it (``idsim load --again``: ``options`` and the
copied plan), and two runs of the same inputs differ in ``run.json`` only by ``time`` and
``command``. Addresses (ports) are not part of the topology digest: a network replayed on
other ports is the same network.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

RUN_FILE, RESULTS_FILE, PLOT_FILE = "run.json", "results.json", "plot.png"
# options an idsim load records and --again restores (argparse dest names; absent ones skipped)
REPLAYED = ("scenario", "time", "users", "spawn_rate", "processes", "seed", "rate",
            "rate_shape", "compress", "share")
LIBRARIES = ("idsim", "locust", "aiohttp", "msgpack", "lmdb", "hdrhistogram", "uvloop")
SOURCE = Path(__file__).resolve().parent.parent


class RecordError(Exception):
    """A run directory that is missing or not a run record; one line saying which."""


# ------------------------------------------------------------------ inputs

def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def topology_digest(path: Path) -> str:
    """sha256 of the topology in ``path`` re-addressed on fixed ports: the network's shape
    (nodes, prefixes, enterprises, identifiers, cities), not where it listens."""
    from topology.tomlio import load, save
    topo = load(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "topology.toml"
        save(topo.with_ports(8000), out)
        return sha256(out)


def config_digest(path: Path) -> str:
    """sha256 of a config file's values (not its comments, which name where each came from)."""
    from resolver.config import read_toml
    return hashlib.sha256(json.dumps(read_toml(path), sort_keys=True).encode()).hexdigest()


def recorded_config(run: Path):
    """The configuration a run's cluster had (its copy), or None when it has none."""
    path = Path(run) / "config.toml"
    if not path.exists():
        return None
    from resolver.config import config_sections, layered, read_toml
    return layered([(str(path), config_sections(read_toml(path)))])


def versions() -> dict:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit(source: Path = SOURCE) -> str | None:
    """``git rev-parse HEAD`` of the source tree, with ``+dirty`` when it has uncommitted
    changes; None when it is not a git checkout or git is missing."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=source, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def options_of(args) -> dict:
    """The replayed options of a parsed command line (``REPLAYED`` names it has)."""
    return {name: getattr(args, name) for name in REPLAYED if hasattr(args, name)}


def plan_source(path: str | Path) -> str:
    """Where a plan came from: the file given, or for a replay (a run's ``faults.toml``) the
    file the original run was given, so a replay's inputs equal the original's."""
    run = Path(path).parent
    if Path(path).name == "faults.toml" and (run / RUN_FILE).is_file():
        try:
            return json.loads((run / RUN_FILE).read_text())["faults"]["source"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return str(path)


def write_inputs(out: Path, data_dir: str | Path, *, kind: str, options: dict,
                 faults: str | Path | None = None, host: str | None = None,
                 argv: list[str] | None = None) -> dict:
    """Write ``out/run.json`` (and copy the topology, config and plan beside it); the record."""
    out, data = Path(out), Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "options": dict(options), "host": host, "topology": None, "config": None,
              "faults": None, "versions": versions(), "git": git_commit(),
              "command": ["idsim", *sys.argv[1:]] if argv is None else list(argv)}
    if (data / "topology.toml").exists():
        shutil.copyfile(data / "topology.toml", out / "topology.toml")
        from topology.tomlio import load
        record["topology"] = {"file": "topology.toml", "name": load(out / "topology.toml").name,
                              "digest": topology_digest(out / "topology.toml")}
    if (data / "config.toml").exists():
        shutil.copyfile(data / "config.toml", out / "config.toml")
        record["config"] = {"file": "config.toml", "digest": config_digest(out / "config.toml")}
    if faults:
        shutil.copyfile(faults, out / "faults.toml")
        record["faults"] = {"file": "faults.toml", "source": plan_source(faults),
                            "sha256": sha256(out / "faults.toml")}
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


# ------------------------------------------------------------------ results

def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def failures(out: Path) -> list[dict]:
    """Locust's ``run_failures.csv``: method, name, error, occurrences."""
    path = Path(out) / "run_failures.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [{"method": r.get("Method"), "name": r.get("Name"), "error": r.get("Error"),
                 "occurrences": int(r.get("Occurrences") or 0)} for r in csv.DictReader(f)]


def results_of(result) -> dict:
    """A ``loadtest.runner.Result`` as JSON-ready data."""
    doc = {"rows": [asdict(r) for r in result.rows], "total": asdict(result.total),
           "seconds": result.seconds, "cpuPerProcess": result.cpu_per_process,
           "processes": result.processes, "saturated": result.saturated,
           "failures": failures(result.out) if result.out else [], "phases": None,
           "faults": None}
    if result.phases is not None:
        doc["phases"] = [{**{k: _finite(v) for k, v in asdict(p).items()},
                          "success": p.success} for p in result.phases]
    if result.faults is not None:
        doc["faults"] = [{"t": d.t, "event": d.event.describe(), "error": d.error}
                         for d in result.faults]
    return doc


def write_results(out: Path, results: dict) -> Path:
    """Write ``out/results.json``; its path."""
    path = Path(out) / RESULTS_FILE
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def plot(out: Path) -> Path | None:
    """``out/plot.png``: requests/s, p99 (ms) and failures/s over the run, from Locust's
    ``run_stats_history.csv`` (its Aggregated rows); None without history."""
    history = Path(out) / "run_stats_history.csv"
    if not history.exists():
        return None
    t, rps, p99, fails = [], [], [], []
    with history.open() as f:
        for rec in csv.DictReader(f):
            if rec.get("Name") != "Aggregated":
                continue
            try:
                stamp = float(rec["Timestamp"])
                row = (float(rec["Requests/s"]), float(rec["Failures/s"]))
                tail = float(rec["99%"]) if rec["99%"] not in ("", "N/A") else math.nan
            except (KeyError, ValueError):
                continue
            t.append(stamp)
            rps.append(row[0])
            fails.append(row[1])
            p99.append(tail)
    if not t:
        return None
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    x = [s - t[0] for s in t]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.plot(x, rps, label="requests/s")
    top.plot(x, fails, label="failures/s", color="tab:red")
    top.set_ylabel("per second")
    top.legend(loc="upper left")
    bottom.plot(x, p99, color="tab:purple")
    bottom.set_ylabel("p99 ms")
    bottom.set_xlabel("s from the start")
    fig.suptitle(f"idsim load {Path(out).name}")
    fig.tight_layout()
    path = Path(out) / PLOT_FILE
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def record_result(out: Path, result) -> dict:
    """After ``runner.run``: ``results.json`` and ``plot.png``; the results."""
    doc = results_of(result)
    write_results(out, doc)
    plot(out)
    return doc


# ------------------------------------------------------------------ reading runs

def find_run(text: str | Path, data_dir: str | Path | None = None) -> Path:
    """The run directory ``text`` names: as given, else under ``<data>``, else under
    ``<data>/runs``. RecordError when there is none or it holds no ``run.json``."""
    path = Path(text)
    tried = [path]
    if data_dir is not None and not path.is_absolute():
        tried += [Path(data_dir) / path, Path(data_dir) / "runs" / path]
    found = next((p for p in tried if p.is_dir()), None)
    if found is None:
        raise RecordError(f"no run directory {text} (looked in {', '.join(map(str, tried))})")
    if not (found / RUN_FILE).is_file():
        raise RecordError(f"{found} is not a run record: it has no {RUN_FILE}")
    return found


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path} is not a run record (not a JSON object)")
    return doc


def read_inputs(run: Path) -> dict:
    return read_json(Path(run) / RUN_FILE)


def read_results(run: Path) -> dict:
    path = Path(run) / RESULTS_FILE
    if not path.exists():
        raise RecordError(f"{run} has no {RESULTS_FILE}: the run did not finish")
    return read_json(path)


def replay(args, run: Path) -> dict:
    """``--again``: set ``args``'s replayed options and ``--faults`` from the record of
    ``run``; the record. Options the record lacks keep the command line's values."""
    record = read_inputs(run)
    if record.get("kind", "load") != "load":
        raise RecordError(f"{run} is a {record['kind']} run, not an idsim load run")
    for name, value in (record.get("options") or {}).items():
        if name in REPLAYED and hasattr(args, name):
            setattr(args, name, value)
    faults = record.get("faults")
    args.faults = str(Path(run) / faults["file"]) if faults else None
    return record


def recorded_topology(run: Path):
    """The topology a run ran against (its copy), or None when it has none."""
    path = Path(run) / "topology.toml"
    if not path.exists():
        return None
    from topology.tomlio import load
    return load(path)


def check_same_network(record: dict, data_dir: str | Path) -> list[str]:
    """Before a replay: RecordError when the cluster in ``data_dir`` is another network than
    the recorded one (its results would not be comparable); warnings (a changed
    configuration: replaying the same load against a new configuration is a use of replay)."""
    data, warnings = Path(data_dir), []
    topo = record.get("topology")
    if topo and (data / "topology.toml").exists():
        now = topology_digest(data / "topology.toml")
        if now != topo["digest"]:
            raise RecordError(f"the cluster in {data} is not the network this run ran against "
                              f"(topology digest {now[:12]} != {topo['digest'][:12]}): stop it "
                              f"(idsim down) and the replay starts the recorded topology")
    conf = record.get("config")
    if conf and (data / "config.toml").exists() and \
            config_digest(data / "config.toml") != conf["digest"]:
        warnings.append(f"the configuration in {data / 'config.toml'} differs from the "
                        "recorded one (config.toml in the run): the load is replayed as recorded")
    return warnings
