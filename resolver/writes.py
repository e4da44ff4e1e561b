"""The write path of a secondary node on stored rows: what a record gets before it is stored,
the strict-template check, and batch registration (``SecondaryNode.register_many``).

A record is handled as the rows it is stored as (``[index, type, format, value, ttl, ts,
perms]``, ``record_input.rows_from_json``): validation writes them, these functions complete them
(in place) and ``records.encode_rows`` packs them, with no ``Value`` object on the way.

Invariants: nothing here weakens a check of the single-write path; a batch answers one result
per item, in order, a bad item failing alone with its own responseCode; every item of a batch
is written in one durable commit (``node._store``) under the locks of all its keys; the batch
limit is ``node.config.batch.max_register`` (413 past it). Who may write is
``node.authority``'s decision, asked once per prefix and batch for new identifiers (it
depends on the identity and the prefix only). Several processes may serve one store: a
batch's keys are read in one store snapshot (``node.read_many``) under their locks, and a
create is checked again inside the store's commit (``absent``): of two processes creating
one new key at the same instant, the later is answered "already exists".
"""
from __future__ import annotations

from resolver import auth, errors, identifiers, overlay, record_input, records
from resolver import templates as industry_templates
from resolver.identifiers import Handle
from resolver.records import Value

ADMIN_PERMISSIONS = "111111111111"  # what the writer's default HS_ADMIN grants (all)


def not_allocated(text: str) -> errors.HandleError:
    """A prefix record (``0.NA/<prefix>``) is created by the admin API only, which also tells
    the top-level node where the prefix lives; writes may replace an existing one."""
    return errors.HandleError(errors.INVALID_VALUE, "a prefix is allocated with POST "
                              "/api/admin/prefixes, not written as a handle", handle=text)


def prepare_rows(handle: Handle, rows: list[list], identity: auth.Identity,
                 now: int) -> list[list]:
    """Defaults a stored record gets, on its rows (changed in place, and returned): an
    HS_ADMIN row for the writer when it has none, secrets (HS_SECKEY) hashed."""
    if not handle.suffix:
        raise identifiers.InvalidHandle("handle has an empty suffix", handle.text)
    if not rows:
        raise errors.HandleError(errors.INVALID_VALUE, "a record needs at least one value",
                                 handle=handle.text)
    has_admin = taken = False
    for row in rows:
        vtype = row[1]
        if vtype == "HS_ADMIN":
            has_admin = True
        elif vtype == "HS_SECKEY" and isinstance(row[3], str) and not auth.is_hashed(row[3]):
            row[3] = auth.hash_secret(row[3])
        if row[0] == records.ADMIN_INDEX:
            taken = True
    if not has_admin:
        index = records.ADMIN_INDEX  # the first free index from 100 on
        if taken:
            used = {row[0] for row in rows}
            while index in used:
                index += 1
        rows.append([index, "HS_ADMIN", "admin", {"handle": identity.handle,
                                                  "index": identity.index,
                                                  "permissions": ADMIN_PERMISSIONS},
                     records.DEFAULT_TTL, now, records.DEFAULT_PERMS])
    return rows


async def put_document(node, handle: Handle, identity: auth.Identity | None, doc, *,
                       overwrite: bool, indexes: set[int] | None) -> bool:
    """A PUT's decoded body ``doc`` checked and stored at ``handle`` (``node.put_rows``);
    True when created. What ``web.put_handle`` and the PUT fast path (``resolver.fast_put``)
    both do once the request is read."""
    try:
        rows = record_input.rows_from_json(doc, now=int(node.clock()),
                                           max_data=node.config.http.max_value_data)
    except errors.HandleError as exc:
        raise exc.with_handle(handle.text) from None
    if handle.is_prefix_handle and node.store.get(handle.key) is None:
        raise not_allocated(handle.text)
    return await node.put_rows(handle, rows, identity=identity, overwrite=overwrite,
                               indexes=indexes)


def strict_template(node, handle: Handle, seen: dict) -> industry_templates.Template | None:
    """The template a strict prefix names in its ``0.NA`` record (``IDSIM_TEMPLATE``), None for
    a prefix that names none; 202 for one naming an unknown template. ``seen`` keeps the
    name per prefix for one batch; the ``0.NA`` record itself is read through the node's
    authority memo (forgotten whenever it is written)."""
    if handle.is_prefix_handle:
        return None
    if handle.prefix not in seen:
        na = node.authority.consult(f"{identifiers.NA_PREFIX}/{handle.prefix}") or ()
        names = [v.value for v in na if v.type == industry_templates.STRICT_TYPE]
        seen[handle.prefix] = names[0] if names and isinstance(names[0], str) else None
    name = seen[handle.prefix]
    if name is None:
        return None
    template = node.templates.get(name) or industry_templates.CATALOGUE.get(name)
    if template is None:
        raise errors.HandleError(errors.INVALID_VALUE, f"prefix {handle.prefix} names "
                                 f"no known template {name!r}", handle=handle.text)
    return template


