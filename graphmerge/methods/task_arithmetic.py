"""The task-arithmetic family: task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs,
breadcrumbs_ties, della, della_linear.

Like mergekit's GeneralizedTaskArithmeticMerge, every method is one recipe:
  1. task vectors  d_i = x_i - base
  2. sparsify each d_i (none | magnitude | random | magnitude_outliers | della), optionally rescaled
  3. weight them   d_i *= weight_i
  4. sign consensus (TIES): keep the entries whose sign matches the elected sign
  5. sum, optionally divide by the sum of the (agreeing) weights, multiply by lambda, add to base.
A variant only chooses the sparsifier, the default consensus and the normalize/rescale defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal

from graphmerge.lazy import torch
from graphmerge.methods import sparsify as sp
from graphmerge.methods._common import check_shapes, generator_for, require_base
from graphmerge.methods.params import MethodParams, param, with_defaults
from graphmerge.methods.registry import MergeInputs, merge_method, named

Consensus = Literal["none", "sum", "count"]


@dataclass(frozen=True)
class TaskVectorWeight(MethodParams):
    """Per model of the task-arithmetic family: its task vector's weight and kept density."""

    weight: float = param(doc="scale of this model's task vector (required, as in mergekit)")
    density: float = param(1.0, ge=0.0, le=1.0, doc="fraction of the task vector kept")


@dataclass(frozen=True)
class BreadcrumbsWeight(TaskVectorWeight):
    """Per model of breadcrumbs: also the share of outliers dropped."""

    gamma: float = param(0.01, ge=0.0, le=1.0, doc="fraction of largest-magnitude deltas removed")


@dataclass(frozen=True)
class DellaWeight(TaskVectorWeight):
    """Per model of DELLA: also the spread of keep probabilities around density."""

    epsilon: float = param(0.15, ge=0.0, le=1.0, doc="keep probability spread: density +/- epsilon")

    def check(self) -> str | None:
        d, eps = self.density, self.epsilon
        if 0 < d < 1 and (d + eps >= 1 or d - eps <= 0):
            return (
                f"density {d:g} +/- epsilon {eps:g} must stay inside (0, 1): "
                "lower epsilon or move density away from 0 and 1"
            )
        return None


@dataclass(frozen=True)
class TaskArithmeticParams(MethodParams):
    """Defaults of normalize, rescale and consensus_method are the variant's (`Variant`)."""

    normalize: bool = param(False, doc="divide by the sum of (agreeing) weights")
    rescale: bool = param(False, doc="rescale sparsified task vectors (see rescale_norm)")
    lam: float = param(1.0, name="lambda", doc="scale of the merged task vector")
    consensus_method: Consensus = param("none", doc="sign election: none | sum (TIES) | count")
    rescale_norm: Literal["l1", "l2", "linf", "inverse"] = param(
        "l1", doc="l1 (mergekit) | l2 | linf | inverse (papers: 1/p)"
    )
    normalize_by: Literal["weight", "count"] = param(
        "weight", doc="weight (mergekit) | count (TIES paper disjoint mean)"
    )
    int8_mask: bool = param(False, doc="accepted for mergekit configs; no effect on results")


if TYPE_CHECKING:
    # A drop rule: (task vector, its model's parameters, generator) -> (keep mask or None = keep all,
    # keep probability for `inverse` rescaling).
    Drop = Callable[
        [torch.Tensor, TaskVectorWeight, torch.Generator | None],
        tuple[torch.Tensor | None, torch.Tensor | float],
    ]


def _magnitude(delta: torch.Tensor, p: TaskVectorWeight, generator: torch.Generator | None):
    return sp.magnitude_mask(delta, p.density), p.density


def _random(delta: torch.Tensor, p: TaskVectorWeight, generator: torch.Generator | None):
    return sp.random_mask(delta, p.density, generator_for(delta, generator)), p.density


def _outliers(delta: torch.Tensor, p: BreadcrumbsWeight, generator: torch.Generator | None):
    return sp.outlier_mask(delta, p.density, p.gamma), p.density


def _della(delta: torch.Tensor, p: DellaWeight, generator: torch.Generator | None):
    if p.density >= 1:
        return None, p.density
    if p.density <= 0:
        delta.zero_()
        return None, p.density
    keep_prob = sp.della_probabilities(delta, p.density, p.epsilon)
    g = generator_for(delta, generator)
    return torch.rand(delta.shape, generator=g, device=delta.device) < keep_prob, keep_prob


@dataclass(frozen=True)
class Sparsifier:
    per_model: type[TaskVectorWeight]
    drop: Drop | None = None
    stochastic: bool = False


