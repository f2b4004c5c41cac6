"""Atomic, streaming writer for Hugging Face model folders.

Tensors arrive from an iterator (typically computed lazily by the merge), are buffered until one shard is
full, written, and dropped: peak memory is about one shard. Everything is written into a hidden temporary
sibling of the output folder which is renamed into place only when complete, so an interrupted run never
leaves a half-written model at the output path and an existing output survives a failed run.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from graphmerge.errors import ModelError, SpecError
from graphmerge.filemode import dir_mode, file_mode
from graphmerge.io.folder import SAFETENSORS_DTYPES, tokenizer_files
from graphmerge.lazy import torch
from graphmerge.tensorfile import write_safetensors as save_file  # no bytes copy of each tensor

_WRITE_CHUNK = 64 << 20

__all__ = ["PlannedTensor", "SaveOutcome", "check_output_folder", "parse_size", "save_hf_model", "write_hf_model"]

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
_LOCK_MARK = ".graphmerge-lock"


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


class _OutputLock:
    """An exclusive lock on one output path, held in a hidden file beside it and removed on release.

    A lock file that a releasing holder unlinks could be locked by a waiter through the unlinked
    inode; so after locking, the holder checks that the path still names the inode it holds and
    retries otherwise. A killed holder's lock is released by the kernel; its file is reused."""

    def __init__(self, out: Path, on_wait: Callable[[], None] | None = None):
        self.path = out.parent / f".{out.name}{_LOCK_MARK}"
        self.fd: int | None = None
        self.waited = False
        self.on_wait = on_wait

    def __enter__(self) -> _OutputLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.waited and self.on_wait is not None:
                    self.on_wait()
                self.waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        assert self.fd is not None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # releases the lock
            self.fd = None


def _remove_stale_temps(out_dir: Path) -> None:
    """Remove what killed writers left beside `out_dir`. Called with the output's lock held, so no
    live writer has a temporary or old folder there."""
    prefix = f".{out_dir.name}"
    changed = False
    for p in out_dir.parent.iterdir():
        if not p.name.startswith(prefix) or not p.is_dir():
            continue
        rest = p.name[len(prefix) :]
        if rest.startswith(_OLD_MARK) and not out_dir.exists():
            # Killed between "rename old away" and "rename new in": the old output is the only copy.
            p.rename(out_dir)
            changed = True
        elif rest.startswith((_TMP_MARK, _OLD_MARK)):
            shutil.rmtree(p, ignore_errors=True)
            changed = True
    if changed:
        _fsync_dir(out_dir.parent)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_durable(folder: Path) -> None:
    """Give every file and folder the umask's permissions and flush it to disk (the data first,
    then the directory entries), so the folder renamed into place holds whole files after a crash."""
    fmode, dmode = file_mode(), dir_mode()
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fchmod(fd, fmode)
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(root, dmode)
        _fsync_dir(Path(root))


