"""The blob journal of the fsspec store: journal.py's lines, kept as objects on the file system.

An object store cannot append, so a process never rewrites a journal object: it collects its lines and
writes each batch as a new object `journal/<host>-<pid>-<id>-<n>.log` (one PUT; objects are never
changed after, so no two writers ever share one). Writes are journalled in batches (every FLUSH_LINES
lines or FLUSH_S seconds, and on close); a removal is journalled, with whatever is pending, before the
blob is removed, so a blob graphmerge removed itself is never reported missing, whenever its process
stops. What a killed process had not flushed is only unknown: a blob of it that vanishes is not
reported, never reported wrongly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .journal import IDLE_S, compacted, journal_lines, live_keys, process_name

FLUSH_LINES = 256
FLUSH_S = 10.0
SUFFIX = ".log"


def modified_time(info: Mapping[str, Any]) -> float:
    """Seconds since the epoch an fsspec `info` dict says the object was last written (0 if it does not)."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return value.timestamp()
    return 0.0


class RemoteJournal:
    def __init__(self, fs: Any, folder: str):
        self.fs = fs
        self.folder = folder
        self._name = process_name()
        self._written = 0
        self._pending: list[str] = []
        self._lines = 0
        self._since = 0.0

    def note(self, op: str, keys: Iterable[str], when: float | None = None) -> None:
        text = journal_lines(op, keys, when)
        if not text:
            return
        if not self._pending:
            self._since = time.time()
        self._pending.append(text)
        self._lines += text.count("\n")
        if op == "-" or self._lines >= FLUSH_LINES or time.time() - self._since >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self.fs.makedirs(self.folder, exist_ok=True)
        path = f"{self.folder}/{self._name}-{self._written:06d}{SUFFIX}"
        self.fs.pipe_file(path, "".join(self._pending).encode("ascii"))
        self._written += 1
        self._pending, self._lines = [], 0

    def close(self) -> None:
        self.flush()

    def objects(self) -> dict[str, Mapping[str, Any]]:
        try:
            found = self.fs.find(self.folder, detail=True)
        except FileNotFoundError:
            return {}
        return {p: i for p, i in found.items() if p.endswith(SUFFIX)}

    def _texts(self, paths: Iterable[str]) -> list[str]:
        texts = []
        for path in paths:
            try:
                texts.append(self.fs.cat_file(path).decode("ascii", errors="replace"))
            except FileNotFoundError:
                continue  # folded into a compacted journal meanwhile: read on the next look
        return texts

    def live(self) -> dict[str, float]:
        """Key -> time written, for keys whose last journalled operation is a write (this process's
        unflushed lines included)."""
        return live_keys([*self._texts(self.objects()), *self._pending])

    def compact(self, exists: Callable[[str], bool]) -> int:
        """Fold journal objects not written for IDLE_S into one, keeping keys whose blob `exists(key)`.
        Objects never change once written, so folding those of a process still running is safe."""
        idle = [p for p, info in self.objects().items() if time.time() - modified_time(info) > IDLE_S]
        if len(idle) < 2:
            return 0
        kept = {k: t for k, t in live_keys(self._texts(idle)).items() if exists(k)}
        self.fs.pipe_file(f"{self.folder}/compact-{uuid.uuid4().hex[:8]}{SUFFIX}", compacted(kept).encode())
        for path in idle:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass
        return len(idle)
