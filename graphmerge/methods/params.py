"""Merge-method parameters: declared once per method as a frozen dataclass, resolved once per tensor.

A method declares its per-model and its global parameters as two `MethodParams` dataclasses; each
field's type (float, int, bool, str or a Literal of choices) and its `param(...)` default, range and
doc are the whole declaration. The merge node turns the values a graph gives for one tensor (after
filters and gradients) into instances with `resolve`, which fills defaults and checks every value,
so a method reads typed attributes and never re-checks or re-defaults anything.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, make_dataclass
from functools import cache
from keyword import iskeyword
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from graphmerge.errors import MergeError

P = TypeVar("P", bound="MethodParams")


@dataclass(frozen=True)
class ParamSpec:
    """What a graph may set for one parameter: derived from a `MethodParams` field (and accepted, for
    plugins written before typed declarations, as the declaration itself)."""

    default: Any = None  # None = required
    kind: type = float
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None


def param(
    default: Any = MISSING,
    *,
    doc: str = "",
    ge: float | None = None,
    le: float | None = None,
    name: str | None = None,
) -> Any:
    """A method parameter: no default = required (None is no default either); `ge`/`le` bound
    numbers; `name` is the graph's key when it is not a Python identifier (`lambda`)."""
    return field(default=default, metadata={"doc": doc, "ge": ge, "le": le, "name": name})


@dataclass(frozen=True)
class MethodParams:
    """Base of every method's parameter declaration. `model_dump` gives the graph's names and
    values: it is what enters the cache key (graphmerge.hashing canonicalises through it)."""

    def check(self) -> str | None:
        """A problem that involves several fields (ranges of one field are declared), or None."""
        return None

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        # `mode` because hashing calls it the pydantic way; the values are JSON-ready either way.
        return {key: getattr(self, attr) for attr, key in _keys(type(self)).items()}


@dataclass(frozen=True)
class NoParams(MethodParams):
    """A method without parameters of this kind."""


@cache
def _keys(cls: type[MethodParams]) -> dict[str, str]:
    """Attribute name -> the graph's key."""
    return {f.name: _meta(f)["name"] or f.name for f in fields(cls)}


def _meta(f: Field) -> dict[str, Any]:
    """A field's `param(...)` settings (a plain field, `w: float = 1.0`, has none)."""
    return {"doc": "", "ge": None, "le": None, "name": None, **f.metadata}


def _kind(hint: Any) -> tuple[type, tuple[str, ...]]:
    if get_origin(hint) is Literal:
        return str, tuple(str(a) for a in get_args(hint))
    if hint in (float, int, bool, str):
        return hint, ()
    raise TypeError(f"method parameters are float, int, bool, str or a Literal of strings, not {hint!r}")


@cache
def specs(cls: type[MethodParams]) -> dict[str, ParamSpec]:
    """The declaration of `cls` by graph key, for validation, listings, model cards and conversion."""
    hints = get_type_hints(cls)
    out = {}
    for f in fields(cls):
        kind, choices = _kind(hints[f.name])
        meta = _meta(f)
        out[meta["name"] or f.name] = ParamSpec(
            default=None if f.default is MISSING else f.default,
            kind=kind,
            minimum=meta["ge"],
            maximum=meta["le"],
            doc=meta["doc"],
            choices=choices,
        )
    return out


def check_declaration(cls: Any, method: str) -> type[MethodParams]:
    """Fail at registration, not at the first merge, when a declaration cannot be resolved."""
    if not (isinstance(cls, type) and issubclass(cls, MethodParams)) or "__dataclass_fields__" not in vars(
        cls
    ):
        raise TypeError(
            f"merge method {method!r}: parameters must be a @dataclass(frozen=True) subclass of MethodParams"
        )
    specs(cls)
    return cls


