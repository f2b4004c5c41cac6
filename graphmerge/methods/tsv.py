"""TSV-M: Task Singular Vectors merging (Gargiulo et al., CVPR 2025).

Per 2-D weight, each task vector keeps its top `k` fraction of singular triplets (default 1/T), the
kept left and right singular vectors of all tasks are concatenated and decorrelated by orthogonal
Procrustes (their polar factor), and the merged task vector is U_orth diag(S) V_orth, times `lambda`.
Other tensors (norms, biases) take the mean task vector (the reference code's fallback).
Cost per matrix (m x n, r = min(m, n)): T SVDs of m x n plus two of m x (kTr) and (kTr) x n, i.e.
O(T m n r), cubic in the width for square matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graphmerge.lazy import torch
from graphmerge.methods._spectral import (
    SpectralParams,
    is_matrix,
    mean_vector,
    polar,
    svd,
    task_vector_method,
)
from graphmerge.methods.params import param


def kept_rank(k: float, n_tasks: int, full_rank: int) -> int:
    fraction = k if k > 0 else 1.0 / n_tasks
    return max(1, min(full_rank, int(full_rank * fraction)))


def tsv_task_vector(deltas: Sequence[torch.Tensor], k: float) -> torch.Tensor:
    if not is_matrix(deltas[0]):
        return mean_vector(deltas)
    rank = kept_rank(k, len(deltas), min(deltas[0].shape))
    us, ss, vs = [], [], []
    for d in deltas:
        u, s, vh = svd(d)
        us.append(u[:, :rank])
        ss.append(s[:rank])
        vs.append(vh[:rank])
    u_orth = polar(torch.cat(us, dim=1))
    v_orth = polar(torch.cat(vs, dim=0))
    return (u_orth * torch.cat(ss)) @ v_orth


@dataclass(frozen=True)
class TSVParams(SpectralParams):
    """Global parameters of tsv_m."""

    k: float = param(0.0, ge=0.0, le=1.0, doc="fraction of each task's singular triplets kept (0: 1/T)")


@task_vector_method("tsv_m", version="1", params=TSVParams)
def tsv_m(deltas: list[torch.Tensor], params: TSVParams) -> torch.Tensor:
    """TSV-M: low-rank task singular vectors, decorrelated by Procrustes, summed."""
    return tsv_task_vector(deltas, params.k)
