"""Model Stock (Jang et al. 2024): interpolate between the base and the average of the fine-tuned
models with t = N cos / (1 + (N - 1) cos), cos being the mean pairwise cosine of the task vectors."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, require_base, require_count
from graphmerge.methods.params import MethodParams, NoParams, param
from graphmerge.methods.registry import MergeInputs, merge_method


@dataclass(frozen=True)
class ModelStockParams(MethodParams):
    """Global parameters of model_stock."""

    filter_wise: bool = param(False, doc="one cosine per row instead of per tensor")


@merge_method("model_stock", version="1", params=ModelStockParams, base="required", min_models=2)
def model_stock(x: MergeInputs[NoParams, ModelStockParams]) -> torch.Tensor:
    """Base-anchored average with the cosine-derived interpolation ratio of Model Stock."""
    base = require_base("model_stock", x.base)
    require_count("model_stock", len(x.tensors), at_least=2, what="models besides the base")
    check_shapes("model_stock", x.tensors, base)
    shape = base.shape
    if x.params.filter_wise and base.dim() > 0:
        rows = base.reshape(-1, shape[-1])  # mergekit: cosine over the last dim (a 1-d tensor is one row)
    else:
        rows = base.reshape(1, -1)
    ws = [t.reshape(rows.shape) for t in x.tensors]
    offsets = [w - rows for w in ws]
    cosines = []
    for a, b in combinations(offsets, 2):
        norm = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
        cosines.append(((a * b).sum(dim=-1) / norm.clamp(min=1e-6)).clamp(-1, 1))
    del offsets
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    denom = 1 + (n - 1) * cos
    # At the singularity (cos = -1/(N-1)) there is no finite estimate: keep the base (mergekit 0.1.5).
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), n * cos / torch.where(singular, 1.0, denom))
    average = torch.stack(ws).mean(dim=0)
    return (t * average + (1 - t) * rows).reshape(shape)
