"""WUDI: data-free merging by minimising interference (Cheng et al., "Whoever Started the Interference
Should End It", ICML 2025).

Per 2-D weight, the task vectors stand in for their tasks' input subspaces: the merged task vector
tau starts at the sum of the task vectors and takes `steps` Adam steps (`lr`) on

    L(tau) = sum_i || (tau - tau_i) tau_i^T ||_F^2 / || tau_i ||_F^2,

the interference tau adds on task i's own directions. The result is base + lambda * tau. Other
tensors take the mean task vector. It runs on the device the merge runs on (the executor's): this is
the method that gains most from a GPU.
Cost per matrix (m x n, r = min(m, n)): O(steps * T * m * n * r) -- the Gram of the narrower side is
formed once per task, then each step is T products of size m x n x r.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graphmerge.errors import MergeError
from graphmerge.methods._common import number
from graphmerge.methods._spectral import is_matrix, mean_vector, task_vectors
from graphmerge.methods.registry import ParamSpec, merge_method


def wudi_task_vector(deltas: Sequence[torch.Tensor], steps: int, lr: float) -> torch.Tensor:
    if not is_matrix(deltas[0]):
        return mean_vector(deltas)
    stacked = torch.stack(list(deltas))  # (T, m, n)
    norms = stacked.flatten(1).square().sum(dim=1).clamp_min(torch.finfo(stacked.dtype).tiny)
    # ||D tau_i^T||^2 = tr(D^T D tau_i^T tau_i): for tall matrices the n x n form is the cheaper one.
    wide = stacked.shape[1] <= stacked.shape[2]
    right_grams = None if wide else stacked.transpose(1, 2) @ stacked
    with torch.enable_grad():
        merged = torch.nn.Parameter(stacked.sum(dim=0).clone())
        opt = torch.optim.Adam([merged], lr=lr)
        for _ in range(steps):
            disturb = merged.unsqueeze(0) - stacked
            if right_grams is None:
                per_task = (disturb @ stacked.transpose(1, 2)).square().flatten(1).sum(dim=1)
            else:
                per_task = ((disturb.transpose(1, 2) @ disturb) * right_grams).flatten(1).sum(dim=1)
            loss = (per_task / norms).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return merged.detach()


@merge_method(
    "wudi",
    version="1",
    global_params={
        "steps": ParamSpec(300, int, 0, 100000, "Adam steps per matrix"),
        "lr": ParamSpec(1e-5, float, 0.0, 1.0, "Adam learning rate"),
        "lambda": ParamSpec(1.0, float, doc="scale of the merged task vector"),
    },
    base="required",
)
def wudi(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """WUDI: the task vector minimising interference with every task's own directions (Adam)."""
    deltas = task_vectors("wudi", tensors, base)
    steps = number("wudi", "steps", params.get("steps", 300), lo=0, hi=100000)
    if steps != int(steps):
        raise MergeError(f"wudi: parameter `steps` = {steps:g} must be a whole number")
    lr = number("wudi", "lr", params.get("lr", 1e-5), lo=0.0, hi=1.0)
    lam = number("wudi", "lambda", params.get("lambda", 1.0))
    assert base is not None
    return base + lam * wudi_task_vector(deltas, int(steps), lr)
