"""Caches as graphmerge wrote them before the lock-free store: SQLite (diskcache) databases for the
tensor index, node results and file digests beside the same blobs. Tests of the migration and of
broken old databases build them with `to_legacy_layout`."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


def to_legacy_layout(root: Path) -> None:
    """Rewrite the cache folder `root` (current layout) as the old layout holding the same entries."""
    import diskcache

    from graphmerge.store import DiskStore
    from graphmerge.tensorfile import BadTensorFile, describe_tensor_file

    store = DiskStore(root)
    blobs = list(store.blobs())
    records = {kind: list(store.records(kind)) for kind in ("results", "digests")}
    store.close()
    with contextlib.closing(diskcache.Cache(str(root / "index"))) as index:
        for entry in blobs:
            try:
                info = describe_tensor_file(store.blob_path(entry.key))
                meta = {"digest": info.digest, "shape": list(info.shape), "dtype": info.dtype}
            except BadTensorFile:  # damaged after it was indexed: the index still names it
                meta = {"digest": "0" * 32, "shape": [], "dtype": "float32"}
            index[entry.key] = {**meta, "size": entry.size, "used": entry.used, "fmt": 2}
    for kind, entries in records.items():
        shutil.rmtree(root / kind, ignore_errors=True)
        with contextlib.closing(diskcache.Cache(str(root / kind))) as db:
            for key, value in entries:
                db[key] = value
    shutil.rmtree(root / "journal", ignore_errors=True)
