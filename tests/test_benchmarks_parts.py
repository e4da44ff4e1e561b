"""The pure parts of the benchmark suite: reading wrk's report and judging targets.

No wrk, nginx or idsim process is started here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import report, wrk  # noqa: E402
from benchmarks.report import Target  # noqa: E402

FAST = """\
Running 1s test @ http://127.0.0.1:48223/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.49ms    2.19ms  15.83ms   87.91%
    Req/Sec    31.30k     4.41k   39.33k    75.00%
  Latency Distribution
     50%  455.00us
     75%    1.97ms
     90%    4.09ms
     99%   10.61ms
  63096 requests in 1.02s, 21.72MB read
Requests/sec:  61717.48
Transfer/sec:     21.25MB
"""

SLOW_WITH_ERRORS = """\
Running 10s test @ http://127.0.0.1:20003
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.40ms  301.22ms    2.00s    70.10%
    Req/Sec    38.12     12.70    80.00     66.00%
  Latency Distribution
     50%  790.11ms
     75%     1.02s
     90%     1.31s
     99%     1.87s
  761 requests in 10.10s, 190.25KB read
  Socket errors: connect 0, read 2, write 0, timeout 7
  Non-2xx or 3xx responses: 12
Requests/sec:     75.35
Transfer/sec:     18.84KB
IDSIM created=749 other=12 first_other=409
"""


def test_parse_fast_run_in_microseconds_and_k():
    r = wrk.parse(FAST)
    assert r.requests == 63096
    assert r.seconds == pytest.approx(1.02)
    assert r.rps == pytest.approx(61717.48)
    assert r.p50 == pytest.approx(0.455)          # 455.00us
    assert r.percentiles_ms[75.0] == pytest.approx(1.97)
    assert r.p99 == pytest.approx(10.61)
    assert r.avg_ms == pytest.approx(1.49) and r.max_ms == pytest.approx(15.83)
    assert r.thread_rps == pytest.approx(31_300)  # 31.30k
    assert r.thread_rps_max == pytest.approx(39_330)
    assert r.non2xx == 0 and r.socket_errors == {} and r.errors == 0
    assert r.extra == {}


def test_parse_seconds_errors_and_script_lines():
    r = wrk.parse(SLOW_WITH_ERRORS)
    assert r.seconds == pytest.approx(10.10)
    assert r.p50 == pytest.approx(790.11)
    assert r.percentiles_ms[75.0] == pytest.approx(1020.0)  # 1.02s
    assert r.p99 == pytest.approx(1870.0)
    assert r.max_ms == pytest.approx(2000.0)
    assert r.thread_rps == pytest.approx(38.12)             # no suffix
    assert r.non2xx == 12
    assert r.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 7}
    assert r.errors == 21
    assert r.extra == {"created": "749", "other": "12", "first_other": "409"}
    d = r.as_dict()
    assert d["p99_ms"] == pytest.approx(1870.0) and d["non2xx"] == 12


@pytest.mark.parametrize("text,ms", [("333.00us", 0.333), ("1.31ms", 1.31), ("2.05s", 2050.0),
                                     ("1.00m", 60_000.0), ("7us", 0.007)])
def test_durations(text, ms):
    assert wrk.to_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text,n", [("55.87k", 55_870), ("1.20M", 1_200_000), ("812", 812),
                                    ("0.50G", 5e8), ("3.5K", 3500)])
def test_counts(text, n):
    assert wrk.to_count(text) == pytest.approx(n)


@pytest.mark.parametrize("bad", ["12 parsecs", "ms", "", "1.2x"])
def test_bad_units_are_rejected(bad):
    with pytest.raises(ValueError):
        wrk.to_ms(bad)


def test_no_summary_is_an_error():
    with pytest.raises(wrk.WrkError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


# ------------------------------------------------------------------ targets

AT_LEAST = Target("warm vs nginx", "min", 0.20, "×", "nginx")
AT_MOST = Target("memory", "max", 1.5, "GiB")


def test_min_target_pass_and_exact_limit():
    assert report.check(AT_LEAST, 0.31).passed
    c = report.check(AT_LEAST, 0.20)
    assert c.passed and c.shortfall == 0 and c.describe() == "PASS"


def test_min_target_miss_reports_shortfall():
    c = report.check(AT_LEAST, 0.15)
    assert not c.passed and c.mark == "MISS"
    assert c.shortfall == pytest.approx(0.25)
    assert c.describe() == "MISS (25% short)"


def test_max_target():
    assert report.check(AT_MOST, 1.2).passed
    c = report.check(AT_MOST, 1.8)
    assert not c.passed and c.shortfall == pytest.approx(0.2)
    assert c.describe() == "MISS (20% over)"


def test_missing_value_is_a_miss():
    c = report.check(AT_LEAST, None)
    assert not c.passed and c.shortfall is None and "not measured" in c.describe()
    assert c.as_dict()["passed"] is False


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError):
        report.check(Target("x", "between", 1, "×"), 1.0)


def test_target_labels():
    assert report.fmt_target(AT_LEAST) == "≥ 0.2× nginx"
    assert report.fmt_target(AT_MOST) == "≤ 1.50 GiB"
    assert report.fmt_target(report.TARGETS["batch"]) == "≥ 100,000 ids/s"
    assert report.fmt_target(report.TARGETS["warm_rate"]) == "≥ 1.6× bare aiohttp"
    assert report.fmt_target(report.TARGETS["warm_p99"]) == "≤ 10.00 ms"
    assert report.fmt_target(report.TARGETS["answer_memory"]) == "≤ 1,024 B"


def test_median_and_ratio():
    assert report.median([3, None, 1, 2]) == 2
    assert report.median([]) is None
    assert report.ratio(5.0, 10.0) == 0.5
    assert report.ratio(5.0, 0) is None and report.ratio(None, 3.0) is None


def test_every_target_judges_its_own_figure():
    """Each target the suite checks, on a value that passes and one that misses."""
    t = report.TARGETS
    cases = {"warm_rate": (1.7, 1.5), "warm_p99": (9.0, 11.0), "warm_cpu": (0.95, 1.1),
             "secondary_rate": (1.3, 1.2), "secondary_cpu": (1.1, 1.2), "cold": (0.8, 0.7),
             "register": (0.5, 0.3), "batch": (120_000, 40_000), "metrics": (1.05, 1.2),
             "answer_memory": (900, 1100), "warm_nginx": (0.25, 0.1), "store": (0.9, 0.7),
             "memory": (1.0, 2.0)}
    assert set(cases) == set(t)
    for key, (good, bad) in cases.items():
        assert report.check(t[key], good).passed, key
        assert not report.check(t[key], bad).passed, key


# ------------------------------------------------------------------ verdicts from made-up rounds

def wrk_row(rps: float, cpu_us: float, p99: float = 4.0, processes: int = 2) -> dict:
    return {"rps": rps, "p50_ms": 1.0, "p99_ms": p99, "cpu_us": cpu_us, "non2xx": 0,
            "socket_errors": {}, "requests": int(rps * 3), "processes": processes}


def made_up_round(scale: float = 1.0) -> dict:
    """One round: every figure scales with the machine's mood (``scale``); ratios do not."""
    reg = {"rate": 6_000 * scale, "p50_ms": 5.0, "p99_ms": 9.0, "other": 0, "socket_errors": {}}
    return {"nginx": wrk_row(60_000 * scale, 10.0, processes=1),
            "aiohttp": wrk_row(10_000 * scale, 40.0, processes=1),
            "warm": wrk_row(17_000 * scale, 38.0, p99=12.0),
            "warm_nometrics": wrk_row(18_000 * scale, 36.0),
            "cold": wrk_row(11_900 * scale, 70.0),
            "secondary": wrk_row(12_000 * scale, 50.0),
            "register_one": dict(reg), "register": dict(reg, rate=7_000 * scale),
            "batch": {"rate": 90_000 * scale, "failed": 0, "http_errors": 0, "batch_p50_ms": 40.0},
            "locust": {"rps": 5_000 * scale, "cpu": 0.9, "failures": 0, "p50_ms": 3.0,
                       "p99_ms": 9.0}}


