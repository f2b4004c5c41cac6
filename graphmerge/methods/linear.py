"""Linear merge (model soups): a weighted average of the inputs.

mergekit treats the base like any other input with its own `weight`; our caller passes the base
separately, so its weight is the global `base_weight` (default 0: the base is not averaged in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, flag, number, per_model
from graphmerge.methods.registry import ParamSpec, merge_method


@merge_method(
    "linear",
    version="1",
    model_params={"weight": ParamSpec(None, float, doc="weight of this model (required, as in mergekit)")},
    global_params={
        "normalize": ParamSpec(True, bool, doc="divide by the sum of weights"),
        "base_weight": ParamSpec(0.0, float, doc="weight of the base model, if one is given"),
    },
    base="optional",
)
def linear(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Weighted average of the models (and the base, weighted by base_weight)."""
    check_shapes("linear", tensors, base)
    weights = per_model("linear", "weight", model_params)
    inputs = list(tensors)
    if base is not None:
        bw = number("linear", "base_weight", params.get("base_weight", 0.0))
        if bw != 0.0:
            inputs.insert(0, base)
            weights.insert(0, bw)
    if not inputs:
        raise MergeError("linear needs at least one model with a weight")
    out = torch.zeros_like(inputs[0])
    for x, wt in zip(inputs, weights):
        out.add_(x, alpha=wt)
    if flag("linear", "normalize", params.get("normalize", True)):
        total = sum(weights)
        if abs(total) < 1e-12:
            raise MergeError(
                "linear: the weights sum to 0, so normalize would divide by zero",
                fix="change the weights or set normalize: false",
            )
        out.div_(total)
    return out
