"""A store on any fsspec file system (`s3://`, `gcs://`, `memory://`, `file://` ...): the disk
store's layout and rules, for machines that share an object store rather than a mounted folder.

Entries are uploaded under a temp name and moved into place (a single PUT on object stores, which
those make atomic), and checked by digest on every read, as on disk. What an object store cannot do
is changed: last uses are kept per process (a blob's recency is its upload time or this process's
last read of it), the journal of blobs written and removed is a series of objects written whole
(remote_journal.py), and tokenizer folders are built in a local folder, uploaded with their manifest, and
downloaded (and checked) by other machines on first use. Needs the `[fsspec]` extra."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from graphmerge.errors import StorageError
from graphmerge.extras import require_extra
from graphmerge.lazy import torch
from graphmerge.tensorfile import BadTensorFile

from .base import FOLDER_KINDS, RECORD_KINDS, BlobEntry, CacheMiss, RecordKind, StoreCheck
from .entries import (
    MANIFEST,
    BadEntry,
    check_folder,
    decode_blob,
    decode_record,
    encode_blob,
    encode_record,
    make_folder,
    record_name,
)
from .remote_journal import RemoteJournal, modified_time

BLOB_SUFFIX = ".safetensors"
RECORD_SUFFIX = ".rec"


class FsspecStore:
    def __init__(self, url: str, local: Path | str | None = None):
        require_extra("fsspec", f"the cache at {url}")
        import fsspec

        protocol = url.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            raise StorageError(
                f"cannot open the cache at {url}: {exc}".replace("\n", " "),
                where="--cache-dir",
                fix="use a folder, or an fsspec URL whose file system is installed (s3:// needs s3fs, gcs:// gcsfs)",
            ) from None
        self.fs, self.base = fsspec.core.url_to_fs(url)
        self.base = self.base.rstrip("/")
        self.location = url
        # Folders are used from a local copy: one per URL, so later runs on this machine reuse it.
        default = Path(tempfile.gettempdir()) / "graphmerge-fsspec" / record_name(url)
        self.root = Path(local) if local else default
        self.root.mkdir(parents=True, exist_ok=True)
        self.recovered: list[str] = []
        self._used: dict[str, float] = {}
        self.journal = RemoteJournal(self.fs, self._path("journal"))

    def _path(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def _put(self, path: str, data: bytes) -> bool:
        """False when a concurrent gc removed the temp object: nothing stored, recomputed later."""
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        self.fs.makedirs(parent, exist_ok=True)
        self.fs.pipe_file(tmp, data)
        try:
            self.fs.mv(tmp, path)
        except FileNotFoundError:
            return False
        return True

    def _get(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def _find(self, kind: str, suffix: str) -> dict[str, dict]:
        try:
            found = self.fs.find(self._path(kind), detail=True)
        except FileNotFoundError:
            return {}
        return {
            p: i for p, i in found.items() if p.endswith(suffix) and not p.rsplit("/", 1)[1].startswith(".")
        }

    def _download(self, folder: str, dest: Path) -> None:
        for path in self.fs.find(folder):
            rel = path[len(folder.rstrip("/")) + 1 :] if path.startswith(folder) else path.rsplit("/", 1)[1]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(self.fs.cat_file(path))

    # blobs
    def blob_path(self, key: str) -> str:
        return self._path("blobs", key[:2], f"{key}{BLOB_SUFFIX}")

    def has_blob(self, key: str) -> bool:
        return self.fs.exists(self.blob_path(key))

    def read_blob(self, key: str) -> torch.Tensor:
        data = self._get(self.blob_path(key))
        if data is None:
            raise CacheMiss(key)
        try:
            return decode_blob(data)
        except BadTensorFile:
            self.delete_blob(key)
            raise CacheMiss(key) from None

    def write_blob(self, key: str, tensor: torch.Tensor) -> int:
        data = encode_blob(tensor)
        if not self._put(self.blob_path(key), data):
            return 0
        self._used[key] = time.time()
        self.journal.note("+", [key])
        return len(data)

    def delete_blob(self, key: str) -> None:
        self.journal.note("-", [key])  # first: a blob this process removed is never reported missing
        try:
            self.fs.rm_file(self.blob_path(key))
        except FileNotFoundError:
            pass
        self._used.pop(key, None)

    def touch_blobs(self, used: Mapping[str, float]) -> None:
        self._used.update(used)  # object stores keep no settable mtime: recency is per process

    def blobs(self) -> Iterator[BlobEntry]:
        for path, info in self._find("blobs", BLOB_SUFFIX).items():
            key = path.rsplit("/", 1)[1].removesuffix(BLOB_SUFFIX)
            yield BlobEntry(key, int(info.get("size", 0)), self._used.get(key, modified_time(info)))

    # records
    def _record_path(self, kind: RecordKind, key: Any) -> str:
        name = record_name(key)
        return self._path(kind, name[:2], f"{name}{RECORD_SUFFIX}")

    def get_record(self, kind: RecordKind, key: Any) -> Any | None:
        data = self._get(self._record_path(kind, key))
        if data is None:
            return None
        try:
            return decode_record(data, key)[1]
        except BadEntry:
            self.fs.rm_file(self._record_path(kind, key))
            return None

    def put_record(self, kind: RecordKind, key: Any, value: Any) -> None:
        self._put(self._record_path(kind, key), encode_record(key, value))

    def records(self, kind: RecordKind) -> Iterator[tuple[Any, Any]]:
        for path in self._find(kind, RECORD_SUFFIX):
            data = self._get(path)
            try:
                if data is not None:
                    yield decode_record(data)
            except BadEntry:
                continue

    def count_records(self, kind: RecordKind) -> int:
        return len(self._find(kind, RECORD_SUFFIX))

    # folders: built or downloaded locally (transformers loads tokenizers by path), kept remotely
    def folder(self, kind: str, key: str, fill: Callable[[Path], None]) -> Path:
        local = self.root / kind / key
        if local.is_dir():
            return local
        remote = self._path(kind, key)
        if self.fs.exists(f"{remote}/{MANIFEST}"):  # uploaded whole by another machine: fetch, check
            with tempfile.TemporaryDirectory() as tmp:
                self._download(remote, Path(tmp))
                try:
                    check_folder(Path(tmp))
                except BadEntry:
                    pass  # damaged: built again below, and uploaded over it
                else:
                    (Path(tmp) / MANIFEST).unlink()
                    return make_folder(local, lambda path: shutil.copytree(tmp, path))
        out = make_folder(local, fill)
        for file in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST):
            self._put(f"{remote}/{file.relative_to(out).as_posix()}", file.read_bytes())
        self._put(f"{remote}/{MANIFEST}", (out / MANIFEST).read_bytes())  # last: marks it whole
        return out

    # maintenance
    def verify(self, repair: bool = True) -> StoreCheck:
        checked: dict[str, int] = {}
        corrupted: list[tuple[str, str]] = []
        present = set()
        for path in self._find("blobs", BLOB_SUFFIX):
            key = path.rsplit("/", 1)[1].removesuffix(BLOB_SUFFIX)
            data = self._get(path)
            if data is None:
                continue  # evicted by another process while we looked
            present.add(key)
            try:
                decode_blob(data)
            except BadTensorFile:
                corrupted.append(("blobs", key))
                if repair:
                    self.delete_blob(key)
        checked["blobs"] = len(present)
        missing = sorted(set(self.journal.live()) - present)
        for kind in RECORD_KINDS:
            found = self._find(kind, RECORD_SUFFIX)
            checked[kind] = len(found)
            for path in found:
                data = self._get(path)
                try:
                    if data is not None:
                        decode_record(data)
                except BadEntry:
                    corrupted.append((kind, path.rsplit("/", 1)[1].removesuffix(RECORD_SUFFIX)))
                    if repair:
                        self.fs.rm_file(path)
        for kind in FOLDER_KINDS:
            bad: set[str] = set()
            remote = {p.rsplit("/", 2)[1]: p.rsplit("/", 1)[0] for p in self._find(kind, MANIFEST)}
            for key, folder in remote.items():
                with tempfile.TemporaryDirectory() as tmp:
                    self._download(folder, Path(tmp))
                    try:
                        check_folder(Path(tmp))
                    except BadEntry:
                        bad.add(key)
                        if repair:
                            self.fs.rm(folder, recursive=True)
            local = {p.name: p for p in (self.root / kind).glob("*") if p.is_dir() and not p.name.startswith(".")}
            for key, folder in local.items():  # this machine's copies, which its runs load
                try:
                    check_folder(folder)
                except BadEntry:
                    bad.add(key)
                    if repair:
                        shutil.rmtree(folder, ignore_errors=True)
            checked[kind] = len(set(remote) | set(local))
            corrupted.extend((kind, key) for key in sorted(bad))
        if repair and missing:
            self.journal.note("-", missing)
        return StoreCheck(checked=checked, missing=tuple(missing), corrupted=tuple(corrupted))

    def gc(self) -> tuple[int, int]:
        removed = freed = 0
        for kind in ("blobs", *RECORD_KINDS, *FOLDER_KINDS):
            try:
                found = self.fs.find(self._path(kind), detail=True)
            except FileNotFoundError:
                continue
            for path, info in found.items():
                name = path.rsplit("/", 1)[1]
                if name.startswith(".") and name.endswith(".tmp"):
                    try:
                        self.fs.rm_file(path)
                    except FileNotFoundError:
                        continue
                    removed += 1
                    freed += int(info.get("size", 0))
        blobs = {e.key for e in self.blobs()}
        self.journal.compact(blobs.__contains__)
        return removed, freed

    def close(self) -> None:
        self.journal.close()
