"""WUDI: data-free merging by minimising interference (Cheng et al., "Whoever Started the Interference
Should End It", ICML 2025).

Per 2-D weight, the task vectors stand in for their tasks' input subspaces: the merged task vector
tau starts at the sum of the task vectors and takes `steps` Adam steps (`lr`) on

    L(tau) = sum_i || (tau - tau_i) tau_i^T ||_F^2 / || tau_i ||_F^2,

the interference tau adds on task i's own directions. The result is base + lambda * tau. Other
tensors take the mean task vector. It runs on the device the merge runs on (the executor's): this is
the method that gains most from a GPU.
Cost per matrix (m x n): O(T m n^2) once, then O(m n^2) per step -- the loss's gradient is
2 (tau A - B) with A (n x n) and B (m x n) formed once from the task vectors, so a step is one matrix
product whatever the number of tasks. Memory: the n x n matrix A besides the task vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from graphmerge.lazy import torch
from graphmerge.methods._spectral import SpectralParams, is_matrix, mean_vector, task_vector_method
from graphmerge.methods.params import param


def wudi_task_vector(deltas: Sequence[torch.Tensor], steps: int, lr: float) -> torch.Tensor:
    if not is_matrix(deltas[0]):
        return mean_vector(deltas)
    # L(M) = sum_i ||(M - t_i) t_i^T||^2 / ||t_i||^2 has gradient 2 (M A - B) with
    # A = sum_i t_i^T t_i / ||t_i||^2 (n x n) and B = sum_i t_i t_i^T t_i / ||t_i||^2: formed once,
    # each step is then one m x n x n product and no autograd graph (T times cheaper than the loss).
    a = torch.zeros(deltas[0].shape[1], deltas[0].shape[1], dtype=deltas[0].dtype, device=deltas[0].device)
    b = torch.zeros_like(deltas[0])
    for t in deltas:
        gram = (t.T @ t).div_(t.square().sum().clamp_min(torch.finfo(t.dtype).tiny))
        a.add_(gram)
        b.addmm_(t, gram)
    # Adam exactly as torch.optim.Adam (defaults betas 0.9/0.999, eps 1e-8), written out: at these
    # sizes the optimizer's per-step overhead would otherwise dominate.
    merged = torch.stack(list(deltas)).sum(dim=0)
    m1, m2 = torch.zeros_like(merged), torch.zeros_like(merged)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        grad = torch.addmm(b, merged, a, alpha=2.0, beta=-2.0)
        m1.lerp_(grad, 1 - beta1)
        m2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (m2.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        merged.addcdiv_(m1, denom, value=-lr / (1 - beta1**step))
    return merged


@dataclass(frozen=True)
class WudiParams(SpectralParams):
    """Global parameters of wudi."""

    steps: int = param(300, ge=0, le=100000, doc="Adam steps per matrix")
    lr: float = param(1e-5, ge=0.0, le=1.0, doc="Adam learning rate")


@task_vector_method("wudi", version="2", params=WudiParams)
def wudi(deltas: list[torch.Tensor], params: WudiParams) -> torch.Tensor:
    """WUDI: the task vector minimising interference with every task's own directions (Adam)."""
    return wudi_task_vector(deltas, params.steps, params.lr)
