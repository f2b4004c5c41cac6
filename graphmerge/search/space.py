"""Search spaces as graphmerge's own typed data: parameters, conditions, forbidden clauses, configurations.

A space is plain frozen data so that `validate` can take its default, check a user's `config:` and sample
configurations without importing ConfigSpace (whose hyperparameter modules import scipy.stats, most of a
second). SMAC gets the equivalent `ConfigSpace.ConfigurationSpace`, built in one place
(search/configspace.py) when a search starts. Strategies build spaces from these classes; the explicit
`space:` YAML is translated by search/space_yaml.py. The rules (bounds, defaults, legal values, condition
and forbidden references, acyclicity) live here once, as `SpaceError`s, which the translator turns into
SpecErrors that name the YAML key.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from graphmerge.errors import SpecError

Scalar = str | int | float | bool
# ConfigSpace stores float bounds and defaults rounded to 13 decimals (numpy's round); defaults computed
# here are rounded alike, so a space's default configuration is the one SMAC's copy of it has.
_ROUND_PLACES = 13


class SpaceError(ValueError):
    """A space that breaks a rule. `part` locates it for the YAML translator: "params", "conditions" or
    "forbidden", with `index` the forbidden entry when known."""

    def __init__(self, message: str, part: str = "params", index: int | None = None):
        super().__init__(message)
        self.part = part
        self.index = index


def _rounded(x: float) -> float:
    scaled = x * 10.0**_ROUND_PLACES
    return round(scaled) / 10.0**_ROUND_PLACES if math.isfinite(scaled) else x


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def python_scalar(value: Any) -> Any:
    """A numpy scalar (as SMAC hands out) as the Python scalar it holds; anything else unchanged. Configs
    then serialise to JSON and compare equal after a reload. numpy is never imported for this: a value
    cannot be a numpy scalar unless numpy is loaded."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind: `True` is not the choice `1`, 1.0 is the choice 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str)


# ---------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------


def _check_range(name: str, low: Any, high: Any, log: bool, default: Any, integer: bool) -> None:
    kind = "an integer" if integer else "a number"
    for key, value in (("low", low), ("high", high), ("default", default)):
        if value is None and key == "default":
            continue
        if not _is_number(value) or not math.isfinite(value) or (integer and value != int(value)):
            raise SpaceError(f"`{key}` must be {kind}, got {value!r}")
    if not low < high:
        raise SpaceError(f"`low` ({low}) must be smaller than `high` ({high})")
    if log and low <= 0:
        raise SpaceError("`low` must be > 0 when `log: true`")
    if default is not None and not low <= default <= high:
        raise SpaceError(f"`default` {default} is outside [{low}, {high}]")


@dataclass(frozen=True)
class _Range:
    name: str
    low: float
    high: float
    log: bool = False
    default: float | None = None
    integer: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_range(self.name, self.low, self.high, self.log, self.default, integer=self.integer)

    def _midpoint(self, lo: float, hi: float) -> float:
        if self.log:
            return math.exp(math.log(lo) + 0.5 * (math.log(hi) - math.log(lo)))
        return lo + 0.5 * (hi - lo)

    def _draw(self, rng: Any, lo: float, hi: float) -> float:
        """Uniform in [lo, hi], on a log scale with `log`."""
        if self.log:
            lo, hi = math.log(lo), math.log(hi)
            return math.exp(lo + rng.random() * (hi - lo))
        return lo + rng.random() * (hi - lo)


@dataclass(frozen=True)
class Float(_Range):
    """A real number in [low, high], sampled uniformly (on a log scale with `log`). Default: the
    midpoint (geometric with `log`)."""

    @property
    def bounds(self) -> tuple[float, float]:
        """The bounds as ConfigSpace keeps them (rounded), which its values and ours lie within."""
        return _rounded(float(self.low)), _rounded(float(self.high))

    @property
    def default_value(self) -> float:
        if self.default is not None:
            return _rounded(float(self.default))
        return _rounded(self._midpoint(*self.bounds))

    def legal(self, value: Any) -> bool:
        lo, hi = self.bounds
        return _is_number(value) and lo <= value <= hi

    def canonical(self, value: Any) -> float:
        return float(value)

    def sample(self, rng: Any) -> float:
        lo, hi = self.bounds
        return min(max(self._draw(rng, lo, hi), lo), hi)


