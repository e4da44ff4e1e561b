"""``idsim import``: files and generated identifiers into a node's LMDB, resumable, refused
while a node serves the store, and through a running node's batch API."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.procs import free_port
from resolver import records
from resolver.config import Config
from resolver.store.lmdb import LmdbStore
from topology import importer
from topology.cli import main

REPO = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000


def open_store(path: Path) -> LmdbStore:
    return LmdbStore(str(path), map_size_gib=1)


def close(store: LmdbStore) -> None:
    store.env.close()


def keys(store: LmdbStore) -> list[bytes]:
    return [k for k, _ in store.scan(b"88.118.8/", limit=10**9)]


def write_jsonl(path: Path, n: int, shuffle: bool = True) -> list[str]:
    handles = [f"88.118.8/P{i:05d}" for i in range(n)]
    order = list(range(n))
    if shuffle:
        random.Random(7).shuffle(order)
    with open(path, "w") as f:
        for i in order:
            f.write(json.dumps({"handle": handles[i], "values": [
                {"index": 1, "type": "URL", "data": {"format": "string",
                                                     "value": f"https://ex.com/{i}"}}]}) + "\n")
    return handles


def checker() -> importer.Checker:
    return importer.Checker("88.118", Config(), NOW)


def test_jsonl_in_any_order_lands_sorted_with_counts_in_several_transactions(tmp_path):
    write_jsonl(tmp_path / "ids.jsonl", 2000)
    store = open_store(tmp_path / "88.118")
    s = importer.import_file(store, tmp_path / "ids.jsonl", "jsonl", checker(), transaction=300)
    assert (s.written, s.new, s.bad, s.transactions) == (2000, 2000, 0, 7)
    assert store.count() == 2000 and store.count(b"88.118.8") == 2000
    text, values = records.decode(store.get(b"88.118.8/P00042"))
    assert text == "88.118.8/P00042"
    assert [(v.index, v.type, v.value) for v in values][0] == (1, "URL", "https://ex.com/42")
    # as a batch registration by the node admin: HS_ADMIN names 300:0.NA/88.118
    assert records.admins(values) == [(300, "0.NA/88.118")]
    close(store)


def test_csv_columns_are_handle_url_and_type_equals_text(tmp_path):
    (tmp_path / "ids.csv").write_text("handle,url,more\n"
                                      "88.118.8/C1,https://c/1,EMAIL=qa@ex.com,BATCH=2106\n"
                                      '88.118.8/C2,"https://c/2?a=1,b=2"\n')
    store = open_store(tmp_path / "88.118")
    s = importer.import_file(store, tmp_path / "ids.csv", "csv", checker(), transaction=10)
    assert (s.written, s.bad) == (2, 0)
    got = {v.index: (v.type, v.value) for v in records.decode(store.get(b"88.118.8/C1"))[1]}
    assert got[1] == ("URL", "https://c/1") and got[2] == ("EMAIL", "qa@ex.com")
    assert got[3] == ("BATCH", "2106")
    assert records.decode(store.get(b"88.118.8/C2"))[1][0].value == "https://c/2?a=1,b=2"
    close(store)


BAD = [
    '{"handle": "88.118.8/OK1", "values": [{"index": 1, "type": "URL", "data": "u"}]}',
    'not json',
    '{"handle": "88.118.8/BAD", "values": [{"index": 0, "type": "URL", "data": "u"}]}',
    '{"handle": "88.999.1/ELSEWHERE", "values": [{"index": 1, "type": "URL", "data": "u"}]}',
    '{"handle": "88.118.8/NOVAL"}',
    '{"handle": "88.118.8/OK2", "values": [{"index": 1, "type": "URL", "data": "u"}]}',
]


def test_bad_lines_are_reported_by_line_number_and_skipped(tmp_path):
    (tmp_path / "ids.jsonl").write_text("\n".join(BAD) + "\n")
    store = open_store(tmp_path / "88.118")
    seen: list[tuple[int, str]] = []
    s = importer.import_file(store, tmp_path / "ids.jsonl", "jsonl", checker(),
                             transaction=100, report=lambda n, m: seen.append((n, m)))
    assert [n for n, _ in seen] == [2, 3, 4, 5]
    assert "index must be between 1" in seen[1][1]  # values_from_json's own message
    assert "doesn't live here" in seen[2][1]
    assert (s.written, s.bad) == (2, 4) and keys(store) == [b"88.118.8/OK1", b"88.118.8/OK2"]
    close(store)


def test_strict_stops_at_the_first_bad_line_keeping_earlier_transactions(tmp_path):
    (tmp_path / "ids.jsonl").write_text("\n".join(BAD) + "\n")
    store = open_store(tmp_path / "88.118")
    with pytest.raises(importer.ImportStopped, match="line 2"):
        importer.import_file(store, tmp_path / "ids.jsonl", "jsonl", checker(),
                             transaction=1, strict=True)
    assert keys(store) == [b"88.118.8/OK1"]
    close(store)


def test_cli_generate_makes_n_product_code_identifiers(tmp_path, capsys):
    assert main(["import", "--generate", "5000", "--prefix", "88.118.8",
                 "--data", str(tmp_path)]) == 0
    store = open_store(tmp_path / "88.118")
    got = keys(store)
    assert len(got) == 5000 and store.count(b"88.118.8") == 5000
    assert all(re.fullmatch(rb"88\.118\.8/[A-Z]{4}\d{4}\d{5}", k) for k in got)
    assert got[0] == b"88.118.8/AXLE160100000"
    assert "imported 5,000 identifiers" in capsys.readouterr().out
    close(store)


class Interrupt(Exception):
    pass


def after(k: int):
    """A before_commit hook that lets ``k`` transactions commit and fails the next."""
    calls = [0]

    def hook() -> None:
        calls[0] += 1
        if calls[0] > k:
            raise Interrupt
    return hook


def test_generate_interrupted_resumes_to_exactly_n_without_duplicates(tmp_path):
    store = open_store(tmp_path / "88.118")
    make = importer.local_encoder(checker(), "88.118.8")
    with pytest.raises(Interrupt):
        importer.import_generated(store, "88.118.8", 3000, make, transaction=400,
                                  before_commit=after(3))
    assert store.count(b"88.118.8") == 1200 and len(keys(store)) == 1200  # whole txns only
    s = importer.import_generated(store, "88.118.8", 3000, make, transaction=400)
    assert (s.resumed_at, s.written, s.new) == (1200, 1800, 1800)
    got = keys(store)
    assert len(got) == len(set(got)) == store.count(b"88.118.8") == store.count() == 3000
    assert got == [f"88.118.8/{importer.local_suffix(i)}".encode() for i in range(3000)]
    close(store)


def test_file_interrupted_resumes_after_the_last_committed_line(tmp_path):
    write_jsonl(tmp_path / "ids.jsonl", 1000)
    store = open_store(tmp_path / "88.118")
    with pytest.raises(Interrupt):
        importer.import_file(store, tmp_path / "ids.jsonl", "jsonl", checker(),
                             transaction=150, before_commit=after(2))
    assert store.count(b"88.118.8") == 300
    s = importer.import_file(store, tmp_path / "ids.jsonl", "jsonl", checker(), transaction=150)
    assert (s.resumed_at, s.written, s.new) == (300, 700, 700)
    assert len(keys(store)) == store.count(b"88.118.8") == 1000
    close(store)


# ------------------------------------------------------------------ with a running node

@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A stopped node's data filled directly with 3,000 generated identifiers, then
    ``idsim node`` serving it."""
    data = tmp_path_factory.mktemp("node")
    assert main(["import", "--generate", "3000", "--prefix", "88.118.8",
                 "--data", str(data)]) == 0
    port = free_port()
    log = open(data / "node.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "topology.cli", "node", "--code", "88.118",
                             "--enterprise", "88.118.8", "--demo", "0", "--port", str(port),
                             "--data", str(data)], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (data / "node.out").read_text()
        try:
            if "serving http://" in (data / "node.out").read_text():
                get(url, "/api/stats")
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "node did not start"
        time.sleep(0.05)
    yield data, url
    proc.terminate()
    proc.wait(10)
    log.close()


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as resp:
        return json.loads(resp.read())


