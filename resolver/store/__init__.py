"""Record stores: ``memory:`` and ``lmdb:PATH`` behind one protocol."""
from resolver.store.base import RecordStore, group_of, open_store

__all__ = ["RecordStore", "group_of", "open_store"]
