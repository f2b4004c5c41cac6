"""Per-process journals of the blobs a store wrote and removed.

Blobs describe themselves, so no index is needed to read them; the journals only let `verify` tell
a blob that vanished behind graphmerge's back ("missing") from one never written. Each process
appends to its own file (one writer per file: safe on NFS, no locks). Lines are `<time> <+|-> <key>`;
the last line of a killed process may be torn and is skipped. The fsspec store keeps the same lines
as objects written whole (remote_journal.py): the parsing and folding here serve both."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

IDLE_S = 3600.0  # journals untouched this long belong to finished processes: gc compacts them


def process_name() -> str:
    """A journal name no other process uses: one writer per journal, so nothing needs a lock."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def journal_lines(op: str, keys: Iterable[str], when: float | None = None) -> str:
    stamp = f"{time.time() if when is None else when:.6f}"
    return "".join(f"{stamp} {op} {k}\n" for k in keys)


def live_keys(texts: Iterable[str]) -> dict[str, float]:
    """Key -> time written, for keys whose last journalled operation (over all `texts`, in time order)
    is a write."""
    ops: list[tuple[float, str, str]] = []
    for text in texts:
        for line in text.split("\n")[:-1]:  # a last line without its newline is torn
            parts = line.split(" ")
            if len(parts) == 3 and parts[1] in "+-":
                try:
                    ops.append((float(parts[0]), parts[1], parts[2]))
                except ValueError:
                    continue
    live: dict[str, float] = {}
    for when, op, key in sorted(ops):
        if op == "+":
            live[key] = when
        else:
            live.pop(key, None)
    return live


def compacted(live: Mapping[str, float]) -> str:
    """One journal's text that says what `live` says: each key written at its time."""
    return "".join(f"{t:.6f} + {k}\n" for k, t in sorted(live.items(), key=lambda kv: kv[1]))


class Journal:
    def __init__(self, folder: Path):
        self.folder = folder
        self._fh = None

    def _file(self):
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{process_name()}.log"
            self._fh = open(path, "a", buffering=1, encoding="ascii")  # noqa: SIM115
        return self._fh

    def note(self, op: str, keys: Iterable[str], when: float | None = None) -> None:
        self._file().write(journal_lines(op, keys, when))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.log")) if self.folder.is_dir() else []

    def live(self, files: Iterable[Path] | None = None) -> dict[str, float]:
        """Key -> time written, for keys whose last journalled operation is a write."""
        texts = []
        for path in self.files() if files is None else files:
            try:
                texts.append(path.read_text(encoding="ascii", errors="replace"))
            except OSError:
                continue
        return live_keys(texts)

    def compact(self, exists) -> int:
        """Fold journals idle for an hour into one, keeping keys whose blob `exists(key)`."""
        idle = [p for p in self.files() if time.time() - p.stat().st_mtime > IDLE_S]
        if len(idle) < 2:
            return 0
        kept = {k: t for k, t in self.live(idle).items() if exists(k)}
        from graphmerge.atomic import atomic_write_bytes

        out = self.folder / f"compact-{uuid.uuid4().hex[:8]}.log"
        atomic_write_bytes(out, compacted(kept).encode())
        old = time.time() - 2 * IDLE_S  # idle itself, so a later compaction may fold it in again
        os.utime(out, (old, old))
        for p in idle:
            p.unlink(missing_ok=True)
        return len(idle)
