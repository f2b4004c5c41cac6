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

from collections.abc import Mapping, Sequence
from typing import Any

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, choice, number
from graphmerge.methods.registry import ParamSpec, merge_method


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
        # minimum-norm least-squares solution is the regression's answer there.
        return torch.linalg.lstsq(lhs.cpu().double(), rhs.cpu().double()).solution.T.to(lhs)


@merge_method(
    "regmean",
    version="1",
    global_params={
        "alpha": ParamSpec(0.9, float, 0.0, 1.0, "scale of the Gram matrices' off-diagonal entries"),
        "fallback": ParamSpec("linear", str, doc="tensors without a Gram matrix: linear (mean) | base"),
    },
    base="optional",
    statistics="gram",
)
def regmean(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
    statistics: Sequence[torch.Tensor | None] = (),
) -> torch.Tensor:
    """RegMean: per linear layer, the least-squares fit to every model's outputs on calibration data."""
    check_shapes("regmean", tensors, base)
    alpha = number("regmean", "alpha", params.get("alpha", 0.9), lo=0.0, hi=1.0)
    fallback = choice("regmean", "fallback", params.get("fallback", "linear"), ("linear", "base"))
    grams = list(statistics) or [None] * len(tensors)
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
