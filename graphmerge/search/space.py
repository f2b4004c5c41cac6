"""Search spaces: YAML-shaped dicts -> ConfigSpace, and configurations as plain dicts.

A search space in a graph file is plain data so that it can be hashed, diffed and cached like every other
node field; ConfigSpace objects only exist inside the search. Every error is a SpecError that names the
offending key, because these specs are typed by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from ConfigSpace import (
    AndConjunction,
    Categorical,
    Configuration,
    ConfigurationSpace,
    Constant,
    EqualsCondition,
    Float,
    ForbiddenAndConjunction,
    ForbiddenEqualsClause,
    ForbiddenInClause,
    InCondition,
    Integer,
    OrdinalHyperparameter,
)
from ConfigSpace.hyperparameters import FloatHyperparameter

from graphmerge.errors import SpecError

PARAM_TYPES = ("float", "int", "categorical", "ordinal", "constant")
_PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "default"},
    "int": {"type", "low", "high", "log", "default"},
    "categorical": {"type", "choices", "default"},
    "ordinal": {"type", "choices", "default"},
    "constant": {"type", "value", "default"},
}


def build_space(spec: Mapping[str, Any], *, seed: int = 0, where: str = "search") -> ConfigurationSpace:
    """Build a ConfigurationSpace from `{params: {...}, conditions: [...], forbidden: [...]}`.

    Several conditions on the same child are AND-ed (ConfigSpace allows one condition object per child).
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

    cs = ConfigurationSpace(seed=seed)
    hps = {}
    for name, pspec in params.items():
        hps[name] = _build_param(str(name), pspec, f"{where}.params.{name}")
    cs.add(list(hps.values()))

    by_child: dict[str, list] = {}
    for i, cond in enumerate(spec.get("conditions") or []):
        w = f"{where}.conditions[{i}]"
        child, c = _build_condition(cond, hps, w)
        by_child.setdefault(child, []).append(c)
    for child, conds in by_child.items():
        try:
            cs.add(conds[0] if len(conds) == 1 else AndConjunction(*conds))
        except Exception as e:  # cycles, ambiguous conditions: ConfigSpace's message is good enough
            raise SpecError(f"invalid condition on `{child}`: {e}", where=f"{where}.conditions") from None

    for i, forb in enumerate(spec.get("forbidden") or []):
        w = f"{where}.forbidden[{i}]"
        clause = _build_forbidden(forb, hps, w)
        try:
            cs.add(clause)
        except Exception as e:
            raise SpecError(f"invalid forbidden clause: {e}", where=w) from None
    return cs


def _num(value: Any, key: str, where: str, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"`{key}` must be a number, got {value!r}", where=where)
    if kind is int and float(value) != int(value):
        raise SpecError(f"`{key}` must be an integer, got {value!r}", where=where)
    return kind(value)


def _build_param(name: str, pspec: Any, where: str):
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
    try:
        if ptype in ("float", "int"):
            kind = float if ptype == "float" else int
            for key in ("low", "high"):
                if key not in pspec:
                    raise SpecError(f"`{key}` is required for a {ptype} parameter", where=where)
            low = _num(pspec["low"], "low", where, kind)
            high = _num(pspec["high"], "high", where, kind)
            if not low < high:
                raise SpecError(f"`low` ({low}) must be smaller than `high` ({high})", where=where)
            log = bool(pspec.get("log", False))
            if log and low <= 0:
                raise SpecError("`low` must be > 0 when `log: true`", where=where)
            if default is not None:
                default = _num(default, "default", where, kind)
                if not low <= default <= high:
                    raise SpecError(f"`default` {default} is outside [{low}, {high}]", where=where)
            cls = Float if ptype == "float" else Integer
            return cls(name, (low, high), log=log, **({} if default is None else {"default": default}))
        if ptype in ("categorical", "ordinal"):
            choices = pspec.get("choices")
            if not isinstance(choices, (list, tuple)) or not choices:
                raise SpecError("`choices` must be a non-empty list", where=where)
            if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
                raise SpecError("`choices` contains duplicates", where=where)
            for c in choices:
                if isinstance(c, (Mapping, list)) or c is None:
                    raise SpecError(f"choice {c!r} must be a scalar (string, number, bool)", where=where)
            if default is not None and default not in choices:
                raise SpecError(f"`default` {default!r} is not one of the choices", where=where)
            extra = {} if default is None else {"default": default}
            if ptype == "categorical":
                return Categorical(name, list(choices), **extra)
            return OrdinalHyperparameter(name, list(choices), **{f"{k}_value": v for k, v in extra.items()})
        value = pspec.get("value", default)
        if value is None or isinstance(value, (Mapping, list)):
            raise SpecError("a constant needs a scalar `value`", where=where)
        return Constant(name, value)
    except SpecError:
        raise
    except Exception as e:  # ConfigSpace validation that we did not anticipate
        raise SpecError(f"invalid parameter: {e}", where=where) from None


