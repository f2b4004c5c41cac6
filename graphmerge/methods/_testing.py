"""Test helper that calls a merge method the way the `merge` node does: fill parameter defaults from
the ParamSpecs, upcast inputs of any float dtype to float32, seed a generator, cast the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graphmerge.methods.registry import get_method


def call_method(
    name: str,
    tensors: Sequence[Any],
    base: Any = None,
    model_params: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    method = get_method(name)

    def f32(x: Any) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=torch.float32)
        return t.to(torch.float32)

    ts = [f32(t) for t in tensors]
    b = f32(base) if base is not None else None
    mps = model_params if model_params is not None else [{} for _ in ts]
    full_mp = [{k: p.get(k, spec.default) for k, spec in method.model_params.items()} for p in mps]
    gp = dict(params or {})
    full_gp = {k: gp.get(k, spec.default) for k, spec in method.global_params.items()}
    gen = None
    if method.stochastic and seed is not None:
        gen = torch.Generator()
        gen.manual_seed(seed)
    return method.fn(ts, b, full_mp, full_gp, gen).to(dtype)
