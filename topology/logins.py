"""A cluster's ``logins.json`` learns the prefixes allocated while it runs.

``POST /api/admin/prefixes`` shows the new prefix's secret once, to its caller; the store
keeps only a hash. So the one place that can record it is the host process whose node
allocated it, at that moment (``SecondaryNode.allocated``, set by ``topology.host``): it adds
``{"prefix", "username", "secret", "node", "httpUrl"}`` under ``enterprises`` in
``<data>/logins.json``, where ``idsim register`` (and Locust, and users) look logins up.

Invariants: several host processes may add at once, so each addition holds an exclusive
``flock`` on ``<data>/.logins.lock`` across its read-modify-write, and the file is replaced
atomically (``write_json_atomic``, mode 0600): a reader sees the old or the new document,
and no addition is lost. The launcher writes the file only before its hosts start
(``Cluster.prepare``), keeping the enterprises added earlier.
"""
from __future__ import annotations

import fcntl
import json
import logging
from contextlib import contextmanager
from pathlib import Path

from topology.cluster import write_json_atomic

log = logging.getLogger("idsim.logins")
LOCK_NAME = ".logins.lock"


@contextmanager
def locked(data_dir: Path):
    """Hold the data directory's logins lock (exclusive, released on exit)."""
    with open(Path(data_dir) / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def add_enterprise(data_dir: Path, node: str, http_url: str, creds) -> None:
    """Record the login of a prefix ``node`` allocated (``resolver.nodes.Credentials``)."""
    path = Path(data_dir) / "logins.json"
    with locked(data_dir):
        doc = json.loads(path.read_text())
        doc.setdefault("enterprises", {})[creds.prefix] = {
            "prefix": creds.prefix, "username": creds.username, "secret": creds.secret,
            "node": node, "httpUrl": http_url}
        write_json_atomic(path, doc)
    log.info("prefix %s allocated; its login is in %s", creds.prefix, path,
             extra={"node": node})


def recorder(data_dir: Path, node: str, http_url: str):
    """``SecondaryNode.allocated`` for ``node``: a failure to record is logged, not raised
    (the prefix exists and its caller has the secret)."""
    def allocated(creds) -> None:
        try:
            add_enterprise(data_dir, node, http_url, creds)
        except (OSError, ValueError):
            log.exception("could not record the login of %s in logins.json", creds.prefix,
                          extra={"node": node})
    return allocated
