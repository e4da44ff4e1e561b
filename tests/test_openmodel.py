"""Open-model load (``loadtest.openmodel``): the schedule of intended starts, the corrected and
uncorrected accounting on a FakeClock, and ``idsim load --rate`` against a node made slow with
the fault tooling (the done-when of issue 13 part 1).

Locust is never imported into the test process (gevent would patch asyncio's world).
"""
from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.openmodel import (OpenStats, Pacer, Share, Steps, constant, load_shape,
                                parse_rate, schedule)
from network_fixtures import FakeClock, free_topology  # noqa: I001 - tests/ is on sys.path

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the schedule

def test_a_constant_rate_is_kept_within_three_percent():
    starts = list(schedule(constant(1000, 20), random.Random(1)))
    # Poisson: 20,000 expected, standard deviation ~141
    assert 19_400 < len(starts) < 20_600
    assert all(0 <= a < b < 20 for a, b in zip(starts, starts[1:]))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert 0.00095 < sum(gaps) / len(gaps) < 0.00105
    # exponential gaps (not evenly spaced): their standard deviation is about their mean
    mean = sum(gaps) / len(gaps)
    sd = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert 0.9 < sd / mean < 1.1


def test_each_step_of_a_shape_gets_its_own_rate():
    shape = parse_rate("steps:200,2000,0,500@5s")
    starts = list(schedule(shape, random.Random(2)))
    per_step = [sum(1 for t in starts if 5 * i <= t < 5 * (i + 1)) for i in range(4)]
    for got, want in zip(per_step, (1000, 10_000, 0, 2500)):
        assert abs(got - want) <= 4 * max(1, want) ** 0.5 + 1, per_step
    assert max(starts) < shape.duration == 20


def test_the_same_seed_gives_the_same_schedule():
    shape = parse_rate("100@2s,300@2s")
    a = list(schedule(shape, random.Random(7)))
    assert a == list(schedule(shape, random.Random(7)))
    assert a != list(schedule(shape, random.Random(8)))


def test_processes_sharing_a_rate_send_the_whole_of_it():
    shape = constant(3000, 10)
    n = sum(len(list(schedule(Share(shape, 1 / 3), random.Random(1 + i)))) for i in range(3))
    assert 29_000 < n < 31_000


def test_rate_texts_and_files(tmp_path):
    assert parse_rate("5000", 30).steps == ((30, 5000),)
    assert parse_rate("steps:1000,2000@10s").steps == ((10, 1000), (10, 2000))
    assert parse_rate("1000@10s,2000@1m").steps == ((10, 1000), (60, 2000))
    assert parse_rate(parse_rate("1000@10s,2000@1m").spec()) == parse_rate("1000@10s,2000@1m")
    for bad in ("fast", "steps:1000@soon", "-5@1s", "5000"):
        with pytest.raises(ValueError, match="not a rate"):
            parse_rate(bad)
    path = tmp_path / "shape.toml"
    path.write_text('[[step]]\nrate = 100\nfor = "5s"\n[[step]]\nrate = 300\nfor = "2s"\n')
    assert load_shape(path) == Steps(((5, 100), (2, 300)))
    path.write_text('[[step]]\nrate = 100\n')
    with pytest.raises(ValueError, match="for ="):
        load_shape(path)


# ------------------------------------------------------------------ accounting, FakeClock

def one_user(clock: FakeClock, pacer: Pacer, service) -> None:
    """A single user taking starts in turn; ``service(i)`` is request i's time in s."""
    i = 0
    while (intended := pacer.take(clock())) is not None:
        if intended > clock():
            clock.advance(intended - clock())
        sent = clock()
        clock.advance(service(i))
        pacer.stats.record(intended, sent, clock())
        i += 1


def stall_at_100(i: int) -> float:
    return 1.0 if i == 100 else 0.001   # one request stalls for 1 s, the rest take 1 ms


def test_a_stall_shows_in_the_corrected_latency_and_hides_in_the_uncorrected():
    clock = FakeClock(1000.0)
    stats = OpenStats(late_after=0.01)
    starts = iter([i * 0.01 for i in range(1000)])   # 100/s for 10 s, evenly spaced
    one_user(clock, Pacer(starts, clock(), stats, max_lag=5.0), stall_at_100)
    assert stats.sent == 1000 and stats.dropped == 0
    # the 100 starts due during the stall went late, and ~10 more while the user caught up
    assert 100 <= stats.late <= 112
    assert stats.ms("uncorrected", 99) < 2            # one slow request in 1000: under p99
    assert stats.ms("corrected", 99) > 900            # ~10% of starts waited up to 1 s
    assert stats.ms("corrected", 50) < 2
    for which in ("corrected", "uncorrected"):
        assert stats.ms(which, 99) <= stats.ms(which, 100)
    assert 999 < stats.ms("uncorrected", 100) < 1002
    assert any("sent more than 10 ms after" in w for w in stats.warnings(0.05))


