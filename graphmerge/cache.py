"""The cache's policy over a store: two tensor tiers, node results, memoised file digests, folders.

Where entries live is the store's business (graphmerge/store: `DiskStore`, the default, with its
layout documented in graphmerge/store/disk.py; `MemoryStore` for tests). Every blob read is checked
against its digest, so a corrupted or deleted blob is a cache miss (recomputed), never bad data.
Tensors have two tiers: a memory tier (an LRU of recently used tensors, kept on the GPU while it
has room) and the store (blobs under a byte budget, evicted least recently *used* first while a run
goes on; last uses are the blobs' modification times, so every process sees them). Node results,
file digests and folders are small and are never evicted.

The disk budget is accounted per process from a scan of the blobs: processes sharing a cache each
keep it from their own view, and rescan before evicting.

`Cache(root, force=True)` (`graphmerge run --force`) treats everything stored by earlier runs as
missing: each value is recomputed and overwrites the old entry, and what this run has written it
reuses. That is the escape hatch when a cached value is stale in a way its key cannot see (a plugin
op's body edited without bumping its `version`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from graphmerge.atomic import atomic_write_bytes
from graphmerge.errors import SpecError
from graphmerge.lazy import torch
from graphmerge.store import CacheMiss, Store, open_store
from graphmerge.store.legacy import sqlite_ok

__all__ = ["Cache", "CacheMiss", "CacheSettings", "VerifyReport", "atomic_write_bytes", "default_cache_dir"]

SearchPersist = Literal["all", "reused"]
DEFAULT_MEMORY = 1 << 30
# Without a budget the blobs may take this share of the disk space free when the cache opens.
DEFAULT_DISK_SHARE = 0.5
_TOUCH_FLUSH = 256


def default_cache_dir() -> Path:
    env = os.environ.get("GRAPHMERGE_CACHE")
    return Path(env) if env else Path.cwd() / ".graphmerge"


def _size_setting(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if value == 0 or value == "0":
        return 0
    from graphmerge.io.save import parse_size

    try:
        return parse_size(value)
    except SpecError as exc:
        raise SpecError(f"{name}: {exc.what}", fix=exc.fix) from None


@dataclass(frozen=True)
class CacheSettings:
    """How much the cache may hold. `max_size`: disk budget of the tensor blobs in bytes (None: half
    the free disk space; 0: tensors are never written to disk). `memory`: bytes of the memory tier
    (0: none). `search_persist`: what search trials write to disk ("reused": a tensor only when a
    second trial needs it; "all": everything)."""

    max_size: int | None = None
    memory: int = DEFAULT_MEMORY
    search_persist: SearchPersist = "reused"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, *, where: str = "cache") -> CacheSettings:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - {"max_size", "memory", "search_persist"})
        if unknown:
            raise SpecError(
                f"unknown cache setting '{unknown[0]}'",
                where=where,
                fix="allowed: max_size, memory, search_persist",
            )
        persist = raw.get("search_persist", "reused")
        if persist not in ("all", "reused"):
            raise SpecError(f"cache: search_persist must be 'all' or 'reused', not {persist!r}", where=where)
        try:
            memory = _size_setting(raw.get("memory", DEFAULT_MEMORY), "cache: memory")
            max_size = _size_setting(raw.get("max_size"), "cache: max_size")
        except SpecError as exc:
            exc.where = where
            exc.args = (exc.one_line(),)
            raise
        return cls(
            max_size=max_size, memory=DEFAULT_MEMORY if memory is None else memory, search_persist=persist
        )

    def with_max_size(self, value: Any) -> CacheSettings:
        if value is None:
            return self
        return CacheSettings(_size_setting(value, "--cache-max-size"), self.memory, self.search_persist)


@dataclass(frozen=True)
class VerifyReport:
    checked: int  # tensors
    missing: tuple[str, ...]
    corrupted: tuple[str, ...]  # tensor keys
    recovered: tuple[str, ...] = ()  # broken or old databases found on open, moved aside or migrated
    kinds: Mapping[str, int] = field(default_factory=dict)  # entries checked, by kind
    corrupted_other: tuple[str, ...] = ()  # "kind/name" of records and folders that failed their check

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupted and not self.corrupted_other


class MemoryTier:
    """Recently used tensors by key, least recently used dropped first, under a byte budget. A tensor
    computed on a GPU stays there while the device keeps a quarter of its memory free."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes or key in self._items:
            return
        if value.device.type == "cuda" and not _gpu_has_room(value.device, size):
            value = value.to("cpu")
        while self._items and self.bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        self._items[key] = value
        self.bytes += size

    def pop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.numel() * old.element_size()


