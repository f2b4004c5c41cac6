"""Cache stores: where the cache's entries live (see base.py for the protocol, disk.py for the
layout on disk). `Cache` in graphmerge/cache.py keeps the policy and works only through a store."""

from .base import RECORD_KINDS, BlobEntry, CacheMiss, RecordKind, Store, StoreCheck
from .disk import DiskStore
from .memory import MemoryStore

__all__ = [
    "RECORD_KINDS",
    "BlobEntry",
    "CacheMiss",
    "DiskStore",
    "MemoryStore",
    "RecordKind",
    "Store",
    "StoreCheck",
]