def check_strict_rows(node, handle: Handle, rows: list[list], seen: dict) -> None:
    """``SecondaryNode.strict_check`` on rows (Values are made only for a strict prefix)."""
    template = strict_template(node, handle, seen)
    if template is not None:
        industry_templates.check(template, [Value(r[0], r[1], r[3], r[2], r[4], r[5], r[6])
                                            for r in rows], handle.text)


async def register_many(node, items: list[tuple[object, object]], *,
                        identity: auth.Identity | None, overwrite: bool = False,
                        prefix_records: bool = True) -> list[dict]:
    """See ``SecondaryNode.register_many``. ``prefix_records`` False refuses an item naming a
    prefix record (``0.NA/...``) with ``not_allocated`` (the HTTP batch: prefixes are
    allocated by the admin API only)."""
    limit = node.config.batch.max_register
    if len(items) > limit:
        raise errors.HandleError(errors.INVALID_VALUE,
                                 f"a batch registers at most {limit} identifiers; "
                                 f"got {len(items)}", status=413)
    now = int(node.clock())
    max_data = node.config.http.max_value_data
    parse, homes, rows_from_json = node.parse, node.homes, record_input.rows_from_json
    results: list[dict] = []
    todo: dict[bytes, tuple[int, Handle, str, bool, list[list]]] = {}
    for pos, (text, doc) in enumerate(items):
        try:
            handle = parse(text)
            is_prefix = handle.is_prefix_handle
            if is_prefix and not prefix_records:
                raise not_allocated(str(text))
            name = handle.text
            if not homes(handle.suffix if is_prefix else handle.prefix):  # prefix_above
                raise errors.HandleError(errors.SERVER_NOT_RESP, "That prefix doesn't live here",
                                         handle=name)
            if handle.key in todo:
                raise errors.HandleError(errors.HANDLE_ALREADY_EXISTS,
                                         "handle appears twice in this batch", handle=text)
            todo[handle.key] = (pos, handle, name, is_prefix,
                                rows_from_json(doc, now=now, max_data=max_data))
            results.append({"responseCode": errors.SUCCESS, "handle": name})
        except errors.HandleError as exc:
            results.append(exc.with_handle(str(text)).body())
    writes: list[tuple[bytes, bytes]] = []
    tombs: list[bytes] = []
    strict: dict = {}  # prefix -> its template's name or None (strict_template)
    may_create: set[str] = set()  # prefixes this identity may create identifiers under
    population, encode = node.population, node._encode_rows
    creating: list[bytes] = []  # checked again inside the commit (another process may create)
    async with node.locks.hold(todo):
        for (key, (pos, handle, name, is_prefix, rows)), (stored, data) in zip(
                todo.items(), node.read_many(list(todo))):  # one snapshot, under the locks
            try:
                if data is None:
                    if is_prefix or handle.prefix not in may_create:
                        node.authority.check_may_write(identity, handle, None)  # memoised
                        if not is_prefix:
                            may_create.add(handle.prefix)
                elif not overwrite:
                    raise errors.HandleError(errors.HANDLE_ALREADY_EXISTS,
                                             "Handle already exists", handle=name)
                else:
                    node.authority.check_may_write(identity, handle, records.decode(data)[1])
                rows = prepare_rows(handle, rows, identity, now)
                if is_prefix or strict.get(handle.prefix, True) is not None:
                    check_strict_rows(node, handle, rows, strict)
                writes.append((key, encode(name, rows)))
                if data is None and not overwrite:
                    creating.append(key)
                if population or stored == overlay.TOMBSTONE:  # else on_write adds nothing
                    extra, tomb = overlay.on_write(population, key, stored)
                    if extra:
                        writes += extra
                    if tomb:
                        tombs.append(tomb)
            except errors.HandleError as exc:
                results[pos] = exc.with_handle(name).body()
        for key in await node._store(writes, absent=creating):
            pos, _, name = todo[key][:3]
            results[pos] = errors.HandleError(errors.HANDLE_ALREADY_EXISTS,
                                              "Handle already exists", handle=name).body()
        for tomb in tombs:  # identifiers registered again after a delete (rare)
            await node._store([], delete=tomb)
    node.stats["registrations"] += sum(1 for r in results if r["responseCode"] == 1)
    return results
