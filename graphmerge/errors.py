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
