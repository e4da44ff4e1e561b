"""The national day (``loadtest.day``, ``idsim load --scenario day``): its volume and curve, the
compressed schedule against the model, the Zipf sampler, memory, the request mix, the hourly
summary, and one short compressed day on a real mini network."""
from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from loadtest import day
from resolver.population import CAPACITY, EnterprisePopulation
from resolver.templates import template_of
from topology.cli_client import UserError
from topology.presets import mini
from network_fixtures import free_topology  # noqa: I001 - tests/ is on sys.path

NATIONAL = 150_000_000


def members(topo=None) -> list[day.Member]:
    topo = topo or mini()
    return [day.Member(e.prefix, e.industry, e.identifiers, template_of({}, e.industry))
            for e in topo.enterprises]


def test_the_days_volume_is_the_national_figure_times_the_share():
    for compress in (1, 60, 3600):
        shape = day.DayShape.of(NATIONAL, 0.002, compress)
        dt = shape.duration / 96_000  # 4,000 steps an hour
        integral = sum(shape.rate_at((i + 0.5) * dt) for i in range(96_000)) * dt
        assert integral == pytest.approx(NATIONAL * 0.002, rel=1e-9)  # 300,000, whatever C
        assert shape.duration == pytest.approx(86_400 / compress)
    assert shape.rate_at(-1) == shape.rate_at(shape.duration) == 0.0
    # compressing keeps the volume: 60x the rate of the real-time day
    assert (day.DayShape.of(NATIONAL, 0.002, 60).peak_rate()
            == pytest.approx(60 * day.DayShape.of(NATIONAL, 0.002, 1).peak_rate()))
    with pytest.raises(ValueError):
        day.DayShape.of(NATIONAL, 0.0, 60)


def test_the_curve_is_a_two_peak_business_day():
    shares = day.hour_shares()
    assert sum(shares) == pytest.approx(1.0)
    assert min(range(24), key=shares.__getitem__) == 4                  # trough at 4 am
    assert max(range(12), key=shares.__getitem__) == 10                 # morning peak
    assert max(range(12, 24), key=shares.__getitem__) == 15             # afternoon peak
    assert shares[12] < min(shares[11], shares[13])                     # the lunch dip
    assert max(shares) / min(shares) > 5


def test_the_compressed_schedule_follows_the_curve():
    """A day in 24 s (x3600): intended starts per simulated hour within 4 standard deviations
    of the model (Poisson), the day within 2 %."""
    shape = day.DayShape.of(NATIONAL, 0.0002, 3600)  # 30,000 requests
    times = list(day.starts(shape, random.Random(7)))
    assert all(0 <= a < b < shape.duration for a, b in zip(times, times[1:]))
    per_hour = Counter(int(t / shape.hour_seconds) for t in times)
    for h in range(24):
        want = shape.expected(h)
        assert abs(per_hour[h] - want) < 4 * math.sqrt(want), (h, per_hour[h], want)
    assert len(times) == pytest.approx(30_000, rel=0.02)


@pytest.mark.parametrize("s", [0.7, 1.0, 1.1, 2.0])
def test_zipf_frequencies_match_theory(s):
    n, draws = 50, 100_000
    zipf, rng = day.Zipf(n, s), random.Random(3)
    counts = Counter(zipf.sample(rng) for _ in range(draws))
    assert set(counts) <= set(range(1, n + 1))
    norm = sum(k ** -s for k in range(1, n + 1))
    for k in (1, 2, 3, 5, 10, 30, 50):
        p = k ** -s / norm
        assert abs(counts[k] / draws - p) < 5 * math.sqrt(p * (1 - p) / draws), (k, counts[k])


def test_zipf_over_a_whole_enterprise_capacity():
    """n = 21.5 billion suffixes: rank 1 as often as theory says, every rank in range."""
    zipf, rng, draws = day.Zipf(CAPACITY, 1.1), random.Random(5), 100_000
    got = [zipf.sample(rng) for _ in range(draws)]
    assert 1 <= min(got) and max(got) <= CAPACITY
    m = 100_000  # H(n, s): the first m terms, then the tail's integral
    norm = sum(k ** -1.1 for k in range(1, m + 1)) + (
        ((m + 0.5) ** -0.1 - (CAPACITY + 0.5) ** -0.1) / 0.1)
    p1 = 1 / norm
    assert abs(got.count(1) / draws - p1) < 5 * math.sqrt(p1 * (1 - p1) / draws)


def test_sampling_keeps_no_per_identifier_tables():
    rng = random.Random(1)
    zipf = day.Zipf(10 ** 10, 1.1)
    tracemalloc.start()
    try:
        for _ in range(300_000):
            zipf.sample(rng)
        assert tracemalloc.get_traced_memory()[1] < 10_000
    finally:
        tracemalloc.stop()
    picker = day.Picker(members(), 1)
    for _ in range(20_000):  # every enterprise's codec and sampler made
        picker.pick(rng)
    tracemalloc.start()
    try:
        for _ in range(100_000):
            picker.pick(rng)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 50_000  # the picker kept nothing of 100,000 draws ...
    seen = {picker.pick(rng).suffix for _ in range(100_000)}
    assert len(seen) > 20_000  # ... of which a table would have held tens of thousands


