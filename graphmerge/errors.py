"""User-facing errors: one line saying what went wrong, where, and how to fix it."""

from __future__ import annotations


class GraphmergeError(Exception):
    """Any error caused by user input. The CLI prints it as one line and exits non-zero."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.what)
        if self.fix:
            parts.append(f" ({self.fix})")
        return "".join(parts)


class SpecError(GraphmergeError):
    """The graph file is invalid."""


class ModelError(GraphmergeError):
    """A model folder or its tensors cannot be used."""


class MergeError(GraphmergeError):
    """A merge method got parameters or tensors it cannot use."""


class EvaluationError(GraphmergeError):
    """An evaluation task cannot be run."""


class StorageError(GraphmergeError):
    """A write failed for a reason of the file system (full, read-only, no permission)."""


# errno -> (what happened, how to fix it)
_STORAGE_ERRNOS = {
    28: ("no space left on the device", "free some space there or choose a path on another disk"),
    122: ("the disk quota is exceeded", "free some space there or choose a path on another disk"),
    13: ("permission denied", "make it writable or choose a path you can write"),
    1: ("operation not permitted", "make it writable or choose a path you can write"),
    30: ("the file system is read-only", "choose a path on a writable file system"),
}


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    # safetensors reports I/O failures as its own error with the Rust io::Error in the text.
    text = str(exc)
    for marker in ("os error ", "code: "):
        at = text.find(marker)
        if at >= 0:
            digits = "".join(ch for ch in text[at + len(marker) : at + len(marker) + 4] if ch.isdigit())
            if digits:
                return int(digits)
    return None


def storage_error(exc: BaseException, path: object, writing: str, kept: str) -> StorageError | None:
    """A one-line error for a failed write of `writing` under `path` when the file system refused
    it; None when `exc` is something else. `kept` says what is still intact."""
    known = _STORAGE_ERRNOS.get(_errno_of(exc) or -1)
    if known is None:
        return None
    what, fix = known
    return StorageError(f"{what} while writing {writing}; nothing was lost: {kept}", where=str(path), fix=fix)
