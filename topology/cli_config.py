"""The command line's side of ``resolver.config``: where the effective config comes from.

Layers, later winning: the defaults; the config sections of the topology file
(``--topology``); the config file (``--config FILE``, else ``./idsim.toml`` when present);
the command's own flags (``--answer-cache`` …); ``--set section.key=value`` (repeatable).
``idsim config show`` prints each effective value with the layer it came from, or, with
``--toml``, the effective values as a config file to start from.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from resolver import config as configuration

DEFAULT_FILE = "idsim.toml"


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help=f"config file of [cache] [rpc] [http] [batch] [store] [host] sections "
                        f"(default: ./{DEFAULT_FILE} when it exists; see: idsim config show)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set cache.answer_entries=0")


def effective_config(args: argparse.Namespace,
                     flags: dict[str, dict[str, Any]] | None = None) -> configuration.Config:
    """The config a command runs with. ``flags``: the layer its own options make, labelled by
    option name (``{"--answer-cache": {"cache": {"answer_entries": 0}}}``); ConfigError or
    ValueError (the message says what is wrong) on bad input."""
    layers: list[tuple[str, dict]] = []
    topology = getattr(args, "topology", None)
    if topology:
        doc = tomllib.loads(Path(topology).read_text(encoding="utf-8"))
        layers.append((str(topology), configuration.config_sections(doc)))
    path = args.config or (DEFAULT_FILE if Path(DEFAULT_FILE).is_file() else None)
    if path:
        if not Path(path).is_file():
            raise configuration.ConfigError(str(path), ["no such file"])
        layers.append((str(path), configuration.read_toml(path)))
    for label, layer in (flags or {}).items():
        layers.append((label, layer))
    if args.set:
        layers.append(("--set", configuration.parse_set(args.set)))
    return configuration.layered(layers)


def cmd_config_show(args: argparse.Namespace) -> int:
    try:
        config = effective_config(args)
    except (configuration.ConfigError, ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"idsim config: {exc}", file=sys.stderr)
        return 2
    if args.toml:
        print(tomli_w.dumps(config.as_dict()), end="")
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title="effective idsim config")
    for col in ("key", "value", "from"):
        table.add_column(col)
    for key, value, source in config.rows():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:g}"
                      if isinstance(value, float) else repr(value),  # text: wan.matrix
                      source if source == configuration.DEFAULT_SOURCE else f"[bold]{source}[/]")
    Console().print(table)
    return 0


def add_config_command(sub) -> None:
    cfg = sub.add_parser("config", help="the effective node configuration")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", required=True)
    show = cfg_sub.add_parser("show", help="every config value and where it came from")
    add_config_args(show)
    show.add_argument("--topology", help="a topology TOML file whose config sections apply")
    show.add_argument("--toml", action="store_true", help="print the values as a config file")
    show.set_defaults(func=cmd_config_show)
