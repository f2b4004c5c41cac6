"""RegMean: merging by regression on each linear layer's inputs (Jin et al., ICLR 2023).

For a linear weight W (out x in, y = W x) with input Gram matrices G_i = X_i^T X_i / n_i of model i on
calibration data, RegMean solves min_W sum_i ||X_i W^T - X_i W_i^T||^2 in closed form:

    W* = (sum_i G~_i W_i^T)^T (sum_i G~_i)^-1,   G~_i = alpha G_i + (1 - alpha) diag(G_i)

`alpha` shrinks the off-diagonal entries (the paper's default 0.9; 1 = plain regression, 0 = a
per-input-feature weighted average). Tensors with no Gram matrix (embeddings, norms) use `fallback`:
`linear` (the mean of the models) or `base` (the base model's tensor).
The Gram matrices come from a `statistics` node with `kind: gram`.
Cost per matrix: one in x in solve, O(in^3 + out in^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


def shrink(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * gram + (1.0 - alpha) * torch.diag_embed(torch.diagonal(gram))


def regmean_weight(
    weights: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float
) -> torch.Tensor:
    shrunk = [shrink(g, alpha) for g in grams]
    lhs = torch.stack(shrunk).sum(dim=0)
    rhs = torch.stack([g @ w.T for g, w in zip(shrunk, weights)]).sum(dim=0)
    try:
        return torch.linalg.solve(lhs, rhs).T
    except torch.linalg.LinAlgError:
        # An input feature no calibration token ever activated makes the sum singular; the
        # minimum-norm least-squares solution is the regression's answer there. The SVD driver
        # (gelsd): CPU's default, gelsy, returned an all-zero solution for such a rank-deficient
        # system in most calls on torch 2.13 (a flaky test showed it).
        solution = torch.linalg.lstsq(lhs.cpu().double(), rhs.cpu().double(), driver="gelsd").solution
        return solution.T.to(lhs)


@dataclass(frozen=True)
class RegMeanParams(MethodParams):
    """Global parameters of regmean."""

    alpha: float = param(0.9, ge=0.0, le=1.0, doc="scale of the Gram matrices' off-diagonal entries")
    fallback: Literal["linear", "base"] = param(
        "linear", doc="tensors without a Gram matrix: linear (mean) | base"
    )


@merge_method("regmean", version="1", params=RegMeanParams, base="optional", statistics="gram")
def regmean(x: MergeInputs[NoParams, RegMeanParams]) -> torch.Tensor:
    """RegMean: per linear layer, the least-squares fit to every model's outputs on calibration data."""
    tensors, base = x.tensors, x.base
    check_shapes("regmean", tensors, base)
    alpha, fallback = x.params.alpha, x.params.fallback
    grams = list(x.statistics) or [None] * len(tensors)
    if all(g is not None for g in grams) and tensors[0].dim() == 2:
        for i, g in enumerate(grams):
            assert g is not None
            if g.shape != (tensors[0].shape[1],) * 2:
                raise MergeError(
                    f"regmean: model {i}'s Gram matrix is {tuple(g.shape)}, expected "
                    f"{(tensors[0].shape[1],) * 2} for a weight of shape {tuple(tensors[0].shape)}",
                    fix="compute the statistics on the models this node merges",
                )
        return regmean_weight(tensors, [g for g in grams if g is not None], alpha)
    if fallback == "base":
        if base is None:
            raise MergeError(
                "regmean: fallback `base` needs a base model", fix="set `base:` or fallback: linear"
            )
        return base.clone()
    return torch.stack(list(tensors)).mean(dim=0)