def with_defaults(cls: type[P], name: str, **defaults: Any) -> type[P]:
    """A subclass of `cls` whose fields given here take other defaults (a method variant's): the
    declaration's types, ranges and docs stay where they are written, once."""
    by_key: dict[str, Field] = {_meta(f)["name"] or f.name: f for f in fields(cls)}
    hints = get_type_hints(cls)
    redeclared = [
        (by_key[key].name, hints[by_key[key].name], field(default=value, metadata=by_key[key].metadata))
        for key, value in defaults.items()
    ]
    doc = f"{cls.__doc__} Defaults: {', '.join(f'{k}={v!r}' for k, v in defaults.items())}."
    made = make_dataclass(name, redeclared, bases=(cls,), frozen=True, namespace={"__doc__": doc})
    return _importable(made, cls.__module__)


def from_specs(name: str, declared: Mapping[str, ParamSpec]) -> type[MethodParams]:
    """The dataclass a plugin's `{"w": ParamSpec(...)}` declaration stands for."""
    # Required fields first: a dataclass puts no field without a default after one with a default.
    ordered = sorted(declared.items(), key=lambda kv: not kv[1].required)
    made = make_dataclass(
        name,
        [
            (
                key if key.isidentifier() and not iskeyword(key) else f"{key}_",
                s.kind,
                param(MISSING if s.required else s.default, doc=s.doc, ge=s.minimum, le=s.maximum, name=key),
            )
            for key, s in ordered
        ],
        bases=(MethodParams,),
        frozen=True,
        namespace={"__doc__": f"Parameters of {name}, declared as ParamSpecs."},
    )
    return _importable(made, __name__)


def _importable(cls: type[P], module: str) -> type[P]:
    """Make a generated class an attribute of `module`, so that pickle finds it by name and resolved
    parameters travel to other processes like those of classes written in a module."""
    cls.__module__ = module
    cls.__qualname__ = cls.__name__
    setattr(sys.modules[module], cls.__name__, cls)
    return cls


def _number(method: str, key: str, who: str, value: Any, spec: ParamSpec) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MergeError(f"{method}: parameter `{key}`{who} must be a number, not {value!r}")
    if value != value:
        raise MergeError(f"{method}: parameter `{key}`{who} is NaN")
    lo, hi = spec.minimum, spec.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        raise MergeError(
            f"{method}: parameter `{key}`{who} = {value:g} is outside {bounds}",
            fix=f"give {key!r} a value in {bounds}",
        )
    if spec.kind is int:
        if not math.isfinite(value) or value != int(value):
            raise MergeError(f"{method}: parameter `{key}`{who} = {value:g} must be a whole number")
        return int(value)
    return float(value)


def _value(method: str, key: str, who: str, value: Any, spec: ParamSpec) -> Any:
    if spec.kind in (float, int):
        return _number(method, key, who, value, spec)
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise MergeError(f"{method}: parameter `{key}`{who} must be true or false, not {value!r}")
    if not isinstance(value, str) or (spec.choices and value not in spec.choices):
        options = ", ".join(spec.choices) if spec.choices else "a string"
        raise MergeError(f"{method}: parameter `{key}`{who} = {value!r} must be one of {options}")
    return value


def resolve(
    cls: type[P], given: Mapping[str, Any], *, method: str, model: str | None = None, where: str | None = None
) -> P:
    """An instance of `cls` from a graph's values for one tensor: defaults filled, every value
    type- and range-checked. `model` names the model in errors (per-model parameters)."""
    who = f" of model {model}" if model is not None else ""
    declared = specs(cls)
    values = {}
    try:
        for attr, key in _keys(cls).items():
            spec = declared[key]
            if key in given and given[key] is not None:
                values[attr] = _value(method, key, who, given[key], spec)
            elif spec.required:
                raise MergeError(
                    f"{method}: parameter `{key}`{who} is required", fix=f"set `{key}` (it has no default)"
                )
            else:
                values[attr] = spec.default
        out = cls(**values)
        problem = out.check()
        if problem:
            raise MergeError(f"{method}: {'' if model is None else f'model {model} '}{problem}")
    except MergeError as exc:
        if where is None or exc.where is not None:
            raise
        raise MergeError(exc.what, where=where, fix=exc.fix) from None
    return out
