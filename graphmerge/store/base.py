"""What a cache store is: the protocol the cache's policy (graphmerge/cache.py) works through.

A store owns four kinds of entries, each addressed by a key the caller computed:
  blobs       one tensor per self-describing file (graphmerge/tensorfile.py): checked on every read
  results     node results (evaluation scores, custom nodes), pickled with their digest
  digests     per-tensor content digests of source files, memoised by (path, size, mtime)
  tokenizers  folders written once (aligned tokenizers, chat templates), with a manifest of digests

A store has no policy: budgets, recency order, the memory tier and --force live in the cache.
Nothing here locks: every entry is written whole under a temp name and renamed into place, and
checks itself when read, so processes on several machines may share one store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from graphmerge.lazy import torch

RecordKind = Literal["results", "digests"]
RECORD_KINDS: tuple[RecordKind, ...] = ("results", "digests")
FOLDER_KINDS = ("tokenizers",)


class CacheMiss(KeyError):
    """The entry is not in the store, or it failed its check (and was removed)."""


@dataclass(frozen=True)
class BlobEntry:
    key: str
    size: int  # bytes of the file
    used: float  # last use (seconds since the epoch): what LRU-by-use eviction orders by


@dataclass(frozen=True)
class StoreCheck:
    """What `verify` found, by kind. `missing`: blobs a journal says were written and never
    removed, that are gone. `corrupted`: (kind, key) of entries that failed their check."""

    checked: Mapping[str, int]
    missing: tuple[str, ...] = ()
    corrupted: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class Store(Protocol):
    root: Path  # a local folder for scratch files and folders (a temp folder for in-memory stores)
    location: str  # where the entries live, for messages

    # blobs
    def has_blob(self, key: str) -> bool: ...
    def read_blob(self, key: str) -> torch.Tensor: ...  # CacheMiss when absent or failing its digest
    def write_blob(self, key: str, tensor: torch.Tensor) -> int: ...  # bytes written
    def delete_blob(self, key: str) -> None: ...
    def touch_blobs(self, used: Mapping[str, float]) -> None: ...
    def blobs(self) -> Iterator[BlobEntry]: ...

    # results and digests
    def get_record(self, kind: RecordKind, key: Any) -> Any | None: ...
    def put_record(self, kind: RecordKind, key: Any, value: Any) -> None: ...
    def records(self, kind: RecordKind) -> Iterator[tuple[Any, Any]]: ...
    def count_records(self, kind: RecordKind) -> int: ...

    # folders
    def folder(self, kind: str, key: str, fill: Callable[[Path], None]) -> Path: ...

    # maintenance
    def verify(self, repair: bool = True) -> StoreCheck: ...
    def gc(self) -> tuple[int, int]: ...  # stray files removed, bytes freed
    def close(self) -> None: ...