@dataclass(frozen=True)
class Integer(_Range):
    """An integer in [low, high], sampled uniformly (on a log scale with `log`). Default: the rounded
    midpoint (geometric with `log`)."""

    integer: ClassVar[bool] = True

    @property
    def default_value(self) -> int:
        return int(self.default) if self.default is not None else round(self._midpoint(self.low, self.high))

    def legal(self, value: Any) -> bool:
        return (
            _is_number(value)
            and math.isfinite(value)
            and value == int(value)
            and self.low <= value <= self.high
        )

    def canonical(self, value: Any) -> int:
        return int(value)

    def sample(self, rng: Any) -> int:
        if not self.log:
            return rng.randint(int(self.low), int(self.high))
        # Each integer owns the stretch of the log scale that rounds to it.
        drawn = round(self._draw(rng, self.low - 0.5 + 1e-9, self.high + 0.5 - 1e-9))
        return min(max(drawn, int(self.low)), int(self.high))


def _check_choices(name: str, choices: tuple, default: Any) -> None:
    if not isinstance(choices, tuple) or not choices:
        raise SpaceError(f"`choices` of `{name}` must be a non-empty list")
    for c in choices:
        if not isinstance(c, (str, int, float, bool)):
            raise SpaceError(f"choice {c!r} must be a scalar (string, number, bool)")
    if len({json.dumps(c) for c in choices}) != len(choices):
        raise SpaceError("`choices` contains duplicates")
    if default is not None and not any(_same(default, c) for c in choices):
        raise SpaceError(f"`default` {default!r} is not one of the choices")


@dataclass(frozen=True)
class _Choice:
    name: str
    choices: tuple[Scalar, ...]
    default: Scalar | None = None

    def __post_init__(self) -> None:
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))
        _check_choices(self.name, self.choices, self.default)

    @property
    def default_value(self) -> Scalar:
        return self.choices[0] if self.default is None else self.canonical(self.default)

    def legal(self, value: Any) -> bool:
        return any(_same(value, c) for c in self.choices)

    def canonical(self, value: Any) -> Scalar:
        return next(c for c in self.choices if _same(value, c))

    def sample(self, rng: Any) -> Scalar:
        return self.choices[rng.randrange(len(self.choices))]


@dataclass(frozen=True)
class Categorical(_Choice):
    """One of `choices`, unordered. Default: the first choice."""


@dataclass(frozen=True)
class Ordinal(_Choice):
    """One of `choices`, in their order. Default: the first choice."""


@dataclass(frozen=True)
class Constant:
    """A fixed value (present in every configuration where it is active)."""

    name: str
    value: Scalar

    def __post_init__(self) -> None:
        if not isinstance(self.value, (str, int, float, bool)):
            raise SpaceError("a constant needs a scalar `value`")

    @property
    def default_value(self) -> Scalar:
        return self.value

    def legal(self, value: Any) -> bool:
        return _same(value, self.value)

    def canonical(self, value: Any) -> Scalar:
        return self.value

    def sample(self, rng: Any) -> Scalar:
        return self.value


Param = Float | Integer | Categorical | Ordinal | Constant
PARAM_TYPES = (Float, Integer, Categorical, Ordinal, Constant)


def check_value(param: Param, value: Any) -> None:
    if not param.legal(python_scalar(value)):
        raise SpaceError(f"value {value!r} is not legal for parameter `{param.name}`")


# ---------------------------------------------------------------------------------------------------------
# Tests on values: conditions (when a parameter is active) and forbidden combinations are both built from
# them. A test on an inactive parameter never holds.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equals:
    """Holds when `param` is active and equals `value`."""

    param: str
    value: Scalar

    def holds(self, config: Mapping[str, Any]) -> bool:
        return self.param in config and _same(config[self.param], self.value)

    def leaves(self) -> Iterator[Equals | In]:
        yield self


@dataclass(frozen=True)
class In:
    """Holds when `param` is active and is one of `values`."""

    param: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise SpaceError("`in` must be a non-empty list", part="conditions")

    def holds(self, config: Mapping[str, Any]) -> bool:
        return self.param in config and any(_same(config[self.param], v) for v in self.values)

    def leaves(self) -> Iterator[Equals | In]:
        yield self


@dataclass(frozen=True)
class _Combined:
    parts: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        if not self.parts:
            raise SpaceError(f"{type(self).__name__} needs at least one part", part="conditions")

    def leaves(self) -> Iterator[Equals | In]:
        for p in self.parts:
            yield from p.leaves()


