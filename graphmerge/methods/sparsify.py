"""Sparsification of task vectors (TIES magnitude, DARE random, breadcrumbs outliers, DELLA magprune).

Selection semantics follow mergekit 0.1.5 (`mergekit/sparsify.py`): keep `k = int(density * n)`
elements (magnitude keeps at least one), density >= 1 returns the tensor untouched. mergekit sorts the
whole tensor to pick the top k; we find the k-th largest magnitude with a sampled band plus
a sort of only the elements in that band (about linear time), which gives the same set up to the order of exact ties.
Ties at the threshold are broken towards the lower flat index so results are deterministic.
"""

from __future__ import annotations

import math

import torch

# Below this many elements sorting outright is as fast as narrowing a band first.
_SMALL = 1 << 16
_SAMPLE = 1 << 16

RESCALE_NORMS = ("l1", "l2", "linf", "inverse")


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest element (1-based) of a flat tensor, as a 0-d tensor, in linear time.

    A random sample brackets the target quantile; only the elements inside that bracket (a few
    percent) are sorted. Sorting rather than kthvalue there: task vectors of bf16 models are full of
    exact ties, on which quickselect degrades badly. If the bracket misses, sort everything.
    """
    n = values.numel()
    if n <= _SMALL:
        return torch.sort(values).values[n - k]
    # Private fixed-seed generator: the sample only affects speed, never the result.
    g = torch.Generator(device=values.device)
    g.manual_seed(1234)
    idx = torch.randint(0, n, (_SAMPLE,), generator=g, device=values.device)
    sample = torch.sort(values[idx]).values
    q = (n - k) / n  # fraction of elements strictly below the answer (up to ties)
    pos = q * _SAMPLE
    margin = 5.0 * math.sqrt(_SAMPLE * q * (1 - q)) + 16
    lo_i, hi_i = math.floor(pos - margin), math.ceil(pos + margin)
    band = torch.ones_like(values, dtype=torch.bool)
    above = 0
    if hi_i < _SAMPLE:
        hi = sample[hi_i]
        torch.le(values, hi, out=band)
        above = n - int(band.sum())
    need = k - above
    if lo_i >= 0:
        if hi_i < _SAMPLE and bool(sample[lo_i] == sample[hi_i]):
            # The band is a single tied value (quantized deltas, zeros): no sort needed if it holds k.
            if 0 < need <= int((values == hi).sum()):
                return hi
        band &= values >= sample[lo_i]
    if need > 0:
        cand = values[band]
        if need <= cand.numel():
            return torch.sort(cand).values[cand.numel() - need]
    return torch.sort(values).values[n - k]


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask (same shape) with exactly k True at the largest values; ties -> lowest flat index."""
    flat = values.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(values, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    thr = kth_largest(flat, k)
    mask = flat > thr
    short = k - int(mask.sum())
    if short > 0:
        ties = torch.nonzero(flat == thr).squeeze(1)[:short]
        mask[ties] = True
    return mask.view(values.shape)


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor | None:
    """TIES trimming: keep the int(density*n) largest |delta| (at least one). None = keep all."""
    if density >= 1:
        return None
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta, dtype=torch.bool)
    k = max(1, int(density * delta.numel()))
    return top_k_mask(delta.abs(), k)


def outlier_mask(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor | None:
    """Model breadcrumbs: drop the gamma*n largest |delta| and the smallest, keeping int(density*n).

    As in mergekit, when density + gamma > 1 fewer outliers are dropped so the target count is kept,
    and density >= 1 keeps everything (gamma is then ignored)."""
    if density >= 1:
        return None
    n = delta.numel()
    target = int(density * n)
    n_bottom = max(0, n - target - int(gamma * n))
    n_top = n - n_bottom - target
    mag = delta.abs()
    keep = top_k_mask(mag, n - n_bottom)
    if n_top > 0:
        # Top-k sets are nested (same tie rule), so this removes exactly n_top kept elements.
        keep &= ~top_k_mask(mag, n_top)
    return keep


def random_mask(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor | None:
    """DARE: keep each element independently with probability `density`."""
    if density >= 1:
        return None
    return torch.rand(delta.shape, generator=generator, device=delta.device) < density


def della_probabilities(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MagPrune keep probabilities: linear in the magnitude rank within each row (dim 1; a 1-d
    tensor is one row), from density-epsilon (smallest) to density+epsilon (largest)."""
    t = delta.unsqueeze(0) if delta.dim() < 2 else delta
    order = torch.argsort(t.abs(), dim=1)
    ranks = torch.empty_like(t)
    shape = [1] * t.dim()
    shape[1] = t.shape[1]
    pos = torch.arange(t.shape[1], device=t.device, dtype=t.dtype).view(shape).expand_as(t)
    ranks.scatter_(1, order, pos)  # 0-based rank, i.e. mergekit's (rank - min_rank)
    span = t.shape[1] - 1
    # mergekit divides by zero for rows of length 1; we give such elements the mean probability.
    rank_norm = ranks / span if span > 0 else torch.full_like(ranks, 0.5)
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    return probs.view(delta.shape)


def tensor_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "l1":
        return t.abs().sum()
    if norm == "l2":
        return torch.linalg.vector_norm(t)
    return t.abs().max()


def rescale(
    masked: torch.Tensor,
    before: torch.Tensor | None,
    norm: str,
    keep_prob: torch.Tensor | float,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Restore, in place, the scale lost by dropping elements.

    l1/l2/linf: mergekit 0.1.5 -- multiply the whole tensor so its norm matches `before`, the norm of
    the unmasked tensor (skipped when either norm is below eps). inverse: the papers' rule
    (DARE 1/p, DELLA 1/p_i), unbiased per element."""
    if norm == "inverse":
        if isinstance(keep_prob, float):
            return masked.div_(keep_prob) if keep_prob > 0 else masked
        return masked.div_(keep_prob.clamp(min=eps))
    assert before is not None
    after = tensor_norm(masked, norm)
    if float(before) < eps or float(after) < eps:
        return masked
    return masked.mul_(before / after)
