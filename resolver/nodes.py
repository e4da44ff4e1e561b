"""The secondary node: it homes prefixes and serves and writes their records in a store.

Invariants: a record is read and written only for a prefix this node homes (``check_homed``,
301 otherwise); every write goes through ``_store`` (durable when it returns), which keeps the
authority memos true; a write holds the locks of every key it reads and writes (``KeyLocks``),
so concurrent writes of one handle are serialised. Who may write is decided by
``resolver.authority`` reading this node's records; the batch limit and memo bounds come from
``node.config``. With a synthetic population (``resolver.population``) a key with nothing
stored resolves to its computed record; writes sit on top (``resolver.overlay``: a stored
record wins, a tombstone hides); a prefix that opts into its template is checked strictly
(``resolver.templates``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable


from resolver import auth, errors, identifiers, overlay, records, writes
from resolver import templates as industry_templates
from resolver import replication  # the mirrors' RPC methods (rpc_handlers)
from resolver.answer_cache import AnswerCache
from resolver.authority import Authority, prefix_above, prefix_record
from resolver.clock import SYSTEM, Clock
from resolver.config import Config
from resolver.identifiers import Handle
from resolver.locks import KeyLocks
from resolver.population import Population
from resolver.ratelimit import LoginLimits
from resolver.reads import Reads
from resolver.records import Value
from resolver.roles import Role
from resolver.rpc_auth import Method, text_param
from resolver.store import RecordStore

SCAN_CHUNK = overlay.SCAN_CHUNK  # rows per store scan when paging (top.py pages with it too)

# what /api/stats counts (every node's, and the top-level node's network totals)
STATS_NOTES = {
    "since": "resolutions and registrations count from this start of the node (UTC); "
             "a restart sets them to 0",
    "identifiers": "identifiers registered now: stored ones, whenever they were written, and "
                   "a synthetic population's (computed on demand) less those deleted",
    "registrations": "writes since the start that created an identifier (demo seeding "
                     "included; replacing one does not count, deleting one does not subtract)",
}


@dataclass(frozen=True, slots=True)
class Credentials:
    prefix: str
    username: str
    secret: str


class SecondaryNode(Reads):
    role = Role.SECONDARY

    def __init__(self, name: str, store: RecordStore, homed: Iterable[str],
                 config: Config | None = None, *, case_sensitive: bool = False,
                 clock: Clock = SYSTEM, population: Population | None = None,
                 templates: dict | None = None) -> None:
        self.name = name
        self.store = store
        # a network store's non-blocking read, awaited by resolve (resolver.store.base)
        self._get_async = getattr(store, "get_async", None)
        self.config = config or Config()
        self.homed = [identifiers.check_prefix(p) for p in homed]
        self._homes: dict[str, bool] = {}  # prefix → homed here (resolve path: no re-check)
        self.case_sensitive = case_sensitive
        # called with each prefix allocated here, before it is stored (see topology.wiring)
        self.announce: Callable[[str], Awaitable] | None = None
        self.authority = Authority(self.values_of, case_sensitive=case_sensitive,
                                   max_entries=self.config.cache.memo_entries,
                                   fetch=store.get)  # memos checked: other processes write too
        self.clock = clock
        self.locks = KeyLocks()
        self.stats: Counter[str] = Counter()
        # failed Basic-auth logins per client address and identity (http_input.identity_of)
        self.logins = LoginLimits(self.config.auth, clock)
        self.since = records.iso_timestamp(int(clock()))  # the counters in stats count from here
        # called with the login of each prefix allocated here, once stored (see topology.host)
        self.allocated: Callable[[Credentials], None] | None = None
        # identifiers served without being stored (resolver.overlay), and the
        # industry templates a prefix may opt into strictly (resolver.templates)
        self.population = population
        self.templates = templates or {}
        # rendered answers (resolver.answer_cache); none for a network store (read by awaiting)
        self.answers = (AnswerCache(self.config.answers, store.get, case_sensitive)
                        if self._get_async is None and self.config.answers.entries else None)

    # ---------------------------------------------------------------- naming
    def parse(self, text: str) -> Handle:
        return identifiers.parse(text, case_sensitive=self.case_sensitive)

    def key(self, text: str) -> bytes:
        return identifiers.make_key(text, self.case_sensitive)

    def homes(self, prefix: str) -> bool:
        known = self._homes.get(prefix)
        if known is None:
            if len(self._homes) >= self.config.cache.memo_entries:
                self._homes.clear()
            known = self._homes[prefix] = any(identifiers.is_under(prefix, p) for p in self.homed)
        return known

    def check_homed(self, handle: Handle) -> None:
        if not self.homes(prefix_above(handle)):
            raise errors.HandleError(errors.SERVER_NOT_RESP, "That prefix doesn't live here",
                                     handle=handle.text)

    # ---------------------------------------------------------------- reads
    # lookup, cached, resolve, public_record, synthetic: resolver.reads (Reads)
    def read(self, key: bytes) -> tuple[bytes | None, bytes | None]:
        """(stored bytes, the record served): what a write replaces (``resolver.overlay``)."""
        stored = self.store.get(key)
        found = overlay.synthetic(self.population, key, stored)
        return stored, stored if stored else (None if found is None else found.data())

    def read_many(self, keys: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
        """``read`` of each key, in order (one store snapshot where the store has ``get_many``)."""
        get_many = getattr(self.store, "get_many", None)
        stored = get_many(keys) if get_many is not None else [self.store.get(k) for k in keys]
        if not self.population:
            return [(s, s if s else None) for s in stored]
        out = []
        for key, s in zip(keys, stored):
            found = overlay.synthetic(self.population, key, s)
            out.append((s, s if s else (None if found is None else found.data())))
        return out

    def strict_check(self, handle: Handle, values: list[Value], seen: dict | None = None) -> None:
        """Strict mode: a prefix whose ``0.NA`` record names a template (``IDSIM_TEMPLATE``)
        refuses a record missing or mistyping one of its fields (400 naming the field)."""
        template = writes.strict_template(self, handle, {} if seen is None else seen)
        if template is not None:
            industry_templates.check(template, values, handle.text)

    def values_of(self, text: str) -> list[Value] | None:
        data = self.store.get(self.key(text))
        return None if not data else records.decode(data)[1]  # b"": a tombstone

    async def _store(self, puts: list[tuple[bytes, bytes]], delete: bytes | None = None, *,
                     absent: Iterable[bytes] = ()) -> set[bytes]:
        """The one way this node writes its store: durable on return, authority memos kept
        true. ``absent``: keys being created; those another process created since they were
        read (several processes serve one node) are not written, and are returned."""
        keys = [k for k, _ in puts] + ([delete] if delete is not None else [])
        self.authority.forget(keys)
        taken = await self.store.put_many(puts, absent) if puts else set()
        if delete is not None:
            await self.store.delete(delete)
        self.authority.forget(keys)  # read again while the commit ran
        return taken or set()

    def list_handles(self, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        """One page of the handles registered under ``prefix``: the population's first, then
        the stored ones in key order (``overlay.page``)."""
        return overlay.page(self.store, self.population, self.key(prefix), page * page_size,
                            page_size, lambda v: records.decode_rows(v)[0])

    # ---------------------------------------------------------------- authority
    # The rules are resolver.authority's (self.authority); the HTTP layer asks through these.
    def authenticate(self, identity: auth.Identity, secret: str) -> auth.Identity:
        return self.authority.authenticate(identity, secret)

    def administers(self, identity: auth.Identity, prefix: str) -> bool:
        return self.authority.administers(identity, prefix)

    def may_read_hidden(self, identity: auth.Identity, handle: Handle, rows: list[list]) -> bool:
        return self.authority.may_read_hidden(identity, handle, rows)

    # ---------------------------------------------------------------- writes
    def _prepare(self, handle: Handle, values: list[Value], identity: auth.Identity) -> list[Value]:
        """Defaults a stored record gets: HS_ADMIN for the writer, secrets hashed
        (``writes.prepare_rows``, on the values' rows)."""
        rows = writes.prepare_rows(handle, [v.to_row() for v in values], identity,
                                   int(self.clock()))
        return [Value(r[0], r[1], r[3], r[2], r[4], r[5], r[6]) for r in rows]

    def _encode(self, text: str, values: list[Value]) -> bytes:
        return self._encode_rows(text, [v.to_row() for v in values])

    def _encode_rows(self, text: str, rows: list[list]) -> bytes:
        """A record's stored bytes, refused (413) over ``http.max_record``."""
        data = records.encode_rows(text, rows)
        if len(data) > (limit := self.config.http.max_record):
            raise records.too_large(f"the record would be {len(data)} bytes; at most {limit}"
                                    ).with_handle(text)
        return data

    async def put(self, handle: Handle, values: list[Value], *, identity: auth.Identity | None,
                  overwrite: bool = True, indexes: set[int] | None = None) -> bool:
        """Create or replace a record (or, with ``indexes``, some of its values).

        Returns True when the handle was created. Durable when it returns.
        """
        return await self.put_rows(handle, [v.to_row() for v in values], identity=identity,
                                   overwrite=overwrite, indexes=indexes)

    async def put_rows(self, handle: Handle, rows: list[list], *,
                       identity: auth.Identity | None, overwrite: bool = True,
                       indexes: set[int] | None = None) -> bool:
        """``put`` of the values as rows (``record_input.rows_from_json``'s, changed in place):
        the PUT path builds no ``Value`` objects."""
        self.check_homed(handle)
        async with self.locks.hold([handle.key]):
            stored, data = self.read(handle.key)
            text, current = records.decode(data) if data is not None else (handle.text, None)
            self.authority.check_may_write(identity, handle, current)
            if indexes:
                if current is None:
                    raise errors.HandleError(errors.HANDLE_NOT_FOUND, "Handle not found",
                                             handle=handle.text)
                taken = indexes & {v.index for v in current}
                if taken and not overwrite:
                    raise errors.HandleError(errors.VALUE_ALREADY_EXISTS,
                                             f"values exist at index {sorted(taken)}",
                                             handle=handle.text)
                rows = [v.to_row() for v in records.merge(current, [
                    Value(r[0], r[1], r[3], r[2], r[4], r[5], r[6]) for r in rows
                    if r[0] in indexes])]
            elif current is not None and not overwrite:
                raise errors.HandleError(errors.HANDLE_ALREADY_EXISTS, "Handle already exists",
                                         handle=handle.text)
            rows = writes.prepare_rows(handle, rows, identity, int(self.clock()))
            writes.check_strict_rows(self, handle, rows, {})
            extra, tomb = overlay.on_write(self.population, handle.key, stored)
            absent = (handle.key,) if current is None and not overwrite else ()
            if await self._store([(handle.key, self._encode_rows(text, rows)), *extra],
                                 delete=tomb, absent=absent):  # created meanwhile elsewhere
                raise errors.HandleError(errors.HANDLE_ALREADY_EXISTS, "Handle already exists",
                                         handle=handle.text)
        self.stats["registrations"] += current is None
        return current is None

    async def delete(self, handle: Handle, *, identity: auth.Identity | None,
                     indexes: set[int] | None = None) -> None:
        self.check_homed(handle)
        async with self.locks.hold([handle.key]):
            stored, data = self.read(handle.key)
            if data is None:
                raise errors.HandleError(errors.HANDLE_NOT_FOUND, "Handle not found",
                                         handle=handle.text)
            text, current = records.decode(data)
            self.authority.check_may_write(identity, handle, current)
            if indexes:
                kept = [v for v in current if v.index not in indexes]
                if len(kept) == len(current):
                    raise errors.HandleError(errors.VALUES_NOT_FOUND, "Values not found",
                                             handle=handle.text, status=400)
                if kept:
                    extra, tomb = overlay.on_write(self.population, handle.key, stored)
                    await self._store([(handle.key, records.encode(text, kept)), *extra],
                                      delete=tomb)
                    return
            await self._store(*overlay.on_delete(self.population, handle.key, stored))

    async def register_many(self, items: list[tuple[str, object]], *,
                            identity: auth.Identity | None, overwrite: bool = False,
                            prefix_records: bool = True) -> list[dict]:
        """Register many identifiers in one durable commit; one result per item, in order.

        ``items`` are (handle text, values JSON). Items that fail (invalid, exists, not
        permitted) are answered with their own responseCode; the rest are written.
        ``prefix_records`` False refuses items naming ``0.NA/...`` (``resolver.writes``).
        """
        return await writes.register_many(self, items, identity=identity, overwrite=overwrite,
                                           prefix_records=prefix_records)

    async def create_prefix(self, prefix: str, *, identity: auth.Identity | None,
                            secret: str | None = None, token: bool = False) -> Credentials:
        """Allocate an enterprise prefix below one this node homes, with an owner login.

        Writes ``0.NA/<prefix>`` holding HS_ADMIN → group 200, HS_VLIST 200 → [300],
        HS_SECKEY 300 (hashed): Handle.Net's layout, which pyhandle's defaults expect.
        Without ``secret`` one is generated; ``token`` says a given one was generated too.
        """
        identifiers.check_prefix(prefix)
        handle = self.parse(f"{identifiers.NA_PREFIX}/{prefix}")
        self.check_homed(handle)
        self.authority.check_may_write(identity, handle, None)
        if self.store.get(handle.key) is not None:
            raise errors.HandleError(errors.HANDLE_ALREADY_EXISTS, "prefix already exists",
                                     handle=handle.text)
        if self.announce is not None:  # first the network learns where it lives
            await self.announce(prefix)
        token = token or secret is None
        secret = secret or auth.new_secret()
        values = prefix_record(handle.text, secret, now=int(self.clock()), token=token)
        await self.put(handle, values, identity=identity, overwrite=False)
        creds = Credentials(prefix, f"{auth.SECRET_INDEX}:{handle.text}", secret)
        if self.allocated is not None:
            self.allocated(creds)
        return creds

    async def bootstrap(self, admin_secret: str, *, token: bool = True) -> Credentials:
        """Make sure each homed prefix has its ``0.NA`` record with an owner login.

        The node's own admin is the owner of its first homed prefix (``300:0.NA/88.118``).
        Existing records are left alone (a restart keeps the secret it had).
        """
        creds = None
        for prefix in self.homed:
            handle = self.parse(f"{identifiers.NA_PREFIX}/{prefix}")
            if self.store.get(handle.key) is None:
                values = prefix_record(handle.text, admin_secret, now=int(self.clock()), token=token)
                await self._store([(handle.key, records.encode(handle.text, values))])
            creds = creds or Credentials(prefix, f"{auth.SECRET_INDEX}:0.NA/{prefix}", admin_secret)
        return creds

    def report_stats(self) -> dict:
        """Counters a secondary node reports to the top-level node."""
        na = self.key(identifiers.NA_PREFIX)
        groups = dict(self.store.groups())
        return {"role": self.role,
                "enterprises": max(0, groups.get(na, 0) - len(self.homed)),
                "identifiers": overlay.identifiers(self.population, groups),
                "resolutions": self.stats["resolutions"],
                "registrations": self.stats["registrations"], "since": self.since}

    def rpc_handlers(self) -> dict:
        """RPC methods and who may call them (``resolver.rpc_auth``). ``resolve`` answers
        what an anonymous HTTP GET here shows (``records.public_record``): hidden values are read
        with credentials at this node's own HTTP port, never through another node."""
        def resolve(caller, text) -> bytes:
            return self.public_record(text_param(text, "handle"))

        async def resolve_remote(caller, text) -> bytes:  # a network store: awaited
            return records.public_record((await self.resolve(self.parse(text_param(text, "handle")))).data)
        return {"resolve": Method(resolve if self._get_async is None else resolve_remote,
                                  [Role.RECURSIVE, Role.TOP]),
                "stats": Method(lambda caller: self.report_stats(), [Role.TOP]),
                **replication.handlers(self)}  # what this node's mirrors call

    async def close(self) -> None:
        await self.store.close()

