"""Layer pruning search: which `remove` layers of `base` to drop, optionally replacing kept layers by merges.

Space:
  remove_{j}, j < k     integer layer index in the candidates (all but the first/last `fix_layers` layers)
  layer{i}_use_{model}  0/1 (only with `replace: true`): replace kept layer i by a task-arithmetic merge of
                        the chosen models' layer i over base's
  layer{i}_lambda       task-vector scale of that merge (active iff any model is chosen for layer i)

Exactly k distinct layers are always removed: slot j takes its value, and if an earlier slot already took that
layer it moves to the next free candidate (cyclically). auto-merge-llm forbade duplicate pairs instead, with
O(k^2 * layers) forbidden clauses; those make sampling slow and reject a large share of random configs, while
the repair keeps every config valid (several configs mapping to one removal set is harmless for the search).

One chosen model with lambda 1 copies that model's layer (auto-merge-llm's single-candidate case); several
use task arithmetic as in the original. Trial subgraph: `model` = prune of `base`, or, with replacements, a
`replaced` slice node (base's layers with merged layers spliced in) pruned into `model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from graphmerge.errors import SpecError
from graphmerge.search.space import AnyOf, Categorical, Condition, Equals, Float, Integer, Param, SearchSpace

from .base import (
    FINAL_NODE,
    LAMBDA,
    WEIGHT,
    ModelInfo,
    SearchOutcome,
    StrategyReport,
    StrategySettings,
    checked_config,
    strategy,
)


class PruneSettings(StrategySettings):
    base: str
    models: list[str] = Field(default_factory=list)  # replacement sources (only used with replace: true)
    remove: int | None = Field(None, ge=0)
    target_layers: int | None = Field(None, ge=1)  # auto-merge-llm's `layers`: remove = num_layers - target
    fix_layers: int = Field(1, ge=0)
    replace: bool = False
    lambda_range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _check(self):
        if (self.remove is None) == (self.target_layers is None):
            raise ValueError(
                "give exactly one of `remove` (layers to drop) or `target_layers` (depth to keep)"
            )
        if self.replace and not self.models:
            raise ValueError("replace: true needs `models` to take replacement layers from")
        lo, hi = self.lambda_range
        if not lo < hi:
            raise ValueError(f"lambda_range must be [low, high] with low < high, got {[lo, hi]}")
        return self


def layout(settings: PruneSettings, model_info: ModelInfo) -> tuple[int, list[int], int]:
    """(num_layers, removal candidates, k)."""
    refs = [settings.base, *settings.models] if settings.replace else [settings.base]
    n = model_info.common_layers(refs, where="prune")
    cands = list(range(settings.fix_layers, n - settings.fix_layers))
    k = settings.remove if settings.remove is not None else n - int(settings.target_layers or 0)
    if k < 0:
        raise SpecError(
            f"target_layers {settings.target_layers} exceeds the {n} layers of base", where="prune"
        )
    if k > len(cands):
        raise SpecError(
            f"cannot remove {k} layers: only {len(cands)} of {n} are candidates (fix_layers {settings.fix_layers})",
            where="prune",
        )
    if k == 0 and not settings.replace:
        raise SpecError("nothing to search: remove 0 layers without replace", where="prune")
    return n, cands, k


def _spread(cands: list[int], k: int) -> list[int]:
    """k candidates evenly spread over the list (deterministic defaults and initial configs)."""
    if k == 0:
        return []
    step = len(cands) / k
    return [cands[int(step * j + step / 2)] for j in range(k)]


def build_space(settings: PruneSettings, model_info: ModelInfo) -> SearchSpace:
    n, cands, k = layout(settings, model_info)
    params: list[Param] = [
        Integer(f"remove_{j}", cands[0], cands[-1], default=default)
        if len(cands) > 1
        else Categorical(f"remove_{j}", (cands[0],))
        for j, default in enumerate(_spread(cands, k))
    ]
    conditions: dict[str, Condition] = {}
    if settings.replace:
        lo, hi = settings.lambda_range
        for i in cands:
            uses = [f"layer{i}_use_{m}" for m in settings.models]
            lam = f"layer{i}_lambda"
            params += [Categorical(u, (0, 1), default=0) for u in uses]
            params.append(Float(lam, lo, hi, default=min(max(1.0, lo), hi)))
            conds = tuple(Equals(u, 1) for u in uses)
            conditions[lam] = conds[0] if len(conds) == 1 else AnyOf(conds)
    return SearchSpace(tuple(params), conditions)


def removed_layers(cfg: Mapping[str, Any], settings: PruneSettings, model_info: ModelInfo) -> list[int]:
    _, cands, k = layout(settings, model_info)
    taken: list[int] = []
    for j in range(k):
        idx = cands.index(int(cfg[f"remove_{j}"]))
        while cands[idx] in taken:
            idx = (idx + 1) % len(cands)
        taken.append(cands[idx])
    return sorted(taken)


def initial_configs(settings: PruneSettings, model_info: ModelInfo) -> list[dict[str, Any]]:
    """Plain removals, no replacements: the deepest candidates, an even spread, and the middle block
    (auto-merge-llm seeded its search with similar hand-made removal patterns)."""
    _, cands, k = layout(settings, model_info)
    if k == 0:
        return []
    mid = len(cands) // 2
    start = max(0, min(mid - k // 2, len(cands) - k))
    patterns = [cands[-k:], _spread(cands, k), cands[start : start + k]]
    out, seen = [], set()
    for p in patterns:
        if tuple(p) in seen:
            continue
        seen.add(tuple(p))
        cfg: dict[str, Any] = {f"remove_{j}": v for j, v in enumerate(p)}
        if settings.replace:
            for i in cands:
                for m in settings.models:
                    cfg[f"layer{i}_use_{m}"] = 0
        out.append(cfg)
    return out


def report(settings: PruneSettings, outcome: SearchOutcome) -> StrategyReport:
    """How much of the unpruned base model's score the best pruned model keeps."""
    reference = outcome.sources[settings.base]
    kept = outcome.best_score / reference["score"] if reference["score"] else None
    share = f"{kept:.1%} of its score" if kept is not None else "an undefined share (unpruned score 0)"
    return StrategyReport(
        summary={
            "unpruned": {"scores": reference["scores"], "score": reference["score"], "score_kept": kept}
        },
        lines=(f"unpruned {reference['scores']}; the pruned model keeps {share}",),
    )