def test_industry_mix_unknowns_and_registrations():
    topo = mini()
    weights = {"automotive": 1.0, "home-appliances": 2.0, "electronics": 5.0}
    picker = day.Picker(members(topo), topo.seed, unknown_share=0.1, register_share=0.02,
                        industry_weights=weights)
    industry = {e.prefix: e.industry for e in topo.enterprises}
    codecs = {e.prefix: EnterprisePopulation(e.prefix, e.identifiers,
                                             template_of({}, e.industry), topo.seed)
              for e in topo.enterprises}
    rng, draws = random.Random(11), 60_000
    picks = [picker.pick(rng) for _ in range(draws)]
    mix = Counter(industry[p.prefix] for p in picks)
    for code, w in weights.items():
        assert mix[code] / draws == pytest.approx(w / 8, abs=0.01)
    kinds = Counter(p.kind for p in picks)
    assert kinds[day.REGISTER] / draws == pytest.approx(0.02, abs=0.003)
    resolves = draws - kinds[day.REGISTER]
    assert kinds[day.UNKNOWN] / resolves == pytest.approx(0.1, abs=0.008)
    # what the nodes will answer: known suffixes decode to an ordinal, unknown ones do not
    for p in picks[:5000]:
        if p.kind != day.REGISTER:
            found = codecs[p.prefix].ordinal(p.suffix)
            assert (found is not None) == (p.kind == day.RESOLVE), p
    # within an industry the largest enterprise is the most asked for
    for code in weights:
        ents = [e for e in topo.enterprises if e.industry == code]
        largest = max(ents, key=lambda e: e.identifiers).prefix
        asked = Counter(p.prefix for p in picks if industry[p.prefix] == code)
        assert asked.most_common(1)[0][0] == largest


def test_a_picker_needs_a_population():
    with pytest.raises(ValueError, match="population full"):
        day.Picker([day.Member("88.1.1", "automotive", 0, template_of({}, "automotive"))], 1)


def test_hourly_summary_from_records(tmp_path):
    shape = day.DayShape.of(NATIONAL, 0.0002, 3600)  # one hour = 1 s
    records = [(0.2, 0.0, 10.0, True, day.RESOLVE)] * 98 + [
        (0.3, 0.0, 200.0, True, day.REGISTER), (0.4, 0.5, 300.0, False, day.UNKNOWN),
        (5.5, 0.0, 2.0, True, day.UNKNOWN), (99.0, 0.0, 1.0, True, day.RESOLVE)]  # 99 s: 23h
    with (tmp_path / "day-1.bin").open("wb") as f:
        for r in records:
            f.write(day.RECORD.pack(*r))
        f.write(b"\x00" * 7)  # a torn record
    rows = day.hourly(day.read(tmp_path), shape)
    assert len(rows) == 24
    h0, h5 = rows[0], rows[5]
    assert (h0.requests, h0.ok, h0.registrations, h0.unknown, h0.late) == (100, 99, 1, 1, 1)
    assert h0.p50 == pytest.approx(10.0, rel=1e-3) and h0.p99 == pytest.approx(200.0, rel=1e-3)
    assert h0.p99_intended == pytest.approx(200.0, rel=1e-3)
    assert rows[0].success == pytest.approx(0.99) and h5.unknown_share == 1.0
    assert rows[1].requests == 0 and rows[1].p50 is None and rows[23].requests == 1
    text = day.table(rows, shape)
    assert "00:00" in text and "23:00" in text and "99.0%" in text


def test_day_refuses_a_cluster_without_the_population(tmp_path):
    from topology.cli_load import day_setup
    from topology.tomlio import save
    save(mini(), tmp_path / "topology.toml")  # demo mode
    args = argparse.Namespace(data=str(tmp_path), share=None, compress=None, processes=1)
    with pytest.raises(UserError, match="--population full"):
        day_setup(args, tmp_path, {})


@pytest.mark.timeout(180)
def test_a_compressed_day_on_the_mini_network(tmp_path):
    """What a user runs: a day in 24 s on a mini network it starts with the population."""
    base = free_topology().recursive.http_port
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "topology.cli", "load", "--preset", "mini", "--port", str(base),
         "--data", str(data), "--scenario", "day", "--compress", "3600", "--share", "0.00002",
         "--users", "20"],
        capture_output=True, text=True, timeout=170, cwd=Path(__file__).parent.parent)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    hours = [line.split() for line in proc.stdout.splitlines()
             if len(line) > 5 and line[:2].isdigit() and line[2:6] == ":00 "]
    assert [h[0] for h in hours] == [f"{h:02d}:00" for h in range(24)], out
    total = sum(int(h[2]) for h in hours)
    assert total == pytest.approx(3000, rel=0.1), out  # 150M x 0.00002
    assert all(h[3] == "100.0%" for h in hours if h[2] != "0"), out
    assert int(hours[10][2]) > 3 * int(hours[4][2]), out  # the curve, not a flat load
