"""Spherical interpolation methods: slerp (two endpoints), nuslerp (weights, task-vector or row-wise
variants) and multislerp (barycentric interpolation of any number of models)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, require_count
from graphmerge.methods.linear import Weight
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method

# mergekit's threshold above which |cos| counts as (anti)parallel and slerp falls back to lerp.
DOT_THRESHOLD = 0.9995


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Slerp of two whole tensors seen as flat vectors; the coefficients apply to the unnormalized
    inputs, so norms are interpolated too (mergekit's slerp)."""
    a, b = v0.reshape(-1), v1.reshape(-1)
    if a.numel() == 0:
        return v0.clone()
    na = torch.linalg.vector_norm(a)
    nb = torch.linalg.vector_norm(b)
    na = na if float(na) > eps else torch.ones_like(na)  # zero vectors: dot 0, slerp by 90 degrees
    nb = nb if float(nb) > eps else torch.ones_like(nb)
    dot = float((torch.dot(a, b) / (na * nb)).clamp(-1, 1))
    if abs(dot) > DOT_THRESHOLD:
        ca, cb = 1 - t, t
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        ca, cb = math.sin((1 - t) * theta) / s, math.sin(t * theta) / s
    return torch.add(v0 * ca, v1, alpha=cb)


@dataclass(frozen=True)
class SlerpParams(MethodParams):
    """Global parameters of slerp."""

    t: float = param(doc="0 = base (or first model), 1 = the other model")


@merge_method("slerp", version="1", params=SlerpParams, base="optional", min_models=1, max_models=2)
def slerp(x: MergeInputs[NoParams, SlerpParams]) -> torch.Tensor:
    """Spherical interpolation from the base (t=0) to the other model (t=1)."""
    ends = ([x.base] if x.base is not None else []) + list(x.tensors)
    if len(ends) != 2:
        raise MergeError(
            f"slerp needs exactly 2 models (a base and one model, or two models), got {len(ends)}",
            fix="use multislerp or karcher for more models",
        )
    check_shapes("slerp", ends[1:], ends[0])
    return slerp_tensors(x.params.t, ends[0], ends[1])


def nuslerp_tensors(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, row_wise: bool, flatten: bool, eps: float = 1e-8
) -> torch.Tensor:
    """mergekit's nuslerp: slerp the whole tensor (flatten) or each vector along the last dim
    (row_wise: along dim 0); (anti)parallel vectors fall back to lerp."""
    shape = v0.shape
    if flatten:
        a, b = v0.reshape(-1), v1.reshape(-1)
    elif row_wise and v0.dim() > 1:
        a, b = v0.transpose(0, -1), v1.transpose(0, -1)
    else:
        a, b = v0, v1
    ua = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp(min=1e-7)
    ub = b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1, 1)
    del ua, ub
    colinear = (1 - cos.square()) <= eps * eps
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin = torch.sin(theta)
    ca = torch.where(colinear, torch.full_like(cos, 1 - t), torch.sin((1 - t) * theta) / sin)
    cb = torch.where(colinear, torch.full_like(cos, t), torch.sin(t * theta) / sin)
    out = ca * a + cb * b
    if row_wise and not flatten and v0.dim() > 1:
        out = out.transpose(0, -1)
    return out.reshape(shape)


@dataclass(frozen=True)
class NuSlerpParams(MethodParams):
    """Global parameters of nuslerp."""

    nuslerp_flatten: bool = param(True, doc="slerp whole tensors as one vector")
    nuslerp_row_wise: bool = param(False, doc="slerp along dim 0 instead of the last dim")


@merge_method("nuslerp", version="1", per_model=Weight, params=NuSlerpParams, min_models=2, max_models=2)
def nuslerp(x: MergeInputs[Weight, NuSlerpParams]) -> torch.Tensor:
    """Slerp between two models by weight; with a base, slerp their task vectors."""
    require_count("nuslerp", len(x.tensors), at_least=2, at_most=2, what="models besides the base")
    check_shapes("nuslerp", x.tensors, x.base)
    w0, w1 = (m.weight for m in x.models)
    t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
    shape = {"row_wise": x.params.nuslerp_row_wise, "flatten": x.params.nuslerp_flatten}
    a, b = x.tensors
    if x.base is None:
        return nuslerp_tensors(t, a, b, **shape)
    return nuslerp_tensors(t, a - x.base, b - x.base, **shape).add_(x.base)


@dataclass(frozen=True)
class MultiSlerpParams(MethodParams):
    """Global parameters of multislerp."""

    normalize_weights: bool = param(True, doc="divide weights by their sum")
    eps: float = param(1e-8, ge=0.0, doc="numerical guard")


@merge_method("multislerp", version="1", per_model=Weight, params=MultiSlerpParams)
def multislerp(inputs: MergeInputs[Weight, MultiSlerpParams]) -> torch.Tensor:
    """Barycentric interpolation on the hypersphere via the tangent space at the weighted mean."""
    tensors, base, eps = inputs.tensors, inputs.base, inputs.params.eps
    check_shapes("multislerp", tensors, base)
    if len(tensors) == 1:
        return tensors[0].clone()  # mergekit: nothing to interpolate (the base is ignored)
    weights = [m.weight for m in inputs.models]
    if inputs.params.normalize_weights:
        total = sum(weights)
        if total == 0:
            raise MergeError(
                "multislerp: the weights sum to 0", fix="change the weights or set normalize_weights: false"
            )
        weights = [x / total for x in weights]
    x = torch.stack([t.reshape(-1) for t in tensors])
    if base is not None:
        x -= base.reshape(1, -1)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    units = x / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if float(mean_norm) < eps:
        if len(tensors) != 2:
            raise MergeError(
                "multislerp: the weighted directions cancel out (antipodal models with balanced weights)",
                fix="use different weights",
            )
        out = x[0] * w[0] + x[1] * w[1]  # mergekit falls back to lerp for two models
    else:
        mean /= mean_norm
        tangent = units - (units @ mean).unsqueeze(1) * mean
        step = (tangent * w.view(-1, 1)).sum(0)
        step_norm = torch.linalg.vector_norm(step) + eps
        out = mean * torch.cos(step_norm) + step * (torch.sin(step_norm) / step_norm)
        out *= (norms.squeeze(1) * w).sum()
    out = out.view(tensors[0].shape)
    return out.add_(base) if base is not None else out
