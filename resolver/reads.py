"""The read path of a secondary (or top-level) node: ``SecondaryNode`` inherits ``Reads``.

Every read is of a prefix the node homes (``check_homed``, 301 otherwise) and counts one
resolution. A key with nothing stored resolves to its synthetic population record, a tombstone
to "not found" (``resolver.overlay``). Hot answers are kept rendered (``node.answers``,
``resolver.answer_cache``): ``cached`` serves an anonymous, unfiltered GET's JSON and
``public_record`` RPC ``resolve``'s record from there, each only while the store still holds the
bytes it was rendered from, so a write in any process is seen at once; only handles that parsed
and are homed here go in (``resolve`` and ``public_record`` fill it), and only public renderings.
"""
from __future__ import annotations

from resolver import errors, overlay, records
from resolver.answer_cache import Rendered
from resolver.identifiers import Handle
from resolver.population import Record, SyntheticAnswer


class Reads:
    """Read methods over the node's ``store``, ``population``, ``answers`` and ``stats``."""

    def lookup(self, handle: Handle) -> bytes:
        """The stored record bytes; HandleError 301 or 100 otherwise."""
        self.check_homed(handle)
        return self._found(handle, self.store.get(handle.key))

    def _found(self, handle: Handle, data: bytes | None) -> bytes:
        self.stats["resolutions"] += 1
        return data if data else self.synthetic(handle, data).data()

    def cached(self, text: str) -> Rendered | None:
        """An anonymous, unfiltered GET's answer, rendered (``record_json`` serves it), or None."""
        entry = self.answers.find(text) if self.answers is not None else None
        if entry is None or entry.public_json is None:
            return None
        self.stats["resolutions"] += 1
        return entry

    def cached_hit(self, text: str) -> Rendered | None:
        """``cached`` for a caller that hands a miss to ``cached`` again (``resolver.fast_http``):
        a hit is served and counted as there; a miss is None with nothing counted or dropped."""
        entry = self.answers.find_json(text) if self.answers is not None else None
        if entry is None:
            return None
        self.stats["resolutions"] += 1
        return entry

    async def resolve(self, handle: Handle, *, fresh: bool = False) -> records.Answer:
        """As ``lookup``; the interface every role shares (``fresh`` matters to caches only).
        A network store's read is awaited, not blocked on."""
        self.check_homed(handle)
        get_async = self._get_async
        data = self.store.get(handle.key) if get_async is None else await get_async(handle.key)
        self.stats["resolutions"] += 1
        answer = records.Answer(data) if data else SyntheticAnswer(self.synthetic(handle, data))
        if self.answers is not None:  # data was read in this step: the entry matches it
            self.answers.keep_json(handle.key, data, answer.public_json)
        return answer

    def public_record(self, text: str) -> bytes:
        """RPC ``resolve``'s answer: the public record (``records.public_record``)."""
        entry = self.answers.find(text) if self.answers is not None else None
        if entry is not None and entry.record is not None:
            self.stats["resolutions"] += 1
            return entry.record
        handle = self.parse(text)
        self.check_homed(handle)
        stored = self.store.get(handle.key)
        record = records.public_record(self._found(handle, stored))
        if self.answers is not None:
            self.answers.keep_record(handle.key, stored, record)
        return record

    def synthetic(self, handle: Handle, stored: bytes | None) -> Record:
        """With nothing (or a tombstone) *stored*: the population's record, else HandleError
        100 (``resolver.overlay``)."""
        found = overlay.synthetic(self.population, handle.key, stored)
        if found is None:
            raise errors.HandleError(errors.HANDLE_NOT_FOUND, "Handle not found",
                                     handle=handle.text)
        return found
