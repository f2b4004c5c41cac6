"""Atomic, streaming writer for Hugging Face model folders.

Tensors arrive from an iterator (typically computed lazily by the merge), are buffered until one shard is
full, written, and dropped: peak memory is about one shard. Everything is written into a hidden temporary
sibling of the output folder which is renamed into place only when complete, so an interrupted run never
leaves a half-written model at the output path and an existing output survives a failed run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from graphmerge.errors import ModelError, SpecError
from graphmerge.io.folder import tokenizer_files

__all__ = ["write_hf_model", "check_output_folder", "parse_size", "DTYPES"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_TMP_MARK = ".graphmerge-tmp-"
_OLD_MARK = ".graphmerge-old-"


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "2GB", "500MB", "1.5GiB" (KB/MB/GB decimal as in HF)."""
    if isinstance(size, bool):
        raise SpecError(f"invalid size {size!r}", fix='use e.g. "2GB" or "500MB"')
    if isinstance(size, int):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
        if not m or m.group(2) not in _UNITS:
            raise SpecError(f"invalid size {size!r}", fix='use e.g. "2GB", "500MB" or a number of bytes')
        value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value <= 0:
        raise SpecError(f"size must be positive, got {size!r}", fix='use e.g. "2GB"')
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(out_dir: Path) -> None:
    # A hard kill (SIGKILL, power loss) cannot clean up; the next write removes leftovers of dead writers.
    pattern = re.compile(
        rf"^\.{re.escape(out_dir.name)}({re.escape(_TMP_MARK)}|{re.escape(_OLD_MARK)})(\d+)-"
    )
    for p in out_dir.parent.iterdir():
        m = pattern.match(p.name)
        if not (m and p.is_dir() and not _pid_alive(int(m.group(2)))):
            continue
        if m.group(1) == _OLD_MARK and not out_dir.exists():
            # Killed between "rename old away" and "rename new in": the old output is the only copy.
            p.rename(out_dir)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _safe_relative(name: str) -> Path:
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ModelError(f"extra file name {name!r} must be a plain relative path")
    return p


class _ShardWriter:
    """Buffers tensors and flushes one safetensors shard whenever the next tensor would overflow it."""

    def __init__(self, tmp: Path, dtype: torch.dtype | None, max_shard_size: int):
        self.tmp = tmp
        self.dtype = dtype
        self.max = max_shard_size
        self.buf: dict[str, torch.Tensor] = {}
        self.buf_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.seen: set[str] = set()
        self.total = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor):
            raise ModelError(f"tensor {name!r} is a {type(t).__name__}, not a torch.Tensor")
        if name in self.seen:
            raise ModelError(f"tensor {name!r} was produced twice")
        self.seen.add(name)
        t = t.detach().to("cpu")
        if self.dtype is not None and t.is_floating_point():
            t = t.to(self.dtype)
        t = t.contiguous()
        # safetensors refuses tensors sharing storage (views, tied weights): give each its own copy.
        if t.untyped_storage().nbytes() != t.nbytes or any(
            b.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for b in self.buf.values()
        ):
            t = t.clone()
        nbytes = t.nbytes
        if self.buf and self.buf_bytes + nbytes > self.max:
            self.flush()
        self.buf[name] = t
        self.buf_bytes += nbytes
        self.total += nbytes

    def flush(self) -> None:
        if not self.buf:
            return
        path = self.tmp / f"shard-{len(self.shards) + 1:05d}.safetensors"
        save_file(self.buf, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.buf)))
        self.buf = {}
        self.buf_bytes = 0

    def finish(self) -> None:
        self.flush()
        if not self.shards:
            raise ModelError("the model to save has no tensors")
        if len(self.shards) == 1:
            self.shards[0][0].rename(self.tmp / "model.safetensors")
            return
        n = len(self.shards)
        weight_map: dict[str, str] = {}
        for i, (path, names) in enumerate(self.shards, start=1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.tmp / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def check_output_folder(out: Path) -> None:
    """An output folder can be written: it is absent, empty or a model folder (so a mistyped path
    never replaces unrelated data), and its nearest existing ancestor is a writable folder."""
    if out.exists() and not (out.is_dir() and ((out / "config.json").is_file() or not any(out.iterdir()))):
        raise ModelError(
            f"output path {out} exists and is not a model folder",
            fix="choose another output path or remove it yourself",
        )
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ModelError(
            f"cannot create output folder {out}: {ancestor} is a file", fix="choose another output path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ModelError(
            f"cannot create output folder {out}: {ancestor} is not writable",
            fix="choose a path you can write or fix the folder's permissions",
        )


def write_hf_model(
    out_dir: Path | str,
    config: Mapping,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    tokenizer_from: Path | str | None = None,
    generation_config_from: Path | str | None = None,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "2GB",
    model_card: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a loadable HF model folder at `out_dir` atomically; returns its absolute path.

    `config` is written as given (the caller sets layer count and vocab) except the dtype keys, which
    are set from `dtype` (floating tensors are cast to it; None keeps each tensor's dtype and records
    the first floating dtype seen). `tokenizer_from` / `generation_config_from` are model folders (or,
    for the latter, the generation_config.json file itself) whose files are copied.
    An existing `out_dir` is replaced only on success, and only if it looks like a model folder
    (has config.json) or is empty, so a mistyped path never deletes unrelated data.
    """
    out = Path(out_dir).expanduser().absolute()
    limit = parse_size(max_shard_size)
    check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}{_TMP_MARK}{tag}"
    tmp.mkdir()
    try:
        writer = _ShardWriter(tmp, dtype, limit)
        first_float: torch.dtype | None = None
        for name, t in tensors:
            writer.add(name, t)
            if first_float is None and t.is_floating_point():
                first_float = dtype or t.dtype
        writer.finish()

        cfg = dict(config)
        saved_dtype = dtype or first_float
        if saved_dtype is not None:
            # transformers 5 reads "dtype"; older releases (and mergekit users) read "torch_dtype".
            dname = str(saved_dtype).removeprefix("torch.")
            cfg["dtype"] = dname
            cfg["torch_dtype"] = dname
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

        if tokenizer_from is not None:
            src = Path(tokenizer_from)
            files = tokenizer_files(src)
            if not files:
                raise ModelError(f"no tokenizer files in {src}", fix="point tokenizer_from at a model folder")
            for f in files:
                shutil.copy2(f, tmp / f.name)
        if generation_config_from is not None:
            g = Path(generation_config_from)
            g = g / "generation_config.json" if g.is_dir() else g
            if g.is_file():
                shutil.copy2(g, tmp / "generation_config.json")
        if model_card is not None:
            (tmp / "README.md").write_text(model_card, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            p = tmp / _safe_relative(name)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
    except BaseException:
        # Includes KeyboardInterrupt: nothing half-written may survive, and out is untouched.
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # Swap in: rename old away, rename new in, then delete old. Renames within one directory are atomic.
    old = None
    if out.exists():
        old = out.parent / f".{out.name}{_OLD_MARK}{tag}"
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
