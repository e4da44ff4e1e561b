"""Marked sections of ``benchmarks/README.md`` that single benchmarks own.

A benchmark run on its own (``import_scale.py``, ``population.py``, ``redis_vs_lmdb.py``
with ``--readme``) writes its figures between ``<!-- NAME: begin -->`` and
``<!-- NAME: end -->``; ``run.py`` rewrites the rest of the file and keeps every such
section (``keep``), so one benchmark's figures never erase another's.
"""
from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
_SECTION = re.compile(r"<!-- (?P<name>[\w.-]+): begin -->.*?<!-- (?P=name): end -->\n?", re.S)


def marks(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def write(name: str, body: str, path: Path = README) -> None:
    """Replace section ``name`` of the README with ``body`` (marks added), or append it."""
    begin, end = marks(name)
    section = f"{begin}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def keep(new_text: str, old_path: Path = README) -> str:
    """``new_text`` with every marked section of the file at ``old_path`` appended."""
    old = old_path.read_text() if old_path.exists() else ""
    sections = [m.group(0) for m in _SECTION.finditer(old)]
    return new_text.rstrip("\n") + "\n\n" + "\n".join(sections) if sections else new_text
