"""The disk store: a folder of self-checking files, shareable between processes and machines.

  blobs/ab/<key>.safetensors   one tensor per file; its header carries the digest of its data
  results/ab/<name>.rec        node results: pickled (key, value) behind the digest of its bytes
  digests/ab/<name>.rec        per-tensor digests of source files, keyed by (path, size, mtime)
  tokenizers/<key>/            tokenizer folders, with .graphmerge-manifest.json (file digests)
  journal/<host>-<pid>-*.log   per-process logs of blobs written and removed (see journal.py)

Every entry is written under a temp name in its final folder and renamed into place, so a reader
sees a whole entry or none; every read checks the entry's digest, so a corrupted one is a miss.
No database, no locks: the folder may sit on NFS or be shared by many processes. Caches written by
graphmerge before this layout (SQLite `index/`, `results/`, `digests/`) are migrated on open
(see legacy.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from graphmerge.atomic import TEMP_SUFFIX, temp_beside
from graphmerge.errors import StorageError, storage_error
from graphmerge.lazy import torch
from graphmerge.tensorfile import BadTensorFile, read_tensor_file, write_tensor_file

from .base import FOLDER_KINDS, RECORD_KINDS, BlobEntry, CacheMiss, RecordKind, StoreCheck
from .entries import BadEntry, check_folder, decode_record, encode_record, make_folder, record_name
from .journal import Journal
from .legacy import migrate

BLOB_SUFFIX = ".safetensors"
RECORD_SUFFIX = ".rec"
FOLDER_TEMP_GRACE_S = 600.0  # a folder being filled by another process for less than this is left alone


def _replace(tmp: str, path: Path) -> bool:
    """Rename into place; False when a concurrent `gc` removed the temp file (nothing stored)."""
    try:
        os.replace(tmp, path)
        return True
    except FileNotFoundError:
        return False


class DiskStore:
    def __init__(self, root: Path | str, log: Callable[[str], None] = lambda _m: None):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)
        self.blob_dir = self.root / "blobs"
        self.journal = Journal(self.root / "journal")
        self.recovered: list[str] = migrate(self, log)

    # blobs ------------------------------------------------------------------------------------
    def blob_path(self, key: str) -> Path:
        return self.blob_dir / key[:2] / f"{key}{BLOB_SUFFIX}"

    def has_blob(self, key: str) -> bool:
        return self.blob_path(key).is_file()

    def read_blob(self, key: str) -> torch.Tensor:
        path = self.blob_path(key)
        try:
            return read_tensor_file(path)[0]
        except FileNotFoundError:
            raise CacheMiss(key) from None
        except BadTensorFile:
            self.delete_blob(key)
            raise CacheMiss(key) from None

    def write_blob(self, key: str, tensor: torch.Tensor) -> int:
        path = self.blob_path(key)
        try:
            fd, tmp = temp_beside(path)
        except OSError as exc:
            kept = "cached blobs and existing outputs are unchanged"
            raise storage_error(exc, path.parent, "a cache blob", kept) or StorageError(
                f"cannot write a cache blob: {exc.strerror or exc}",
                where=str(exc.filename or path.parent),
                fix=f"make {self.blob_dir} a folder you can write, or pass --cache-dir",
            ) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                size = write_tensor_file(fh, tensor).size
            # no fsync: a blob torn by a power cut fails its digest check on read
            if not _replace(tmp, path):
                return 0
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            kept = "finished work is cached, the partial blob was removed and existing outputs are unchanged"
            raise (storage_error(exc, self.root, "a cache blob", kept) or exc) from exc
        self.journal.note("+", [key])
        return size

    def delete_blob(self, key: str) -> None:
        self.blob_path(key).unlink(missing_ok=True)
        self.journal.note("-", [key])

    def touch_blobs(self, used: Mapping[str, float]) -> None:
        for key, when in used.items():
            try:
                os.utime(self.blob_path(key), (when, when))
            except FileNotFoundError:
                pass  # evicted by another process meanwhile

    def blobs(self) -> Iterator[BlobEntry]:
        if not self.blob_dir.is_dir():
            return
        for shard in sorted(os.scandir(self.blob_dir), key=lambda e: e.name):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.startswith(".") or not entry.name.endswith(BLOB_SUFFIX):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                yield BlobEntry(entry.name.removesuffix(BLOB_SUFFIX), st.st_size, st.st_mtime)

    # records ----------------------------------------------------------------------------------
    def _record_path(self, kind: RecordKind, key: Any) -> Path:
        name = record_name(key)
        return self.root / kind / name[:2] / f"{name}{RECORD_SUFFIX}"

    def get_record(self, kind: RecordKind, key: Any) -> Any | None:
        path = self._record_path(kind, key)
        try:
            return decode_record(path.read_bytes(), key)[1]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except BadEntry:
            path.unlink(missing_ok=True)
            return None

    def put_record(self, kind: RecordKind, key: Any, value: Any) -> None:
        path = self._record_path(kind, key)
        data = encode_record(key, value)
        try:
            fd, tmp = temp_beside(path)
        except OSError as exc:
            raise (storage_error(exc, self.root, f"a cache {kind} entry", "no entry was changed") or exc) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            _replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            kept = "the partial entry was removed and existing outputs are unchanged"
            raise (storage_error(exc, self.root, f"a cache {kind} entry", kept) or exc) from exc

    def _record_files(self, kind: RecordKind) -> Iterator[Path]:
        folder = self.root / kind
        if folder.is_dir():
            yield from (p for p in folder.glob(f"*/*{RECORD_SUFFIX}") if not p.name.startswith("."))

    def records(self, kind: RecordKind) -> Iterator[tuple[Any, Any]]:
        for path in self._record_files(kind):
            try:
                yield decode_record(path.read_bytes())
            except (OSError, BadEntry):
                continue

    def count_records(self, kind: RecordKind) -> int:
        return sum(1 for _ in self._record_files(kind))

    # folders ----------------------------------------------------------------------------------
    def folder(self, kind: str, key: str, fill: Callable[[Path], None]) -> Path:
        return make_folder(self.root / kind / key, fill)

    def _folders(self, kind: str) -> Iterator[Path]:
        base = self.root / kind
        if base.is_dir():
            yield from (p for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith("."))

    # maintenance ------------------------------------------------------------------------------
    def verify(self, repair: bool = True) -> StoreCheck:
        checked: dict[str, int] = {"blobs": 0}
        corrupted: list[tuple[str, str]] = []
        present = set()
        for entry in list(self.blobs()):
            present.add(entry.key)
            checked["blobs"] += 1
            try:
                read_tensor_file(self.blob_path(entry.key))
            except FileNotFoundError:
                present.discard(entry.key)  # evicted by another process while we looked
                checked["blobs"] -= 1
            except BadTensorFile:
                corrupted.append(("blobs", entry.key))
        missing = sorted(set(self.journal.live()) - present)
        for kind in RECORD_KINDS:
            checked[kind] = 0
            for path in list(self._record_files(kind)):
                checked[kind] += 1
                try:
                    decode_record(path.read_bytes())
                except FileNotFoundError:
                    checked[kind] -= 1
                except BadEntry:
                    corrupted.append((kind, path.stem))
                    if repair:
                        path.unlink(missing_ok=True)
        for kind in FOLDER_KINDS:
            checked[kind] = 0
            for folder in self._folders(kind):
                checked[kind] += 1
                try:
                    check_folder(folder)
                except BadEntry:
                    corrupted.append((kind, folder.name))
                    if repair:
                        shutil.rmtree(folder, ignore_errors=True)
        if repair:
            for kind, key in corrupted:
                if kind == "blobs":
                    self.delete_blob(key)
            if missing:
                self.journal.note("-", missing)
        return StoreCheck(checked=checked, missing=tuple(missing), corrupted=tuple(corrupted))

    def gc(self) -> tuple[int, int]:
        """Remove temp files of interrupted writes and files that are no entry. A writer whose temp
        file is removed under it stores nothing (a later run recomputes); folders being filled are
        left alone for FOLDER_TEMP_GRACE_S."""
        removed = freed = 0
        for kind, suffix in (("blobs", BLOB_SUFFIX), *((k, RECORD_SUFFIX) for k in RECORD_KINDS)):
            base = self.root / kind
            if not base.is_dir():
                continue
            for path in base.glob("*/*"):
                if path.is_file() and (path.name.startswith(".") or not path.name.endswith(suffix)):
                    try:
                        size = path.stat().st_size
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    removed += 1
                    freed += size
        for kind in FOLDER_KINDS:
            base = self.root / kind
            if not base.is_dir():
                continue
            for path in base.iterdir():
                stale = time.time() - path.stat().st_mtime > FOLDER_TEMP_GRACE_S
                if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and stale:
                    freed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        self.journal.compact(self.has_blob)
        return removed, freed

    def close(self) -> None:
        self.journal.close()
