"""Large LMDB stores for one secondary node, built fast and cached by size.

A store of N identifiers holds the demo records ``88.118.8/SN000000000`` … ``SN<N-1>``
(``topology.demo``), written straight through the store API (``LmdbStore.put_many``) in
transactions of a few hundred thousand. The node's own ``0.NA`` records (bootstrap, enterprise
prefixes and their logins) are added by the node itself on its first start, as idsim always
does; the logins it used are kept beside the store so later starts match.

Encoding 10M records through ``record_input.values_from_json`` + ``records.encode`` costs ~24 µs
each; every demo record has the same shape (fixed-width suffix, fixed-length SHA-1), so the
builder encodes record 0 that way once and splices the varying bytes in (~2 µs), checking the
splice against the real encoder on a sample of records.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from benchmarks.procs import log
from resolver import identifiers, record_input, records
from resolver.store.lmdb import LmdbStore
from topology import demo

NODE = "88.118"
PREFIX = "88.118.8"
CHUNK = 250_000
MAP_SIZE_GIB = 64  # what topology.host opens node stores with


def encode_real(prefix: str, i: int, now: int) -> tuple[bytes, bytes]:
    text = f"{prefix}/{demo.suffix(i)}"
    values = record_input.values_from_json(demo.demo_values(prefix, i), now=now)
    return identifiers.make_key(text), records.encode(text, values)


def fast_encoder(prefix: str, now: int) -> Callable[[int], tuple[bytes, bytes]]:
    """``i → (key, encoded record)`` equal to ``encode_real`` (checked on a sample)."""
    key0, rec0 = encode_real(prefix, 0, now)
    sfx0 = demo.suffix(0).encode()
    sha0 = hashlib.sha1(f"{prefix}/{demo.suffix(0)}".encode()).hexdigest().encode()
    if rec0.count(sfx0) != 2 or rec0.count(sha0) != 1 or not key0.endswith(sfx0):
        raise RuntimeError("demo record layout changed: cannot splice; update benchmarks/stores.py")
    a = rec0.index(sfx0)
    b = rec0.index(sfx0, a + 1)
    c = rec0.index(sha0)
    head, mid1, mid2, tail = rec0[:a], rec0[a + len(sfx0):b], rec0[b + len(sfx0):c], rec0[c + len(sha0):]
    key_head = key0[:-len(sfx0)]
    text_head = f"{prefix}/".encode()

    def make(i: int) -> tuple[bytes, bytes]:
        sfx = b"SN%09d" % i
        sha = hashlib.sha1(text_head + sfx).hexdigest().encode()
        return key_head + sfx, head + sfx + mid1 + sfx + mid2 + sha + tail

    for i in (1, 7, 12_345, 999_999, 123_456_789):
        if make(i) != encode_real(prefix, i, now):
            raise RuntimeError(f"spliced record {i} differs from records.encode")
    return make


def fingerprint() -> str:
    """Changes when idsim's key or record encoding changes (then cached stores are rebuilt)."""
    key, rec = encode_real(PREFIX, 0, 0)
    return hashlib.sha1(key + b"|" + rec).hexdigest()[:16]


def cache_dir(root: Path, size: int) -> Path:
    return root / f"store-{size}"


async def _fill(path: Path, size: int) -> None:
    make = fast_encoder(PREFIX, int(time.time()))
    store = LmdbStore(str(path), map_size_gib=MAP_SIZE_GIB, sync=False)
    try:
        t0 = time.monotonic()
        for start in range(0, size, CHUNK):
            await store.put_many([make(i) for i in range(start, min(size, start + CHUNK))])
            done = min(size, start + CHUNK)
            if done % 2_000_000 == 0 or done == size:
                log(f"    {done:,} / {size:,} ({time.monotonic() - t0:.0f} s)")
        store.env.sync(True)
    finally:
        await store.close()


def ensure(root: Path, size: int) -> dict:
    """The cached store of ``size`` identifiers under ``root``, built if missing or stale.

    Returns ``{"dir", "size", "build_seconds", "cached"}``; ``dir`` holds ``88.118/`` (the
    node's LMDB directory) and ``logins.json`` once a node has run on it.
    """
    d = cache_dir(root, size)
    marker = d / "built.json"
    fp = fingerprint()
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("size") == size and info.get("fingerprint") == fp:
            log(f"  store of {size:,}: cached in {d} (built in {info['build_seconds']:.1f} s)")
            return {"dir": str(d), "size": size, "build_seconds": info["build_seconds"],
                    "cached": True}
    if d.exists():
        shutil.rmtree(d)
    (d / NODE).mkdir(parents=True)
    log(f"  building a store of {size:,} identifiers in {d}")
    t0 = time.monotonic()
    asyncio.run(_fill(d / NODE, size))
    seconds = time.monotonic() - t0
    marker.write_text(json.dumps({"size": size, "fingerprint": fp, "build_seconds": seconds,
                                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    log(f"  built {size:,} identifiers in {seconds:.1f} s")
    return {"dir": str(d), "size": size, "build_seconds": seconds, "cached": False}


def preload(store_dir: Path) -> float:
    """Read the store's data file once so the page cache holds it; returns the seconds taken."""
    t0 = time.monotonic()
    with open(store_dir / "data.mdb", "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    return time.monotonic() - t0
