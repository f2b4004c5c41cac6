"""Pieces shared by the subspace methods (TSV-M, Iso-C, Iso-CTS, WUDI): task vectors, the polar
(orthogonal Procrustes) factor, and the fallback for tensors that are not matrices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, require_base
from graphmerge.methods.params import MethodParams, param
from graphmerge.methods.registry import MergeInputs, merge_method, named


@dataclass(frozen=True)
class SpectralParams(MethodParams):
    """Every subspace method's global parameters start with `lambda`."""

    lam: float = param(1.0, name="lambda", doc="scale of the merged task vector")


TaskVectorMerge = Callable[[list["torch.Tensor"], Any], "torch.Tensor"]


def task_vectors(
    method: str, tensors: Sequence[torch.Tensor], base: torch.Tensor | None
) -> list[torch.Tensor]:
    base = require_base(method, base)
    check_shapes(method, tensors, base)
    return [t - base for t in tensors]


def is_matrix(t: torch.Tensor) -> bool:
    """The papers apply their subspace step to 2-D weights only; norms, biases and scalars fall back."""
    return t.dim() == 2 and min(t.shape) > 1


def mean_vector(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    """Fallback for non-matrix tensors, as in the reference code: task arithmetic with weights 1/T."""
    return torch.stack(list(deltas)).mean(dim=0)


def svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD of `a`. LAPACK's divide-and-conquer SVD fails to converge on some ill-conditioned
    float32 inputs (a search met one: singular vectors of task vectors that are nearly zero in a layer);
    those are redone in float64, which converges. Inputs that converge get exactly the float32 result."""
    try:
        return torch.linalg.svd(a, full_matrices=False)
    except torch.linalg.LinAlgError:
        u, s, vh = torch.linalg.svd(a.double(), full_matrices=False)
        return u.to(a.dtype), s.to(a.dtype), vh.to(a.dtype)


def polar(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal factor U V^T of a = U S V^T: the nearest matrix with orthonormal columns (or
    rows), i.e. the orthogonal Procrustes solution the TSV and Iso-CTS papers use to decorrelate."""
    u, _, vh = svd(a)
    return u @ vh


def task_vector_method(
    name: str, *, version: str, params: type[SpectralParams] = SpectralParams
) -> Callable[[TaskVectorMerge], TaskVectorMerge]:
    """Register `merge(task_vectors, params) -> merged task vector` as the merge method `name`
    computing base + lambda * merged (every subspace method has this outer shape)."""

    def register(merge: TaskVectorMerge) -> TaskVectorMerge:
        merge_method(name, version=version, params=params, base="required")(
            named(name, merge.__doc__ or "", _base_plus_lambda, name, merge)
        )
        return merge

    return register


def _base_plus_lambda(name: str, merge: TaskVectorMerge, x: MergeInputs[Any, SpectralParams]) -> torch.Tensor:
    deltas = task_vectors(name, x.tensors, x.base)
    assert x.base is not None
    return x.base + x.params.lam * merge(deltas, x.params)
