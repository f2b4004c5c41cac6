"""SCE (Wan et al. 2024, FuseChat): Select high-variance elements, Calculate per-model weights from
the task vectors' energy, Erase minority signs, then average."""

from __future__ import annotations

from dataclasses import dataclass

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, require_base
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method
from graphmerge.methods.sparsify import top_k_mask


@dataclass(frozen=True)
class SCEParams(MethodParams):
    """Global parameters of sce."""

    select_topk: float = param(
        1.0, ge=0.0, le=1.0, doc="fraction of elements (by variance across models) kept"
    )
    int8_mask: bool = param(False, doc="accepted for mergekit configs; no effect on results")


@merge_method("sce", version="1", params=SCEParams, base="required")
def sce(x: MergeInputs[NoParams, SCEParams]) -> torch.Tensor:
    """Variance-selected, energy-weighted, sign-consensus merge of task vectors."""
    base = require_base("sce", x.base)
    tensors = x.tensors
    check_shapes("sce", tensors, base)
    if not tensors:
        return base.clone()
    topk = x.params.select_topk
    tv = torch.stack(list(tensors)) - base
    if topk < 1:
        if topk <= 0:
            tv.zero_()
        else:
            var = torch.var(tv, dim=0, unbiased=False)
            k = int(int(torch.count_nonzero(var)) * topk)  # mergekit: a fraction of the varying elements
            tv.mul_(top_k_mask(var, k))
    # Energy weights: mean squared task-vector value per model, normalised to sum 1.
    energy = tv.square().reshape(len(tensors), -1).mean(dim=1)
    total = float(energy.sum())
    energy = torch.full_like(energy, 1.0 / len(tensors)) if abs(total) < 1e-6 else energy / total
    positive = tv.sum(dim=0) >= 0
    agree = torch.where(positive, tv > 0, tv < 0)
    w = torch.where(agree, energy.view(-1, *([1] * base.dim())), 0.0)
    merged = (tv * w).sum(dim=0) / w.sum(dim=0).clamp(min=1e-6)
    return merged.add_(base)