def test_starts_too_far_behind_are_dropped_and_so_are_those_never_taken():
    clock = FakeClock(0.0)
    stats = OpenStats()
    pacer = Pacer(iter([i * 0.01 for i in range(1000)]), clock(), stats, max_lag=0.5)
    one_user(clock, pacer, stall_at_100)
    assert 45 <= stats.dropped <= 52          # the starts more than 0.5 s behind the stall
    assert stats.sent + stats.dropped == 1000
    # but the stalled one, none waited longer than max_lag (+ service): rank 950 of 951
    assert stats.ms("corrected", 99.8) < 520 < stats.ms("corrected", 100)
    # a run that ends with starts due but no free user: those count as dropped
    late = Pacer(iter([0.0, 0.1, 0.2, 5.0]), 0.0, OpenStats())
    assert late.take(0.0) == 0.0
    late.finish(1.0)
    assert late.stats.dropped == 2 and late.take(1.0) is None
    assert any("were dropped: every user was busy" in w for w in stats.warnings())


def test_statistics_of_processes_merge():
    a, b = OpenStats(), OpenStats()
    a.record(0.0, 0.0, 0.010)
    b.record(0.0, 0.5, 0.600, ok=False)
    b.dropped = 3
    merged = OpenStats()
    for s in (a, b):
        merged.add(OpenStats.from_dict(s.to_dict()))
    assert (merged.sent, merged.failed, merged.dropped, merged.late) == (2, 1, 3, 1)
    assert merged.ms("corrected", 100) == pytest.approx(600, rel=0.001)
    assert merged.ms("uncorrected", 100) == pytest.approx(100, rel=0.001)
    assert "corrected (from intended start)" in merged.table(1.0)


# ------------------------------------------------------------------ done-when: a slow node

def p99s(out: str) -> tuple[float, float]:
    got = {m[1]: float(m[2]) for m in re.finditer(
        r"^(corrected|uncorrected) \(from .*?\) +[\d.]+ +([\d.]+) +[\d.]+$", out, re.M)}
    return got["corrected"], got["uncorrected"]


@pytest.mark.timeout(90)
def test_a_slow_node_shows_in_the_corrected_p99_and_is_understated_uncorrected(tmp_path):
    """A fixed rate against the mini network, answer cache off, before and after
    ``fault_control`` makes 88.118 answer 200 ms late: before, corrected ≈ uncorrected; after,
    the corrected p99 has the delay and the queue behind it, the uncorrected p99 only the
    delay (coordinated omission), and the late starts are reported."""
    from resolver.config import Config
    from topology import fault_control
    from topology.cluster import Cluster

    data = tmp_path / "data"
    cluster = Cluster(free_topology(), data, store="lmdb",
                      config=Config().with_values("test", {"cache": {"answer_entries": 0}}))
    cluster.start()

    def load() -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "topology.cli", "load", "--data", str(data), "--rate", "120",
             "--users", "4", "--time", "6s", "--scenario", "resolve"],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    try:
        calm = load()
        fault_control.apply(data, {"kind": "slow", "node": "88.118", "delay": 0.2})
        slow = load()
    finally:
        cluster.stop()
    calm_c, calm_u = p99s(calm)
    assert calm_c < 100, calm
    slow_c, slow_u = p99s(slow)
    assert slow_c >= 300 and slow_u >= 190, slow       # the delay shows in both ...
    assert slow_c > 1.5 * slow_u, slow                   # ... but the queue only corrected
    assert "WARNING" in slow and "after their intended time" in slow, slow


def test_idsim_load_refuses_a_bad_rate_before_starting_anything(tmp_path):
    cli = [sys.executable, "-m", "topology.cli", "load", "--data", str(tmp_path / "data")]
    bad = subprocess.run(cli + ["--rate", "lots"], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    assert bad.returncode == 2 and "not a rate or rate shape: 'lots'" in bad.stderr, bad.stderr
    closed = subprocess.run(cli + ["--rate", "100", "--scenario", "register"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert closed.returncode == 2 and "closed-model only" in closed.stderr, closed.stderr
    assert not (tmp_path / "data").exists()
