"""Opening a cache folder written by graphmerge before the lock-free layout.

Those caches kept three SQLite databases (diskcache): `index/` (tensor key -> size, digest, last
use), `results/` and `digests/`. Their blobs are the same self-describing files, so nothing is
recomputed: last uses become the blobs' modification times, results and digests become record
files, and the databases are removed. A database SQLite cannot read is moved aside with a warning
(its blobs are checked instead; lost results are recomputed, lost digests re-hashed). Something
other than a folder where one of the store's folders belongs is moved aside the same way.

Each database is first renamed to a unique name, so of several processes opening the same old
cache at once exactly one migrates it."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from graphmerge.tensorfile import BadTensorFile, check_tensor_header

from .base import RECORD_KINDS

if TYPE_CHECKING:
    from .disk import DiskStore

LOST = {
    "results": "stored evaluation scores and node results are recomputed when needed",
    "digests": "source files are re-hashed on their next use",
}
# Folders of small, recomputable entries: a file in their place is moved aside. A file where the
# blobs belong is left for the user (the run stops with an error naming it): it may be theirs.
FOLDERS = (*RECORD_KINDS, "tokenizers", "journal")


def sqlite_ok(db: Path) -> bool:
    """An SQLite file that passes SQLite's own check."""
    import sqlite3  # only old caches have one: not imported on every start

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.Error:
        return False


def _claim(path: Path, tag: str) -> Path | None:
    """Rename `path` to a unique sibling; None when another process got there first."""
    aside = path.with_name(f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return None
    return aside


def _entries(folder: Path) -> list[tuple[object, object]] | None:
    """Every (key, value) of an old diskcache folder; None when it cannot be read."""
    if not folder.is_dir() or not sqlite_ok(folder / "cache.db"):
        return None
    import diskcache

    try:
        with contextlib.closing(diskcache.Cache(str(folder))) as db:
            return [(k, db[k]) for k in list(db)]
    except Exception:  # a database that passed quick_check but whose rows diskcache cannot read
        return None


def _check_blobs(store: DiskStore) -> int:
    """Drop torn or foreign blobs (cheap header check) and journal the good ones."""
    good = []
    for entry in store.blobs():
        try:
            check_tensor_header(store.blob_path(entry.key))
            good.append(entry)
        except (OSError, BadTensorFile):
            store.blob_path(entry.key).unlink(missing_ok=True)
    for entry in good:
        store.journal.note("+", [entry.key], when=entry.used)
    return len(good)


def migrate(store: DiskStore, log: Callable[[str], None]) -> list[str]:
    """Migrate what is old under `store.root`; returns the warnings about what was set aside."""
    root, recovered = store.root, []

    def warn(name: str, aside: Path, what: str) -> None:
        message = (
            f"the cache's {name} database {root / name} was unreadable: moved it to {aside.name} and {what}"
        )
        recovered.append(message)
        log(message)

    for name in FOLDERS:
        if (root / name).exists() and not (root / name).is_dir() and (aside := _claim(root / name, "broken")):
            message = f"the cache's {name} folder {root / name} was not a folder: moved it to {aside.name}"
            recovered.append(message)
            log(message)

    if (root / "index").exists() and (claimed := _claim(root / "index", "migrating")) is not None:
        entries = _entries(claimed)
        if entries is None:
            aside = claimed.rename(claimed.with_name(claimed.name.replace("migrating", "broken")))
            warn("index", aside, f"rebuilt it from the blobs ({_check_blobs(store)} tensors)")
        else:
            for key, meta in entries:
                used = meta.get("used", 0.0) if isinstance(meta, dict) else 0.0
                if used:  # the last use becomes the blob's mtime: what LRU-by-use eviction reads now
                    with contextlib.suppress(OSError):  # a blob gone, or no blobs folder at all
                        os.utime(store.blob_path(str(key)), (used, used))
                store.journal.note("+", [str(key)], when=used or time.time())
            shutil.rmtree(claimed, ignore_errors=True)

    for kind in RECORD_KINDS:
        if not (root / kind / "cache.db").exists() or (claimed := _claim(root / kind, "migrating")) is None:
            continue
        entries = _entries(claimed)
        if entries is None:
            aside = claimed.rename(claimed.with_name(claimed.name.replace("migrating", "broken")))
            warn(kind, aside, f"started it empty; {LOST[kind]}")
            continue
        for key, value in entries:
            store.put_record(kind, key, value)
        shutil.rmtree(claimed, ignore_errors=True)
    return recovered
