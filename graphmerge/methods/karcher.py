"""Karcher (Riemannian) mean of the models' directions on the unit sphere, scaled by their mean norm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


def karcher_mean(xs: Sequence[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    """Equal-weight Karcher mean, iterated like mergekit (fixed-point steps on the sphere)."""
    if len(xs) == 1:
        return xs[0].clone()
    shape = xs[0].shape
    x = torch.stack([t.reshape(-1) for t in xs])
    norms = torch.linalg.vector_norm(x, dim=1)
    alpha = 1.0 / len(xs)
    units = x / torch.where(norms == 0, torch.ones_like(norms), norms).unsqueeze(1)
    valid = [i for i in range(len(xs)) if float(norms[i]) > tol]
    if not valid:
        return torch.zeros_like(xs[0])
    u = units[valid]
    a = torch.full((len(valid),), 1.0 / len(valid), dtype=x.dtype, device=x.device)
    mean = (u * a.unsqueeze(1)).sum(0)
    mn = float(torch.linalg.vector_norm(mean))
    mean = u[0].clone() if mn < tol else mean / mn
    for _ in range(max_iter):
        dots = (u @ mean).clamp(-1.0, 1.0)
        theta = torch.arccos(dots)
        # Points at (numerically) the mean contribute nothing; theta/sin(theta) -> 1 is skipped there.
        moving = theta >= tol
        coef = torch.where(moving, a * theta / torch.where(moving, torch.sin(theta), 1.0), 0.0)
        tangent = coef @ u - (coef * dots).sum() * mean
        tn = torch.linalg.vector_norm(tangent)
        if float(tn) < tol:
            break
        mean = torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)
        un = torch.linalg.vector_norm(mean)
        if float(un) > tol:
            mean = mean / un
    return (mean * (norms.sum() * alpha)).view(shape)


@dataclass(frozen=True)
class KarcherParams(MethodParams):
    """Global parameters of karcher (the fixed-point iteration)."""

    max_iter: int = param(10, ge=1, doc="maximum fixed-point iterations")
    tol: float = param(1e-5, ge=0.0, doc="convergence tolerance")


@merge_method("karcher", version="1", params=KarcherParams, base="optional")
def karcher(x: MergeInputs[NoParams, KarcherParams]) -> torch.Tensor:
    """Karcher mean on the hypersphere of all inputs (a base, if given, is one more point)."""
    check_shapes("karcher", x.tensors, x.base)
    points = ([x.base] if x.base is not None else []) + list(x.tensors)
    return karcher_mean(points, x.params.max_iter, x.params.tol)
