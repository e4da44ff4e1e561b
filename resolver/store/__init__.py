"""Record stores: ``memory:`` and ``lmdb:PATH`` behind one protocol."""
from resolver.store.base import LogRead, RecordStore, group_of, open_store

__all__ = ["LogRead", "RecordStore", "group_of", "open_store"]