class Sparsify(Enum):
    """Step 2 of the recipe: what each task vector loses, and the per-model parameters it reads."""

    NONE = Sparsifier(per_model=TaskVectorWeight)
    MAGNITUDE = Sparsifier(per_model=TaskVectorWeight, drop=_magnitude)
    RANDOM = Sparsifier(per_model=TaskVectorWeight, drop=_random, stochastic=True)
    OUTLIERS = Sparsifier(per_model=BreadcrumbsWeight, drop=_outliers)
    DELLA = Sparsifier(per_model=DellaWeight, drop=_della, stochastic=True)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One method of the family: its drop rule and the defaults it gives the global parameters."""

    name: str
    sparsify: Sparsify
    doc: str
    consensus: Consensus = "none"  # default consensus_method
    normalize: bool = False  # default `normalize`
    rescale: bool = False  # default `rescale`

    def params(self) -> type[TaskArithmeticParams]:
        return with_defaults(
            TaskArithmeticParams,
            "".join(part.title() for part in self.name.split("_")) + "Params",
            normalize=self.normalize,
            rescale=self.rescale,
            consensus_method=self.consensus,
        )


# fmt: off
VARIANTS = (
    Variant(name="task_arithmetic", sparsify=Sparsify.NONE,
            doc="Task arithmetic: base + sum of weighted task vectors."),
    Variant(name="ties", sparsify=Sparsify.MAGNITUDE, consensus="sum", normalize=True,
            doc="TIES: trim by magnitude, elect sign, disjoint merge."),
    Variant(name="dare_linear", sparsify=Sparsify.RANDOM, rescale=True,
            doc="DARE: random drop + rescale, then task arithmetic."),
    Variant(name="dare_ties", sparsify=Sparsify.RANDOM, consensus="sum", rescale=True,
            doc="DARE with TIES sign consensus."),
    Variant(name="breadcrumbs", sparsify=Sparsify.OUTLIERS,
            doc="Model breadcrumbs: drop small and outlier deltas."),
    Variant(name="breadcrumbs_ties", sparsify=Sparsify.OUTLIERS, consensus="sum",
            doc="Model breadcrumbs with TIES sign consensus."),
    Variant(name="della", sparsify=Sparsify.DELLA, consensus="sum", normalize=True, rescale=True,
            doc="DELLA: magnitude-ranked random drop with TIES consensus."),
    Variant(name="della_linear", sparsify=Sparsify.DELLA, rescale=True,
            doc="DELLA drop followed by plain task arithmetic."),
)
# fmt: on


def _sparsify(
    drop: Drop,
    delta: torch.Tensor,
    p: TaskVectorWeight,
    rescale_norm: str | None,
    generator: torch.Generator | None,
) -> None:
    """Sparsify one task vector in place (delta is a row of the stacked buffer)."""
    mask, keep_prob = drop(delta, p, generator)
    if mask is None:
        return
    use_norm = rescale_norm is not None and rescale_norm != "inverse"
    before = sp.tensor_norm(delta, rescale_norm) if use_norm else None
    delta.mul_(mask)  # one pass; faster than masked_fill_ on CPU
    if rescale_norm is not None:
        sp.rescale(delta, before, rescale_norm, keep_prob)


def generalized_task_arithmetic(
    v: Variant, x: MergeInputs[TaskVectorWeight, TaskArithmeticParams]
) -> torch.Tensor:
    base = require_base(v.name, x.base)
    check_shapes(v.name, x.tensors, base)
    if not x.tensors:
        return base.clone()
    p = x.params
    weights = [m.weight for m in x.models]
    drop = v.sparsify.value.drop

    # One (N, *shape) buffer: deltas are written, sparsified and weighted in place.
    deltas = torch.empty((len(x.tensors), *base.shape), dtype=base.dtype, device=base.device)
    for i, t in enumerate(x.tensors):
        torch.sub(t, base, out=deltas[i])
        if drop is not None:
            _sparsify(drop, deltas[i], x.models[i], p.rescale_norm if p.rescale else None, x.generator)
    w = torch.tensor(weights, dtype=deltas.dtype, device=deltas.device).view(-1, *([1] * base.dim()))
    deltas.mul_(w)

    if p.consensus_method == "none":
        mixed = deltas.sum(dim=0)
        if p.normalize:
            total = sum(weights)
            mixed /= total if abs(total) >= 1e-8 else 1.0
    else:
        # Elected sign: sign of the summed weighted deltas (sum) or of the vote count (count); ties -> +.
        votes = deltas.sum(dim=0) if p.consensus_method == "sum" else torch.sign(deltas).sum(dim=0)
        elected = torch.where(votes >= 0, 1.0, -1.0)
        del votes
        # mergekit keeps sign(d) == elected; zeros never agree. Zero the rest in place, so afterwards
        # "agrees" is simply "is nonzero" (cheaper than carrying a mask through broadcasting wheres).
        deltas.mul_(torch.mul(deltas, elected) > 0)
        del elected
        mixed = deltas.sum(dim=0)
        if p.normalize:
            agree = deltas != 0
            if p.normalize_by == "count":
                divisor = agree.sum(dim=0, dtype=deltas.dtype)
            else:
                divisor = torch.zeros_like(mixed)
                for i, wt in enumerate(weights):
                    divisor.add_(agree[i].to(deltas.dtype), alpha=wt)
            del agree
            mixed /= divisor.add_(divisor == 0)  # no agreeing model: divide by 1, not 0
    if p.lam != 1.0:
        mixed *= p.lam
    return mixed.add_(base)


for _v in VARIANTS:
    merge_method(
        _v.name,
        version="1",
        per_model=_v.sparsify.value.per_model,
        params=_v.params(),
        base="required",
        stochastic=_v.sparsify.value.stochastic,
    )(named(_v.name, _v.doc, generalized_task_arithmetic, _v))
