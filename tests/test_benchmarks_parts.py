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
    assert report.fmt_target(report.TARGETS["batch"]) == "≥ 50,000 ids/s"


def test_median_and_ratio():
    assert report.median([3, None, 1, 2]) == 2
    assert report.median([]) is None
    assert report.ratio(5.0, 10.0) == 0.5
    assert report.ratio(5.0, 0) is None and report.ratio(None, 3.0) is None


def test_every_target_judges_its_own_figure():
    """The six targets the suite checks, each on a value that passes and one that misses."""
    t = report.TARGETS
    cases = {"warm": (0.25, 0.1), "cold": (0.6, 0.4), "register": (0.5, 0.3),
             "batch": (60_000, 40_000), "store": (0.9, 0.7), "memory": (1.0, 2.0)}
    assert set(cases) == set(t)
    for key, (good, bad) in cases.items():
        assert report.check(t[key], good).passed, key
        assert not report.check(t[key], bad).passed, key


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
