"""NearSwap: take the other model's value where it is close to the base (|a-b| <= t), blend in
proportion t/|a-b| elsewhere; keeps the base where models differ a lot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, number, require_base, require_count
from graphmerge.methods.registry import ParamSpec, merge_method


@merge_method(
    "nearswap",
    version="1",
    global_params={"t": ParamSpec(None, float, doc="similarity threshold (absolute difference)")},
    base="required",
    min_models=1,
    max_models=1,
)
def nearswap(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Per element: w = clamp(t / |base - model|, 0, 1); w * model + (1 - w) * base."""
    base = require_base("nearswap", base)
    require_count("nearswap", len(tensors), at_least=1, at_most=1, what="model besides the base")
    check_shapes("nearswap", tensors, base)
    t = number("nearswap", "t", params.get("t"))
    other = tensors[0]
    w = (t / (base - other).abs_().clamp_(min=1e-6)).clamp_(0.0, 1.0)
    return torch.lerp(base, other, w)
