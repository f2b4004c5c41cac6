"""The explicit `space:` of an `optimize` node (YAML-shaped dicts) -> a SearchSpace.

A search space in a graph file is plain data so that it can be hashed, diffed and cached like every other
node field. This module reads its shape (keys, types of entries); the rules a space must follow are the
SearchSpace's own (search/space.py), raised here as SpecErrors that name the offending key, because these
specs are typed by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from graphmerge.errors import SpecError

from .space import (
    AllOf,
    Categorical,
    Condition,
    Constant,
    Equals,
    Float,
    Forbidden,
    In,
    Integer,
    Ordinal,
    Param,
    SearchSpace,
    SpaceError,
    check_condition,
    check_forbidden,
)

PARAM_TYPES = ("float", "int", "categorical", "ordinal", "constant")
_PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "default"},
    "int": {"type", "low", "high", "log", "default"},
    "categorical": {"type", "choices", "default"},
    "ordinal": {"type", "choices", "default"},
    "constant": {"type", "value", "default"},
}

T = TypeVar("T")


def _at(where: str, make: Callable[[], T]) -> T:
    """`make()`, its SpaceError raised as a SpecError at `where`."""
    try:
        return make()
    except SpaceError as e:
        raise SpecError(str(e), where=where) from None


def build_space(spec: Mapping[str, Any], *, seed: int = 0, where: str = "search") -> SearchSpace:
    """A SearchSpace from `{params: {...}, conditions: [...], forbidden: [...]}`.

    Several conditions on the same child are AND-ed.
    """
    if not isinstance(spec, Mapping):
        raise SpecError("a search space must be a mapping with `params`", where=where)
    unknown = set(spec) - {"params", "conditions", "forbidden"}
    if unknown:
        raise SpecError(
            f"unknown key(s) {sorted(unknown)}", where=where, fix="allowed: params, conditions, forbidden"
        )
    params = spec.get("params")
    if not isinstance(params, Mapping) or not params:
        raise SpecError("`params` must be a non-empty mapping NAME: {type: ...}", where=f"{where}.params")
    built = {str(name): _param(str(name), pspec, f"{where}.params.{name}") for name, pspec in params.items()}

    by_child: dict[str, list[Condition]] = {}
    for i, cond in enumerate(_entries(spec, "conditions", where)):
        child, condition = _condition(cond, built, f"{where}.conditions[{i}]")
        by_child.setdefault(child, []).append(condition)
    conditions = {c: conds[0] if len(conds) == 1 else AllOf(tuple(conds)) for c, conds in by_child.items()}
    forbidden = [
        _forbidden(f, built, f"{where}.forbidden[{i}]")
        for i, f in enumerate(_entries(spec, "forbidden", where))
    ]
    try:
        return SearchSpace(tuple(built.values()), conditions, tuple(forbidden), seed=seed)
    except SpaceError as e:  # what only the whole space shows: a cycle, a forbidden default
        at = f"{where}.{e.part}" + (f"[{e.index}]" if e.index is not None else "")
        raise SpecError(str(e), where=at) from None


def _entries(spec: Mapping[str, Any], key: str, where: str) -> list[Any]:
    entries = spec.get(key) or []
    if not isinstance(entries, list):
        raise SpecError(f"`{key}` must be a list", where=f"{where}.{key}")
    return entries


def _param(name: str, pspec: Any, where: str) -> Param:
    if not isinstance(pspec, Mapping):
        raise SpecError("a parameter must be a mapping with `type`", where=where)
    ptype = pspec.get("type")
    if ptype not in PARAM_TYPES:
        raise SpecError(f"`type` must be one of {'|'.join(PARAM_TYPES)}, got {ptype!r}", where=where)
    unknown = set(pspec) - _PARAM_KEYS[ptype]
    if unknown:
        raise SpecError(
            f"unknown key(s) {sorted(unknown)} for a {ptype} parameter",
            where=where,
            fix=f"allowed: {', '.join(sorted(_PARAM_KEYS[ptype]))}",
        )
    default = pspec.get("default")
    if ptype in ("float", "int"):
        for key in ("low", "high"):
            if key not in pspec:
                raise SpecError(f"`{key}` is required for a {ptype} parameter", where=where)
        low, high, log = pspec["low"], pspec["high"], bool(pspec.get("log", False))
        if ptype == "float":
            return _at(where, lambda: Float(name, low, high, log=log, default=default))
        return _at(where, lambda: Integer(name, low, high, log=log, default=default))
    if ptype in ("categorical", "ordinal"):
        choices = pspec.get("choices")
        if not isinstance(choices, list):
            raise SpecError("`choices` must be a non-empty list", where=where)
        cls = Categorical if ptype == "categorical" else Ordinal
        return _at(where, lambda: cls(name, tuple(choices), default=default))
    value = pspec.get("value", default)
    return _at(where, lambda: Constant(name, value))


def _lookup(name: Any, params: Mapping[str, Param], where: str, key: str) -> str:
    if name not in params:
        raise SpecError(f"`{key}` names unknown parameter {name!r}", where=where)
    return str(name)


def _exactly_one(entry: Mapping[str, Any], where: str) -> tuple[str, Any]:
    if ("equals" in entry) == ("in" in entry):
        raise SpecError("give exactly one of `equals` or `in`", where=where)
    if "equals" in entry:
        return "equals", entry["equals"]
    values = entry["in"]
    if not isinstance(values, (list, tuple)) or not values:
        raise SpecError("`in` must be a non-empty list", where=where)
    return "in", tuple(values)


def _condition(cond: Any, params: Mapping[str, Param], where: str) -> tuple[str, Condition]:
    if not isinstance(cond, Mapping):
        raise SpecError("a condition must be a mapping {child, parent, equals|in}", where=where)
    unknown = set(cond) - {"child", "parent", "equals", "in"}
    if unknown:
        raise SpecError(
            f"unknown key(s) {sorted(unknown)}", where=where, fix="allowed: child, parent, equals, in"
        )
    child = _lookup(cond.get("child"), params, where, "child")
    parent = _lookup(cond.get("parent"), params, where, "parent")
    kind, value = _exactly_one(cond, where)
    condition: Condition = Equals(parent, value) if kind == "equals" else In(parent, value)
    _at(where, lambda: check_condition(params, child, condition))
    return child, condition


def _forbidden(forb: Any, params: Mapping[str, Param], where: str) -> Forbidden:
    if not isinstance(forb, Mapping):
        raise SpecError("a forbidden entry must be {all: [{param, equals|in}, ...]}", where=where)
    clauses = forb.get("all") if "all" in forb else [forb]
    if "all" in forb and set(forb) != {"all"}:
        raise SpecError(f"unknown key(s) {sorted(set(forb) - {'all'})} next to `all`", where=where)
    if not isinstance(clauses, list) or not clauses:
        raise SpecError("`all` must be a non-empty list of {param, equals|in}", where=where)
    built: list[Equals | In] = []
    for j, cl in enumerate(clauses):
        w = f"{where}.all[{j}]" if "all" in forb else where
        if not isinstance(cl, Mapping):
            raise SpecError("a clause must be a mapping {param, equals|in}", where=w)
        unknown = set(cl) - {"param", "equals", "in"}
        if unknown:
            raise SpecError(f"unknown key(s) {sorted(unknown)}", where=w, fix="allowed: param, equals, in")
        param = _lookup(cl.get("param"), params, w, "param")
        kind, value = _exactly_one(cl, w)
        clause = Equals(param, value) if kind == "equals" else In(param, value)
        _at(w, lambda clause=clause: check_forbidden(params, clause))
        built.append(clause)
    return built[0] if len(built) == 1 else AllOf(tuple(built))
