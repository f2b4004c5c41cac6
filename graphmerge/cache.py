"""The content-addressed cache: tensor blobs, node results, and memoised file digests.

Layout under the cache directory:
  blobs/ab/<key>.safetensors   one tensor per file, written to a temp file then renamed
  index/                       diskcache: tensor key -> {size, digest, shape, dtype, used}
  results/                     diskcache: node-result key -> JSON value (evaluations, custom nodes)
  digests/                     diskcache: (path, size, mtime) -> per-tensor digests of source files

Every blob read is checked against the digest recorded at write time, so a corrupted or deleted
blob is a cache miss (recomputed), never bad data.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import torch
import xxhash
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from graphmerge.errors import storage_error


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


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    missing: tuple[str, ...]
    corrupted: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupted


class Cache:
    def __init__(self, root: Path | str):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob_dir = self.root / "blobs"
        self._index = diskcache.Cache(str(self.root / "index"))
        self.results = diskcache.Cache(str(self.root / "results"))
        self.digests = diskcache.Cache(str(self.root / "digests"))

    def close(self) -> None:
        for c in (self._index, self.results, self.digests):
            c.close()

    # tensors --------------------------------------------------------------------------------
    def blob_path(self, key: str) -> Path:
        return self.blob_dir / key[:2] / f"{key}.safetensors"

    def has_tensor(self, key: str) -> bool:
        meta = self._index.get(key)
        if meta is None:
            return False
        try:
            return self.blob_path(key).stat().st_size == meta["size"]
        except FileNotFoundError:
            return False

    def put_tensor(self, key: str, tensor: torch.Tensor) -> None:
        data = st_save({"t": tensor.detach().to("cpu").contiguous()})
        atomic_write_bytes(self.blob_path(key), data, durable=False)
        self._index[key] = {
            "size": len(data),
            "digest": xxhash.xxh3_128_hexdigest(data),
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "used": time.time(),
        }

    def get_tensor(self, key: str) -> torch.Tensor:
        meta = self._index.get(key)
        if meta is None:
            raise CacheMiss(key)
        try:
            data = self.blob_path(key).read_bytes()
        except FileNotFoundError:
            self._index.pop(key, None)
            raise CacheMiss(key) from None
        if len(data) != meta["size"] or xxhash.xxh3_128_hexdigest(data) != meta["digest"]:
            self._index.pop(key, None)
            raise CacheMiss(key)
        return st_load(data)["t"]

    def tensor_keys(self) -> Iterator[str]:
        return iter(self._index)

    # node results ---------------------------------------------------------------------------
    def get_result(self, key: str, default: Any = None) -> Any:
        return self.results.get(key, default)

    def put_result(self, key: str, value: Any) -> None:
        self.results[key] = value

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
            elif xxhash.xxh3_128_hexdigest(path.read_bytes()) != meta["digest"]:
                corrupted.append(key)
        if repair:
            for key in missing + corrupted:
                self._index.pop(key, None)
                self.blob_path(key).unlink(missing_ok=True)
        return VerifyReport(checked=len(keys), missing=tuple(missing), corrupted=tuple(corrupted))

    def gc(self, max_bytes: int | None = None) -> dict[str, int]:
        """Delete stray files (temp files of crashed writes, blobs without an index entry), then,
        if `max_bytes` is given, the least recently written tensors until the blobs fit."""
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
            entries = sorted(
                ((meta["used"], key, meta["size"]) for key in self._index if (meta := self._index.get(key))),
            )
            total = sum(size for _, _, size in entries)
            for _, key, size in entries:
                if total <= max_bytes:
                    break
                self._index.pop(key, None)
                self.blob_path(key).unlink(missing_ok=True)
                total -= size
                freed += size
                evicted += 1
        return {"stray_files_removed": removed_files, "tensors_evicted": evicted, "bytes_freed": freed}
