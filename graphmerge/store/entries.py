"""How entries other than blobs check themselves: records carry the digest of their bytes, and
folders a manifest of their files' digests. Shared by every store backend."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

from graphmerge.filemode import dir_mode
from graphmerge.lazy import torch
from graphmerge.tensorfile import read_tensor_from, write_tensor_file

RECORD_MAGIC = b"graphmerge-record-1\n"
MANIFEST = ".graphmerge-manifest.json"


class BadEntry(ValueError):
    """A record or folder that is torn, corrupted or not ours."""


def encode_blob(tensor: torch.Tensor) -> bytes:
    """A blob as the bytes of its self-checking tensor file (for stores that hold bytes, not files)."""
    buf = io.BytesIO()
    write_tensor_file(buf, tensor)
    return buf.getvalue()


def decode_blob(data: bytes) -> torch.Tensor:
    """The tensor of `encode_blob`'s bytes; BadTensorFile when they fail their check."""
    return read_tensor_from(io.BytesIO(data), len(data))[0]


def record_name(key: Any) -> str:
    """A file-safe name for any key (results use hex digests, file digests use (path, size, mtime))."""
    return xxhash.xxh3_128(repr(key).encode()).hexdigest()


def encode_record(key: Any, value: Any) -> bytes:
    payload = pickle.dumps((key, value), protocol=pickle.HIGHEST_PROTOCOL)
    return RECORD_MAGIC + xxhash.xxh3_128(payload).hexdigest().encode() + b"\n" + payload


def decode_record(data: bytes, key: Any = None) -> tuple[Any, Any]:
    """(key, value) of a record; BadEntry when it fails its digest or holds another key."""
    head = len(RECORD_MAGIC)
    if not data.startswith(RECORD_MAGIC) or len(data) < head + 33 or data[head + 32 : head + 33] != b"\n":
        raise BadEntry("not a graphmerge record")
    payload = data[head + 33 :]
    if xxhash.xxh3_128(payload).hexdigest().encode() != data[head : head + 32]:
        raise BadEntry("content does not match its digest")
    try:
        stored_key, value = pickle.loads(payload)
    except Exception as exc:  # a record pickled by a class that no longer exists
        raise BadEntry(f"unreadable ({type(exc).__name__})") from None
    if key is not None and stored_key != key:
        raise BadEntry("holds another key")
    return stored_key, value


def _digests(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[path.relative_to(folder).as_posix()] = xxhash.xxh3_128(path.read_bytes()).hexdigest()
    return out


def make_folder(out: Path, fill: Callable[[Path], None]) -> Path:
    """`out`, created by `fill(new_folder_path)` and renamed into place unless it exists. Its name is
    a digest of the content, so a concurrent writer that wins the rename wrote the same thing."""
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        fill(tmp / "new")
        (tmp / "new").chmod(dir_mode())
        manifest = json.dumps(_digests(tmp / "new"), indent=1, sort_keys=True)
        (tmp / "new" / MANIFEST).write_text(manifest + "\n")
        (tmp / "new").rename(out)
    except OSError:
        if not out.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_folder(folder: Path) -> None:
    """BadEntry unless every file the manifest lists is there with its digest, and no other.
    Folders written before manifests existed (renamed into place whole all the same) pass."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    try:
        expected = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise BadEntry("unreadable manifest") from None
    if _digests(folder) != expected:
        raise BadEntry("files differ from the manifest")
