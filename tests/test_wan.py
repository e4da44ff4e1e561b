"""The WAN model (``resolver.wan``), pure: distances, the fixed part of a delay, the jitter,
loss and bandwidth it draws, reproducibility, and how ``--wan`` turns it on.

Statistical checks draw 20,000 delays from a fixed seed. Tolerances, stated with the
standard error of a sample quantile (sqrt(q(1-q)/n) / density): for the lognormal with median
0.5 ms and p99 5 ms (sigma 0.99), the sample median's relative error is ~0.9 % and the
p99's ~2.6 %; the tests allow 3 % and 10 % (over 3 standard errors).
"""
from __future__ import annotations

import dataclasses
import statistics

import pytest

from resolver.config import Config, ConfigError, WanConfig, layered
from resolver.wan import Place, WanModel, great_circle_km, parse_matrix
from topology.presets import get_preset
from topology.places import coordinates
from topology.wan_presets import WAN_PRESETS, load_matrix, place_of, places, wan_layer

N = 20_000
CHINA = WanConfig(**WAN_PRESETS["china"], enabled=1)
QUIET = WanConfig(enabled=1, jitter_median_ms=0.0, loss=0.0, bandwidth_mbps=0.0)


def model(config: WanConfig = CHINA, matrix=None, **nodes: str) -> WanModel:
    where = nodes or {"gz": "Guangzhou", "bj": "Beijing", "sz": "Shenzhen", "gz2": "Guangzhou"}
    return WanModel(config, {n: place_of(c) for n, c in where.items()}, matrix)


def quantile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=1000, method="inclusive")[round(q * 1000) - 1]


@pytest.mark.parametrize("a, b, km", [("Guangzhou", "Beijing", 1890),
                                      ("Beijing", "Shanghai", 1068),
                                      ("Guangzhou", "Shenzhen", 105)])
def test_great_circle_distances_of_known_city_pairs(a, b, km):
    # published great-circle distances between the city centres, within 1 %
    assert great_circle_km(place_of(a), place_of(b)) == pytest.approx(km, rel=0.01)
    assert great_circle_km(place_of(a), place_of(b)) == great_circle_km(place_of(b), place_of(a))


def test_every_city_of_the_presets_has_coordinates():
    for name in ("guangzhou-2021", "mini"):
        assert set(places(get_preset(name))) >= {"top", "recursive"}
    for s in get_preset("guangzhou-2021").secondaries:
        assert place_of(s.city).lat is not None


def test_base_is_distance_over_fibre_speed_times_route_factor_plus_link_base():
    cfg = dataclasses.replace(QUIET, route_factor=3.0, fibre_km_per_ms=200.0, base_ms=2.0)
    m = model(cfg)
    km = great_circle_km(place_of("Guangzhou"), place_of("Beijing"))
    assert m.base_ms("gz", "bj") == pytest.approx(km / 200 * 3 + 2)
    assert m.base_ms("bj", "gz") == m.base_ms("gz", "bj")
    # default route factor 2: Guangzhou -> Beijing ~ 1,890 km / 200 * 2 + 1 ~ 19.9 ms one way
    assert model(QUIET).base_ms("gz", "bj") == pytest.approx(19.9, abs=0.1)
    # without jitter, loss or bandwidth, every delay is the base
    assert {m.link("gz", "bj").draw(10_000).ms for _ in range(3)} == {m.base_ms("gz", "bj")}


def test_nodes_in_one_city_get_the_intra_city_base():
    m = model(dataclasses.replace(QUIET, intra_city_ms=0.7))
    assert m.base_ms("gz", "gz2") == 0.7
    assert m.base_ms("gz", "sz") > 0.7  # Shenzhen is another city, 105 km away


def test_a_matrix_overrides_propagation_for_its_city_pairs_only():
    matrix = parse_matrix({"Guangzhou": {"Beijing": 25.0}, "Beijing": {"Shenzhen": 30}})
    m = model(QUIET, matrix)
    assert m.base_ms("gz", "bj") == m.base_ms("bj", "gz") == 25.0  # one direction holds both
    assert m.base_ms("bj", "sz") == m.base_ms("sz", "bj") == 30.0
    assert m.base_ms("gz", "sz") == model(QUIET).base_ms("gz", "sz")  # not in the matrix
    # a pair given both ways keeps each direction's own value
    both = parse_matrix({"Guangzhou": {"Beijing": 25}, "Beijing": {"Guangzhou": 27}})
    assert both[("Guangzhou", "Beijing")] == 25 and both[("Beijing", "Guangzhou")] == 27


def test_a_malformed_matrix_names_every_bad_entry():
    with pytest.raises(ValueError) as info:
        parse_matrix({"Guangzhou": {"Beijing": "far", "Shanghai": -1}, "Xiamen": 3})
    text = str(info.value)
    assert "matrix.Guangzhou.Beijing" in text and "matrix.Guangzhou.Shanghai" in text
    assert "matrix.Xiamen" in text


def test_jitter_median_and_p99_match_the_config():
    for median, p99 in ((0.5, 5.0), (2.0, 40.0)):
        cfg = dataclasses.replace(QUIET, jitter_median_ms=median, jitter_p99_ms=p99)
        link = model(cfg).link("gz", "bj")
        jitter = [link.draw().jitter for _ in range(N)]
        assert min(jitter) > 0
        assert statistics.median(jitter) == pytest.approx(median, rel=0.03)
        assert quantile(jitter, 0.99) == pytest.approx(p99, rel=0.10)


