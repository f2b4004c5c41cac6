"""Call a merge method the way the `merge` node does: the node's own parameter resolution
(`tensor_params`: filters, gradients, defaults, types, ranges) and its own tensor op (`merge_tensor`:
float32 upcast, seeded generator, method call, cast), so method tests exercise both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graphmerge.methods import MergeInputs, MergeMethod, MethodParams, get_method
from graphmerge.nodes.merge import merge_tensor, tensor_params


def as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float32)


def resolved(
    name: str,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any] | None,
    *,
    tensor: str = "weight",
    position: float = 0.0,
) -> tuple[MergeMethod, tuple[MethodParams, ...], MethodParams]:
    """The method and its parameters for one tensor; model i is named `i` in errors ("of model 0")."""
    method = get_method(name)
    per_model, global_params = tensor_params(
        method,
        {str(i): p for i, p in enumerate(model_params)},
        params or {},
        tensor=tensor,
        position=position,
    )
    return method, per_model, global_params


def call_method(
    name: str,
    tensors: Sequence[Any],
    base: Any = None,
    model_params: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
    statistics: Sequence[torch.Tensor] = (),
    tensor: str = "weight",
    position: float = 0.0,
) -> torch.Tensor:
    """`model_params[i]` are model i's values, `params` the global ones; `tensor` and `position`
    pick filters and gradients as for that tensor."""
    models = [as_tensor(t) for t in tensors]
    given = model_params if model_params is not None else [{} for _ in models]
    method, per_model, global_params = resolved(name, given, params, tensor=tensor, position=position)
    inputs = ([as_tensor(base)] if base is not None else []) + models + list(statistics)
    return merge_tensor(
        *inputs,
        method=name,
        method_version=method.version,
        model_params=per_model,
        params=global_params,
        has_base=base is not None,
        seed=seed if seed is not None else 0,
        out_dtype=str(dtype).removeprefix("torch."),
        allow_nonfinite=True,
        statistics=len(statistics),
    )


def call_exact(
    name: str,
    tensors: Sequence[torch.Tensor],
    statistics: Sequence[torch.Tensor | None] = (),
    base: torch.Tensor | None = None,
    model_params: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """The method itself on tensors of any dtype (float64 oracles), parameters resolved as above."""
    given = model_params if model_params is not None else [{} for _ in tensors]
    method, per_model, global_params = resolved(name, given, params)
    return method(MergeInputs(list(tensors), base, per_model, global_params, None, list(statistics)))
