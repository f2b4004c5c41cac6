"""Arcee Fusion: keep the other model's change only where it matters most.

Importance of an element = |model - base| times the KL divergence between the softmaxes of the two
rows (last dim) it sits in; elements whose importance reaches median + 1.5 * IQR (Tukey's outlier
fence, quantiles taken as sorted[floor(q * (n - 1))] as mergekit does) take the model's value, the
rest keep the base's."""

from __future__ import annotations

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, require_base, require_count
from graphmerge.methods.params import NoParams
from graphmerge.methods.registry import MergeInputs, merge_method


def importance(model: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    eps = 1e-8
    p = torch.softmax(model, dim=-1) + eps
    q = torch.softmax(base, dim=-1) + eps
    kl = (p * torch.log(p / q)).sum(dim=-1, keepdim=True)
    return (model - base).abs() * kl


def _quantile(sorted_flat: torch.Tensor, q: float) -> torch.Tensor:
    return sorted_flat[int(q * (sorted_flat.numel() - 1))]


@merge_method("arcee_fusion", version="1", base="required", min_models=1, max_models=1)
def arcee_fusion(x: MergeInputs[NoParams, NoParams]) -> torch.Tensor:
    """Take the model's value where its importance is an upper outlier (median + 1.5 IQR), else the base's."""
    base = require_base("arcee_fusion", x.base)
    require_count("arcee_fusion", len(x.tensors), at_least=1, at_most=1, what="model besides the base")
    check_shapes("arcee_fusion", x.tensors, base)
    other = x.tensors[0]
    scores = importance(other, base)
    ordered = torch.sort(scores.reshape(-1)).values
    q1, median, q3 = (_quantile(ordered, q) for q in (0.25, 0.5, 0.75))
    mask = scores >= median + 1.5 * (q3 - q1)
    # base + delta * mask rather than a select: the very float ops mergekit does, so results match bitwise.
    return base + (other - base) * mask.to(base.dtype)
