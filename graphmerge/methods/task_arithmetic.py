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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graphmerge.errors import MergeError
from graphmerge.lazy import torch
from graphmerge.methods import sparsify as sp
from graphmerge.methods._common import (
    check_shapes,
    choice,
    flag,
    generator_for,
    number,
    per_model,
    require_base,
)
from graphmerge.methods.registry import ParamSpec, merge_method

CONSENSUS = ("none", "sum", "count")


@dataclass(frozen=True)
class Variant:
    name: str
    sparsify: str | None  # None | "magnitude" | "random" | "outliers" | "della"
    consensus: str  # default consensus_method
    normalize: bool  # default `normalize`
    rescale: bool  # default `rescale`
    doc: str


VARIANTS = (
    Variant(
        "task_arithmetic", None, "none", False, False, "Task arithmetic: base + sum of weighted task vectors."
    ),
    Variant("ties", "magnitude", "sum", True, False, "TIES: trim by magnitude, elect sign, disjoint merge."),
    Variant(
        "dare_linear", "random", "none", False, True, "DARE: random drop + rescale, then task arithmetic."
    ),
    Variant("dare_ties", "random", "sum", False, True, "DARE with TIES sign consensus."),
    Variant(
        "breadcrumbs", "outliers", "none", False, False, "Model breadcrumbs: drop small and outlier deltas."
    ),
    Variant(
        "breadcrumbs_ties", "outliers", "sum", False, False, "Model breadcrumbs with TIES sign consensus."
    ),
    Variant("della", "della", "sum", True, True, "DELLA: magnitude-ranked random drop with TIES consensus."),
    Variant("della_linear", "della", "none", False, True, "DELLA drop followed by plain task arithmetic."),
)


def _model_specs(v: Variant) -> dict[str, ParamSpec]:
    specs = {
        "weight": ParamSpec(None, float, doc="scale of this model's task vector (required, as in mergekit)"),
        "density": ParamSpec(1.0, float, 0.0, 1.0, "fraction of the task vector kept"),
    }
    if v.sparsify == "outliers":
        specs["gamma"] = ParamSpec(0.01, float, 0.0, 1.0, "fraction of largest-magnitude deltas removed")
    if v.sparsify == "della":
        specs["epsilon"] = ParamSpec(0.15, float, 0.0, 1.0, "keep probability spread: density +/- epsilon")
    return specs


def _global_specs(v: Variant) -> dict[str, ParamSpec]:
    return {
        "normalize": ParamSpec(v.normalize, bool, doc="divide by the sum of (agreeing) weights"),
        "rescale": ParamSpec(v.rescale, bool, doc="rescale sparsified task vectors (see rescale_norm)"),
        "lambda": ParamSpec(1.0, float, doc="scale of the merged task vector"),
        "consensus_method": ParamSpec(v.consensus, str, doc="sign election: none | sum (TIES) | count"),
        "rescale_norm": ParamSpec("l1", str, doc="l1 (mergekit) | l2 | linf | inverse (papers: 1/p)"),
        "normalize_by": ParamSpec("weight", str, doc="weight (mergekit) | count (TIES paper disjoint mean)"),
        "int8_mask": ParamSpec(False, bool, doc="accepted for mergekit configs; no effect on results"),
    }


def _sparsify(
    v: Variant,
    delta: torch.Tensor,
    p: Mapping[str, Any],
    i: int,
    rescale_norm: str | None,
    generator: torch.Generator | None,
) -> None:
    """Sparsify one task vector in place (delta is a row of the stacked buffer)."""
    who = f" of model {i}"
    density = number(v.name, "density", p.get("density", 1.0), lo=0.0, hi=1.0, who=who)
    keep_prob: torch.Tensor | float = density
    if v.sparsify == "magnitude":
        mask = sp.magnitude_mask(delta, density)
    elif v.sparsify == "outliers":
        gamma = number(v.name, "gamma", p.get("gamma", 0.01), lo=0.0, hi=1.0, who=who)
        mask = sp.outlier_mask(delta, density, gamma)
    elif v.sparsify == "random":
        mask = sp.random_mask(delta, density, generator_for(delta, generator))
    else:  # della
        eps = number(v.name, "epsilon", p.get("epsilon", 0.15), lo=0.0, hi=1.0, who=who)
        if density >= 1:
            return
        if density <= 0:
            delta.zero_()
            return
        if density + eps >= 1 or density - eps <= 0:
            raise MergeError(
                f"{v.name}: model {i} density {density:g} +/- epsilon {eps:g} must stay inside (0, 1)",
                fix="lower epsilon or move density away from 0 and 1",
            )
        keep_prob = sp.della_probabilities(delta, density, eps)
        g = generator_for(delta, generator)
        mask = torch.rand(delta.shape, generator=g, device=delta.device) < keep_prob
    if mask is None:
        return
    use_norm = rescale_norm is not None and rescale_norm != "inverse"
    before = sp.tensor_norm(delta, rescale_norm) if use_norm else None
    delta.mul_(mask)  # one pass; faster than masked_fill_ on CPU
    if rescale_norm is not None:
        sp.rescale(delta, before, rescale_norm, keep_prob)


