"""Pieces shared by the subspace methods (TSV-M, Iso-C, Iso-CTS, WUDI): task vectors, the polar
(orthogonal Procrustes) factor, and the fallback for tensors that are not matrices."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from graphmerge.lazy import torch
from graphmerge.methods._common import check_shapes, number, require_base
from graphmerge.methods.registry import ParamSpec, merge_method

LAMBDA = ParamSpec(1.0, float, doc="scale of the merged task vector")
TaskVectorMerge = Callable[[str, list["torch.Tensor"], Mapping[str, Any]], "torch.Tensor"]


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


def polar(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal factor U V^T of a = U S V^T: the nearest matrix with orthonormal columns (or
    rows), i.e. the orthogonal Procrustes solution the TSV and Iso-CTS papers use to decorrelate."""
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def task_vector_method(
    name: str, *, version: str, global_params: Mapping[str, ParamSpec], doc: str
) -> Callable[[TaskVectorMerge], TaskVectorMerge]:
    """Register `merge(name, task_vectors, params) -> merged task vector` as the merge method `name`
    computing base + lambda * merged (every subspace method has this outer shape)."""

    def register(merge: TaskVectorMerge) -> TaskVectorMerge:
        def fn(
            tensors: Sequence[torch.Tensor],
            base: torch.Tensor | None,
            model_params: Sequence[Mapping[str, Any]],
            params: Mapping[str, Any],
            generator: torch.Generator | None,
        ) -> torch.Tensor:
            deltas = task_vectors(name, tensors, base)
            lam = number(name, "lambda", params.get("lambda", 1.0))
            assert base is not None
            return base + lam * merge(name, deltas, params)

        fn.__doc__ = doc
        fn.__name__ = fn.__qualname__ = name
        merge_method(
            name, version=version, global_params={**global_params, "lambda": LAMBDA}, base="required"
        )(fn)
        return merge

    return register
