"""Cache stores: where the cache's entries live (see base.py for the protocol, disk.py for the
layout on disk). `Cache` in graphmerge/cache.py keeps the policy and works only through a store."""

import re
from collections.abc import Callable
from pathlib import Path

from .base import RECORD_KINDS, BlobEntry, CacheMiss, RecordKind, Store, StoreCheck
from .disk import DiskStore
from .memory import MemoryStore

# `s3://b/p` passed through pathlib becomes `s3:/b/p`: both name a URL.
_URL = re.compile(r"^([a-z][a-z0-9+.-]+):/+(.*)$")


def store_url(location: Path | str) -> str | None:
    """The fsspec URL that `location` (a --cache-dir value) names, or None for a local folder."""
    m = _URL.match(str(location))
    if m is None:
        return None
    protocol, rest = m.groups()
    return f"{protocol}:///{rest}" if protocol == "file" else f"{protocol}://{rest}"


def open_store(location: Path | str, log: Callable[[str], None] = lambda _m: None) -> Store:
    """The store at a --cache-dir value: a folder (DiskStore) or an fsspec URL (FsspecStore)."""
    url = store_url(location)
    if url is None:
        return DiskStore(location, log)
    from .remote import FsspecStore

    return FsspecStore(url)


__all__ = [
    "open_store",
    "store_url",
    "RECORD_KINDS",
    "BlobEntry",
    "CacheMiss",
    "DiskStore",
    "MemoryStore",
    "RecordKind",
    "Store",
    "StoreCheck",
]