def generalized_task_arithmetic(
    v: Variant,
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    generator: torch.Generator | None,
) -> torch.Tensor:
    base = require_base(v.name, base)
    check_shapes(v.name, tensors, base)
    if not tensors:
        return base.clone()
    weights = per_model(v.name, "weight", model_params)
    # Checked even where unused (task_arithmetic) so a bad value never passes silently.
    per_model(v.name, "density", [{"density": p.get("density", 1.0)} for p in model_params], lo=0.0, hi=1.0)
    consensus = choice(v.name, "consensus_method", params.get("consensus_method", v.consensus), CONSENSUS)
    normalize = flag(v.name, "normalize", params.get("normalize", v.normalize))
    do_rescale = flag(v.name, "rescale", params.get("rescale", v.rescale))
    norm = choice(v.name, "rescale_norm", params.get("rescale_norm", "l1"), sp.RESCALE_NORMS)
    normalize_by = choice(v.name, "normalize_by", params.get("normalize_by", "weight"), ("weight", "count"))
    lam = number(v.name, "lambda", params.get("lambda", 1.0))

    # One (N, *shape) buffer: deltas are written, sparsified and weighted in place.
    deltas = torch.empty((len(tensors), *base.shape), dtype=base.dtype, device=base.device)
    for i, x in enumerate(tensors):
        torch.sub(x, base, out=deltas[i])
        if v.sparsify is not None:
            _sparsify(v, deltas[i], model_params[i], i, norm if do_rescale else None, generator)
    w = torch.tensor(weights, dtype=deltas.dtype, device=deltas.device).view(-1, *([1] * base.dim()))
    deltas.mul_(w)

    if consensus == "none":
        mixed = deltas.sum(dim=0)
        if normalize:
            total = sum(weights)
            mixed /= total if abs(total) >= 1e-8 else 1.0
    else:
        # Elected sign: sign of the summed weighted deltas (sum) or of the vote count (count); ties -> +.
        votes = deltas.sum(dim=0) if consensus == "sum" else torch.sign(deltas).sum(dim=0)
        elected = torch.where(votes >= 0, 1.0, -1.0)
        del votes
        # mergekit keeps sign(d) == elected; zeros never agree. Zero the rest in place, so afterwards
        # "agrees" is simply "is nonzero" (cheaper than carrying a mask through broadcasting wheres).
        deltas.mul_(torch.mul(deltas, elected) > 0)
        del elected
        mixed = deltas.sum(dim=0)
        if normalize:
            agree = deltas != 0
            if normalize_by == "count":
                divisor = agree.sum(dim=0, dtype=deltas.dtype)
            else:
                divisor = torch.zeros_like(mixed)
                for i, wt in enumerate(weights):
                    divisor.add_(agree[i].to(deltas.dtype), alpha=wt)
            del agree
            mixed /= divisor.add_(divisor == 0)  # no agreeing model: divide by 1, not 0
    if lam != 1.0:
        mixed *= lam
    return mixed.add_(base)


def _register(v: Variant) -> None:
    def fn(
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        model_params: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        return generalized_task_arithmetic(v, tensors, base, model_params, params, generator)

    fn.__doc__ = v.doc
    fn.__name__ = fn.__qualname__ = v.name
    merge_method(
        v.name,
        version="1",
        model_params=_model_specs(v),
        global_params=_global_specs(v),
        base="required",
        stochastic=v.sparsify in ("random", "della"),
    )(fn)


for _variant in VARIANTS:
    _register(_variant)
