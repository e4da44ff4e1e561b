"""The record store protocol every backend implements, and the URL that picks a backend.

Keys are normalised handle bytes (``identifiers.make_key``); values are encoded record bytes
(``records.encode``). Stores never hold decoded Python objects: at millions of records those
cost ~1 KiB each and stall the event loop in GC.

Reads are synchronous (an LMDB lookup is microseconds: cheaper than a coroutine switch).
``lmdb:`` and ``memory:`` also have ``get_many(keys)``: ``get`` of each key, in order, from one
snapshot (batch registration reads every key of a batch with it; other stores: one ``get`` each).
A network store (``redis-cluster://``) also has ``async get_async(key)``, the same read
without blocking the event loop; the node's resolve path awaits it when a store has it.
Writes are async and return only once the data is durable; concurrent writers share one
commit (group commit). Counts are kept per *group*: the part of the key before the first
``/``, i.e. the normalised prefix, so "how many identifiers under 88.118.8" is one lookup.
"""
from __future__ import annotations

from typing import (TYPE_CHECKING, Collection, Iterable, NamedTuple, Protocol, Sequence,
                    runtime_checkable)

if TYPE_CHECKING:
    from resolver.config import ReplicationConfig, StoreConfig


class LogRead(NamedTuple):
    """What a store's transaction log holds (``log_read``; stores that mirrors can follow:
    ``lmdb:`` and ``memory:``): its epoch (a new one means "dump again"), the first sequence
    number still held (``last + 1`` when empty), the last one assigned, and entries
    ``(seq, commit time, key, value or None for a delete)`` in sequence order."""
    epoch: bytes
    first: int
    last: int
    entries: list


def group_of(key: bytes) -> bytes:
    return key.partition(b"/")[0]


@runtime_checkable
class RecordStore(Protocol):
    url: str

    def get(self, key: bytes) -> bytes | None:
        """The stored bytes, or None."""

    async def put_many(self, items: Sequence[tuple[bytes, bytes]],
                       absent: Collection[bytes] = ()) -> set[bytes]:
        """Store all items in one durable transaction; returns after the commit. Keys of
        ``absent`` that hold a record when the transaction runs (another process created
        them after they were read) are not written, and are returned."""

    async def delete(self, key: bytes) -> bool:
        """Remove a key durably; False if it was not there."""

    def scan(self, prefix: bytes, *, after: bytes | None = None,
             limit: int = 100) -> list[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in key order, strictly after ``after``."""

    def count(self, group: bytes | None = None) -> int:
        """All keys, or the keys of one group (normalised prefix)."""

    def groups(self) -> Iterable[tuple[bytes, int]]:
        """Every group with its count."""

    async def close(self) -> None:
        ...


def store_kind(text: str) -> str:
    """A ``--store`` option's value: ``lmdb``, ``memory`` or a ``redis-cluster://`` URL whose
    namespace each node extends with its name (``redis_cluster.for_node``)."""
    if text in ("lmdb", "memory") or text.startswith("redis-cluster://"):
        return text
    raise ValueError(f"unknown store {text!r}: lmdb, memory or redis-cluster://HOST:PORT,...")


def open_store(url: str, config: "StoreConfig | None" = None,
               log: "ReplicationConfig | None" = None) -> RecordStore:
    """``memory:`` or ``lmdb:PATH`` (optionally ``lmdb:PATH?map_size=GiB&sync=0``; without
    ``map_size`` the config's ``lmdb_map_size_gib``), or ``redis-cluster://HOST:PORT,...``
    (``resolver.store.redis_cluster``). ``log``: the transaction log's retention (the
    ``[replication]`` section; defaults when not given)."""
    from resolver.config import ReplicationConfig, StoreConfig
    config = config or StoreConfig()
    log = log or ReplicationConfig()
    scheme, _, rest = url.partition(":")
    if scheme == "memory":
        from resolver.store.memory import MemoryStore
        return MemoryStore(log=log)
    if scheme == "lmdb":
        from resolver.store.lmdb import LmdbStore
        path, _, query = rest.partition("?")
        opts = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if not path:
            raise ValueError("lmdb store needs a path: lmdb:/var/lib/idsim/node")
        return LmdbStore(path, map_size_gib=float(opts.get("map_size", config.lmdb_map_size_gib)),
                         sync=opts.get("sync", "1") not in ("0", "false"), log=log,
                         gather=config.commit_gather)
    if scheme == "redis-cluster" and rest.startswith("//"):  # s4: issue 12 part 4
        from resolver.store.redis_cluster import RedisClusterStore
        return RedisClusterStore(url, config)
    raise ValueError(f"unknown store URL {url!r}: use memory:, lmdb:PATH or "
                     "redis-cluster://HOST:PORT,...")
