"""Who may do what to a record, by Handle.Net's rules: pure logic over the records it reads.

Authority follows Handle.Net. The record ``0.NA/<prefix>`` names the prefix's admins in its
HS_ADMIN values; an admin entry ``i:h`` is either an identity (the HS_SECKEY at index i of
handle h holds its secret) or a group (the HS_VLIST at index i of h lists identities, one
level deep). The rules:

- an identity logs in with the secret of its HS_SECKEY (403 otherwise);
- whoever administers a prefix, or any prefix above it by whole segments (``88.118``
  administers ``88.118.8``, not ``88.1180``), may write every handle under it;
- a handle's own HS_ADMIN values grant write access to that handle too;
- creating a prefix handle ``0.NA/<p>`` needs admin of p's parent; changing an existing one
  needs admin of p (a one-segment prefix has no parent: nobody creates it through here);
- writing anonymously is 402, writing as someone without the right is 400;
- admin-read values (HS_SECKEY…) are shown to the record's admins only.

``Authority`` reads records through ``read`` (handle text -> decoded values, or None when
absent) and ``fetch`` (key -> stored bytes) and holds no store and no node. It memoises what it read and what it decided, for the
register path (one decision per identifier). Invariants:

- each memo is an LRU of at most ``max_entries`` entries (0 keeps none); when the memo of
  records read is full, its least recently used entry goes and every decision with it (one may
  have been drawn from that record); a full memo of decisions drops only its oldest one;
- a failed login leaves nothing behind: neither its decision nor the record it read is kept,
  so distinct wrong secrets (or identities) cost a hash check each, never memory (their rate
  is bounded by ``resolver.ratelimit``);
- a caller that writes a record must call ``forget`` with the written keys, before and after
  the write, so no decision outlives a record it was drawn from;
- other processes write the same store (several serve one node): with ``fetch`` (store key ->
  the bytes stored now), every memo hit is checked against the store, a record by its bytes
  as fetched before it was read, a decision by those of every record it was drawn from; one
  that differs drops every memo (one key lookup and a bytes comparison per record, no
  decoding and no hash). Without ``fetch`` the memos hold until ``forget``. No clock.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Iterable

from resolver import auth, errors, identifiers, records
from resolver.identifiers import Handle
from resolver.records import Value

Reader = Callable[[str], "list[Value] | None"]
Fetcher = Callable[[bytes], "bytes | None"]  # store key -> the bytes stored now (None: absent)

# Handle.Net's layout of 0.NA/<prefix>, which pyhandle's defaults expect: HS_ADMIN names the
# group at index 200, whose HS_VLIST lists the owner's HS_SECKEY at index 300. Protocol data,
# not a tunable: clients address these indexes.
ADMIN_GROUP_INDEX = 200
_UNREAD = object()  # a memo miss (None is a record read as absent)


def prefix_record(na_handle: str, secret: str, *, now: int, token: bool = False) -> list[Value]:
    """The values of ``0.NA/<prefix>``: HS_ADMIN → group 200, HS_VLIST 200 → [300:self],
    HS_SECKEY 300 holding the owner's secret, hashed (``token``: a generated secret)."""
    return [
        records.admin_value(na_handle, ADMIN_GROUP_INDEX, timestamp=now),
        Value(ADMIN_GROUP_INDEX, "HS_VLIST", [{"index": auth.SECRET_INDEX, "handle": na_handle}],
              "vlist", timestamp=now),
        Value(auth.SECRET_INDEX, "HS_SECKEY", auth.hash_secret(secret, token=token), "string",
              timestamp=now, perms=records.SECRET_PERMS),
    ]


def prefix_above(handle: Handle) -> str:
    """The prefix whose admins rule ``handle``: p for ``0.NA/p``, else the handle's prefix."""
    return handle.suffix if handle.is_prefix_handle else handle.prefix