@dataclass(frozen=True)
class AllOf(_Combined):
    """Holds when every part holds (as a forbidden entry: the combination of its tests is forbidden)."""

    def holds(self, config: Mapping[str, Any]) -> bool:
        return all(p.holds(config) for p in self.parts)


@dataclass(frozen=True)
class AnyOf(_Combined):
    """Holds when at least one part holds (conditions only)."""

    def holds(self, config: Mapping[str, Any]) -> bool:
        return any(p.holds(config) for p in self.parts)


Condition = Equals | In | AllOf | AnyOf
# A forbidden entry: one test, or AllOf tests (no nesting, as ConfigSpace's forbidden clauses).
Forbidden = Equals | In | AllOf


def _values(leaf: Equals | In) -> tuple[Scalar, ...]:
    return (leaf.value,) if isinstance(leaf, Equals) else leaf.values


def _check_leaves(params: Mapping[str, Param], leaves: Iterator[Equals | In], part: str) -> None:
    for leaf in leaves:
        if leaf.param not in params:
            raise SpaceError(f"unknown parameter {leaf.param!r}", part=part)
        for value in _values(leaf):
            try:
                check_value(params[leaf.param], value)
            except SpaceError as e:
                raise SpaceError(str(e), part=part) from None


def check_condition(params: Mapping[str, Param], child: str, condition: Condition) -> None:
    """The rules one child's condition follows: the parameters it names exist, its values are legal."""
    if child not in params:
        raise SpaceError(f"a condition names unknown parameter {child!r}", part="conditions")
    if any(leaf.param == child for leaf in condition.leaves()):
        raise SpaceError("a parameter cannot be conditioned on itself", part="conditions")
    _check_leaves(params, condition.leaves(), "conditions")


def check_forbidden(params: Mapping[str, Param], forbidden: Forbidden) -> None:
    if isinstance(forbidden, AllOf) and not all(isinstance(p, (Equals, In)) for p in forbidden.parts):
        raise SpaceError("a forbidden AllOf combines single tests (Equals, In) only", part="forbidden")
    if not isinstance(forbidden, (Equals, In, AllOf)):
        raise SpaceError(f"{forbidden!r} is not a forbidden entry", part="forbidden")
    _check_leaves(params, forbidden.leaves(), "forbidden")


# ---------------------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """Parameters (in the order given), at most one condition per child parameter (several: `AllOf`),
    forbidden combinations, and the seed SMAC's copy of the space is created with (not part of what
    makes two spaces the same: see `space_fingerprint`)."""

    params: tuple[Param, ...]
    conditions: Mapping[str, Condition] = field(default_factory=dict)
    forbidden: tuple[Forbidden, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "conditions", MappingProxyType(dict(self.conditions)))
        object.__setattr__(self, "forbidden", tuple(self.forbidden))
        by_name: dict[str, Param] = {}
        for p in self.params:
            if not isinstance(p, PARAM_TYPES):
                raise SpaceError(f"{p!r} is not a search space parameter")
            if p.name in by_name:
                raise SpaceError(f"parameter `{p.name}` is defined twice")
            by_name[p.name] = p
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        for child, condition in self.conditions.items():
            check_condition(by_name, child, condition)
        object.__setattr__(self, "_order", tuple(self._topological_order()))
        for i, forbidden in enumerate(self.forbidden):
            try:
                check_forbidden(by_name, forbidden)
            except SpaceError as e:
                raise SpaceError(str(e), part="forbidden", index=i) from None
        default = self.default_config()  # SMAC starts from it, so it must be allowed
        for i, forbidden in enumerate(self.forbidden):
            if forbidden.holds(default):
                raise SpaceError(
                    f"the default configuration {default} is forbidden by this clause",
                    part="forbidden",
                    index=i,
                )

    # -- a read-only mapping of names to parameters ---------------------------------------------------------
    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]  # type: ignore[attr-defined]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.params)

    def keys(self) -> list[str]:
        return [p.name for p in self.params]

    # -- activity -----------------------------------------------------------------------------------------
    def _topological_order(self) -> list[str]:
        """Parents before children (a condition reads only parameters already decided); a cycle is an
        error."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1: being visited, 2: done

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join((*path[path.index(name) :], name))
                raise SpaceError(f"the conditions form a cycle: {cycle}", part="conditions")
            state[name] = 1
            condition = self.conditions.get(name)
            for parent in dict.fromkeys(leaf.param for leaf in condition.leaves()) if condition else ():
                visit(parent, (*path, name))
            state[name] = 2
            order.append(name)

        for p in self.params:
            visit(p.name, ())
        return order

    @property
    def order(self) -> tuple[str, ...]:
        return self._order  # type: ignore[attr-defined]

    def resolve(self, value_of: Callable[[str], Any]) -> dict[str, Any]:
        """The active parameters, each with `value_of(name)`, deciding parents first; sorted by name."""
        active: dict[str, Any] = {}
        for name in self.order:
            condition = self.conditions.get(name)
            if condition is None or condition.holds(active):
                active[name] = value_of(name)
        return dict(sorted(active.items()))

    def default_config(self) -> dict[str, Any]:
        """Every active parameter at its default."""
        return self.resolve(lambda name: self[name].default_value)

    def forbids(self, config: Mapping[str, Any]) -> Forbidden | None:
        return next((f for f in self.forbidden if f.holds(config)), None)