def _gpu_has_room(device: torch.device, size: int) -> bool:
    free, total = torch.cuda.mem_get_info(device)
    return free - size > total // 4


LEGACY_DATABASES = ("index", "results", "digests")


def broken_store(root: Path) -> Path | None:
    """The first of an old cache's SQLite databases that SQLite cannot read (to name it in errors)."""
    dbs = (Path(root) / name / "cache.db" for name in LEGACY_DATABASES)
    return next((db for db in dbs if db.exists() and not sqlite_ok(db)), None)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class DigestMemo:
    """File digests by (path, size, mtime), as `ModelFolder.tensor_digests` and the source
    identities memoise them (a record may hold part of a file). Under --force only what this process
    wrote is seen."""

    def __init__(self, store: Store, force: bool):
        self.store = store
        self.fresh: set[Any] | None = set() if force else None

    def get(self, key: Any, default: Any = None) -> Any:
        if self.fresh is not None and key not in self.fresh:
            return default
        found = self.store.get_record("digests", key)
        return default if found is None else found

    def __getitem__(self, key: Any) -> Any:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __setitem__(self, key: Any, value: Any) -> None:
        self.store.put_record("digests", key, value)
        if self.fresh is not None:
            self.fresh.add(key)

    def __len__(self) -> int:
        return self.store.count_records("digests")


