"""The content-addressed cache: tensor blobs, node results, and memoised file digests.

Layout under the cache directory:
  blobs/ab/<key>.safetensors   one tensor per file (self-describing: see graphmerge.tensorfile)
  index/                       diskcache: tensor key -> {size, digest, shape, dtype, used, fmt}
  results/                     diskcache: node-result key -> JSON value (evaluations, custom nodes)
  digests/                     diskcache: (path, size, mtime) -> per-tensor digests of source files

Every blob read is checked against its digest, so a corrupted or deleted blob is a cache miss
(recomputed), never bad data. Tensors have two tiers: a memory tier (an LRU of recently used
tensors, kept on the GPU while it has room) and the disk tier (blobs under a byte budget, evicted
least recently *used* first while a run goes on). Node results and file digests are small and
are never evicted. An index that SQLite cannot read is moved aside and rebuilt from the blobs.

`Cache(root, force=True)` (`graphmerge run --force`) treats everything stored by earlier runs as
missing: each value is recomputed and overwrites the old entry, and what this run has written it
reuses. That is the escape hatch when a cached value is stale in a way its key cannot see (a plugin
op's body edited without bumping its `version`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import diskcache

from graphmerge.errors import SpecError, storage_error
from graphmerge.filemode import file_mode
from graphmerge.lazy import torch
from graphmerge.tensorfile import (
    FORMAT,
    BadTensorFile,
    describe_tensor_file,
    read_tensor_file,
    write_tensor_file,
)

SearchPersist = Literal["all", "reused"]
DEFAULT_MEMORY = 1 << 30
# Without a budget the blobs may take this share of the disk space free when the cache opens.
DEFAULT_DISK_SHARE = 0.5
_TOUCH_FLUSH = 256


def default_cache_dir() -> Path:
    env = os.environ.get("GRAPHMERGE_CACHE")
    return Path(env) if env else Path.cwd() / ".graphmerge"


class CacheMiss(KeyError):
    pass


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write via a temp file and a rename, so readers see the old file or the whole new one.
    `durable=False` skips fsync: fine for cache blobs, whose digest is checked on every read (a blob
    torn by a power cut is a cache miss, not bad data)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise (storage_error(exc, path.parent, path.name, "no file was changed") or exc) from exc
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = f"{path.name} is as it was and the partial file was removed"
        raise (storage_error(exc, path.parent, path.name, kept) or exc) from exc


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
    checked: int
    missing: tuple[str, ...]
    corrupted: tuple[str, ...]
    recovered: tuple[str, ...] = ()  # broken indexes found on open, moved aside and rebuilt

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupted


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


STORES = ("index", "results", "digests")


def sqlite_ok(db: Path) -> bool:
    """A store's SQLite file is absent (created on open) or passes SQLite's own check."""
    if not db.exists():
        return True
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.Error:
        return False


def broken_store(root: Path) -> Path | None:
    """The first of a cache's store databases that SQLite cannot read (to name it in errors)."""
    return next((db for db in (root / s / "cache.db" for s in STORES) if not sqlite_ok(db)), None)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _ThisRunOnly:
    """A mapping over a persistent store that only sees what this process wrote (--force)."""

    def __init__(self, store: diskcache.Cache):
        self.store = store
        self.fresh: set[Any] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        return self.store.get(key, default) if key in self.fresh else default

    def __setitem__(self, key: Any, value: Any) -> None:
        self.store[key] = value
        self.fresh.add(key)

    def __len__(self) -> int:
        return len(self.store)

    def close(self) -> None:
        self.store.close()


