"""Iso-C and Iso-CTS: isotropic merging in common and task-specific subspaces (Marczak et al., 2025).

Iso-C: per 2-D weight, take the SVD of the summed task vector and replace its spectrum by the mean
singular value (a flat, isotropic spectrum on the same singular vectors), times `lambda`.
Iso-CTS: keep the top `common_fraction` of the summed task vector's rank as the common subspace; fill
the rest of the rank with each task's top directions orthogonal to it (equal shares per task);
orthogonalise the assembled bases by Procrustes and give every direction the mean singular value.
Other tensors (norms, biases) take the mean task vector, as in the reference code.
Cost per matrix (m x n, r = min(m, n)): Iso-C one SVD, O(m n r); Iso-CTS T + 3 SVDs, O(T m n r).
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


def iso_c_task_vector(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    if not is_matrix(deltas[0]):
        return mean_vector(deltas)
    u, s, vh = svd(torch.stack(list(deltas)).sum(dim=0))
    return s.mean() * (u @ vh)


def split_rank(full_rank: int, n_tasks: int, common_fraction: float) -> tuple[int, int]:
    """(common dims, dims per task), rounded as the reference code does so the task-specific part
    divides evenly among the tasks."""
    common = int(full_rank * common_fraction)
    specific_total = round((full_rank - common) / n_tasks) * n_tasks
    if specific_total > full_rank:  # rounding up past the rank (the reference code would fail here)
        specific_total -= n_tasks
    common = full_rank - specific_total
    return common, (full_rank - common) // n_tasks


def iso_cts_task_vector(deltas: Sequence[torch.Tensor], common_fraction: float) -> torch.Tensor:
    if not is_matrix(deltas[0]):
        return mean_vector(deltas)
    common, per_task = split_rank(min(deltas[0].shape), len(deltas), common_fraction)
    u, s, vh = svd(torch.stack(list(deltas)).sum(dim=0))
    us, ss, vs = [u[:, :common]], [s[:common]], [vh[:common]]
    if per_task > 0:
        common_u = us[0]
        for d in deltas:
            # d - U U^T d without forming the m x m projector (32000^2 floats for an embedding)
            ut, st, vht = svd(d - common_u @ (common_u.T @ d))
            us.append(ut[:, :per_task])
            ss.append(st[:per_task])
            vs.append(vht[:per_task])
    u_orth = polar(torch.cat(us, dim=1))
    v_orth = polar(torch.cat(vs, dim=0))
    return torch.cat(ss).mean() * (u_orth @ v_orth)


@dataclass(frozen=True)
class IsoCTSParams(SpectralParams):
    """Global parameters of iso_cts."""

    common_fraction: float = param(0.8, ge=0.0, le=1.0, doc="share of the rank given to the common subspace")


@task_vector_method("iso_c", version="1")
def iso_c(deltas: list[torch.Tensor], params: SpectralParams) -> torch.Tensor:
    """Iso-C: the summed task vector with a flat (isotropic) spectrum."""
    return iso_c_task_vector(deltas)


@task_vector_method("iso_cts", version="2", params=IsoCTSParams)
def iso_cts(deltas: list[torch.Tensor], params: IsoCTSParams) -> torch.Tensor:
    """Iso-CTS: isotropic merge of a common subspace plus task-specific subspaces."""
    return iso_cts_task_vector(deltas, params.common_fraction)