def test_loss_costs_retransmission_timeouts_that_double():
    cfg = dataclasses.replace(QUIET, loss=0.1, rto_ms=200.0, max_retries=6)
    m = model(cfg)
    link = m.link("gz", "bj")
    base = m.base_ms("gz", "bj")
    draws = [link.draw() for _ in range(N)]
    for d in draws:  # k losses cost 200 + 400 + ... = 200 * (2**k - 1) ms
        assert d.ms == pytest.approx(base + 200 * (2 ** d.retransmits - 1))
    share = sum(d.retransmits >= 1 for d in draws) / N
    assert share == pytest.approx(0.1, abs=0.01)  # se 0.0021
    twice = sum(d.retransmits >= 2 for d in draws) / N
    assert twice == pytest.approx(0.01, abs=0.003)  # each retry is lost again with p; se 0.0007
    assert not any(d.lost for d in draws)


def test_a_message_lost_on_every_retry_is_lost_for_good():
    cfg = dataclasses.replace(QUIET, loss=0.5, max_retries=1)
    link = model(cfg).link("gz", "bj")
    draws = [link.draw() for _ in range(N)]
    assert max(d.retransmits for d in draws) == 2
    assert all(d.lost == (d.retransmits == 2) for d in draws)
    assert sum(d.lost for d in draws) / N == pytest.approx(0.25, abs=0.02)


def test_bandwidth_adds_serialisation_delay():
    m = model(dataclasses.replace(QUIET, bandwidth_mbps=100.0))
    d = m.link("gz", "bj").draw(12_500)  # 100,000 bits at 100 Mbit/s: 1 ms
    assert d.serialisation == pytest.approx(1.0)
    assert d.ms == pytest.approx(m.base_ms("gz", "bj") + 1.0)
    assert model(QUIET).link("gz", "bj").draw(12_500).serialisation == 0.0


def test_the_same_seed_gives_the_same_delays_and_another_seed_others():
    def sequence(seed: int) -> list[float]:
        link = model(dataclasses.replace(CHINA, seed=seed, loss=0.05)).link("gz", "bj")
        return [link.draw(1000).ms for _ in range(200)]
    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)


def test_each_link_draws_the_same_whatever_the_order_links_are_used_in():
    alone = model().link("gz", "bj")
    expected = [alone.draw().ms for _ in range(100)]
    m = model()
    links = {pair: m.link(*pair) for pair in (("bj", "gz"), ("gz", "bj"), ("gz", "sz"))}
    got = []
    for _ in range(100):  # interleaved with draws on the reverse link and a third one
        links[("bj", "gz")].draw()
        got.append(links[("gz", "bj")].draw().ms)
        links[("gz", "sz")].draw()
    assert got == expected
    # and the two directions of one pair are not the same sequence
    assert [m.link("bj", "gz").draw().jitter for _ in range(5)] != \
           [m.link("gz", "bj").draw().jitter for _ in range(5)]


def test_a_model_refuses_impossible_settings_and_unknown_nodes():
    with pytest.raises(ValueError, match="jitter_p99_ms"):
        model(dataclasses.replace(CHINA, jitter_median_ms=5.0, jitter_p99_ms=1.0))
    with pytest.raises(ValueError, match="loss"):
        model(dataclasses.replace(CHINA, loss=1.0))
    with pytest.raises(ValueError, match="no place for node 'nowhere'"):
        model().base_ms("gz", "nowhere")
    with pytest.raises(ValueError, match="no coordinates for city 'Atlantis'"):
        place_of("Atlantis")


# ------------------------------------------------------------------ turning it on

def test_wan_is_off_by_default_and_the_presets_turn_it_on():
    assert Config().wan.enabled == 0
    assert layered([("--wan", wan_layer("china"))]).wan.enabled == 1
    assert layered([("--wan", wan_layer("china"))]).wan.loss == WAN_PRESETS["china"]["loss"]
    assert layered([("x", wan_layer("china")), ("--wan", wan_layer("off"))]).wan.enabled == 0


def test_a_wan_file_holds_values_and_an_inline_matrix(tmp_path):
    path = tmp_path / "wan.toml"
    path.write_text('[wan]\nroute_factor = 1.5\n\n[matrix.Guangzhou]\nBeijing = 22.5\n')
    cfg = layered([("--wan", wan_layer(str(path)))]).wan
    assert cfg.enabled == 1 and cfg.route_factor == 1.5
    assert cfg.jitter_p99_ms == WAN_PRESETS["china"]["jitter_p99_ms"]  # the rest: china
    assert cfg.matrix == str(path.resolve())
    assert load_matrix(cfg.matrix)[("Beijing", "Guangzhou")] == 22.5


def test_a_bad_wan_file_or_value_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not off, china or a readable TOML file"):
        wan_layer(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[matrix.Guangzhou]\nBeijing = 'far'\n")
    with pytest.raises(ValueError, match="matrix.Guangzhou.Beijing"):
        wan_layer(str(bad))
    with pytest.raises(ConfigError, match="wan.matrix must be text"):
        layered([("t", {"wan": {"matrix": 3}})])


def test_places_put_each_secondary_node_in_its_city():
    topo = get_preset("mini")
    where = places(topo)
    assert where["88.201"] == Place("Shenzhen", *coordinates("Shenzhen"))
    assert where["88.101"].city == where["recursive"].city == "Guangzhou"


def test_the_wan_table_prints_a_row_per_origin_and_node(capsys):
    from benchmarks import wan_table
    wan_table.main(["--draws", "300"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| Guangzhou |") or line.startswith("| Beijing |")]
    assert len(rows) == 2 * len(wan_table.NODES)
    # Beijing -> a Guangzhou node: the base is the Guangzhou-Beijing propagation, ~19.9 ms
    row = next(r for r in rows if r.startswith("| Beijing | 88.101 |"))
    assert row.split("|")[4].strip() == "19.9"