def test_stats_count_what_was_imported_directly(running):
    data, url = running
    assert get(url, "/api/stats")["identifiers"] >= 3000
    doc = get(url, "/api/handles/88.118.8/AXLE160102999")
    assert doc["values"][0]["data"]["value"] == "https://ex.com/88.118.8/AXLE160102999"


def test_a_running_node_refuses_a_direct_import_of_its_store(running, tmp_path, capsys):
    data, url = running
    write_jsonl(tmp_path / "ids.jsonl", 10)
    before = get(url, "/api/stats")["identifiers"]
    assert main(["import", str(tmp_path / "ids.jsonl"), "--data", str(data)]) == 2
    assert "has the store" in capsys.readouterr().err
    assert get(url, "/api/stats")["identifiers"] == before


def test_import_through_a_running_node_over_http(running, tmp_path, capsys):
    data, url = running
    before = get(url, "/api/stats")["identifiers"]
    (tmp_path / "ids.jsonl").write_text("\n".join(BAD) + "\n")
    assert main(["import", str(tmp_path / "ids.jsonl"), "--via", url, "--data", str(data),
                 "--set", "batch.max_register=2"]) == 1  # bad lines: exit 1
    out = capsys.readouterr().out
    assert "imported 2 identifiers" in out
    for n in (2, 3, 4, 5):
        assert f"line {n}:" in out
    assert get(url, "/api/handles/88.118.8/OK2")["values"][0]["data"]["value"] == "u"
    assert get(url, "/api/stats")["identifiers"] == before + 2


def test_a_cluster_running_from_data_refuses_a_direct_import(tmp_path, capsys):
    import psutil
    me = psutil.Process()
    (tmp_path / "cluster.json").write_text(json.dumps(
        {"launcher": me.pid, "launcherStarted": me.create_time(), "pids": []}))
    assert main(["import", "--generate", "10", "--data", str(tmp_path)]) == 2
    assert "a cluster is running from" in capsys.readouterr().err
    assert not (tmp_path / "88.118").exists()
