"""The one registration mechanism behind node types, tensor ops, merge methods and search strategies.

A `Registry` maps names to frozen descriptions. Decorators (`graphmerge.node`, `tensor_op`,
`merge_method`, `graphmerge.strategies.strategy`) add to it; the first lookup loads the registry's
entry-point group once. Built-ins are declared in that group in pyproject.toml exactly like plugins.
Run from a source checkout on PYTHONPATH (no dist-info, or one installed before the group existed),
the group lacks the built-in catalogue, so it is imported directly: the `builtin` module each
registry names is the one value its built-in entry point has.

This module sits at the bottom of the package (it imports only `errors`): the catalogues import it,
never the other way round, which is what keeps the import graph free of cycles.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from graphmerge.errors import GraphmergeError

T = TypeVar("T")

# group -> how it was loaded ("entry point" | "fallback import"), for the tests and for debugging.
LOADED_GROUPS: dict[str, str] = {}


def load_group(group: str, builtin: str) -> None:
    """Import every entry point of `group` once, and the built-in catalogue `builtin` (a module name)
    through its entry point when graphmerge is installed, else by importing it."""
    if group in LOADED_GROUPS:
        return
    declared = list(entry_points(group=group))
    has_builtin = any(ep.value == builtin for ep in declared)
    # Marked before importing: a catalogue module may look a name up while it registers.
    LOADED_GROUPS[group] = "entry point" if has_builtin else "fallback import"
    if not has_builtin:
        importlib.import_module(builtin)
    for ep in declared:
        try:
            ep.load()
        except GraphmergeError:
            raise
        except Exception as exc:
            raise GraphmergeError(
                f"plugin entry point {ep.name} = {ep.value} (group {group}) failed to import: "
                f"{type(exc).__name__}: {exc}",
                fix="fix or uninstall the package that declares it; run with --debug for the traceback",
            ) from exc


def origin_of(*defined_by: object) -> str:
    """What makes two registrations of one name the same: the qualified names of what defines the entry,
    so a module imported twice (a plugin file loaded by path and by name) registers once."""
    return "/".join(getattr(obj, "__qualname__", repr(obj)) for obj in defined_by)


def _place(obj: object) -> str:
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    return getattr(module, "__file__", None) or getattr(obj, "__module__", "?")


@dataclass
class Registry(Generic[T]):
    """Named entries of one kind. `kind` words the errors ("merge method"); `error` is the
    GraphmergeError subclass an unknown name raises; `fix` is added to its "did you mean" hint."""

    kind: str
    group: str
    builtin: str
    error: type[GraphmergeError] = GraphmergeError
    fix: str = ""
    _entries: dict[str, T] = field(default_factory=dict, repr=False)
    _origins: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def add(self, name: str, entry: T, *defined_by: object) -> T:
        """Register `entry` under `name`, defined by `defined_by` (its function, or its settings and
        function); a second, different registration of the name is an error naming both places."""
        origin = origin_of(*defined_by)
        place = f"{origin} in {_place(defined_by[0])}"
        known = self._origins.get(name)
        if known is not None and known[0] != origin:
            raise GraphmergeError(
                f"{self.kind} {name!r} is registered twice: {known[1]}, and {place}",
                fix="give one of them another name",
            )
        self._entries[name] = entry
        self._origins[name] = (origin, place)
        return entry

    def remove(self, name: str) -> None:
        """Forget `name` (tests that register a throw-away entry clean up with it)."""
        self._entries.pop(name, None)
        self._origins.pop(name, None)

    def load(self) -> None:
        load_group(self.group, self.builtin)

    def find(self, name: str) -> T | None:
        self.load()
        return self._entries.get(name)

    def suggest(self, name: str) -> str | None:
        self.load()
        close = difflib.get_close_matches(name, self._entries, n=1)
        return close[0] if close else None

    def get(self, name: str, *, where: str | None = None) -> T:
        """The entry, or one error naming the closest known name (or all of them)."""
        found = self.find(name)
        if found is not None:
            return found
        close = self.suggest(name)
        hint = f"did you mean {close!r}?" if close else f"use one of: {', '.join(self.names())}"
        raise self.error(
            f"unknown {self.kind} {name!r}", where=where, fix=f"{hint}; {self.fix}" if self.fix else hint
        )

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def all(self) -> dict[str, T]:
        self.load()
        return dict(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
