"""Deferred imports, so that `graphmerge --help`, `validate` and `nodes` start in well under a second.

Importing torch alone takes about a second; lm-eval, SMAC, Dask and matplotlib take longer. The rule
(README, "Design"): a module that `validate` or `nodes` imports (the CLI, the spec, the registries,
every node and merge-method module) never imports a heavy package at module level. It writes

    from graphmerge.lazy import torch

which binds a stand-in that imports torch on its first attribute access, so code reads as usual
(`torch.float32`, `torch.Tensor` in annotations under `from __future__ import annotations`). Other
heavy packages are imported inside the function that needs them, after `require_extra` has checked
that they are installed. `tests/test_lazy_imports.py` enforces the rule.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """A module imported on first attribute access; afterwards each access costs one indirection."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def _load(self) -> ModuleType:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            object.__setattr__(self, "_module", module)
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r} ({state})>"


torch: Any = LazyModule("torch")
