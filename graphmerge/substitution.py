"""The one `${name}` substitution engine: graph variables when a graph loads, a search's parameters and
budget when a trial is built. Both passes share the syntax and its rules, so a name that neither defines
(`${budget_max}`, `${params.typo}`) is an error wherever it is written, never text that passes through.

A string that is exactly one reference takes the value with its type; references inside longer strings
are formatted in. A scope decides, per name, whether it has a value, is filled by a later pass (left as
written), is known but unset now (the mapping entry or list item holding it is dropped: a conditional
search parameter that is inactive), or is undefined (an error naming where it was written).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphmerge.errors import SpecError

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-:/]*)\}")

Path = tuple[Any, ...]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether `name` is one of `patterns`, where `prefix.*` stands for every name under `prefix.`."""
    return any(name.startswith(p[:-1]) if p.endswith(".*") else name == p for p in patterns)


@dataclass(frozen=True)
class Scope:
    """What a pass knows. `later`: names another pass fills (left in place). `unset`: names that exist
    but have no value now. `undefined(name) -> (what, fix)`: the error for any other name."""

    values: Mapping[str, Any]
    later: tuple[str, ...] = ()
    unset: Callable[[str], bool] = field(default=lambda _name: False)
    undefined: Callable[[str], tuple[str, str | None]] | None = None

    def explain(self, name: str) -> tuple[str, str | None]:
        if self.undefined is not None:
            return self.undefined(name)
        close = difflib.get_close_matches(name, list(self.values), n=1)
        fix = (
            f"did you mean ${{{close[0]}}}?" if close else "define it under `vars:` or pass --set NAME=VALUE"
        )
        if self.later:
            known = ", ".join("${" + (p[:-1] + "NAME" if p.endswith(".*") else p) + "}" for p in self.later)
            fix += f"; this template also knows {known}"
        return f"undefined variable ${{{name}}}", fix


_LATER = object()


def _lookup(name: str, scope: Scope) -> Any:
    if name in scope.values:
        return scope.values[name]
    if matches(name, scope.later):
        return _LATER
    if scope.unset(name):
        return UNSET
    return None


def substitute(value: Any, scope: Scope, where: Callable[[Path], str] | str, path: Path = ()) -> Any:
    """`value` with every reference replaced; UNSET when `value` is itself an unset reference.
    `where(path)` names the place of a problem (path: the keys and list indices down to it)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            sub = substitute(v, scope, where, (*path, k))
            if sub is not UNSET:
                out[k] = sub
        return out
    if isinstance(value, (list, tuple)):
        items = [substitute(v, scope, where, (*path, i)) for i, v in enumerate(value)]
        return [v for v in items if v is not UNSET]
    if not isinstance(value, str) or "${" not in value:
        return value

    def found(name: str) -> Any:
        got = _lookup(name, scope)
        if got is None and name not in scope.values:
            what, fix = scope.explain(name)
            raise SpecError(what, where=where(path) if callable(where) else where, fix=fix)
        return got

    whole = REFERENCE.fullmatch(value)
    if whole:
        got = found(whole.group(1))
        return value if got is _LATER else got

    def repl(m: re.Match) -> str:
        got = found(m.group(1))
        if got is _LATER:
            return m.group(0)
        if got is UNSET:
            raise SpecError(
                f"`{m.group(0)}` has no value (inactive or no budget) inside {value!r}",
                where=where(path) if callable(where) else where,
            )
        return str(got)

    return REFERENCE.sub(repl, value)


def references(value: Any) -> set[str]:
    """Every name referenced anywhere inside `value`."""
    if isinstance(value, Mapping):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(references(v) for v in value)) if value else set()
    return set(REFERENCE.findall(value)) if isinstance(value, str) else set()
