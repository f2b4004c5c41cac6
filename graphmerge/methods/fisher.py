"""Fisher merging (Matena & Raffel, NeurIPS 2022).

Each parameter is the average of the models' values weighted by their diagonal Fisher information
F_i (squared gradients of the log-likelihood of model i's own predictions on calibration data):

    theta* = sum_i w_i max(F_i, fisher_floor) theta_i / sum_i w_i max(F_i, fisher_floor)

`fisher_floor` keeps parameters no calibration example moves (F = 0 in every model) at the weighted
mean instead of 0/0; `weight` is the per-model w_i. The Fisher diagonals come from a `statistics`
node with `kind: fisher`. Parameters without one (a tied head) take the weighted mean.
Cost: elementwise, O(T * size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes
from graphmerge.methods.params import MethodParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


def fisher_average(
    tensors: Sequence[torch.Tensor], fishers: Sequence[torch.Tensor], weights: Sequence[float], floor: float
) -> torch.Tensor:
    num = torch.zeros_like(tensors[0])
    den = torch.zeros_like(tensors[0])
    for x, f, w in zip(tensors, fishers, weights):
        fw = f.clamp_min(floor) * w
        num.add_(fw * x)
        den.add_(fw)
    return num / den


@dataclass(frozen=True)
class FisherWeight(MethodParams):
    """Per model: how much its Fisher information counts."""

    weight: float = param(1.0, ge=0.0, doc="weight of this model's Fisher information")


@dataclass(frozen=True)
class FisherParams(MethodParams):
    """Global parameters of fisher."""

    fisher_floor: float = param(1e-6, ge=0.0, doc="lower bound on every Fisher value")


@merge_method(
    "fisher", version="1", per_model=FisherWeight, params=FisherParams, base="none", statistics="fisher"
)
def fisher(x: MergeInputs[FisherWeight, FisherParams]) -> torch.Tensor:
    """Fisher merging: a per-parameter average weighted by diagonal Fisher information."""
    check_shapes("fisher", x.tensors, x.base)
    weights = [m.weight for m in x.models]
    if sum(weights) <= 0:
        raise MergeError("fisher: the model weights sum to 0", fix="give at least one model a weight > 0")
    floor = x.params.fisher_floor
    fishers = list(x.statistics)
    if not fishers or any(f is None for f in fishers):
        fishers = [torch.ones_like(t) for t in x.tensors]
    elif floor == 0 and bool((torch.stack([f * w for f, w in zip(fishers, weights)]).sum(0) == 0).any()):
        raise MergeError(
            "fisher: some parameter has zero Fisher information in every model and fisher_floor is 0",
            fix=f"set fisher_floor > 0 (default {FisherParams.fisher_floor:g}) or use more calibration data",
        )
    return fisher_average(x.tensors, [f for f in fishers if f is not None], weights, floor)
