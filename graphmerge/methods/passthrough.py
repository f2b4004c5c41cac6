"""Passthrough: copy one model's tensor, optionally scaled (used for layer stacking)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphmerge.lazy import torch
from graphmerge.methods._common import number, require_count
from graphmerge.methods.registry import ParamSpec, merge_method


@merge_method(
    "passthrough",
    version="1",
    model_params={"scale": ParamSpec(1.0, float, doc="multiply the tensor by this factor")},
    base="none",
    min_models=1,
    max_models=1,
)
def passthrough(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The single input model's tensor, times `scale`."""
    require_count("passthrough", len(tensors) + (base is not None), at_least=1, at_most=1, what="model")
    x = tensors[0] if tensors else base
    assert x is not None
    scale = number("passthrough", "scale", (model_params[0] if model_params else {}).get("scale", 1.0))
    return x.clone() if scale == 1.0 else x * scale