class Authority:
    """The rules above, reading through ``read``, with bounded memos (see the module doc)."""

    def __init__(self, read: Reader, *, case_sensitive: bool = False,
                 max_entries: int = 100_000, verifier: auth.Verifier | None = None,
                 fetch: Fetcher | None = None) -> None:
        self.read = read
        self.fetch = fetch
        self.case_sensitive = case_sensitive
        self.max_entries = max_entries
        self.verifier = verifier or auth.Verifier()
        # key -> (its stored bytes as fetched before reading, the values read)
        self._consulted: OrderedDict[bytes, tuple[object, list[Value] | None]] = OrderedDict()
        # decision -> (the answer, the keys of the records it was drawn from)
        self._decisions: OrderedDict[tuple, tuple[bool, tuple[bytes, ...]]] = OrderedDict()
        self._drawing: list[bytes] | None = None  # keys consulted by the decision being made

    # ---------------------------------------------------------------- memo
    def consult(self, text: str, *, keep: bool = True) -> list[Value] | None:
        """The values of ``text`` as ``read`` gave them (None: absent), remembered when
        ``keep`` until ``forget``, until the LRU lets it go, or until the store holds other
        bytes for it (another process wrote it)."""
        key = identifiers.make_key(text, self.case_sensitive)
        consulted = self._consulted
        entry = consulted.get(key)
        if entry is not None:
            if self._unchanged(key, entry[0]):
                consulted.move_to_end(key)
                self._note(key)
                return entry[1]
            self.clear()  # written elsewhere: every decision drawn from it goes too
        # fetched before reading: a write in between leaves a stamp that no longer matches
        # (the entry is read again next time), never values older than their stamp
        stamp = self.fetch(key) if self.fetch is not None else None
        values = self.read(text)
        if keep:
            self._keep(key, values, stamp)
        self._note(key)
        return values

    def _unchanged(self, key: bytes, stamp: object) -> bool:
        return self.fetch is None or self.fetch(key) == stamp

    def _note(self, key: bytes) -> None:
        if self._drawing is not None:
            self._drawing.append(key)

    def _keep(self, key: bytes, values: list[Value] | None, stamp: object = None) -> None:
        consulted = self._consulted
        if not self.max_entries:
            return
        consulted[key] = (stamp, values)
        if len(consulted) > self.max_entries:
            consulted.popitem(last=False)
            self._decisions.clear()  # some may have been drawn from the record let go

    def _decide(self, decided: tuple, ok: bool, drawn: Iterable[bytes]) -> bool:
        if self.max_entries:
            decisions = self._decisions
            decisions[decided] = (ok, tuple(dict.fromkeys(drawn)))
            if len(decisions) > self.max_entries:
                decisions.popitem(last=False)
        return ok

    def _decided(self, decided: tuple) -> bool | None:
        """A remembered decision, if every record it was drawn from is still as it was read."""
        entry = self._decisions.get(decided)
        if entry is None:
            return None
        ok, drawn = entry
        consulted = self._consulted
        for key in drawn:
            held = consulted.get(key)
            if held is None or not self._unchanged(key, held[0]):
                self.clear()  # written elsewhere (or let go): decide again
                return None
        self._decisions.move_to_end(decided)
        for key in drawn:
            self._note(key)
        return ok

    def forget(self, keys: Iterable[bytes]) -> bool:
        """Drop every memo when one of these store keys (about to be, or just) written was
        consulted. True when it did."""
        consulted = self._consulted
        if any(k in consulted for k in keys):
            self.clear()
            return True
        return False

    def held(self) -> tuple[int, int]:
        """How many records and how many decisions are remembered now."""
        return len(self._consulted), len(self._decisions)

    def clear(self) -> None:
        self._consulted.clear()
        self._decisions.clear()

    # ---------------------------------------------------------------- rules
    def authenticate(self, identity: auth.Identity, secret: str) -> auth.Identity:
        """The identity, when ``secret`` matches its HS_SECKEY; HandleError 403 otherwise."""
        # keyed by a digest: a memo entry costs the same however long the secret sent
        decided = ("login", identity, hashlib.sha256(secret.encode()).digest())
        if self._decided(decided) is None:
            key = identifiers.make_key(identity.handle, self.case_sensitive)
            stamp = self.fetch(key) if self.fetch is not None else None  # as in consult
            values = self.consult(identity.handle, keep=False)
            if not any(v.index == identity.index and v.type == "HS_SECKEY"
                       and isinstance(v.value, str) and self.verifier.verify(secret, v.value)
                       for v in values or ()):  # a failure is not remembered (module doc)
                raise errors.HandleError(errors.AUTHENTICATION_FAILED,
                                         f"Identity not verified: {identity}")
            self._keep(key, values, stamp)
            self._decide(decided, True, [key])
        return identity

    def names(self, identity: auth.Identity, entries: Iterable[tuple[int, str]]) -> bool:
        """True when an admin entry ``(index, handle)`` is the identity or a group holding it.

        A group is the HS_VLIST at that index of that handle; members that are not
        ``{"index": int, "handle": str}`` are ignored."""
        for index, handle in entries:
            if identity.matches(index, handle):
                return True
            for v in self.consult(handle) or ():
                if v.index == index and v.type == "HS_VLIST" and isinstance(v.value, list):
                    if any(identity.matches(m["index"], m["handle"]) for m in v.value
                           if isinstance(m, dict) and isinstance(m.get("index"), int)
                           and isinstance(m.get("handle"), str)):
                        return True
        return False

    def administers(self, identity: auth.Identity, prefix: str) -> bool:
        """True when the identity is an admin of ``prefix`` or of a prefix above it."""
        decided = ("admin", identity, identifiers.make_key(prefix, self.case_sensitive))
        known = self._decided(decided)
        if known is not None:
            return known
        segs = prefix.split(".")
        outer, self._drawing = self._drawing, []
        try:
            ok = any(self.names(identity, records.admins(values))
                     for n in range(len(segs), 0, -1)
                     if (values := self.consult(f"{identifiers.NA_PREFIX}/{'.'.join(segs[:n])}")))
            drawn = self._drawing
        finally:
            self._drawing = outer
        if outer is not None:
            outer.extend(drawn)
        return self._decide(decided, ok, drawn)

    def may_read_hidden(self, identity: auth.Identity, handle: Handle, rows: list[list]) -> bool:
        """Admin-read values (HS_SECKEY…) are shown to the record's admins only: admins of its
        prefix, or those its own HS_ADMIN rows (``[index, type, …, data]``) name."""
        if self.administers(identity, prefix_above(handle)):
            return True
        return self.names(identity, [(r[3]["index"], r[3]["handle"]) for r in rows
                                     if r[1] == "HS_ADMIN" and isinstance(r[3], dict)])

    def check_may_write(self, identity: auth.Identity | None, handle: Handle,
                        current: list[Value] | None) -> None:
        """None when ``identity`` may create (``current`` None) or change ``handle``;
        HandleError 402 when anonymous, 400 when not permitted."""
        if identity is None:
            raise errors.HandleError(errors.AUTHENTICATION_NEEDED, "Authentication needed",
                                     handle=handle.text)
        if handle.is_prefix_handle:
            parent = handle.suffix.rpartition(".")[0]
            allowed = self.administers(identity, handle.suffix if current else parent) if parent \
                else False
        else:
            allowed = self.administers(identity, handle.prefix) or bool(
                current and self.names(identity, records.admins(current)))
        if not allowed:
            raise errors.HandleError(errors.INSUFFICIENT_PERMISSIONS,
                                     f"{identity} may not change {handle.text}", handle=handle.text)
