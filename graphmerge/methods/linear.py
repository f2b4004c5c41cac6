"""Linear merge (model soups): a weighted average of the inputs.

mergekit treats the base like any other input with its own `weight`; our caller passes the base
separately, so its weight is the global `base_weight` (default 0: the base is not averaged in), which
a `weight` on the base's own `models:` entry also sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes
from graphmerge.methods.params import MethodParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


@dataclass(frozen=True)
class Weight(MethodParams):
    """Per model: its weight (linear, nuslerp, multislerp)."""

    weight: float = param(doc="weight of this model (required, as in mergekit)")


@dataclass(frozen=True)
class LinearParams(MethodParams):
    """Global parameters of linear."""

    normalize: bool = param(True, doc="divide by the sum of weights")
    base_weight: float = param(0.0, doc="weight of the base model, if one is given")


@merge_method("linear", version="1", per_model=Weight, params=LinearParams, base_weight="base_weight")
def linear(x: MergeInputs[Weight, LinearParams]) -> torch.Tensor:
    """Weighted average of the models (and the base, weighted by base_weight)."""
    check_shapes("linear", x.tensors, x.base)
    weights = [m.weight for m in x.models]
    inputs = list(x.tensors)
    if x.base is not None and x.params.base_weight != 0.0:
        inputs.insert(0, x.base)
        weights.insert(0, x.params.base_weight)
    if not inputs:
        raise MergeError("linear needs at least one model with a weight")
    out = torch.zeros_like(inputs[0])
    for t, wt in zip(inputs, weights):
        out.add_(t, alpha=wt)
    if x.params.normalize:
        total = sum(weights)
        if abs(total) < 1e-12:
            raise MergeError(
                "linear: the weights sum to 0, so normalize would divide by zero",
                fix="change the weights or set normalize: false",
            )
        out.div_(total)
    return out
