"""A graphmerge plugin: one custom merge method and one custom node type.

    graphmerge nodes --plugin examples/custom_nodes.py
    graphmerge run examples/custom.yaml --plugin examples/custom_nodes.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from graphmerge import MergeInputs, MethodParams, Model, NodeParams, merge_method, node, param, tensor_op


@dataclass(frozen=True)
class MaxWeight(MethodParams):
    weight: float = param(1.0, ge=0.0, doc="multiplies the model before the max")


@merge_method("elementwise_max", version="1", per_model=MaxWeight, base="none", min_models=2)
def elementwise_max(x: MergeInputs[MaxWeight, MethodParams]) -> torch.Tensor:
    """Per element, the largest of the (weighted) models' values."""
    weighted = [t * p.weight for t, p in zip(x.tensors, x.models)]
    return torch.stack(weighted).amax(dim=0)


@tensor_op("add_noise", version="1")
def add_noise(x: torch.Tensor, *, std: float, seed: int) -> torch.Tensor:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32) * std
    return (x.float() + noise).to(x.dtype)


class NoiseParams(NodeParams):
    input: str = Field(description="model to perturb")
    std: float = Field(0.01, ge=0, description="standard deviation of the Gaussian noise")
    only: str = Field("mlp", description="perturb tensors whose name contains this")


@node("noise", version="1", params=NoiseParams, inputs=["input"])
def noise(ctx, params: NoiseParams, inputs) -> Model:
    """Add seeded Gaussian noise to some tensors (cached per tensor like any built-in)."""
    model: Model = inputs[params.input]
    return model.map_tensors("add_noise", names=lambda n: params.only in n, std=params.std, seed=ctx.seed)