@strategy(
    "prune", settings=PruneSettings, build_space=build_space, initial_configs=initial_configs, report=report
)
def trial_nodes(
    config: Mapping[str, Any], settings: PruneSettings, model_info: ModelInfo
) -> dict[str, dict[str, Any]]:
    cfg = checked_config(build_space(settings, model_info), config, strategy="prune")
    n, cands, _ = layout(settings, model_info)
    removed = removed_layers(cfg, settings, model_info)
    replaced: dict[int, dict[str, Any]] = {}
    if settings.replace:
        for i in cands:
            if i in removed:
                continue  # replacing a layer that is dropped anyway would only cost merge time
            chosen = [m for m in settings.models if cfg.get(f"layer{i}_use_{m}") == 1]
            if chosen:
                replaced[i] = {
                    "method": "task_arithmetic",
                    "base": settings.base,
                    "models": {m: {WEIGHT: 1.0} for m in chosen},
                    "params": {LAMBDA: float(cfg[f"layer{i}_lambda"])},
                }
    if not replaced:
        return {FINAL_NODE: {"op": "prune", "input": settings.base, "remove": removed}}

    slices: list[dict[str, Any]] = []
    start = 0
    for i in sorted(replaced):
        if start < i:
            slices.append({"model": settings.base, "layers": [start, i]})
        slices.append({"merge": replaced[i], "layers": [i, i + 1]})
        start = i + 1
    if start < n:
        slices.append({"model": settings.base, "layers": [start, n]})
    nodes: dict[str, dict[str, Any]] = {
        "replaced": {"op": "slice", "embed_from": settings.base, "slices": slices},
    }
    if removed:
        nodes[FINAL_NODE] = {"op": "prune", "input": "replaced", "remove": removed}
    else:
        nodes[FINAL_NODE] = nodes.pop("replaced")
    return nodes
