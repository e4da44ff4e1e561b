"""``idsim report RUN_A RUN_B``: two recorded runs side by side (``loadtest.records``).

First the inputs that differ (options, topology, configuration, fault plan, versions, commit:
every leaf of ``run.json`` but the start time and the command line), then the results: each
request row and the totals with A's value, B's and the ratio B/A, and each phase of a fault
plan likewise (phases matched by name). ``--json`` prints the same as one JSON document.
A ratio is None (``-``) where A is zero or either side lacks the value. A run named that is
missing or not a record is one line and exit 2.
"""
from __future__ import annotations

import json

from loadtest import records
from topology.cli_client import DEFAULT_DATA, UserError

IGNORED = ("time", "command")  # differ between any two runs
ROW_METRICS = ("requests", "failures", "rps", "p50", "p95", "p99")
PHASE_METRICS = ("requests", "success", "p50", "p99")
TOTAL_METRICS = ("seconds", "cpuPerProcess")


def flatten(doc, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay leaves."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    flat = {}
    for key, value in doc.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def input_changes(a: dict, b: dict) -> list[dict]:
    """Every input leaf whose value differs between the two records."""
    fa = flatten({k: v for k, v in a.items() if k not in IGNORED})
    fb = flatten({k: v for k, v in b.items() if k not in IGNORED})
    return [{"input": key, "a": fa.get(key), "b": fb.get(key)}
            for key in sorted(set(fa) | set(fb)) if fa.get(key) != fb.get(key)]


def ratio(a, b) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == 0:
        return None
    return b / a


def side_by_side(rows_a: list[dict], rows_b: list[dict], metrics: tuple) -> list[dict]:
    """Rows matched by name (A's order, then B's new ones), each metric as a, b, ratio."""
    by_a = {r["name"]: r for r in rows_a}
    by_b = {r["name"]: r for r in rows_b}
    names = list(by_a) + [n for n in by_b if n not in by_a]
    out = []
    for name in names:
        ra, rb = by_a.get(name, {}), by_b.get(name, {})
        out.append({"name": name, "metrics": {
            m: {"a": ra.get(m), "b": rb.get(m), "ratio": ratio(ra.get(m), rb.get(m))}
            for m in metrics}})
    return out


def compare(run_a, run_b) -> dict:
    """The comparison of two run directories (RecordError when either is unusable)."""
    ia, ib = records.read_inputs(run_a), records.read_inputs(run_b)
    ra, rb = records.read_results(run_a), records.read_results(run_b)
    rows = side_by_side([*ra.get("rows", []), ra["total"]], [*rb.get("rows", []), rb["total"]],
                        ROW_METRICS)
    rows.append({"name": "run", "metrics": {
        m: {"a": ra.get(m), "b": rb.get(m), "ratio": ratio(ra.get(m), rb.get(m))}
        for m in TOTAL_METRICS}})
    phases = None
    if ra.get("phases") or rb.get("phases"):
        phases = side_by_side(ra.get("phases") or [], rb.get("phases") or [], PHASE_METRICS)
    return {"a": str(run_a), "b": str(run_b), "inputs": input_changes(ia, ib), "rows": rows,
            "phases": phases,
            "failures": {"a": sum(f["occurrences"] for f in ra.get("failures") or []),
                         "b": sum(f["occurrences"] for f in rb.get("failures") or [])}}


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def _table(rows: list[dict], title: str) -> list[str]:
    width = max([len(title), *(len(r["name"]) for r in rows)]) + 2
    lines = [f"{title:<{width}}{'metric':<15}{'A':>12}{'B':>12}{'B/A':>9}"]
    for row in rows:
        for metric, v in row["metrics"].items():
            r = "-" if v["ratio"] is None else f"{v['ratio']:.2f}x"
            lines.append(f"{row['name']:<{width}}{metric:<15}{_num(v['a']):>12}"
                         f"{_num(v['b']):>12}{r:>9}")
    return lines


def text(doc: dict) -> str:
    lines = [f"A: {doc['a']}", f"B: {doc['b']}", ""]
    if doc["inputs"]:
        lines.append("inputs that differ:")
        lines += [f"  {c['input']}: {json.dumps(c['a'])} -> {json.dumps(c['b'])}"
                  for c in doc["inputs"]]
    else:
        lines.append("inputs: the same")
    lines += ["", *_table(doc["rows"], "request")]
    if doc["phases"] is not None:
        lines += ["", "per phase of the fault plan:", *_table(doc["phases"], "phase")]
    return "\n".join(lines)


def cmd_report(args) -> int:
    """Print two runs side by side."""
    try:
        run_a = records.find_run(args.run_a, args.data)
        run_b = records.find_run(args.run_b, args.data)
        doc = compare(run_a, run_b)
    except records.RecordError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(doc, indent=2) if args.json else text(doc))
    return 0


def add_report_command(sub) -> None:
    report = sub.add_parser("report", help="two recorded load runs side by side")
    report.add_argument("run_a", metavar="RUN_A",
                        help="the baseline run: its directory, or <time> under <data>/runs")
    report.add_argument("run_b", metavar="RUN_B", help="the run to compare with it")
    report.add_argument("--data", default=DEFAULT_DATA,
                        help="the data directory whose runs/ holds them (default idsim-data)")
    report.add_argument("--json", action="store_true", help="print the comparison as JSON")
    report.set_defaults(func=cmd_report)