def test_the_summary_takes_ratios_within_each_round_then_the_median():
    from benchmarks import targets
    rounds = [made_up_round(s) for s in (0.5, 1.0, 3.0)]  # a noisy machine
    summ = targets.summarise(rounds)
    assert summ["warm"]["rps"] == 17_000
    assert summ["warm"]["ratio_to_aiohttp"] == pytest.approx(1.7)
    assert summ["warm"]["cpu_to_aiohttp"] == pytest.approx(38 / 40)
    assert summ["warm"]["cpu_to_nometrics"] == pytest.approx(38 / 36)
    assert summ["secondary"]["ratio_to_aiohttp"] == pytest.approx(1.2)
    assert summ["cold"]["ratio_to_warm"] == pytest.approx(0.7)
    assert summ["register_one"]["ratio_to_warm"] == pytest.approx(6 / 17)
    assert summ["aiohttp"]["processes"] == 1 and summ["warm"]["processes"] == 2


def test_every_issue_14_target_is_judged_against_bare_aiohttp_and_says_by_how_much():
    from benchmarks import targets
    summ = targets.summarise([made_up_round()])
    store = {"ratio": 0.9, "cluster_rss_anon_total_kib": 2**20}
    checks = {c.target.name: c for c in targets.evaluate(summ, store, {"per_entry_bytes": 1280})}
    t = targets.TARGETS
    assert len(checks) == len(t)
    verdicts = {key: checks[t[key].name].describe() for key in t}
    assert verdicts == {
        "warm_rate": "PASS",                    # 1.7× ≥ 1.6×
        "warm_p99": "MISS (20% over)",          # 12 ms against 10 ms
        "warm_cpu": "PASS",                     # 0.95×
        "secondary_rate": "MISS (8% short)",    # 1.2× against 1.3×
        "secondary_cpu": "MISS (9% over)",      # 1.25× against 1.15×
        "cold": "MISS (7% short)",              # 0.70× against 0.75×
        "register": "MISS (29% short)",         # 6,000 / 17,000 = 0.35× against 0.5×
        "batch": "MISS (10% short)",            # 90,000 ids/s against 100,000
        "metrics": "PASS",                      # 38 / 36 = 1.056×
        "answer_memory": "MISS (25% over)",     # 1,280 B against 1,024 B
        "warm_nginx": "PASS", "store": "PASS", "memory": "PASS"}


