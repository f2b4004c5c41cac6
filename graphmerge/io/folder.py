"""Lazy, validated access to a Hugging Face model folder.

A `ModelFolder` knows every tensor's name, shape, dtype and location after `open()`, but reads tensor
data only when asked, one tensor at a time, so multi-GB models never have to fit in memory.
Safetensors headers are parsed by hand (they are tiny) so that truncated or corrupted files are rejected
at open time with a message naming the file, instead of failing halfway through a long merge.
"""

from __future__ import annotations

import difflib
import json
import os
import struct
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from graphmerge.errors import ModelError
from graphmerge.lazy import torch

__all__ = [
    "ModelFolder",
    "TensorInfo",
    "TOKENIZER_FILE_NAMES",
    "tokenizer_files",
    "tensor_digest",
    "file_key",
]



# Safetensors dtype codes -> (torch's name for the dtype, bytes per element). Names, not torch dtypes,
# so that parsing a header (all `validate` does) never imports torch; `TensorInfo.dtype` converts.
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "U16": ("uint16", 2),
    "U32": ("uint32", 4),
    "U64": ("uint64", 8),
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# Everything a tokenizer may need; copied verbatim when a merged model is saved.
TOKENIZER_FILE_NAMES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
)

_HASH_CHUNK = 8 << 20
# Header larger than this is certainly corrupt (real headers are a few MB at most).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives. `begin`/`end` are absolute byte offsets (safetensors only)."""

    name: str
    file: Path
    dtype_name: str  # torch's spelling ("bfloat16"); see `dtype`
    shape: tuple[int, ...]
    begin: int | None = None
    end: int | None = None

    @property
    def dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype_name, None)
        if dtype is None:
            raise ModelError(
                f"tensor {self.name!r} has dtype {self.dtype_name}, which this torch {torch.__version__} lacks",
                where=str(self.file),
                fix="upgrade torch",
            )
        return dtype


def tokenizer_files(directory: Path | str) -> list[Path]:
    """The tokenizer files present in `directory` (see TOKENIZER_FILE_NAMES), in that order."""
    d = Path(directory)
    return [d / n for n in TOKENIZER_FILE_NAMES if (d / n).is_file()]


def _digest_bytes(dtype: torch.dtype | str, shape: tuple[int, ...], data: Any) -> str:
    # dtype and shape are hashed too: the same bytes viewed as another dtype/shape is another tensor.
    # The dtype is spelled the torch way so .bin and .safetensors copies of a tensor digest equally.
    h = xxhash.xxh3_128(_digest_prefix(dtype, shape))
    h.update(data)
    return h.hexdigest()


def _digest_prefix(dtype: torch.dtype | str, shape: tuple[int, ...]) -> bytes:
    return f"{_dtype_name(dtype)}|{','.join(map(str, shape))}|".encode()


def tensor_digest(tensor: torch.Tensor) -> str:
    """Content digest of an in-memory tensor; equal to ModelFolder.tensor_digests() for the same tensor."""
    t = tensor.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
    return _digest_bytes(t.dtype, tuple(t.shape), memoryview(raw))


def _parse_safetensors_header(file: Path) -> list[TensorInfo]:
    """Parse and validate a safetensors header without reading tensor data."""
    where = str(file)
    fix = "the file is truncated or corrupted; re-download or re-save the model"
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelError(
                    "safetensors file is shorter than its 8-byte header length", where=where, fix=fix
                )
            (n,) = struct.unpack("<Q", prefix)
            if n > _MAX_HEADER_BYTES or 8 + n > size:
                raise ModelError(
                    f"safetensors header length {n} does not fit in the file ({size} bytes)",
                    where=where,
                    fix=fix,
                )
            raw = f.read(n)
    except OSError as e:
        raise ModelError(f"cannot read safetensors file: {e.strerror or e}", where=where) from e
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"safetensors header is not valid JSON ({e})", where=where, fix=fix) from e
    data_start = 8 + n
    data_len = size - data_start
    infos: list[TensorInfo] = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            code = meta["dtype"]
            shape = tuple(int(x) for x in meta["shape"])
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(
                f"safetensors header entry for {name!r} is malformed", where=where, fix=fix
            ) from e
        if code not in SAFETENSORS_DTYPES:
            raise ModelError(f"tensor {name!r} has unsupported dtype {code}", where=where)
        dtype, itemsize = SAFETENSORS_DTYPES[code]
        numel = 1
        for s in shape:
            numel *= s
        expected = numel * itemsize
        if not (0 <= begin <= end) or end - begin != expected:
            raise ModelError(
                f"tensor {name!r} byte range {begin}..{end} does not match its shape {list(shape)} and dtype {code}",
                where=where,
                fix=fix,
            )
        if end > data_len:
            raise ModelError(
                f"tensor {name!r} data ends at byte {data_start + end} but the file has {size} bytes",
                where=where,
                fix=fix,
            )
        infos.append(TensorInfo(name, file, dtype, shape, data_start + begin, data_start + end))
    # File order = data order; header JSON key order is not guaranteed to be meaningful.
    infos.sort(key=lambda i: (i.begin, i.name))
    return infos


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"cannot read {what}: {e.strerror or e}", where=str(path)) from e
    except ValueError as e:
        raise ModelError(f"{what} is not valid JSON ({e})", where=str(path)) from e


