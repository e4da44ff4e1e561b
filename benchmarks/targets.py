"""What the benchmark suite judges: targets, verdicts and the per-round summaries they read.

Pure: no process is started or measured here, so tests feed made-up numbers. Every ratio is
taken within one round (both figures measured minutes apart at most, under the same load)
and the median over rounds is judged.

The reference of the issue-14 targets is the bare aiohttp+uvloop server
(``benchmarks.cpu_per_request.REFERENCE_SERVER``, one process answering a fixed record);
nginx stays the ceiling. CPU per request is the CPU time (user + system, all threads) of the
processes serving a scenario over its wrk run, divided by the requests wrk got answered.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

# the resolve scenarios, in the order of round 1 (later rounds rotate it)
RESOLVES = ["nginx", "aiohttp", "warm", "warm_nometrics", "cold", "secondary"]
MEMORY_PER_ANSWER = 1024  # bytes of anonymous memory a cached answer may cost


def median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


@dataclass(frozen=True)
class Target:
    name: str
    kind: str      # "min": value must be at least limit; "max": at most
    limit: float
    unit: str      # "×", "ids/s", "GiB", "ms", "B"
    reference: str = ""


@dataclass(frozen=True)
class Check:
    target: Target
    value: float | None
    passed: bool
    shortfall: float | None  # fraction of the limit missed (0 when passed; None if no value)

    @property
    def mark(self) -> str:
        return "PASS" if self.passed else "MISS"

    def describe(self) -> str:
        if self.value is None:
            return "MISS (not measured)"
        if self.passed:
            return "PASS"
        word = "short" if self.target.kind == "min" else "over"
        return f"MISS ({self.shortfall:.0%} {word})"

    def as_dict(self) -> dict:
        return {**asdict(self.target), "value": self.value, "passed": self.passed,
                "shortfall": self.shortfall, "result": self.describe()}


def check(target: Target, value: float | None) -> Check:
    """PASS when ``value`` meets the target; the shortfall is how far off, as a fraction of
    the limit (``min`` 0.20, value 0.15 → 0.25 short; ``max`` 1.5, value 1.8 → 0.2 over)."""
    if value is None:
        return Check(target, None, False, None)
    if target.kind == "min":
        ok = value >= target.limit
        miss = (target.limit - value) / target.limit
    elif target.kind == "max":
        ok = value <= target.limit
        miss = (value - target.limit) / target.limit
    else:
        raise ValueError(f"target kind must be 'min' or 'max', not {target.kind!r}")
    return Check(target, value, ok, 0.0 if ok else miss)


A = "bare aiohttp"
TARGETS = {
    # issue 14, against the bare aiohttp reference measured in the same rounds
    "warm_rate": Target("warm resolve via the recursive node vs bare aiohttp", "min", 1.6, "×", A),
    "warm_p99": Target("warm resolve via the recursive node, p99", "max", 10.0, "ms"),
    "warm_cpu": Target("warm resolve, CPU per request vs bare aiohttp", "max", 1.0, "×", A),
    "secondary_rate": Target("resolve directly at a secondary node vs bare aiohttp", "min", 1.3,
                             "×", A),
    "secondary_cpu": Target("resolve at a secondary node, CPU per request vs bare aiohttp",
                            "max", 1.15, "×", A),
    "cold": Target("cold resolve (answer cache off) vs warm resolve", "min", 0.75, "×", "warm"),
    "register": Target("durable single registrations at one node vs warm resolve", "min", 0.5,
                       "×", "warm"),
    "batch": Target("batch registration", "min", 100_000, "ids/s"),
    "metrics": Target("metrics cost: warm CPU per request, metrics on vs off", "max", 1.10, "×",
                      "metrics off"),
    "answer_memory": Target("anonymous memory per cached answer", "max", MEMORY_PER_ANSWER, "B"),
    # earlier issues: still held
    "warm_nginx": Target("warm resolve vs nginx", "min", 0.20, "×", "nginx"),
    "store": Target("resolve rate, large store vs small store", "min", 0.8, "×", "small store"),
    "memory": Target("cluster anonymous memory with the large store", "max", 1.5, "GiB"),
}


def summarise(rounds: list[dict]) -> dict:
    """Medians over rounds of each scenario's figures and of each per-round ratio."""
    def per_round(name: str, key: str, ref: str | None = None, ref_key: str | None = None):
        if not all(name in r for r in rounds):
            return None
        return median(ratio(r[name].get(key), r[ref].get(ref_key or key)) if ref
                      else r[name].get(key) for r in rounds)

    def errors(name: str, bad: str = "non2xx") -> tuple[int, int]:
        return (sum(r[name][bad] for r in rounds if name in r),
                sum(sum(r[name]["socket_errors"].values()) for r in rounds if name in r))

    out: dict = {}
    for name in RESOLVES:
        if not all(name in r for r in rounds):
            continue
        non2xx, sock = errors(name)
        out[name] = {"rps": per_round(name, "rps"), "p50_ms": per_round(name, "p50_ms"),
                     "p99_ms": per_round(name, "p99_ms"), "non2xx": non2xx,
                     "socket_errors": sock, "cpu_us": per_round(name, "cpu_us"),
                     "processes": rounds[0][name].get("processes"),
                     "ratio_to_nginx": per_round(name, "rps", "nginx"),
                     "ratio_to_aiohttp": per_round(name, "rps", "aiohttp"),
                     "cpu_to_aiohttp": per_round(name, "cpu_us", "aiohttp")}
    if "cold" in out:
        out["cold"]["ratio_to_warm"] = per_round("cold", "rps", "warm")
    if "warm_nometrics" in out:
        out["warm"]["cpu_to_nometrics"] = per_round("warm", "cpu_us", "warm_nometrics")
    for name in ("register", "register_one"):
        if all(name in r for r in rounds):
            non2xx, sock = errors(name, "other")
            out[name] = {"rate": per_round(name, "rate"), "rps": per_round(name, "rate"),
                         "p50_ms": per_round(name, "p50_ms"), "p99_ms": per_round(name, "p99_ms"),
                         "non2xx": non2xx, "socket_errors": sock,
                         "ratio_to_warm": per_round(name, "rate", "warm", "rps"),
                         "ratio_to_nginx": per_round(name, "rate", "nginx", "rps")}
    if all("batch" in r for r in rounds):
        out["batch"] = {"rate": per_round("batch", "rate"),
                        "failed": sum(r["batch"]["failed"] + r["batch"]["http_errors"]
                                      for r in rounds),
                        "batch_p50_ms": per_round("batch", "batch_p50_ms"),
                        "ratio_to_register": per_round("batch", "rate", "register_one", "rate")}
    if all("locust" in r for r in rounds):
        out["locust"] = {"rps": per_round("locust", "rps"), "cpu": per_round("locust", "cpu"),
                         "failures": sum(r["locust"]["failures"] for r in rounds),
                         "p50_ms": per_round("locust", "p50_ms"),
                         "p99_ms": per_round("locust", "p99_ms"),
                         "ratio_to_warm": per_round("locust", "rps", "warm", "rps")}
    return out