def _lookup(name: Any, hps: Mapping[str, Any], where: str, key: str):
    if name not in hps:
        raise SpecError(f"`{key}` names unknown parameter {name!r}", where=where)
    return hps[name]


def _check_value(hp, value: Any, where: str) -> None:
    if not hp.legal_value(value):
        raise SpecError(f"value {value!r} is not legal for parameter `{hp.name}`", where=where)


def _build_condition(cond: Any, hps: Mapping[str, Any], where: str):
    if not isinstance(cond, Mapping):
        raise SpecError("a condition must be a mapping {child, parent, equals|in}", where=where)
    unknown = set(cond) - {"child", "parent", "equals", "in"}
    if unknown:
        raise SpecError(
            f"unknown key(s) {sorted(unknown)}", where=where, fix="allowed: child, parent, equals, in"
        )
    child = _lookup(cond.get("child"), hps, where, "child")
    parent = _lookup(cond.get("parent"), hps, where, "parent")
    if child is parent:
        raise SpecError("a parameter cannot be conditioned on itself", where=where)
    if ("equals" in cond) == ("in" in cond):
        raise SpecError("give exactly one of `equals` or `in`", where=where)
    if "equals" in cond:
        _check_value(parent, cond["equals"], where)
        return child.name, EqualsCondition(child, parent, cond["equals"])
    values = cond["in"]
    if not isinstance(values, (list, tuple)) or not values:
        raise SpecError("`in` must be a non-empty list", where=where)
    for v in values:
        _check_value(parent, v, where)
    return child.name, InCondition(child, parent, list(values))


def _build_forbidden(forb: Any, hps: Mapping[str, Any], where: str):
    if not isinstance(forb, Mapping):
        raise SpecError("a forbidden entry must be {all: [{param, equals|in}, ...]}", where=where)
    clauses = forb.get("all") if "all" in forb else [forb]
    if "all" in forb and set(forb) != {"all"}:
        raise SpecError(f"unknown key(s) {sorted(set(forb) - {'all'})} next to `all`", where=where)
    if not isinstance(clauses, list) or not clauses:
        raise SpecError("`all` must be a non-empty list of {param, equals|in}", where=where)
    built = []
    for j, cl in enumerate(clauses):
        w = f"{where}.all[{j}]" if "all" in forb else where
        if not isinstance(cl, Mapping):
            raise SpecError("a clause must be a mapping {param, equals|in}", where=w)
        unknown = set(cl) - {"param", "equals", "in"}
        if unknown:
            raise SpecError(f"unknown key(s) {sorted(unknown)}", where=w, fix="allowed: param, equals, in")
        hp = _lookup(cl.get("param"), hps, w, "param")
        if ("equals" in cl) == ("in" in cl):
            raise SpecError("give exactly one of `equals` or `in`", where=w)
        if "equals" in cl:
            _check_value(hp, cl["equals"], w)
            built.append(ForbiddenEqualsClause(hp, cl["equals"]))
        else:
            if not isinstance(cl["in"], (list, tuple)) or not cl["in"]:
                raise SpecError("`in` must be a non-empty list", where=w)
            for v in cl["in"]:
                _check_value(hp, v, w)
            built.append(ForbiddenInClause(hp, list(cl["in"])))
    return built[0] if len(built) == 1 else ForbiddenAndConjunction(*built)