def _index_shards(index_path: Path) -> tuple[list[Path], dict[str, Path]]:
    index = _load_json(index_path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError("shard index has no weight_map", where=str(index_path))
    shards: list[Path] = []
    owner: dict[str, Path] = {}
    for name, fname in weight_map.items():
        p = index_path.parent / str(fname)
        if p not in shards:
            shards.append(p)
        owner[name] = p
    for p in shards:
        if not p.is_file():
            raise ModelError(
                f"shard {p.name} listed in {index_path.name} is missing",
                where=str(index_path.parent),
                fix="the download is incomplete; fetch all shards",
            )
    # Sorted file names give the natural model-0000k-of-0000n order.
    return sorted(shards), owner


@dataclass(frozen=True, eq=False)
class ModelFolder:
    """An opened HF model folder. Create with `ModelFolder.open(path)`."""

    path: Path
    config: dict
    format: str  # "safetensors" or "pytorch"
    files: tuple[Path, ...]
    tensor_names: tuple[str, ...]
    _infos: Mapping[str, TensorInfo] = field(repr=False)
    # Open safetensors handles / mmapped .bin state dicts, created on first read (a cache, not state).
    _handles: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: Path | str) -> ModelFolder:
        d = Path(path).expanduser()
        if not d.is_dir():
            raise ModelError(
                f"model folder {d} does not exist or is not a directory",
                fix="point `path` at a Hugging Face model folder",
            )
        d = d.resolve()
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise ModelError(f"missing config.json in {d}", fix="point `path` at a Hugging Face model folder")
        config = _load_json(cfg_path, "config.json")
        if not isinstance(config, dict):
            raise ModelError("config.json is not a JSON object", where=str(cfg_path))

        infos: dict[str, TensorInfo] = {}
        order: list[str] = []

        def add(info: TensorInfo) -> None:
            if info.name in infos:
                raise ModelError(
                    f"tensor {info.name!r} appears in both {infos[info.name].file.name} and {info.file.name}",
                    where=str(d),
                )
            infos[info.name] = info
            order.append(info.name)

        st_index = d / "model.safetensors.index.json"
        pt_index = d / "pytorch_model.bin.index.json"
        if st_index.is_file():
            fmt = "safetensors"
            files, owner = _index_shards(st_index)
            for f in files:
                for info in _parse_safetensors_header(f):
                    add(info)
            for name, f in owner.items():
                if name not in infos or infos[name].file != f:
                    raise ModelError(
                        f"tensor {name!r} is listed in {st_index.name} under {f.name} but that shard lacks it",
                        where=str(d),
                        fix="the index and the shards disagree; re-download the model",
                    )
        elif (d / "model.safetensors").is_file():
            fmt = "safetensors"
            files = [d / "model.safetensors"]
            for info in _parse_safetensors_header(files[0]):
                add(info)
        elif pt_index.is_file() or (d / "pytorch_model.bin").is_file():
            fmt = "pytorch"
            files = _index_shards(pt_index)[0] if pt_index.is_file() else [d / "pytorch_model.bin"]
            handles: dict = {}
            for f in files:
                sd = _torch_load(f)
                handles[f] = sd
                for name, t in sd.items():
                    add(TensorInfo(name, f, _dtype_name(t.dtype), tuple(t.shape)))
            folder = cls(d, config, fmt, tuple(files), tuple(order), infos)
            folder._handles.update(handles)
            return folder
        else:
            raise ModelError(
                f"no weights in {d}",
                fix="expected model.safetensors, model.safetensors.index.json, pytorch_model.bin "
                "or pytorch_model.bin.index.json",
            )
        if not order:
            raise ModelError("model folder contains no tensors", where=str(d))
        return cls(d, config, fmt, tuple(files), tuple(order), infos)

    # ------------------------------------------------------------------ metadata
    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.tensor_names, n=1)
            raise ModelError(
                f"tensor {name!r} not found",
                where=str(self.path),
                fix=f"did you mean {close[0]!r}?"
                if close
                else f"the model has {len(self.tensor_names)} tensors",
            ) from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.info(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self.info(name).dtype

    @property
    def generation_config(self) -> dict | None:
        p = self.path / "generation_config.json"
        return _load_json(p, "generation_config.json") if p.is_file() else None

    def tokenizer_files(self) -> list[Path]:
        return tokenizer_files(self.path)

    # ------------------------------------------------------------------ data
    def read(self, name: str) -> torch.Tensor:
        """One tensor, read lazily (safetensors: only that tensor's bytes)."""
        info = self.info(name)
        if self.format == "pytorch":
            # The cached state dict is a copy-on-write mmap shared by all reads: hand out a copy so that
            # in-place edits by a caller cannot leak into later reads (safetensors reads are fresh too).
            return self._handles[info.file][name].clone()
        # A positioned read straight into the tensor's own memory: no mmap, so the source pages
        # never count towards this process's resident memory, and threads may read concurrently.
        out = torch.empty(info.shape, dtype=info.dtype)
        if out.numel() == 0:
            return out
        view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        try:
            fd = os.open(info.file, os.O_RDONLY)
            try:
                done = 0
                while done < len(view):
                    n = os.preadv(fd, [view[done:]], info.begin + done)
                    if n <= 0:
                        raise ModelError(
                            f"tensor {name!r} ends past the end of the file",
                            where=str(info.file),
                            fix="the file was truncated; re-download or re-save the model",
                        )
                    done += n
            finally:
                os.close(fd)
        except OSError as e:
            raise ModelError(f"cannot read safetensors file: {e.strerror or e}", where=str(info.file)) from e
        return out

    def close(self) -> None:
        """Drop open safetensors handles (e.g. before the files are replaced on disk); reads reopen."""
        if self.format == "safetensors":
            self._handles.clear()

    def tensor_digests(self, memo: MutableMapping | None = None) -> dict[str, str]:
        """Content digest of every tensor (xxh3_128 over dtype, shape and raw bytes).

        Digests of each weight file are memoised in `memo` under `file_key(file)`, so an unchanged
        multi-GB file is hashed once per cache, not once per run. A memoised record may hold only
        some of the file's tensors (a run that read the others only): the rest are hashed.
        """
        out: dict[str, str] = {}
        for f in self.files:
            key = file_key(f)
            cached = dict(memo.get(key) or {}) if memo is not None else {}
            missing = [n for n in self.names_in(f) if n not in cached]
            if missing:
                cached.update(self.hash_tensors(f, missing))
                if memo is not None:
                    memo[key] = cached
            out.update(cached)
        return {n: out[n] for n in self.tensor_names}

    def names_in(self, f: Path) -> list[str]:
        """The tensors stored in weight file `f`, in the folder's order."""
        return [n for n in self.tensor_names if self._infos[n].file == f]

    def hash_tensors(self, f: Path, names: list[str]) -> dict[str, str]:
        """Content digests of `names`, all stored in weight file `f`, read from the file."""
        if self.format == "pytorch":
            return {n: tensor_digest(self._handles[f][n]) for n in names}
        res: dict[str, str] = {}
        # Hashed through one reused buffer, not an mmap: the file's pages never count towards this
        # process's resident memory (a merge's peak RSS stays at its in-flight tensors).
        buf = bytearray(_HASH_CHUNK)
        view = memoryview(buf)
        with open(f, "rb", buffering=0) as fh:
            for n in names:
                i = self._infos[n]
                h = xxhash.xxh3_128(_digest_prefix(i.dtype_name, i.shape))
                fh.seek(i.begin)
                left = i.end - i.begin
                while left:
                    got = fh.readinto(view[: min(left, _HASH_CHUNK)])
                    if not got:
                        raise ModelError(f"tensor {n!r} ends past the end of the file", where=str(f))
                    h.update(view[:got])
                    left -= got
                res[n] = h.hexdigest()
        return res


def file_key(f: Path) -> tuple[str, int, int]:
    """(absolute path, size, mtime_ns): what a weight file's memoised digests are filed under."""
    st = f.stat()
    return (str(f), st.st_size, st.st_mtime_ns)


def _torch_load(f: Path) -> dict[str, torch.Tensor]:
    try:
        # mmap=True: tensors stay on disk until touched; weights_only=True: no arbitrary pickle code.
        sd = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ModelError(
            f"cannot load PyTorch weights ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            where=str(f),
            fix="the file is corrupted or not a plain state dict; convert it to safetensors",
        ) from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError("PyTorch weights file is not a flat state dict of tensors", where=str(f))
    return sd
