"""A secondary node's rendered answers: hot records kept as the bytes they are served as.

For a handle this node has resolved, an entry keeps what was stored at its key (the store's
bytes, or None for a record of the synthetic population, computed from its key) and, each
made the first time it is needed, the two public renderings of that record: ``json``, the REST
``values`` array an anonymous, unfiltered GET gets (``records.Answer.public_json``, served by
``http_output.record_json``), and ``record``, the public msgpack record RPC ``resolve`` returns
(``records.public_record``: no value without public read, no secret type). Nothing else is
kept, so nothing hidden can be served from here, and the caller serves an entry only for a
request that gets exactly that rendering (no query, no credentials).

Invariant: an entry is served only after the store has been read again and still holds exactly
the bytes it was rendered from (``store.get(key) == entry.stored``: one LMDB read, ~2 µs, and a
comparison; nothing is decoded). Every process serving a node reads the same store, so a write
by any process (or by replication into a mirror's store) is seen by the next hit in every
process, with no message between them and no window where an older answer is served. A
population record stays valid exactly while nothing is stored at its key: a write stores its
record there, a delete a tombstone (``resolver.overlay``), and either fails the check. An entry
is made from bytes read in the same synchronous step that renders it, so it never pairs a
rendering with other bytes. A store without a synchronous read (a network store) gets no cache.

Bounded: at most ``AnswersConfig.entries`` entries and ``max_bytes`` bytes (the byte strings
kept plus ``ENTRY_OVERHEAD`` each); past either, the least recently used go. Every operation is
O(1) (an ``OrderedDict``). Not thread-safe: one event loop. Counters: ``hits``, ``misses``,
``stale`` (entries dropped because the store changed), ``evicted``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from resolver.config import AnswersConfig
from resolver.identifiers import make_key

__all__ = ["AnswerCache", "Rendered", "ENTRY_OVERHEAD"]

# Bytes an entry costs besides the contents of its key and byte strings, measured with
# tracemalloc (CPython 3.11, 64-bit): the Rendered object, the headers of the key and of up to
# three bytes objects (33 B each) and the OrderedDict's slot and link, with the dict's spare
# room: 260-340 B from 700 to 44,000 entries, the most just after the dict grows.
# tests/test_answer_cache.py measures it again and holds the figure to it.
ENTRY_OVERHEAD = 360


class Rendered:
    """One cached answer: the stored bytes it was rendered from and its public renderings
    (None until first needed). ``public_json`` is what ``record_json`` serves."""

    __slots__ = ("stored", "public_json", "record", "size")

    def __init__(self, key: bytes, stored: bytes | None) -> None:
        self.stored = stored
        self.public_json: bytes | None = None
        self.record: bytes | None = None
        self.size = ENTRY_OVERHEAD + len(key) + (len(stored) if stored else 0)


class AnswerCache:
    """Rendered answers by store key, each checked against ``read(key)`` when it is hit."""

    def __init__(self, config: AnswersConfig, read: Callable[[bytes], bytes | None],
                 case_sensitive: bool = False) -> None:
        self.case_sensitive = case_sensitive
        self.max_entries = config.entries
        self.max_bytes = config.max_bytes
        self._read = read
        self._entries: OrderedDict[bytes, Rendered] = OrderedDict()
        self.bytes_used = 0
        self.hits = self.misses = self.stale = self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, text: str) -> Rendered | None:
        """``get`` by handle text (its store key, ``identifiers.make_key``): no parsing."""
        try:
            key = make_key(text, self.case_sensitive)
        except UnicodeEncodeError:  # a lone surrogate: never a key kept here
            return None
        return self.get(key)

    def find_json(self, text: str) -> Rendered | None:
        """``find`` for a caller that hands a miss to ``find`` again (``resolver.fast_http``):
        an entry with its JSON rendered, still matching the store, is counted and moved as by
        ``get``; anything else is None with nothing counted or dropped."""
        try:
            key = make_key(text, self.case_sensitive)
        except UnicodeEncodeError:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.public_json is None:
            return None
        stored = self._read(key)
        if stored is not entry.stored and stored != entry.stored:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def get(self, key: bytes) -> Rendered | None:
        """The entry for ``key`` if the store still holds what it was rendered from."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        stored = self._read(key)
        if stored is not entry.stored and stored != entry.stored:
            self.stale += 1
            self.misses += 1
            self._drop(key, entry)
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def keep_json(self, key: bytes, stored: bytes | None, public_json: bytes) -> None:
        """Remember the REST ``values`` rendered from ``stored`` (just read at ``key``)."""
        entry = self._entry(key, stored)
        if entry is not None and entry.public_json is None:
            entry.public_json = public_json
            self._grow(key, entry, len(public_json))

    def keep_record(self, key: bytes, stored: bytes | None, record: bytes) -> None:
        """Remember the public msgpack record made from ``stored`` (just read at ``key``)."""
        entry = self._entry(key, stored)
        if entry is not None and entry.record is None:
            entry.record = record
            self._grow(key, entry, 0 if record is stored else len(record))

    def _entry(self, key: bytes, stored: bytes | None) -> Rendered | None:
        """The entry for exactly these stored bytes, made (replacing another) if needed."""
        if self.max_entries <= 0:
            return None
        entry = self._entries.get(key)
        if entry is not None:
            if entry.stored is stored or entry.stored == stored:
                return entry
            self._drop(key, entry)
        entry = self._entries[key] = Rendered(key, stored)
        self.bytes_used += entry.size
        self._trim()
        return self._entries.get(key)  # None: too large to keep on its own

    def _grow(self, key: bytes, entry: Rendered, added: int) -> None:
        entry.size += added
        self.bytes_used += added
        self._trim()

    def _trim(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self.bytes_used > self.max_bytes):
            key, entry = entries.popitem(last=False)
            self.bytes_used -= entry.size
            self.evicted += 1

    def _drop(self, key: bytes, entry: Rendered) -> None:
        del self._entries[key]
        self.bytes_used -= entry.size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes_used = 0
