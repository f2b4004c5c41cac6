"""Atomic file writes: readers see the old file or the whole new one, never a torn one.

Shared by the cache's stores and every writer of reports and outputs (below them in the layering)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from graphmerge.errors import storage_error
from graphmerge.filemode import file_mode

__all__ = ["atomic_write_bytes", "temp_beside"]

TEMP_SUFFIX = ".tmp"


def temp_beside(path: Path) -> tuple[int, str]:
    """A temp file in `path`'s folder (same file system, so the rename is atomic), with the
    permissions `open()` would give: mkstemp's 0600 would hide it from the other users of a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, file_mode())
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write via a temp file and a rename. `durable=False` skips fsync: fine for cache entries that
    carry their own digest (one torn by a power cut is a cache miss, not bad data)."""
    path = Path(path)
    try:
        fd, tmp = temp_beside(path)
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