# ---------------------------------------------------------------------------------------------------------
# Configurations as plain dicts
# ---------------------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so configs are JSON-serialisable and compare equal after a reload."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def config_to_dict(config: Configuration | Mapping[str, Any]) -> dict[str, Any]:
    """Active parameters only, Python types, sorted by name (stable JSON for logs and cache keys)."""
    return {str(k): plain(v) for k, v in sorted(dict(config).items())}


def config_key(config: Mapping[str, Any]) -> str:
    """Canonical string of a config; floats use repr, which round-trips exactly through JSON."""
    return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))


def validate_config(
    space: ConfigurationSpace, config: Mapping[str, Any], *, where: str = "config"
) -> dict[str, Any]:
    """Check an explicit (fixed) config against `space` and return its active parameters.

    Unknown keys and illegal values are errors naming the key. Values for parameters that are inactive under
    the given config are dropped rather than rejected: fully-specified config files (every parameter listed,
    as the original framework wrote them) stay usable. A missing active parameter is an error.
    """
    if not isinstance(config, Mapping):
        raise SpecError("a config must be a mapping NAME: value", where=where)
    names = set(space.keys())
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key not in names:
            close = [n for n in names if n.lower() == str(key).lower()]
            raise SpecError(
                f"unknown parameter `{key}`",
                where=where,
                fix=f"did you mean `{close[0]}`?" if close else f"the space has {len(names)} parameters",
            )
        hp = space[key]
        value = plain(value)
        if isinstance(hp, FloatHyperparameter) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not hp.legal_value(value):
            raise SpecError(f"value {value!r} is not legal for `{key}` ({hp})", where=where)
        values[str(key)] = value

    # Resolve activity top-down: ConfigSpace's conditions are evaluated on parents that are themselves active.
    active: dict[str, Any] = {}
    for name in _topological_names(space):
        conds = space.parent_conditions_of[name]
        if conds and not all(_condition_holds(c, active) for c in conds):
            continue
        if name not in values:
            raise SpecError(f"missing value for active parameter `{name}`", where=where)
        active[name] = values[name]
    try:
        Configuration(space, values=active)
    except Exception as e:  # forbidden combinations
        raise SpecError(
            f"config is not allowed by the space: {str(e).splitlines()[0]}", where=where
        ) from None
    return dict(sorted(active.items()))


def _topological_names(space: ConfigurationSpace) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for parent in space.parents_of[name]:
            visit(parent.name)
        order.append(name)

    for name in space.keys():
        visit(name)
    return order


def _condition_holds(cond: Any, active: Mapping[str, Any]) -> bool:
    from ConfigSpace.conditions import OrConjunction

    if isinstance(cond, AndConjunction):
        return all(_condition_holds(c, active) for c in cond.components)
    if isinstance(cond, OrConjunction):
        return any(_condition_holds(c, active) for c in cond.components)
    parent = cond.parent.name
    if parent not in active:
        return False
    value = active[parent]
    if isinstance(cond, EqualsCondition):
        return value == cond.value
    if isinstance(cond, InCondition):
        return value in cond.values
    # Other condition kinds (NotEquals, GreaterThan, ...): let ConfigSpace decide.
    return bool(cond.satisfied_by_value({parent: value}))  # pragma: no cover


def space_fingerprint(space: ConfigurationSpace) -> str:
    """Stable hash of a space's structure (not its sampling seed): a trial log belongs to one space."""
    data = space.to_serialized_dict()
    data.pop("seed", None)
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
