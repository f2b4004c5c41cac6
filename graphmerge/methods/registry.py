"""Registry of merge methods.

A merge method is a pure function of float32 tensors and typed parameters. It never does I/O, never
looks at the cache and never knows about graphs: the `merge` node resolves per-tensor parameters
(filters, gradients over depth, defaults, checks) into the method's declared `MethodParams` classes,
upcasts inputs to float32 on the compute device, seeds a generator, calls the method once per tensor
with one `MergeInputs` and casts the result to the output dtype.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from graphmerge.errors import MergeError
from graphmerge.methods.params import (
    MethodParams,
    NoParams,
    ParamSpec,
    check_declaration,
    from_specs,
    resolve,
    specs,
)
from graphmerge.registration import Registry

if TYPE_CHECKING:
    import torch

M = TypeVar("M", bound=MethodParams)
G = TypeVar("G", bound=MethodParams)


@dataclass(frozen=True)
class MergeInputs(Generic[M, G]):
    """Everything a method gets for one tensor, parameters already resolved for that tensor."""

    tensors: Sequence[torch.Tensor]  # float32, one per model (the base is not among them)
    base: torch.Tensor | None
    models: Sequence[M]  # per-model parameters, in the order of `tensors`
    params: G
    generator: torch.Generator | None = None  # seeded by the merge node for stochastic methods
    statistics: Sequence[torch.Tensor | None] = ()  # one per model, for methods that declare `statistics`


class MergeFunction(Protocol):
    def __call__(self, inputs: MergeInputs[Any, Any], /) -> torch.Tensor: ...


@dataclass(frozen=True)
class MergeMethod:
    name: str
    version: str
    fn: Callable[..., torch.Tensor] = field(compare=False)  # as registered
    per_model: type[MethodParams] = NoParams
    params: type[MethodParams] = NoParams
    base: str = "optional"  # "required" | "optional" | "none"
    stochastic: bool = False
    min_models: int = 1
    max_models: int | None = None
    doc: str = ""
    # Calibration statistics the method reads ("gram" | "fisher"), given by the merge node's
    # `statistics:` node as `MergeInputs.statistics`.
    statistics: str | None = None
    # The global parameter that a per-model `weight` on the base's own `models:` entry sets: mergekit's
    # linear weighs the base like any model (graphmerge's linear: `base_weight`).
    base_weight: str | None = None

    @property
    def model_params(self) -> dict[str, ParamSpec]:
        return specs(self.per_model)

    @property
    def global_params(self) -> dict[str, ParamSpec]:
        return specs(self.params)

    def resolve(
        self,
        models: Sequence[tuple[str, Mapping[str, Any]]],
        params: Mapping[str, Any],
        *,
        where: str | None = None,
    ) -> tuple[tuple[MethodParams, ...], MethodParams]:
        """Typed parameters for one tensor from (label, values) per model and the global values."""
        per_model = tuple(
            resolve(self.per_model, values, method=self.name, model=label, where=where)
            for label, values in models
        )
        return per_model, resolve(self.params, params, method=self.name, where=where)

    def __call__(self, inputs: MergeInputs[Any, Any]) -> torch.Tensor:
        if _takes_inputs(self.fn):
            return self.fn(inputs)
        # A plugin written for the earlier convention: (tensors, base, model_params, params, generator).
        extra = {"statistics": list(inputs.statistics)} if self.statistics else {}
        per_model = [m.model_dump() for m in inputs.models]
        return self.fn(
            inputs.tensors, inputs.base, per_model, inputs.params.model_dump(), inputs.generator, **extra
        )


@cache
def _takes_inputs(fn: Callable[..., Any]) -> bool:
    positional = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1


METHODS: Registry[MergeMethod] = Registry(
    "merge method", group="graphmerge.methods", builtin="graphmerge.methods.builtin", error=MergeError
)


def merge_method(
    name: str,
    *,
    version: str,
    per_model: type[MethodParams] | Mapping[str, ParamSpec] = NoParams,
    params: type[MethodParams] | Mapping[str, ParamSpec] = NoParams,
    base: str = "optional",
    stochastic: bool = False,
    min_models: int = 1,
    max_models: int | None = None,
    statistics: str | None = None,
    base_weight: str | None = None,
    model_params: Mapping[str, ParamSpec] | None = None,
    global_params: Mapping[str, ParamSpec] | None = None,
) -> Callable[[MergeFunction], MergeFunction]:
    """Register `fn(inputs: MergeInputs) -> tensor` as merge method `name`, with its per-model and
    global parameters declared as `MethodParams` dataclasses. Bump `version` whenever the numbers it
    returns change: the version is part of every cache key the method produces.

    `model_params` / `global_params` (dicts of ParamSpec) and a function of (tensors, base,
    model_params, params, generator) are the earlier plugin convention, still accepted."""

    if base not in ("required", "optional", "none"):
        raise ValueError(f"base must be required|optional|none, not {base!r}")
    if statistics not in (None, "gram", "fisher"):
        raise ValueError(f"statistics must be gram|fisher|None, not {statistics!r}")
    per_model_cls = _declaration(name, "per_model", model_params if model_params is not None else per_model)
    params_cls = _declaration(name, "params", global_params if global_params is not None else params)
    if base_weight is not None and base_weight not in specs(params_cls):
        raise ValueError(f"base_weight {base_weight!r} of merge method {name!r} is not one of its params")

    def register(fn: MergeFunction) -> MergeFunction:
        entry = MergeMethod(
            name=name,
            version=version,
            fn=fn,
            per_model=per_model_cls,
            params=params_cls,
            base=base,
            stochastic=stochastic,
            min_models=min_models,
            max_models=max_models,
            doc=(fn.__doc__ or "").strip().split("\n")[0],
            statistics=statistics,
            base_weight=base_weight,
        )
        METHODS.add(name, entry, fn)
        return fn

    return register


def named(name: str, doc: str, fn: Callable[..., torch.Tensor], *bound: Any) -> MergeFunction:
    """`fn` with its leading arguments bound, as a method function of its own name and doc (for
    methods registered in a loop, one per variant)."""

    def method(inputs: MergeInputs[Any, Any]) -> torch.Tensor:
        return fn(*bound, inputs)

    method.__doc__ = doc
    method.__name__ = method.__qualname__ = name
    return method


def _declaration(method: str, kind: str, declared: Any) -> type[MethodParams]:
    if isinstance(declared, Mapping):
        return from_specs(f"{method}_{kind}", declared)
    return check_declaration(declared, method)


def get_method(name: str) -> MergeMethod:
    return METHODS.get(name)


def all_methods() -> dict[str, MergeMethod]:
    return METHODS.all()
