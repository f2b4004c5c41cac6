"""NearSwap: take the other model's value where it is close to the base (|a-b| <= t), blend in
proportion t/|a-b| elsewhere; keeps the base where models differ a lot."""

from __future__ import annotations

from dataclasses import dataclass

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, require_base, require_count
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


@dataclass(frozen=True)
class NearSwapParams(MethodParams):
    """Global parameters of nearswap."""

    t: float = param(doc="similarity threshold (absolute difference)")


@merge_method("nearswap", version="1", params=NearSwapParams, base="required", min_models=1, max_models=1)
def nearswap(x: MergeInputs[NoParams, NearSwapParams]) -> torch.Tensor:
    """Per element: w = clamp(t / |base - model|, 0, 1); w * model + (1 - w) * base."""
    base = require_base("nearswap", x.base)
    require_count("nearswap", len(x.tensors), at_least=1, at_most=1, what="model besides the base")
    check_shapes("nearswap", x.tensors, base)
    other = x.tensors[0]
    w = (x.params.t / (base - other).abs_().clamp_(min=1e-6)).clamp_(0.0, 1.0)
    return torch.lerp(base, other, w)
