"""Folders written once under a content-addressed name (tokenizers kept in the cache)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_folder_once(out: Path, fill: Callable[[Path], None]) -> Path:
    """`out`, created by `fill(tmp_folder)` and renamed into place unless it already exists. The name
    is a digest of the content, so a concurrent writer that wins the rename wrote the same thing."""
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        fill(tmp / "new")
        (tmp / "new").rename(out)
    except OSError:
        if not out.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
