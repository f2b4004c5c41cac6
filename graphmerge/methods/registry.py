"""Registry of merge methods.

A merge method is a pure function of float32 tensors and plain parameters. It never does I/O, never
looks at the cache and never knows about graphs: the `merge` node resolves per-tensor parameters
(filters, gradients over depth, seeds), upcasts inputs to float32 on the compute device, calls the
method once per tensor and casts the result to the output dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from graphmerge.errors import MergeError
from graphmerge.registration import Registry

if TYPE_CHECKING:
    import torch


class MergeFunction(Protocol):
    def __call__(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        model_params: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class ParamSpec:
    """A scalar parameter of a method with its default (None = required)."""

    default: Any = None
    kind: type = float
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class MergeMethod:
    name: str
    version: str
    fn: MergeFunction = field(compare=False)
    model_params: Mapping[str, ParamSpec] = field(default_factory=dict)
    global_params: Mapping[str, ParamSpec] = field(default_factory=dict)
    base: str = "optional"  # "required" | "optional" | "none"
    stochastic: bool = False
    min_models: int = 1
    max_models: int | None = None
    doc: str = ""
    # Calibration statistics the method reads ("gram" | "fisher"), given by the merge node's
    # `statistics:` node; the method is then called with `statistics=[one tensor or None per model]`.
    statistics: str | None = None


METHODS: Registry[MergeMethod] = Registry(
    "merge method", group="graphmerge.methods", builtin="graphmerge.methods.builtin", error=MergeError
)


def merge_method(
    name: str,
    *,
    version: str,
    model_params: Mapping[str, ParamSpec] | None = None,
    global_params: Mapping[str, ParamSpec] | None = None,
    base: str = "optional",
    stochastic: bool = False,
    min_models: int = 1,
    max_models: int | None = None,
    statistics: str | None = None,
) -> Callable[[MergeFunction], MergeFunction]:
    """Register `fn` as merge method `name`. Bump `version` whenever the numbers it returns change:
    the version is part of every cache key the method produces."""

    if base not in ("required", "optional", "none"):
        raise ValueError(f"base must be required|optional|none, not {base!r}")
    if statistics not in (None, "gram", "fisher"):
        raise ValueError(f"statistics must be gram|fisher|None, not {statistics!r}")

    def register(fn: MergeFunction) -> MergeFunction:
        entry = MergeMethod(
            name=name,
            version=version,
            fn=fn,
            model_params=dict(model_params or {}),
            global_params=dict(global_params or {}),
            base=base,
            stochastic=stochastic,
            min_models=min_models,
            max_models=max_models,
            doc=(fn.__doc__ or "").strip().split("\n")[0],
            statistics=statistics,
        )
        METHODS.add(name, entry, fn)
        return fn

    return register


def get_method(name: str) -> MergeMethod:
    return METHODS.get(name)


def all_methods() -> dict[str, MergeMethod]:
    return METHODS.all()
