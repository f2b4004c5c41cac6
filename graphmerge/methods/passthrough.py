"""Passthrough: copy one model's tensor, optionally scaled (used for layer stacking)."""

from __future__ import annotations

from dataclasses import dataclass

from graphmerge.lazy import torch
from graphmerge.methods._common import require_count
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


@dataclass(frozen=True)
class Scale(MethodParams):
    """Per model: a factor (passthrough)."""

    scale: float = param(1.0, doc="multiply the tensor by this factor")


@merge_method("passthrough", version="1", per_model=Scale, base="none", min_models=1, max_models=1)
def passthrough(x: MergeInputs[Scale, NoParams]) -> torch.Tensor:
    """The single input model's tensor, times `scale`."""
    require_count("passthrough", len(x.tensors), at_least=1, at_most=1, what="model")
    scale = x.models[0].scale
    return x.tensors[0].clone() if scale == 1.0 else x.tensors[0] * scale
