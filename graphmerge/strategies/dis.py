"""Depth-wise integration search (DIS): which models' layers are stacked at each depth position.

The first and last `fix_layers` layers come from `base` unchanged. For each remaining position i (layer i of
every model) the search picks a subset of the models, their order, and an output scale:
  layer{i}_use_{model}   0/1: stack this model's layer i here
  layer{i}_order         permutation "a,b,c" of all models; the chosen ones are stacked in this order
                         (active only when at least two models are chosen)
  layer{i}_scale         residual-branch scale of the last layer stacked at this position (as in
                         auto-merge-llm, earlier ones keep 1.0)
If nothing is chosen, `remain_base` keeps base's layer i (with the position's scale); otherwise the position
is dropped. A config whose total depth exceeds `max_layers` (or is 0) is infeasible: `is_feasible` says so
and the driver scores it as worst without evaluating.

All models (and base) must have the same layer count, since position i takes layer i of each.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations, permutations
from typing import Any, Literal

from pydantic import Field, model_validator

from graphmerge.search.space import AllOf, AnyOf, Categorical, Condition, Equals, Float, Param, SearchSpace

from .base import FINAL_NODE, ModelInfo, StrategySettings, checked_config, strategy

# A categorical over n! orders stops being searchable long before this; it also bounds the space size.
MAX_MODELS = 5


class DisSettings(StrategySettings):
    # auto-merge-llm exp_config/dis.yaml: fix_layers 0, remain_base true, scale in [0, 2] default 1.
    base: str
    fix_layers: int = Field(0, ge=0)
    max_layers: int | None = Field(None, ge=1)  # None: no bound (the original used 50 for 40-layer models)
    remain_base: bool = True
    scale_range: tuple[float, float] = (0.0, 2.0)
    # Where embeddings, final norm, head and the fixed first/last layers come from. "search" makes it
    # a categorical `ends` over base and the models, so the initial design can hold every source model
    # exactly as it is (the search then never ends worse than its best input); "base" is the original's.
    ends: Literal["base", "search"] = "search"

    @model_validator(mode="after")
    def _check(self):
        if len(self.models) > MAX_MODELS:
            raise ValueError(f"dis supports at most {MAX_MODELS} models (orders are a categorical of n!)")
        lo, hi = self.scale_range
        if not lo < hi or not lo <= 1.0 <= hi:
            raise ValueError(
                f"scale_range must be [low, high] with low < high and containing 1.0, got {[lo, hi]}"
            )
        return self


def positions(settings: DisSettings, model_info: ModelInfo) -> tuple[int, list[int]]:
    n = model_info.common_layers([settings.base, *settings.models], where="dis")
    if 2 * settings.fix_layers >= n:
        from graphmerge.errors import SpecError

        raise SpecError(
            f"fix_layers {settings.fix_layers} leaves no searchable layer of {n}", where="dis.fix_layers"
        )
    return n, list(range(settings.fix_layers, n - settings.fix_layers))


def _order_items(models: list[str]) -> list[str]:
    return [",".join(p) for p in permutations(models)]


def build_space(settings: DisSettings, model_info: ModelInfo) -> SearchSpace:
    _, pos = positions(settings, model_info)
    params: list[Param] = []
    conditions: dict[str, Condition] = {}
    if settings.ends == "search":
        params.append(Categorical("ends", (settings.base, *settings.models), default=settings.base))
    for i in pos:
        uses = {m: f"layer{i}_use_{m}" for m in settings.models}
        params += [Categorical(name, (0, 1), default=0) for name in uses.values()]
        params.append(Float(f"layer{i}_scale", *settings.scale_range, default=1.0))
        if len(settings.models) > 1:
            order = f"layer{i}_order"
            params.append(Categorical(order, tuple(_order_items(settings.models))))
            both = [
                AllOf((Equals(uses[a], 1), Equals(uses[b], 1))) for a, b in combinations(settings.models, 2)
            ]
            conditions[order] = both[0] if len(both) == 1 else AnyOf(tuple(both))
    return SearchSpace(tuple(params), conditions)


def initial_configs(settings: DisSettings, model_info: ModelInfo) -> list[dict[str, Any]]:
    """Each model alone at every searchable position, scale 1: with `ends: search` exactly that source
    model (and the base itself first); with `ends: base`, that model inside base's fixed ends."""
    _, pos = positions(settings, model_info)
    out = []
    searched_ends = settings.ends == "search"
    if searched_ends and settings.remain_base:
        out.append(
            {
                "ends": settings.base,
                **{f"layer{i}_scale": 1.0 for i in pos},
                **{f"layer{i}_use_{m}": 0 for i in pos for m in settings.models},
            }
        )
    for chosen in settings.models:
        cfg: dict[str, Any] = {"ends": chosen} if searched_ends else {}
        for i in pos:
            cfg[f"layer{i}_scale"] = 1.0
            for m in settings.models:
                cfg[f"layer{i}_use_{m}"] = int(m == chosen)
        out.append(cfg)
    return out


def _stack(cfg: Mapping[str, Any], i: int, settings: DisSettings) -> list[str]:
    chosen = [m for m in settings.models if cfg.get(f"layer{i}_use_{m}") == 1]
    if len(chosen) > 1:
        order = str(cfg[f"layer{i}_order"]).split(",")
        chosen = [m for m in order if m in chosen]
    if not chosen and settings.remain_base:
        chosen = [settings.base]
    return chosen


def ends_model(cfg: Mapping[str, Any], settings: DisSettings) -> str:
    return str(cfg.get("ends", settings.base)) if settings.ends == "search" else settings.base


def slices(cfg: Mapping[str, Any], settings: DisSettings, model_info: ModelInfo) -> list[dict[str, Any]]:
    n, pos = positions(settings, model_info)
    out: list[dict[str, Any]] = []
    ends = ends_model(cfg, settings)
    fixed = [*range(settings.fix_layers)]
    for i in fixed:
        out.append({"model": ends, "layers": [i, i + 1], "scale": 1.0})
    for i in pos:
        stack = _stack(cfg, i, settings)
        for k, m in enumerate(stack):
            scale = float(cfg[f"layer{i}_scale"]) if k == len(stack) - 1 else 1.0
            out.append({"model": m, "layers": [i, i + 1], "scale": scale})
    for i in range(n - settings.fix_layers, n):
        out.append({"model": ends, "layers": [i, i + 1], "scale": 1.0})
    return out


def depth(config: Mapping[str, Any], settings: DisSettings, model_info: ModelInfo) -> int:
    return len(slices(config, settings, model_info))


def is_feasible(config: Mapping[str, Any], settings: DisSettings, model_info: ModelInfo) -> bool:
    d = depth(config, settings, model_info)
    return d >= 1 and (settings.max_layers is None or d <= settings.max_layers)


@strategy(
    "dis",
    settings=DisSettings,
    build_space=build_space,
    initial_configs=initial_configs,
    is_feasible=is_feasible,
)
def trial_nodes(
    config: Mapping[str, Any], settings: DisSettings, model_info: ModelInfo
) -> dict[str, dict[str, Any]]:
    cfg = checked_config(build_space(settings, model_info), config, strategy="dis")
    return {
        FINAL_NODE: {
            "op": "slice",
            "embed_from": ends_model(cfg, settings),
            "slices": slices(cfg, settings, model_info),
        }
    }