class Cache:
    def __init__(
        self,
        root: Path | str,
        settings: CacheSettings | None = None,
        log: Callable[[str], None] = _warn,
        *,
        force: bool = False,
    ):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob_dir = self.root / "blobs"
        self.settings = settings or CacheSettings()
        self.log = log
        self.recovered: list[str] = []
        self._index = self._open_store("index", rebuild=self._rebuild_index)
        self.results = self._open_store(
            "results", lost="stored evaluation scores and node results are recomputed when needed"
        )
        digests = self._open_store("digests", lost="source files are re-hashed on their next use")
        self.digests: diskcache.Cache | _ThisRunOnly = _ThisRunOnly(digests) if force else digests
        self.force = force
        self._fresh: set[str] = set()  # tensor and result keys written by this process (for --force)
        self.memory = MemoryTier(self.settings.memory)
        self._budget: int | None = None
        self._lru: OrderedDict[str, int] | None = None  # key -> size, least recently used first
        self._disk_bytes = 0
        self._touched: dict[str, float] = {}
        self._pinned: dict[str, int] = {}
        self._searching = 0
        self._seen_once: set[str] = set()
        self.evictions = 0
        self.peak_disk_bytes = 0  # blobs plus the one being written, as this process accounts them
        # The executor's reader and writer threads share the cache with the compute loop.
        self._lock = threading.RLock()

    # stores ---------------------------------------------------------------------------------
    def _open_store(
        self, name: str, *, rebuild: Callable[[diskcache.Cache], int] | None = None, lost: str = ""
    ) -> diskcache.Cache:
        folder = self.root / name
        try:
            if sqlite_ok(folder / "cache.db"):
                return diskcache.Cache(str(folder))
        except (sqlite3.DatabaseError, NotADirectoryError, FileExistsError):
            pass  # unreadable, or not even a folder: set it aside like a corrupt database
        aside = self.root / f"{name}.broken-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.rename(aside)
        store = diskcache.Cache(str(folder))
        if rebuild is not None:
            n = rebuild(store)
            what = f"rebuilt it from the blobs ({n} tensors)"
        else:
            what = f"started it empty; {lost}"
        message = f"the cache's {name} database {folder} was unreadable: moved it to {aside.name} and {what}"
        self.recovered.append(message)
        self.log(message)
        return store

    def _rebuild_index(self, store: diskcache.Cache) -> int:
        n = 0
        for path in sorted(self.blob_dir.glob("*/*.safetensors")):
            if path.name.startswith("."):
                continue
            try:
                info = describe_tensor_file(path)
                used = path.stat().st_mtime
            except (OSError, BadTensorFile):
                path.unlink(missing_ok=True)  # torn or foreign: no index may point at it
                continue
            store[path.name.split(".")[0]] = _entry(info.size, info.digest, info.shape, info.dtype, used)
            n += 1
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._flush_uses()
        for c in (self._index, self.results, self.digests):
            c.close()

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
    def blob_path(self, key: str) -> Path:
        return self.blob_dir / key[:2] / f"{key}.safetensors"

    def has_tensor(self, key: str) -> bool:
        with self._lock:
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
        if self._stale(key):
            return False
        meta = self._index.get(key)
        if meta is None or meta.get("fmt") != FORMAT:
            return False
        try:
            return self.blob_path(key).stat().st_size == meta["size"]
        except FileNotFoundError:
            return False

    def on_disk(self, key: str) -> bool:
        return key in self._index

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
        path = self.blob_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide the blob from other users
            with os.fdopen(fd, "wb") as fh:
                info = write_tensor_file(fh, tensor)
            os.replace(tmp, path)  # no fsync: a blob torn by a power cut fails its digest check
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        old = self._index.get(key)
        self._index[key] = _entry(info.size, info.digest, info.shape, info.dtype, time.time())
        assert self._lru is not None
        if key in self._lru:
            self._disk_bytes -= self._lru[key]
        elif old is not None:
            self._disk_bytes -= old.get("size", 0)
        self._lru[key] = info.size
        self._lru.move_to_end(key)
        self._disk_bytes += info.size
        return True

    def _get_tensor(self, key: str) -> torch.Tensor:
        value = self.memory.get(key)
        if value is not None:
            if key in self._seen_once:  # a second trial wants it: now it is worth a blob
                self._seen_once.discard(key)
                self._write_blob(key, value)
            elif key in self._index:
                self._touch(key)
            return value
        meta = None if self._stale(key) else self._index.get(key)
        if meta is None:
            raise CacheMiss(key)
        try:
            if meta.get("fmt") != FORMAT:
                raise BadTensorFile("written by an older graphmerge")
            value, _ = read_tensor_file(self.blob_path(key), expect_digest=meta["digest"])
        except (FileNotFoundError, BadTensorFile):
            self._drop(key)
            raise CacheMiss(key) from None
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
        """Record last use in the index (batched: one transaction, not a write per read)."""
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        with self._index.transact():
            for key, used in touched.items():
                meta = self._index.get(key)
                if meta is not None and meta.get("used", 0) < used:
                    self._index[key] = {**meta, "used": used}

    def _drop(self, key: str) -> None:
        self._index.pop(key, None)
        self.blob_path(key).unlink(missing_ok=True)
        if self._lru is not None and key in self._lru:
            self._disk_bytes -= self._lru.pop(key)

    def disk_budget(self) -> int:
        if self._budget is None:
            if self.settings.max_size is not None:
                self._budget = self.settings.max_size
            else:
                self._load_lru()
                self.blob_dir.mkdir(parents=True, exist_ok=True)
                free = shutil.disk_usage(self.blob_dir).free
                self._budget = self._disk_bytes + int(free * DEFAULT_DISK_SHARE)
        return self._budget

    def _load_lru(self) -> None:
        """Every indexed blob by last use. Re-read when other processes changed the index."""
        if self._lru is not None and len(self._lru) == len(self._index):
            return
        self._flush_uses()
        entries = sorted(
            (meta.get("used", 0.0), key, meta.get("size", 0))
            for key in list(self._index)
            if (meta := self._index.get(key)) is not None
        )
        self._lru = OrderedDict((key, size) for _, key, size in entries)
        self._disk_bytes = sum(self._lru.values())

    def _make_room(self, size: int, keep: str) -> bool:
        """Evict least recently used blobs until `size` more bytes fit the budget. False (write
        nothing) when the tensor is larger than the whole budget."""
        budget = self.disk_budget()
        self._load_lru()
        assert self._lru is not None
        held = self._lru.get(keep, 0)
        if size > budget:
            return False
        if self._disk_bytes - held + size <= budget:
            return True
        self._flush_uses()
        for spare_pinned in (True, False):  # pinned keys go last: a stream is about to read them
            for key in list(self._lru):
                if self._disk_bytes - held + size <= budget:
                    return True
                if key == keep or (spare_pinned and key in self._pinned):
                    continue
                self._index.pop(key, None)
                self.blob_path(key).unlink(missing_ok=True)
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
        return iter(self._index)

    # node results ---------------------------------------------------------------------------
    def get_result(self, key: str, default: Any = None) -> Any:
        if self._stale(key):
            return default
        return self.results.get(key, default)

    def put_result(self, key: str, value: Any) -> None:
        self.results[key] = value
        self._fresh.add(key)

    # maintenance ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        blob_bytes = sum(meta["size"] for meta in (self._index.get(k) for k in self._index) if meta)
        return {
            "path": str(self.root),
            "tensors": len(self._index),
            "tensor_bytes": blob_bytes,
            "results": len(self.results),
            "file_digests": len(self.digests),
        }

    def verify(self, repair: bool = True) -> VerifyReport:
        missing, corrupted = [], []
        keys = list(self._index)
        for key in keys:
            meta = self._index.get(key)
            path = self.blob_path(key)
            if meta is None:
                continue
            if not path.exists():
                missing.append(key)
                continue
            try:
                if meta.get("fmt") != FORMAT:
                    raise BadTensorFile("older format")
                read_tensor_file(path, expect_digest=meta["digest"])
            except BadTensorFile:
                corrupted.append(key)
        if repair:
            for key in missing + corrupted:
                self._drop(key)
        return VerifyReport(
            checked=len(keys),
            missing=tuple(missing),
            corrupted=tuple(corrupted),
            recovered=tuple(self.recovered),
        )

    def gc(self, max_bytes: int | None = None) -> dict[str, int]:
        """Delete stray files (temp files of crashed writes, blobs without an index entry), then,
        if `max_bytes` is given, the least recently used tensors until the blobs fit."""
        removed_files = 0
        freed = 0
        if self.blob_dir.exists():
            for path in self.blob_dir.glob("*/*"):
                key = path.name.split(".")[0]
                if path.name.endswith(".tmp") or path.name.startswith(".") or key not in self._index:
                    freed += path.stat().st_size
                    path.unlink(missing_ok=True)
                    removed_files += 1
        evicted = 0
        if max_bytes is not None:
            self._load_lru()
            assert self._lru is not None
            for key in list(self._lru):
                if self._disk_bytes <= max_bytes:
                    break
                freed += self._lru[key]
                self._drop(key)
                evicted += 1
        return {"stray_files_removed": removed_files, "tensors_evicted": evicted, "bytes_freed": freed}


def _entry(size: int, digest: str, shape: Iterable[int], dtype: str, used: float) -> dict[str, Any]:
    return {"size": size, "digest": digest, "shape": list(shape), "dtype": dtype, "used": used, "fmt": FORMAT}


def _blob_size_bound(tensor: torch.Tensor) -> int:
    # data plus a header of a few hundred bytes: exact enough for the budget check before writing
    return tensor.numel() * tensor.element_size() + 256 + 8 * tensor.dim()
