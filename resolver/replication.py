"""Replication: what a primary serves its mirrors, and how a mirror follows it (pure).

Primary side, ``handlers(node)``: two msgpack-RPC methods, merged into
``SecondaryNode.rpc_handlers()`` (the top-level node inherits them). Only a ``Role.MIRROR``
caller whose name says it follows this node (``rpc_auth.primary_of(name) == node.name``) may
call them:

* ``repl_dump(after)`` -> ``[epoch, seq, [[key, value], ...], more]``: the records after key
  ``after`` (None: from the start), in key order, about ``replication.page_bytes`` a page, and
  the log position (epoch, last sequence number) read BEFORE the page. A mirror keeps the
  position of its first page and follows the log from there once the last page is in:
  replaying changes is idempotent (a put writes a whole value, a delete removes a key), so
  pages read while writes go on converge once the log is replayed from that position.
* ``repl_log(epoch, since, wait)`` -> ``[epoch, first, last, [[seq, time, key, value|None],
  ...]]``: the log entries after ``since``. When there are none it waits (long-poll) up to
  ``min(wait, replication.poll_wait)`` seconds for one, woken by this process's commits and
  reading the log every ``replication.poll_check`` seconds (another process may commit to
  the same LMDB). It answers at once when the mirror must dump again (another epoch, or
  ``since`` no longer in the log).

Mirror side, ``Follower``: the state machine of one mirror, free of I/O (the caller passes
``now`` and the replies; ``resolver.mirror`` drives it). dump -> follow; dump again when the
primary's epoch changed or its log no longer holds the position. Its position is the
``follow`` marker the mirror's store commits with the changes it applies (``Apply.marker``),
so a restarted mirror resumes where its last durable apply left it, even mid-dump.

Lag (``Follower.lag``): 0 when the last answer showed the mirror caught up; otherwise now
minus the later of the commit time of the last applied entry and the last time it was seen
caught up (the oldest change it may be missing is no older than either). A primary that does
not answer leaves the mirror "not caught up": its lag grows from the last confirmation.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

from resolver import errors
from resolver.roles import Role
from resolver.rpc_auth import Caller, Method, primary_of

NO_ENTRIES = 2**63 - 1  # ``log_read(NO_ENTRIES, 0)``: the log's position, no entries
DUMP_CHUNK = 256        # records read per scan while filling a dump page


def handlers(node) -> dict[str, Method]:
    """The RPC methods a mirror of ``node`` calls (see the module docstring)."""
    store, cfg, clock = node.store, node.config.replication, node.clock

    def check(caller: Caller) -> None:
        if primary_of(caller.name) != node.name:
            raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                     f"node {caller.name} is not a mirror of {node.name}")
        if not hasattr(store, "log_read"):
            raise errors.HandleError(errors.SERVER_NOT_RESP, f"{node.name}'s store "
                                     f"({store.url}) keeps no transaction log: no mirrors")

    def dump(caller: Caller, after: Any) -> list:
        check(caller)
        if after is not None and type(after) is not bytes:
            raise errors.HandleError(errors.INVALID_VALUE, "after must be a key (bytes) or nil")
        position = store.log_read(NO_ENTRIES, 0)  # before the page: replay covers the rest
        page, size = [], 0
        while True:
            chunk = store.scan(b"", after=after, limit=DUMP_CHUNK)
            for key, value in chunk:
                page.append([key, value])
                size += len(key) + len(value)
                if size >= cfg.page_bytes:
                    return [position.epoch, position.last, page, True]
            if len(chunk) < DUMP_CHUNK:
                return [position.epoch, position.last, page, False]
            after = chunk[-1][0]

    async def log(caller: Caller, epoch: Any, since: Any, wait: Any) -> list:
        check(caller)
        if type(epoch) is not bytes or type(since) is not int or since < 0 \
                or type(wait) not in (int, float):
            raise errors.HandleError(errors.INVALID_VALUE, "repl_log takes an epoch (bytes), "
                                     "a sequence number and a wait in seconds")
        deadline = clock() + min(max(0.0, float(wait)), cfg.poll_wait)
        while True:
            read = store.log_read(since, cfg.page_bytes)
            if read.entries or must_dump(read.epoch, read.first, read.last, epoch, since) \
                    or clock() >= deadline:
                return [read.epoch, read.first, read.last, [list(e) for e in read.entries]]
            await _first_of(store.commit_signal().wait(),
                            clock.sleep(min(cfg.poll_check, deadline - clock())))

    return {"repl_dump": Method(dump, [Role.MIRROR]), "repl_log": Method(log, [Role.MIRROR])}


def digest(store, chunk: int = 10_000) -> tuple[int, str]:
    """(count, SHA-256 of every key and value in key order): equal on a primary and a mirror
    that has caught up with it."""
    h, n, after = hashlib.sha256(), 0, None
    while page := store.scan(b"", after=after, limit=chunk):
        for key, value in page:
            h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        n += len(page)
        after = page[-1][0]
    return n, h.hexdigest()


def must_dump(epoch: bytes, first: int, last: int, my_epoch: bytes, since: int) -> bool:
    """Whether a mirror at ``(my_epoch, since)`` can no longer follow a log at
    ``(epoch, first..last)``: another epoch, entries it lacks already trimmed, or a position
    the primary never reached (its store was replaced)."""
    return epoch != my_epoch or since + 1 < first or since > last


async def _first_of(*awaitables) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


# ---------------------------------------------------------------------- the follower
@dataclass(frozen=True, slots=True)
class Position:
    """Where a mirror stands: the primary's log epoch and the last sequence number applied
    (or, while dumping, to follow from), and while dumping the last key received."""
    epoch: bytes = b""
    seq: int = 0
    dumping: bool = True
    after: bytes | None = None

    def marker(self) -> bytes:
        return msgpack.packb([self.epoch, self.seq, self.dumping, self.after])

    @classmethod
    def from_marker(cls, marker: bytes | None) -> "Position":
        if not marker:
            return cls()
        epoch, seq, dumping, after = msgpack.unpackb(marker)
        return cls(epoch, seq, dumping, after)


@dataclass(frozen=True, slots=True)
class DumpPage:
    """Need: ``repl_dump(after)``."""
    after: bytes | None


@dataclass(frozen=True, slots=True)
class ReadLog:
    """Need: ``repl_log(epoch, seq, wait)``."""
    epoch: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Apply:
    """Commit ``changes`` (value None: delete) with ``position.marker()`` in one transaction
    (``clear``: drop every record first), then call ``Follower.applied``."""
    changes: list
    position: Position
    clear: bool = False
    caught_up: bool = False
    last_commit: float | None = None   # commit time (primary) of the last entry applied
    commit_times: tuple = ()           # commit time of each log entry applied


class Follower:
    """One mirror's replication state (see the module docstring). ``need()`` says what to ask
    the primary; ``dumped``/``logged`` turn its answer into an ``Apply`` (or None: nothing to
    write); ``applied`` moves the position once that is durable; ``failed`` notes a call to
    the primary that got no answer."""

    def __init__(self, marker: bytes | None, now: float) -> None:
        self.position = Position.from_marker(marker)
        self.caught_up = False
        self.last_commit: float | None = None
        self.confirmed = now  # when it was last known not to miss anything (start: now)
        self.redumps = 0

    def need(self) -> DumpPage | ReadLog:
        p = self.position
        return DumpPage(p.after) if p.dumping else ReadLog(p.epoch, p.seq)

    def dumped(self, reply: Any, now: float) -> Apply:
        epoch, seq, items, more = reply
        p = self.position
        first = p.after is None
        if first:  # the position to follow from: read before the first page
            p = Position(epoch, seq)
        changes = [(k, v) for k, v in items]
        after = changes[-1][0] if changes else p.after
        position = Position(p.epoch, p.seq, True, after) if more else Position(p.epoch, p.seq,
                                                                               False)
        return Apply(changes, position, clear=first)

    def logged(self, reply: Any, now: float) -> Apply | None:
        epoch, first, last, entries = reply
        p = self.position
        if must_dump(epoch, first, last, p.epoch, p.seq):
            self.position, self.caught_up = Position(), False
            self.redumps += 1
            return None
        entries = [e for e in entries if e[0] > p.seq]
        if not entries:
            self.caught_up, self.confirmed = True, now
            return None
        seq = entries[-1][0]
        return Apply([(k, v) for _, _, k, v in entries], Position(p.epoch, seq, False),
                     caught_up=seq >= last, last_commit=entries[-1][1],
                     commit_times=tuple(e[1] for e in entries))

    def applied(self, apply: Apply, now: float) -> None:
        self.position = apply.position
        if apply.last_commit is not None:
            self.last_commit = apply.last_commit
        self.caught_up = apply.caught_up
        if apply.caught_up:
            self.confirmed = now

    def failed(self, now: float) -> None:
        self.caught_up = False

    def lag(self, now: float) -> float:
        if self.caught_up:
            return 0.0
        since = max(self.confirmed, self.last_commit or self.confirmed)
        return max(0.0, now - since)