# ---------------------------------------------------------------------------------------------------------
# Configurations as plain dicts
# ---------------------------------------------------------------------------------------------------------


def config_to_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """Active parameters only, Python types, sorted by name (stable JSON for logs and cache keys). Takes
    a dict or a ConfigSpace Configuration (a mapping of the active values)."""
    return {str(k): python_scalar(v) for k, v in sorted(dict(config).items())}


def config_key(config: Mapping[str, Any]) -> str:
    """Canonical string of a config; floats use repr, which round-trips exactly through JSON."""
    return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))


def validate_config(
    space: SearchSpace, config: Mapping[str, Any], *, where: str = "config"
) -> dict[str, Any]:
    """Check an explicit (fixed) config against `space` and return its active parameters.

    Unknown keys and illegal values are errors naming the key. Values for parameters that are inactive under
    the given config are dropped rather than rejected: fully-specified config files (every parameter listed,
    as the original framework wrote them) stay usable. A missing active parameter is an error.
    """
    if not isinstance(config, Mapping):
        raise SpecError("a config must be a mapping NAME: value", where=where)
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key not in space:
            close = [n for n in space if n.lower() == str(key).lower()]
            raise SpecError(
                f"unknown parameter `{key}`",
                where=where,
                fix=f"did you mean `{close[0]}`?" if close else f"the space has {len(space)} parameters",
            )
        param = space[key]
        value = python_scalar(value)
        if not param.legal(value):
            raise SpecError(f"value {value!r} is not legal for `{key}` ({_describe(param)})", where=where)
        values[str(key)] = param.canonical(value)
    missing = object()
    active = space.resolve(lambda name: values.get(name, missing))
    for name, value in active.items():
        if value is missing:
            raise SpecError(f"missing value for active parameter `{name}`", where=where)
    clause = space.forbids(active)
    if clause is not None:
        raise SpecError(f"config is not allowed by the space: forbidden by {_describe(clause)}", where=where)
    return active


def _describe(item: Any) -> str:
    if isinstance(item, (Float, Integer)):
        return f"{type(item).__name__.lower()} in [{item.low}, {item.high}]" + (
            ", log scale" if item.log else ""
        )
    if isinstance(item, (Categorical, Ordinal)):
        return f"one of {list(item.choices)}"
    if isinstance(item, Constant):
        return f"the constant {item.value!r}"
    if isinstance(item, Equals):
        return f"{item.param} == {item.value!r}"
    if isinstance(item, In):
        return f"{item.param} in {list(item.values)}"
    return " and ".join(_describe(c) for c in item.parts)


def space_fingerprint(space: SearchSpace) -> str:
    """Stable hash of a space's structure (not its sampling seed): a trial log belongs to one space.
    Parameters are taken by name, so the order they were declared in does not matter."""
    data = {
        "params": [_data(p) for p in sorted(space.params, key=lambda p: p.name)],
        "conditions": {child: _data(c) for child, c in sorted(space.conditions.items())},
        "forbidden": [_data(f) for f in space.forbidden],
    }
    blob = json.dumps(data, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _data(item: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(item).__name__}
    for key, value in vars(item).items():
        if isinstance(value, tuple) and value and not isinstance(value[0], (str, int, float, bool)):
            value = [_data(v) for v in value]
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out