def _safe_relative(name: str) -> Path:
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ModelError(f"extra file name {name!r} must be a plain relative path")
    return p


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor the save will receive, known before it is computed: its name, shape and the dtype it
    is saved in (torch's spelling, e.g. "bfloat16")."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _st_code(dtype_name: str) -> str | None:
    return next((code for code, (name, _) in SAFETENSORS_DTYPES.items() if name == dtype_name), None)


def _nbytes(p: PlannedTensor) -> int:
    n = 1
    for s in p.shape:
        n *= s
    return n * SAFETENSORS_DTYPES[_st_code(p.dtype)][1]


def _header(shard: list[PlannedTensor]) -> bytes:
    """The safetensors header `write_safetensors` writes for these tensors in this order (byte for byte)."""
    entries: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for p in shard:
        n = _nbytes(p)
        entries[p.name] = {"dtype": _st_code(p.dtype), "shape": list(p.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class _StreamingShards:
    """Writes each tensor into its shard file as it arrives: the shards and their headers are laid out
    from the plan (the shapes and dtypes known before computing), so no shard is held in memory and
    the writes overlap the computation. The files equal what the buffering writer makes."""

    def __init__(self, tmp: Path, plan: list[PlannedTensor], max_shard_size: int):
        self.tmp = tmp
        self.shards: list[list[PlannedTensor]] = []
        size = 0
        for p in plan:
            n = _nbytes(p)
            if not self.shards or (self.shards[-1] and size + n > max_shard_size):
                self.shards.append([])
                size = 0
            self.shards[-1].append(p)
            size += n
        self.order = [(i, p) for i, shard in enumerate(self.shards) for p in shard]
        self.done = 0  # tensors written
        self.fh = None
        self.paths: list[Path] = []

    def expects(self, name: str, t: torch.Tensor) -> bool:
        if self.done >= len(self.order):
            return False
        p = self.order[self.done][1]
        return name == p.name and tuple(t.shape) == p.shape and str(t.dtype).removeprefix("torch.") == p.dtype

    def write(self, t: torch.Tensor) -> None:
        shard, _ = self.order[self.done]
        if self.fh is None or shard == len(self.paths):
            self._close()
            path = self.tmp / f"shard-{shard + 1:05d}.safetensors"
            self.paths.append(path)
            # Unbuffered: each tensor reaches the file when it arrives, written from its own memory.
            self.fh = open(path, "wb", buffering=0)  # noqa: SIM115 (closed when its shard is complete)
            self._put(memoryview(_header(self.shards[shard])))
        if t.numel():
            self._put(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        self.done += 1

    def _put(self, view: memoryview) -> None:
        while len(view):
            view = view[self.fh.write(view[:_WRITE_CHUNK]) :]

    def _close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def complete(self) -> bool:
        self._close()
        return self.done == len(self.order)

    def written(self) -> Iterable[tuple[str, torch.Tensor]]:
        """The tensors written so far, read back (to hand them to the buffering writer when the
        computed tensors stop following the plan); their files are removed."""
        self._close()
        for shard, path in enumerate(self.paths):
            with open(path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                fh.seek(8 + n)
                for p in self.shards[shard]:
                    if self.done == 0:
                        break
                    out = torch.empty(p.shape, dtype=getattr(torch, p.dtype))
                    if out.numel():
                        fh.readinto(memoryview(out.reshape(-1).view(torch.uint8).numpy()))
                    self.done -= 1
                    yield p.name, out
            path.unlink()
        self.paths = []


class _ShardWriter:
    """Buffers tensors and flushes one safetensors shard whenever the next tensor would overflow it."""

    def __init__(
        self, tmp: Path, dtype: torch.dtype | None, max_shard_size: int, plan: list[PlannedTensor] | None = None
    ):
        self.tmp = tmp
        self.dtype = dtype
        self.max = max_shard_size
        self.buf: dict[str, torch.Tensor] = {}
        self.buf_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.seen: set[str] = set()
        self.total = 0
        known = plan is not None and all(_st_code(p.dtype) for p in plan)
        self.streaming = _StreamingShards(tmp, plan, max_shard_size) if known and plan else None

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
        if self.streaming is not None:
            if self.streaming.expects(name, t):
                self.streaming.write(t)
                self.total += t.nbytes
                return
            self._stop_streaming()
        self._buffer(name, t)

    def _stop_streaming(self) -> None:
        """The tensors no longer follow the plan: what was streamed goes through the buffers instead."""
        streaming, self.streaming = self.streaming, None
        for name, t in streaming.written():
            self.total -= t.nbytes
            self._buffer(name, t)

    def _buffer(self, name: str, t: torch.Tensor) -> None:
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
        if self.streaming is not None:
            if self.streaming.complete():
                self.shards = [(path, [p.name for p in shard]) for path, shard in zip(self.streaming.paths, self.streaming.shards)]
            else:
                self._stop_streaming()
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


@dataclass(frozen=True)
class SaveOutcome:
    path: Path
    written: bool  # False: `skip_if` found the output already current (nothing was consumed)
    waited: bool  # another writer held the output's lock first


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
    out_dir: Path | str, config: Mapping, tensors: Iterable[tuple[str, torch.Tensor]], **kw
) -> Path:
    """`save_hf_model` returning only the output's absolute path."""
    return save_hf_model(out_dir, config, tensors, **kw).path


def save_hf_model(
    out_dir: Path | str,
    config: Mapping,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    tokenizer_from: Path | str | None = None,
    generation_config_from: Path | str | None = None,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "2GB",
    model_card: str | Callable[[], str] | None = None,
    extra_files: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    copy_files: Iterable[Path] = (),
    skip_if: Callable[[Path], bool] | None = None,
    on_wait: Callable[[], None] | None = None,
    plan: list[PlannedTensor] | None = None,
) -> SaveOutcome:
    """Write a loadable HF model folder at `out_dir` atomically.

    `config` is written as given (the caller sets layer count and vocab) except the dtype keys, which
    are set from `dtype` (floating tensors are cast to it; None keeps each tensor's dtype and records
    the first floating dtype seen). `tokenizer_from` / `generation_config_from` are model folders (or,
    for the latter, the generation_config.json file itself) whose files are copied; `copy_files` are
    copied too (custom code). An existing `out_dir` is replaced only on success, and only if it looks
    like a model folder (has config.json) or is empty, so a mistyped path never deletes unrelated data.

    Writers of one path take turns (a lock file beside it); each first removes what killed writers
    left there, then asks `skip_if(out)` whether the output is already what it would write (e.g. a
    concurrent run just wrote it), and only then consumes `tensors`. `on_wait` is called once if
    another writer holds the lock.

    `plan` (the tensors' names, shapes and saved dtypes, in order, when known before computing) lets
    each tensor go to disk as it arrives instead of being buffered with its shard; tensors that do not
    follow it are saved all the same, buffered. `model_card` and `extra_files` may be callables, asked
    once the tensors have been consumed (their text may depend on what computing them learnt).
    """
    out = Path(out_dir).expanduser().absolute()
    limit = parse_size(max_shard_size)
    check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _OutputLock(out, on_wait) as lock:
        _remove_stale_temps(out)
        if skip_if is not None and skip_if(out):
            return SaveOutcome(out, written=False, waited=lock.waited)
        check_output_folder(out)  # a concurrent writer may have put something else there meanwhile
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = out.parent / f".{out.name}{_TMP_MARK}{tag}"
        tmp.mkdir()
        try:
            _write_folder(
                tmp,
                config,
                tensors,
                tokenizer_from=tokenizer_from,
                generation_config_from=generation_config_from,
                dtype=dtype,
                limit=limit,
                model_card=model_card,
                extra_files=extra_files,
                copy_files=copy_files,
                plan=plan,
            )
            _make_durable(tmp)
        except BaseException:
            # Includes KeyboardInterrupt: nothing half-written may survive, and out is untouched.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_in(tmp, out, tag)
    return SaveOutcome(out, written=True, waited=lock.waited)



def _swap_in(tmp: Path, out: Path, tag: str) -> None:
    """Rename old away, rename new in, then delete old. Renames within one directory are atomic; a
    kill in between leaves a hidden folder that the next writer of `out` restores or removes."""
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
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(out.parent)


def _write_folder(
    tmp: Path,
    config: Mapping,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    tokenizer_from: Path | str | None,
    generation_config_from: Path | str | None,
    dtype: torch.dtype | None,
    limit: int,
    model_card: str | Callable[[], str] | None,
    extra_files: Mapping[str, str] | Callable[[], Mapping[str, str]] | None,
    copy_files: Iterable[Path],
    plan: list[PlannedTensor] | None = None,
) -> None:
    writer = _ShardWriter(tmp, dtype, limit, plan)
    first_float: torch.dtype | None = None
    try:
        for name, t in tensors:
            writer.add(name, t)
            if first_float is None and t.is_floating_point():
                first_float = dtype or t.dtype
    finally:
        # A write that fails mid-stream (a full disk) must stop the producer's threads now: left to
        # the garbage collector, they are still computing when the interpreter exits, which aborts it.
        close = getattr(tensors, "close", None)
        if close is not None:
            close()
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
            shutil.copyfile(f, tmp / f.name)
    if generation_config_from is not None:
        g = Path(generation_config_from)
        g = g / "generation_config.json" if g.is_dir() else g
        if g.is_file():
            shutil.copyfile(g, tmp / "generation_config.json")
    for f in copy_files:
        shutil.copyfile(f, tmp / Path(f).name)
    if callable(model_card):
        model_card = model_card()
    if model_card is not None:
        (tmp / "README.md").write_text(model_card, encoding="utf-8")
    if callable(extra_files):
        extra_files = extra_files()
    for name, text in (extra_files or {}).items():
        p = tmp / _safe_relative(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