class Cache:
    def __init__(
        self,
        root: Path | str | None = None,
        settings: CacheSettings | None = None,
        log: Callable[[str], None] = _warn,
        *,
        force: bool = False,
        store: Store | None = None,
    ):
        if store is None:
            if root is None:
                raise TypeError("Cache needs a root folder or a store")
            store = open_store(root, log)
        self.store = store
        self.root = store.root
        self.settings = settings or CacheSettings()
        self.log = log
        self.recovered: list[str] = list(getattr(store, "recovered", []))
        self.digests = DigestMemo(store, force)
        self._sources: dict[tuple, Any] = {}  # weight file key -> its FileDigests in this process
        self.force = force
        self._fresh: set[str] = set()  # tensor and result keys written by this process (for --force)
        self.memory = MemoryTier(self.settings.memory)
        self._budget: int | None = None
        self._lru: OrderedDict[str, int] | None = None  # key -> size, least recently used first
        self._scanned = 0.0
        self._disk_bytes = 0
        self._touched: dict[str, float] = {}
        self._pinned: dict[str, int] = {}
        self._searching = 0
        self._seen_once: set[str] = set()
        self.evictions = 0
        self.peak_disk_bytes = 0  # blobs plus the one being written, as this process accounts them
        # The executor's reader and writer threads share the cache with the compute loop.
        self._lock = threading.RLock()

    @property
    def location(self) -> str:
        """Where the entries live: the folder, or the fsspec URL (what another process opens)."""
        return self.store.location

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs"

    def blob_path(self, key: str) -> Path:
        """Where the disk store keeps a blob (for tests and tools that damage or inspect one)."""
        return self.store.blob_path(key)  # type: ignore[attr-defined]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._flush_uses()
        for digests in self._sources.values():
            with contextlib.suppress(Exception):
                digests.flush()  # what this run read of a file it did not read whole
        self._sources.clear()
        self.store.close()

    # policy ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def search_trial(self) -> Iterator[None]:
        """Within a search trial, new tensors go to the memory tier, and to disk only as the
        persistence policy says (see CacheSettings.search_persist)."""
        self._searching += 1
        try:
            yield
        finally:
            self._searching -= 1

    @contextlib.contextmanager
    def pinned(self, keys: Iterable[str]) -> Iterator[None]:
        """Keys a running stream is about to read: evicted only when nothing else is left."""
        keys = list(keys)
        with self._lock:
            for k in keys:
                self._pinned[k] = self._pinned.get(k, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for k in keys:
                    left = self._pinned[k] - 1
                    if left:
                        self._pinned[k] = left
                    else:
                        del self._pinned[k]

    # tensors --------------------------------------------------------------------------------
    def has_tensor(self, key: str) -> bool:
        # Without the lock: the writer thread holds it through a blob's write, and a lookup must not
        # wait for that (the store is lock-free; a blob appearing meanwhile is only a missed hit).
        return self._has_tensor(key)

    def put_tensor(self, key: str, tensor: torch.Tensor, *, always: bool = False) -> None:
        """`always`: to disk even inside a search trial under `search_persist: reused` (for values
        that are costly and that every later trial reads, like calibration statistics)."""
        with self._lock:
            self._put_tensor(key, tensor, always=always)

    def get_tensor(self, key: str) -> torch.Tensor:
        with self._lock:
            return self._get_tensor(key)

    def _stale(self, key: str) -> bool:
        """Under --force, an entry that an earlier run wrote: treated as missing."""
        return self.force and key not in self._fresh

    def _has_tensor(self, key: str) -> bool:
        if key in self.memory:
            return True
        return not self._stale(key) and self.store.has_blob(key)

    def on_disk(self, key: str) -> bool:
        return self.store.has_blob(key)

    def _put_tensor(self, key: str, tensor: torch.Tensor, *, always: bool = False) -> None:
        self._fresh.add(key)
        if self._searching:
            # Only trials repeat tensors within a process; elsewhere each is computed once per run
            # and holding it would only raise peak memory.
            self.memory.put(key, tensor)
        if (
            self._searching
            and not always
            and self.settings.search_persist == "reused"
            and key not in self._seen_once
        ):
            self._seen_once.add(key)  # the first trial that makes it: memory only
            return
        self._seen_once.discard(key)
        self._write_blob(key, tensor)

    def _write_blob(self, key: str, tensor: torch.Tensor) -> bool:
        size = _blob_size_bound(tensor)
        if not self._make_room(size, keep=key):
            return False
        self.peak_disk_bytes = max(self.peak_disk_bytes, self._disk_bytes + size)
        written = self.store.write_blob(key, tensor)
        assert self._lru is not None
        self._disk_bytes -= self._lru.pop(key, 0)
        if written:
            self._lru[key] = written
            self._disk_bytes += written
        return bool(written)

    def _get_tensor(self, key: str) -> torch.Tensor:
        value = self.memory.get(key)
        if value is not None:
            if key in self._seen_once:  # a second trial wants it: now it is worth a blob
                self._seen_once.discard(key)
                self._write_blob(key, value)
            elif self._lru is None or key in self._lru:
                self._touch(key)
            return value
        if self._stale(key):
            raise CacheMiss(key)
        try:
            value = self.store.read_blob(key)
        except CacheMiss:
            if self._lru is not None and key in self._lru:
                self._disk_bytes -= self._lru.pop(key)
            raise
        self._touch(key)
        if self._searching:
            self.memory.put(key, value)
        return value

    def _touch(self, key: str) -> None:
        self._touched[key] = time.time()
        if self._lru is not None and key in self._lru:
            self._lru.move_to_end(key)
        if len(self._touched) >= _TOUCH_FLUSH:
            self._flush_uses()

    def _flush_uses(self) -> None:
        """Record last uses in the store (batched, not one metadata write per read)."""
        if self._touched:
            touched, self._touched = self._touched, {}
            self.store.touch_blobs(touched)

    def disk_budget(self) -> int:
        if self._budget is None:
            if self.settings.max_size is not None:
                self._budget = self.settings.max_size
            else:
                self._load_lru()
                free = shutil.disk_usage(self.root).free
                self._budget = self._disk_bytes + int(free * DEFAULT_DISK_SHARE)
        return self._budget

    def _load_lru(self, *, rescan: bool = False) -> None:
        """Every blob by last use, from a scan of the store. `rescan`: again, to see what other
        processes wrote and evicted (at most once a second)."""
        if self._lru is not None and not (rescan and time.monotonic() - self._scanned > 1.0):
            return
        self._flush_uses()
        entries = sorted((e.used, e.key, e.size) for e in self.store.blobs())
        self._lru = OrderedDict((key, size) for _, key, size in entries)
        self._disk_bytes = sum(self._lru.values())
        self._scanned = time.monotonic()

    def _make_room(self, size: int, keep: str) -> bool:
        """Evict least recently used blobs until `size` more bytes fit the budget. False (write
        nothing) when the tensor is larger than the whole budget."""
        budget = self.disk_budget()
        self._load_lru()
        assert self._lru is not None
        if size > budget:
            return False
        if self._disk_bytes - self._lru.get(keep, 0) + size <= budget:
            return True
        self._load_lru(rescan=True)
        held = self._lru.get(keep, 0)
        for spare_pinned in (True, False):  # pinned keys go last: a stream is about to read them
            for key in list(self._lru):
                if self._disk_bytes - held + size <= budget:
                    return True
                if key == keep or (spare_pinned and key in self._pinned):
                    continue
                self.store.delete_blob(key)
                self._disk_bytes -= self._lru.pop(key)
                self.evictions += 1
        return self._disk_bytes - held + size <= budget

    def run_summary(self) -> dict[str, int | None]:
        """What this process did to the tensor tiers (for `run --json`)."""
        with self._lock:
            if self._lru is None:
                return {"evictions": self.evictions, "peak_disk_bytes": self.peak_disk_bytes}
            return {
                "budget": self.disk_budget(),
                "disk_bytes": self._disk_bytes,
                "peak_disk_bytes": self.peak_disk_bytes,
                "evictions": self.evictions,
                "memory_tier_bytes": self.memory.bytes,
            }

    def disk_bytes(self) -> int:
        self._load_lru()
        return self._disk_bytes

    def tensor_keys(self) -> Iterator[str]:
        return (e.key for e in self.store.blobs())

    # node results, file digests, folders ------------------------------------------------------
    def get_result(self, key: str, default: Any = None) -> Any:
        if self._stale(key):
            return default
        found = self.store.get_record("results", key)
        return default if found is None else found

    def put_result(self, key: str, value: Any) -> None:
        self.store.put_record("results", key, value)
        self._fresh.add(key)

    def source_identities(self, folder: Any) -> dict[str, Any]:
        """Per-tensor identities of a source model folder: the memoised content digest, or a deferred
        one that the read of the tensor fills (see graphmerge.io.source_identity)."""
        from graphmerge.io.source_identity import source_identities

        return source_identities(folder, self.digests, self._sources)

    def folder(self, kind: str, key: str, fill: Callable[[Path], None]) -> Path:
        """A folder written once under `key` (e.g. kind "tokenizers"): `fill(path)` creates it at
        the path it is given when it is not stored yet."""
        return self.store.folder(kind, key, fill)

    # maintenance ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        blobs = list(self.store.blobs())
        return {
            "path": self.store.location,
            "tensors": len(blobs),
            "tensor_bytes": sum(b.size for b in blobs),
            "results": self.store.count_records("results"),
            "file_digests": self.store.count_records("digests"),
            "tokenizers": sum(1 for p in (self.root / "tokenizers").glob("*") if not p.name.startswith("."))
            if (self.root / "tokenizers").is_dir()
            else 0,
        }

    def verify(self, repair: bool = True) -> VerifyReport:
        self._flush_uses()
        found = self.store.verify(repair)
        if repair and self._lru is not None:
            for key in (k for kind, k in found.corrupted if kind == "blobs"):
                self._disk_bytes -= self._lru.pop(key, 0)
        return VerifyReport(
            checked=found.checked.get("blobs", 0),
            missing=found.missing,
            corrupted=tuple(k for kind, k in found.corrupted if kind == "blobs"),
            recovered=tuple(self.recovered),
            kinds=dict(found.checked),
            corrupted_other=tuple(f"{kind}/{k}" for kind, k in found.corrupted if kind != "blobs"),
        )

    def gc(self, max_bytes: int | None = None) -> dict[str, int]:
        """Delete stray files (temp files of interrupted writes, files that are no entry), then,
        if `max_bytes` is given, the least recently used tensors until the blobs fit."""
        removed_files, freed = self.store.gc()
        evicted = 0
        if max_bytes is not None:
            self._lru = None
            self._load_lru()
            assert self._lru is not None
            for key in list(self._lru):
                if self._disk_bytes <= max_bytes:
                    break
                freed += self._lru[key]
                self.store.delete_blob(key)
                self._disk_bytes -= self._lru.pop(key)
                evicted += 1
        return {"stray_files_removed": removed_files, "tensors_evicted": evicted, "bytes_freed": freed}


def _blob_size_bound(tensor: torch.Tensor) -> int:
    # data plus a header of a few hundred bytes: exact enough for the budget check before writing
    return tensor.numel() * tensor.element_size() + 256 + 8 * tensor.dim()