def test_a_figure_not_measured_is_a_miss_not_a_pass():
    from benchmarks import targets
    rounds = [made_up_round()]
    del rounds[0]["warm_nometrics"], rounds[0]["batch"]
    checks = {c.target.name: c for c in targets.evaluate(targets.summarise(rounds), None, None)}
    for key in ("metrics", "batch", "answer_memory", "store", "memory"):
        assert checks[targets.TARGETS[key].name].describe() == "MISS (not measured)", key
    assert checks[targets.TARGETS["warm_rate"].name].passed


def test_the_results_table_shows_each_target_with_bare_aiohttp_and_its_verdict():
    from benchmarks import targets
    summ = targets.summarise([made_up_round()])
    res = {"resolve": {"summary": summ},
           "store_size": {"sizes": [100, 1000], "ratio": 0.9, "cluster_rss_anon_total_kib": 2**20,
                          "summary": {"100": {"rps": 1.0, "p50_ms": 1, "p99_ms": 2},
                                      "1000": {"rps": 0.9, "p50_ms": 1, "p99_ms": 2}}},
           "cache_memory": {"per_entry_bytes": 900, "counted_per_entry_bytes": 870,
                            "entries": 20_000},
           "unexpected_answers": 0}
    checks = targets.evaluate(summ, res["store_size"], res["cache_memory"])
    text = report.results_table(res, checks)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert "| reference |" in lines[report.LABELS["aiohttp"]]
    warm = lines[report.LABELS["warm"]]
    assert "17,000 req/s" in warm and "38.0 µs CPU/request" in warm and "1.70×" in warm
    assert "≥ 1.6× bare aiohttp" in warm and warm.endswith("| PASS |")
    assert lines[report.LABELS["cold"]].endswith("| MISS (7% short) |")
    assert "900 B" in text and "≤ 1,024 B" in text
    detail = report.detail_table(summ)
    assert "| 40.0 µs | 0 | 1.00× | 1.00× |" in detail  # the reference's own row


def test_a_benchmark_section_of_the_readme_survives_the_full_suite_rewriting_it(tmp_path):
    """``run.py`` rewrites benchmarks/README.md; the sections single benchmarks wrote there
    (``readme_sections.write``) are kept, and writing one again replaces only that one."""
    from benchmarks import readme_sections
    path = tmp_path / "README.md"
    path.write_text("# Benchmarks\n\nold table\n")
    readme_sections.write("population", "## Population\n\n1.06×", path)
    readme_sections.write("redis_vs_lmdb", "## Redis\n\n0.64×", path)
    readme_sections.write("population", "## Population\n\n1.02×", path)
    text = path.read_text()
    assert text.count("<!-- population: begin -->") == 1 and "1.02×" in text and "1.06×" not in text
    rewritten = readme_sections.keep("# Benchmarks\n\nnew table\n", path)
    assert rewritten.startswith("# Benchmarks\n\nnew table\n")
    assert "old table" not in rewritten
    assert "## Population\n\n1.02×" in rewritten and "## Redis\n\n0.64×" in rewritten


def test_memory_per_cached_answer_is_the_growth_of_the_same_processes_over_what_they_cached():
    store = {"recursive_rss_anon_kib": {"before": 40_000, "after": 49_000},
             "recursive_stats": {"recursive@1": {"cacheEntries": 6_000, "cacheBytes": 5_400_000},
                                 "recursive@2": {"cacheEntries": 3_000, "cacheBytes": 2_700_000},
                                 "recursive@3": {"cacheEntries": 0, "cacheBytes": 0}}}
    cm = report.cache_memory(store)
    assert cm["entries"] == 9_000 and cm["processes"] == 2
    assert cm["per_entry_bytes"] == pytest.approx(9_000 * 1024 / 9_000)
    store["recursive_stats_before"] = {"recursive@1": {"cacheEntries": 600},
                                       "recursive@2": {"cacheEntries": 400}}
    assert report.cache_memory(store)["per_entry_bytes"] == pytest.approx(9_000 * 1024 / 8_000)
    assert cm["counted_per_entry_bytes"] == pytest.approx(900)
    assert report.cache_memory({"recursive_stats": {}}) is None