def evaluate(summary: dict, store: dict | None, cache_memory: dict | None) -> list[Check]:
    """Every target judged on the figure it names (None, a MISS, when it was not measured)."""
    def get(name: str, key: str) -> float | None:
        return (summary.get(name) or {}).get(key)

    T = TARGETS
    store = store or {}
    cluster = store.get("cluster_rss_anon_total_kib")
    return [
        check(T["warm_rate"], get("warm", "ratio_to_aiohttp")),
        check(T["warm_p99"], get("warm", "p99_ms")),
        check(T["warm_cpu"], get("warm", "cpu_to_aiohttp")),
        check(T["secondary_rate"], get("secondary", "ratio_to_aiohttp")),
        check(T["secondary_cpu"], get("secondary", "cpu_to_aiohttp")),
        check(T["cold"], get("cold", "ratio_to_warm")),
        check(T["register"], get("register_one", "ratio_to_warm")),
        check(T["batch"], get("batch", "rate")),
        check(T["metrics"], get("warm", "cpu_to_nometrics")),
        check(T["answer_memory"], (cache_memory or {}).get("per_entry_bytes")),
        check(T["warm_nginx"], get("warm", "ratio_to_nginx")),
        check(T["store"], store.get("ratio")),
        check(T["memory"], cluster / 2**20 if cluster else None),
    ]
