"""SCE (Wan et al. 2024, FuseChat): Select high-variance elements, Calculate per-model weights from
the task vectors' energy, Erase minority signs, then average."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, number, require_base
from graphmerge.methods.registry import ParamSpec, merge_method
from graphmerge.methods.sparsify import top_k_mask


@merge_method(
    "sce",
    version="1",
    global_params={
        "select_topk": ParamSpec(
            1.0, float, 0.0, 1.0, "fraction of elements (by variance across models) kept"
        ),
        "int8_mask": ParamSpec(False, bool, doc="accepted for mergekit configs; no effect on results"),
    },
    base="required",
)
def sce(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Variance-selected, energy-weighted, sign-consensus merge of task vectors."""
    base = require_base("sce", base)
    check_shapes("sce", tensors, base)
    if not tensors:
        return base.clone()
    topk = number("sce", "select_topk", params.get("select_topk", 1.0), lo=0.0, hi=1.0)
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
