"""The in-memory store: the same entries in dicts, for tests and throwaway runs.

Blobs are kept as their serialised bytes (the same self-describing format as on disk), so reads
check digests exactly as the disk store does. Folders need real files (tokenizers are loaded by
path): they live in a temp folder removed on close."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from graphmerge.lazy import torch
from graphmerge.tensorfile import BadTensorFile

from .base import FOLDER_KINDS, RECORD_KINDS, BlobEntry, CacheMiss, RecordKind, StoreCheck
from .entries import (
    BadEntry,
    check_folder,
    decode_blob,
    decode_record,
    encode_blob,
    encode_record,
    make_folder,
    record_name,
)


class MemoryStore:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="graphmerge-memory-store-"))
        self.location = f"memory ({self.root})"
        self.recovered: list[str] = []
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._records: dict[str, dict[str, bytes]] = {k: {} for k in RECORD_KINDS}
        self._written: set[str] = set()

    # blobs
    def has_blob(self, key: str) -> bool:
        return key in self._blobs

    def read_blob(self, key: str) -> torch.Tensor:
        entry = self._blobs.get(key)
        if entry is None:
            raise CacheMiss(key)
        try:
            return decode_blob(entry[0])
        except BadTensorFile:
            self.delete_blob(key)
            raise CacheMiss(key) from None

    def write_blob(self, key: str, tensor: torch.Tensor) -> int:
        self._blobs[key] = (encode_blob(tensor), time.time())
        self._written.add(key)
        return len(self._blobs[key][0])

    def delete_blob(self, key: str) -> None:
        self._blobs.pop(key, None)
        self._written.discard(key)

    def touch_blobs(self, used: Mapping[str, float]) -> None:
        for key, when in used.items():
            if key in self._blobs:
                self._blobs[key] = (self._blobs[key][0], when)

    def blobs(self) -> Iterator[BlobEntry]:
        for key, (data, used) in list(self._blobs.items()):
            yield BlobEntry(key, len(data), used)

    def corrupt_blob(self, key: str, offset: int = -1) -> None:
        """Flip one byte (tests: the same damage a disk can do)."""
        data = bytearray(self._blobs[key][0])
        data[offset] ^= 0xFF
        self._blobs[key] = (bytes(data), self._blobs[key][1])

    # records
    def get_record(self, kind: RecordKind, key: Any) -> Any | None:
        data = self._records[kind].get(record_name(key))
        if data is None:
            return None
        try:
            return decode_record(data, key)[1]
        except BadEntry:
            del self._records[kind][record_name(key)]
            return None

    def put_record(self, kind: RecordKind, key: Any, value: Any) -> None:
        self._records[kind][record_name(key)] = encode_record(key, value)

    def records(self, kind: RecordKind) -> Iterator[tuple[Any, Any]]:
        for data in list(self._records[kind].values()):
            try:
                yield decode_record(data)
            except BadEntry:
                continue

    def count_records(self, kind: RecordKind) -> int:
        return len(self._records[kind])

    # folders
    def folder(self, kind: str, key: str, fill: Callable[[Path], None]) -> Path:
        return make_folder(self.root / kind / key, fill)

    # maintenance
    def verify(self, repair: bool = True) -> StoreCheck:
        corrupted: list[tuple[str, str]] = []
        for key, (data, _) in list(self._blobs.items()):
            try:
                decode_blob(data)
            except BadTensorFile:
                corrupted.append(("blobs", key))
        for kind in RECORD_KINDS:
            for name, data in list(self._records[kind].items()):
                try:
                    decode_record(data)
                except BadEntry:
                    corrupted.append((kind, name))
        folders = {k: sorted(p for p in (self.root / k).glob("*") if p.is_dir()) for k in FOLDER_KINDS}
        for kind, paths in folders.items():
            for path in paths:
                try:
                    check_folder(path)
                except BadEntry:
                    corrupted.append((kind, path.name))
        checked = {"blobs": len(self._blobs)} | {k: len(self._records[k]) for k in RECORD_KINDS}
        checked |= {k: len(v) for k, v in folders.items()}
        if repair:
            for kind, key in corrupted:
                if kind == "blobs":
                    self.delete_blob(key)
                elif kind in self._records:
                    self._records[kind].pop(key, None)
                else:
                    shutil.rmtree(self.root / kind / key, ignore_errors=True)
        return StoreCheck(checked=checked, corrupted=tuple(corrupted))

    def gc(self) -> tuple[int, int]:
        return 0, 0  # nothing is ever half-written in memory

    def close(self) -> None:
        pass  # entries live as long as the store object; the folders' temp dir goes with the process

    def __del__(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
