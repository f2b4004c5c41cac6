"""Source tensors' content identities, learnt from the read that loads them.

A task key needs the content digest of every source tensor under it. Hashing a new file before the
merge would read it twice; instead, a tensor whose digest is not memoised gets a `SourceIdentity`,
which the executor fills from the very tensor it reads. Asked for earlier (a node that needs a model
key before computing), it hashes what its file still lacks, as a digest pass always did.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from graphmerge.hashing import DeferredIdentity
from graphmerge.io.folder import ModelFolder, file_key, tensor_digest


class FileDigests:
    """The digests of one weight file's tensors: those memoised, plus those observed or hashed in
    this process. Written back to the memo when complete, or as far as known on `flush()`."""

    def __init__(self, folder: ModelFolder, file: Path, known: dict[str, str], memo: MutableMapping):
        self.folder = folder
        self.file = file
        self.key = file_key(file)
        self.names = folder.names_in(file)
        self.known = dict(known)
        self.memo = memo
        self._saved = len(self.known)
        self._lock = threading.Lock()

    def has(self, name: str) -> bool:
        return name in self.known

    def get(self, name: str) -> str:
        found = self.known.get(name)
        if found is None:
            with self._lock:
                missing = [n for n in self.names if n not in self.known]
                if missing:
                    self.known.update(self.folder.hash_tensors(self.file, missing))
                    self._save()
            found = self.known[name]
        return found

    def observe(self, name: str, value: Any) -> None:
        if name in self.known:
            return
        found = tensor_digest(value)
        with self._lock:
            self.known.setdefault(name, found)
            if len(self.known) == len(self.names):
                self._save()

    def flush(self) -> None:
        with self._lock:
            if len(self.known) > self._saved:
                self._save()

    def _save(self) -> None:
        self.memo[self.key] = dict(self.known)
        self._saved = len(self.known)


class SourceIdentity(DeferredIdentity):
    """One source tensor's content digest, known once it has been read or its file hashed."""

    __slots__ = ("digests", "name", "local")

    def __init__(self, digests: FileDigests, name: str):
        self.digests = digests
        self.name = name
        self.local = ["source", *digests.key, name]

    @property
    def known(self) -> bool:
        return self.digests.has(self.name)

    def resolve(self) -> str:
        return self.digests.get(self.name)

    def observe(self, value: Any) -> None:
        self.digests.observe(self.name, value)


def source_identities(
    folder: ModelFolder, memo: MutableMapping, open_files: dict[tuple, FileDigests]
) -> dict[str, str | SourceIdentity]:
    """Each tensor's identity: its memoised digest, or a SourceIdentity filled when it is read.
    `open_files` shares one FileDigests per file among the loads of a process (flushed at its end)."""
    out: dict[str, str | SourceIdentity] = {}
    for f in folder.files:
        key = file_key(f)
        digests = open_files.get(key)
        if digests is None:
            known = memo.get(key) or {}
            names = folder.names_in(f)
            if all(n in known for n in names):
                out.update((n, known[n]) for n in names)
                continue
            digests = open_files[key] = FileDigests(folder, f, known, memo)
        out.update(
            (n, digests.known[n] if digests.has(n) else SourceIdentity(digests, n)) for n in digests.names
        )
    return {n: out[n] for n in folder.tensor_names}
