"""The node configuration: one set of defaults, layered sources, every value traceable."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from resolver import config as configuration
from resolver.config import Config, ConfigError, layered, parse_set
from topology import cli
from topology.cli_config import effective_config


def test_defaults_come_from_one_place_and_say_so():
    cfg = Config()
    rows = cfg.rows()
    assert ("cache.answer_entries", 1_000_000, "default") in rows
    assert ("rpc.timeout", 2.0, "default") in rows
    # every section field is listed exactly once
    fields = sum(len(dataclasses.fields(cls)) for cls in configuration.SECTIONS.values())
    assert len(rows) == fields == len({r[0] for r in rows})


def test_later_layers_win_and_sources_are_recorded():
    cfg = layered([("net.toml", {"cache": {"answer_entries": 5, "negative_ttl": 1}}),
                   ("idsim.toml", {"cache": {"answer_entries": 7}}),
                   ("--set", parse_set(["rpc.timeout=0.5"]))])
    assert cfg.cache.answer_entries == 7 and cfg.source("cache.answer_entries") == "idsim.toml"
    assert cfg.cache.negative_ttl == 1.0 and cfg.source("cache.negative_ttl") == "net.toml"
    assert isinstance(cfg.cache.negative_ttl, float)
    assert cfg.rpc.timeout == 0.5 and cfg.source("rpc.timeout") == "--set"
    assert cfg.source("http.max_body") == "default"


def test_every_problem_of_a_layer_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        layered([("bad.toml", {"cache": {"answer_entriez": 1, "min_ttl": 1.5, "max_ttl": True,
                                         "negative_ttl": -1},
                               "nope": {}, "rpc": 3})])
    text = str(err.value)
    assert text.startswith("bad.toml: invalid config (6 problems)")
    for part in ("unknown key cache.answer_entriez", "cache.min_ttl must be a whole number",
                 "cache.max_ttl must be a number", "cache.negative_ttl must be >= 0",
                 "unknown section [nope]", "[rpc] must be a table"):
        assert part in text


def test_with_values_layers_over_an_existing_config():
    base = layered([("a", {"http": {"max_body": 10}})])
    cfg = base.with_values("b", {"cache": {"answer_entries": 0}})
    assert (cfg.http.max_body, cfg.cache.answer_entries) == (10, 0)
    assert cfg.source("http.max_body") == "a" and cfg.source("cache.answer_entries") == "b"


@pytest.mark.parametrize("item", ["cache.answer_entries", "answer_entries=1", "cache.=1",
                                  "cache.x=not a number"])
def test_set_needs_section_key_and_a_value(item):
    with pytest.raises(ValueError):
        parse_set([item])


def _args(tmp_path, **kw):
    ns = argparse.Namespace(config=None, set=[], topology=None)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_topology_file_then_config_file_then_flags_then_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    topo = tmp_path / "net.toml"
    topo.write_text('[network]\nname = "x"\n\n[cache]\nanswer_entries = 11\nnegative_ttl = 2\n'
                    '\n[rpc]\ntimeout = 4\n')
    (tmp_path / "idsim.toml").write_text("[cache]\nnegative_ttl = 3\n[rpc]\ntimeout = 5\n")
    cfg = effective_config(_args(tmp_path, topology=str(topo), set=["rpc.timeout=6"]),
                           {"--answer-cache": {"cache": {"answer_entries": 12}}})
    assert cfg.cache.answer_entries == 12 and cfg.source("cache.answer_entries") == "--answer-cache"
    assert cfg.cache.negative_ttl == 3 and cfg.source("cache.negative_ttl") == "idsim.toml"
    assert cfg.rpc.timeout == 6 and cfg.source("rpc.timeout") == "--set"


def test_a_named_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        effective_config(_args(tmp_path, config=str(tmp_path / "missing.toml")))


def test_config_show_prints_values_and_sources(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "idsim.toml").write_text("[http]\nmax_body = 4096\n")
    assert cli.main(["config", "show", "--set", "rpc.timeout=1.5"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "http.max_body" in ln)
    assert "4,096" in line and "idsim.toml" in line
    line = next(ln for ln in out.splitlines() if "rpc.timeout" in ln)
    assert "1.5" in line and "--set" in line
    line = next(ln for ln in out.splitlines() if "cache.answer_entries" in ln)
    assert "1,000,000" in line and "default" in line


def test_config_show_toml_round_trips(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["config", "show", "--toml", "--set", "batch.max_resolve=10"]) == 0
    (tmp_path / "again.toml").write_text(capsys.readouterr().out)
    cfg = effective_config(_args(tmp_path, config=str(tmp_path / "again.toml")))
    assert cfg.batch.max_resolve == 10
    assert cfg.as_dict() == layered([("x", {"batch": {"max_resolve": 10}})]).as_dict()


def test_config_show_reports_a_bad_file_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "idsim.toml").write_text("[cache]\nanswer_entries = 'many'\n")
    assert cli.main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "idsim.toml: invalid config" in err and "cache.answer_entries must be a number" in err


def test_the_written_config_reads_back_and_names_its_sources(tmp_path):
    cfg = layered([("--set", parse_set(["cache.negative_ttl=30"]))])
    path = tmp_path / "config.toml"
    configuration.write_toml(cfg, path)
    text = path.read_text()
    assert "#   cache.negative_ttl = 30.0  (from --set)" in text
    again = layered([(str(path), configuration.read_toml(path))])
    assert again.as_dict() == cfg.as_dict()
