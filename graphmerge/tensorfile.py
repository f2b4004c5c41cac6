"""One tensor per safetensors file, written from and read into the tensor's own memory.

The file is a plain safetensors file (8-byte header length, JSON header, raw bytes) whose metadata
carries the xxh3-128 digest of the raw bytes, so a blob describes itself: its key is in its name,
and its content can be checked without any index. Writing hashes each chunk as it goes to the file
and reading hashes each chunk as it lands in the tensor: one pass over the bytes, no intermediate
`bytes` object (safetensors' `save` copies the whole tensor into one).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import xxhash

from graphmerge.lazy import torch

CHUNK = 16 << 20
DIGEST_KEY = "xxh3_128"
FORMAT = 2  # 1: safetensors.torch.save blobs with a whole-file digest (read as misses)

_ST_NAMES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


@lru_cache(maxsize=1)
def _st_dtypes() -> dict[torch.dtype, str]:
    """torch dtype -> safetensors name (built on first use: see graphmerge/lazy.py)."""
    return {getattr(torch, name): st for name, st in _ST_NAMES.items()}


@lru_cache(maxsize=1)
def _torch_dtypes() -> dict[str, torch.dtype]:
    return {v: k for k, v in _st_dtypes().items()}


class BadTensorFile(ValueError):
    """The file is not a whole, intact tensor file (torn, truncated, corrupted)."""


@dataclass(frozen=True)
class TensorFileInfo:
    size: int  # bytes of the whole file
    digest: str  # xxh3-128 of the raw tensor bytes
    shape: tuple[int, ...]
    dtype: str  # torch name, e.g. "bfloat16"


def _header(dtype: torch.dtype, shape: tuple[int, ...], nbytes: int, digest: str) -> bytes:
    body = {
        "t": {"dtype": _st_dtypes()[dtype], "shape": list(shape), "data_offsets": [0, nbytes]},
        "__metadata__": {DIGEST_KEY: digest, "format": "pt"},
    }
    text = json.dumps(body, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text


def _byte_view(t: torch.Tensor) -> memoryview:
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def write_tensor_file(fh, tensor: torch.Tensor) -> TensorFileInfo:
    """Write `tensor` (any device; copied to the host once if it is not there) to the open binary
    file `fh`, positioned at 0. The digest's length is fixed, so the header is sized up front with a
    placeholder, the data is written and hashed chunk by chunk behind it, then the header is filled."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    if t.dtype not in _st_dtypes():
        raise TypeError(f"cannot store a {t.dtype} tensor")
    view = _byte_view(t)
    nbytes = len(view)
    shape = tuple(t.shape)
    placeholder = _header(t.dtype, shape, nbytes, "0" * 32)
    fh.seek(len(placeholder))
    h = xxhash.xxh3_128()
    for start in range(0, nbytes, CHUNK):
        chunk = view[start : start + CHUNK]
        h.update(chunk)
        fh.write(chunk)
    digest = h.hexdigest()
    header = _header(t.dtype, shape, nbytes, digest)
    assert len(header) == len(placeholder)
    fh.seek(0)
    fh.write(header)
    return TensorFileInfo(len(header) + nbytes, digest, shape, str(t.dtype).removeprefix("torch."))


def _read_header(fh, size: int) -> tuple[dict, int]:
    raw = fh.read(8)
    if len(raw) != 8:
        raise BadTensorFile("shorter than a header")
    (hlen,) = struct.unpack("<Q", raw)
    if hlen > min(size, 1 << 20):
        raise BadTensorFile("header length out of range")
    try:
        header = json.loads(fh.read(hlen))
        entry = header["t"]
        digest = header["__metadata__"][DIGEST_KEY]
        dtype = _torch_dtypes()[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(x) for x in entry["data_offsets"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadTensorFile(f"unreadable header ({exc})") from None
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    if begin != 0 or end != nbytes or 8 + hlen + nbytes != size:
        raise BadTensorFile("header does not match the file size")
    return {"dtype": dtype, "shape": shape, "digest": digest}, 8 + hlen


def read_tensor_file(path: Path, expect_digest: str | None = None) -> tuple[torch.Tensor, TensorFileInfo]:
    """Read a tensor file into a fresh tensor that owns its memory, checking the data against the
    digest in its header (and `expect_digest`, an index's copy, when given)."""
    with open(path, "rb", buffering=0) as fh:
        return read_tensor_from(fh, os.fstat(fh.fileno()).st_size, expect_digest)


def read_tensor_from(fh, size: int, expect_digest: str | None = None) -> tuple[torch.Tensor, TensorFileInfo]:
    """`read_tensor_file` from an open binary file object of `size` bytes, positioned at 0."""
    head, _ = _read_header(fh, size)
    if expect_digest is not None and head["digest"] != expect_digest:
        raise BadTensorFile("digest differs from the index")
    out = torch.empty(head["shape"], dtype=head["dtype"])
    view = _byte_view(out)
    h = xxhash.xxh3_128()
    for start in range(0, len(view), CHUNK):
        chunk = view[start : start + CHUNK]
        got = 0
        while got < len(chunk):
            n = fh.readinto(chunk[got:])
            if not n:
                raise BadTensorFile("truncated")
            got += n
        h.update(chunk)
    if h.hexdigest() != head["digest"]:
        raise BadTensorFile("content does not match its digest")
    info = TensorFileInfo(size, head["digest"], head["shape"], str(head["dtype"]).removeprefix("torch."))
    return out, info


def check_tensor_header(path: Path) -> int:
    """The cheap check: the header parses and accounts for the file's exact size (a torn write or a
    foreign file fails it). Returns the size. The data's digest is checked on every full read."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        _read_header(fh, size)
    return size


def describe_tensor_file(path: Path) -> TensorFileInfo:
    """Check a file fully (header and digest) and describe it: how an index is rebuilt from blobs."""
    return read_tensor_file(path)[1]


def write_safetensors(
    tensors: Mapping[str, torch.Tensor], path: Path | str, metadata: Mapping[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, written from the tensors' own memory (safetensors first copies
    every tensor into a `bytes` object). Tensors must be on the CPU."""
    entries: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        entries[name] = {
            "dtype": _st_dtypes()[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for t in tensors.values():
            view = _byte_view(t.contiguous())
            for start in range(0, len(view), CHUNK):
                fh.write(view[start : start + CHUNK])
