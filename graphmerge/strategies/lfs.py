"""Layer-wise fusion search (LFS): per group of layers, which merge method and with which parameters.

Space (per group g of `layer_granularity` consecutive layers; the last group may be shorter):
  g{g}_method                      categorical over `methods`
  g{g}_{set}_linear_{model}        linear weight per model            (active iff method == linear)
  g{g}_{set}_task_arithmetic_lambda  task-vector scale                (iff task_arithmetic)
  g{g}_{set}_ties_density / _lambda  kept fraction, task-vector scale (iff ties)
  g{g}_slerp_pair                  which two models slerp joins, "a,b" (iff slerp and > 2 models)
  g{g}_{set}_slerp_t               0 = first of the pair, 1 = second (iff slerp)
where {set} runs over `param_sets` (tensor-name filters, e.g. attention vs MLP) plus `other` for the rest.
The methods tsv_m, iso_c, iso_cts, wudi, regmean and fisher add the parameters listed in
`method_choices`; regmean and fisher need `calibration:` (the statistics node's calibration data).

Differences from auto-merge-llm, on purpose: method parameters are *conditional* on the chosen method (the
original samples every method's parameters in every trial, so the surrogate models noise); TIES searches the
kept `density` instead of the mask rate (density = 1 - mask rate); slerp chooses its pair explicitly instead
of taking the two models with the largest summed `t` after a softmax.

Non-layer tensors (embeddings, final norm, LM head) come from `embed`: "average" (a linear average of the
models, emitted as trial node `embed`; it does not depend on the config, so it is computed once and cached),
"base", any model reference, or "search" (default): a categorical `embed` over "average" and the models, so
that the initial design can hold every source model exactly as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from graphmerge.search.space import Categorical, Condition, Equals, Float, Param, SearchSpace

from . import method_choices as mc
from .base import (
    DEFAULT_SET,
    DENSITY,
    FINAL_NODE,
    LAMBDA,
    SLERP_T,
    WEIGHT,
    ModelInfo,
    StrategySettings,
    checked_config,
    filtered,
    strategy,
)

Method = Literal[
    "linear", "task_arithmetic", "ties", "slerp", "tsv_m", "iso_c", "iso_cts", "wudi", "regmean", "fisher"
]
NEEDS_BASE = ("task_arithmetic", "ties", *mc.SUBSPACE)


class LfsSettings(StrategySettings):
    # auto-merge-llm exp_config/lfs.yaml: layer_granularity 10, filters [self_attn, mlp], ranges [0, 1].
    layer_granularity: int = Field(10, ge=1)
    methods: list[Method] = Field(
        default_factory=lambda: ["linear", "task_arithmetic", "ties", "slerp"], min_length=1
    )
    param_sets: dict[str, str] = Field(default_factory=lambda: {"attn": "*self_attn*", "mlp": "*mlp*"})
    weight_range: tuple[float, float] = (0.0, 1.0)
    lambda_range: tuple[float, float] = (0.0, 1.0)
    density_range: tuple[float, float] = (0.01, 1.0)
    t_range: tuple[float, float] = (0.0, 1.0)
    embed: str = "search"
    calibration: dict[str, Any] | None = None  # statistics-node calibration data (regmean, fisher)

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct, got {self.methods}")
        needing = [m for m in self.methods if m in NEEDS_BASE]
        if needing and self.base is None:
            raise ValueError(
                f"methods {needing} need `base` (the pretrained model the task vectors start from)"
            )
        calibrated = [m for m in self.methods if m in mc.CALIBRATED]
        if calibrated and self.calibration is None:
            raise ValueError(f"methods {calibrated} need `calibration:` (tasks: [...] or file: ...)")
        if "slerp" in self.methods and len(self.models) < 2:
            raise ValueError("slerp needs at least two models")
        if DEFAULT_SET in self.param_sets:
            raise ValueError(f"`{DEFAULT_SET}` is reserved for tensors no param_sets filter matches")
        for name in self.param_sets:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    f"param_sets name {name!r} must be alphanumeric (it is part of parameter names)"
                )
        for key in ("weight_range", "lambda_range", "density_range", "t_range"):
            lo, hi = getattr(self, key)
            if not lo < hi:
                raise ValueError(f"{key} must be [low, high] with low < high, got {[lo, hi]}")
        if self.embed not in ("average", "base", "search") and self.embed not in [*self.models, self.base]:
            raise ValueError(f"embed must be search, average, base or one of the models, got {self.embed!r}")
        if self.embed == "base" and self.base is None:
            raise ValueError("embed: base needs `base`")
        return self

    @property
    def sets(self) -> list[str]:
        return [*self.param_sets, DEFAULT_SET]


def groups(settings: LfsSettings, model_info: ModelInfo) -> list[tuple[int, int]]:
    n = model_info.common_layers(settings.models, where="lfs")
    step = settings.layer_granularity
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _pairs(models: list[str]) -> list[str]:
    return [f"{a},{b}" for i, a in enumerate(models) for b in models[i + 1 :]]


def build_space(settings: LfsSettings, model_info: ModelInfo) -> SearchSpace:
    params: list[Param] = []
    conditions: dict[str, Condition] = {}
    if settings.embed == "search":
        params.append(Categorical("embed", ("average", *settings.models), default="average"))
    default_method = "linear" if "linear" in settings.methods else settings.methods[0]
    for g in range(len(groups(settings, model_info))):
        method = f"g{g}_method"
        params.append(Categorical(method, tuple(settings.methods), default=default_method))

        def add(param: Param, when: str, method: str = method) -> None:
            params.append(param)
            if len(settings.methods) > 1:
                conditions[param.name] = Equals(method, when)

        for s in settings.sets:
            if "linear" in settings.methods:
                for m in settings.models:
                    add(Float(f"g{g}_{s}_linear_{m}", *settings.weight_range), "linear")
            if "task_arithmetic" in settings.methods:
                add(Float(f"g{g}_{s}_task_arithmetic_lambda", *settings.lambda_range), "task_arithmetic")
            if "ties" in settings.methods:
                add(Float(f"g{g}_{s}_ties_density", *settings.density_range), "ties")
                add(Float(f"g{g}_{s}_ties_lambda", *settings.lambda_range), "ties")
            if "slerp" in settings.methods:
                add(Float(f"g{g}_{s}_slerp_t", *settings.t_range), "slerp")
        for m in [m for m in mc.NEW_METHODS if m in settings.methods]:
            for suffix, rng, per_set in mc.hyperparameters(m, settings.lambda_range):
                for s in settings.sets if per_set else [""]:
                    add(Float(f"g{g}_{s}_{suffix}" if s else f"g{g}_{suffix}", *rng), m)
        if "slerp" in settings.methods and len(settings.models) > 2:
            add(Categorical(f"g{g}_slerp_pair", tuple(_pairs(settings.models))), "slerp")
    return SearchSpace(tuple(params), conditions)


def initial_configs(settings: LfsSettings, model_info: ModelInfo) -> list[dict[str, Any]]:
    """Each model alone: every group linear with that model at the top of the weight range, others at the
    bottom (with the default range: weight 1 vs 0, i.e. exactly the source model)."""
    if "linear" not in settings.methods:
        return []
    lo, hi = settings.weight_range
    out = []
    for chosen in settings.models:
        cfg: dict[str, Any] = {"embed": chosen} if settings.embed == "search" else {}
        for g in range(len(groups(settings, model_info))):
            cfg[f"g{g}_method"] = "linear"
            for s in settings.sets:
                for m in settings.models:
                    cfg[f"g{g}_{s}_linear_{m}"] = hi if m == chosen else lo
        out.append(cfg)
    return out


def _values(cfg: Mapping[str, Any], g: int, settings: LfsSettings, suffix: str) -> Any:
    return filtered({s: cfg[f"g{g}_{s}_{suffix}"] for s in settings.sets}, settings.param_sets)


def merge_spec(cfg: Mapping[str, Any], g: int, settings: LfsSettings) -> dict[str, Any]:
    """The merge spec of group g (a `merge` node's parameters, without `op`)."""
    method = cfg[f"g{g}_method"]
    if method in mc.NEW_METHODS:
        return mc.merge_spec(
            method,
            settings.models,
            settings.base,
            lambda suffix: _values(cfg, g, settings, suffix),
            lambda suffix: cfg[f"g{g}_{suffix}"],
        )
    if method == "linear":
        models = {m: {WEIGHT: _values(cfg, g, settings, f"linear_{m}")} for m in settings.models}
        return {"method": "linear", "models": models}
    if method == "task_arithmetic":
        return {
            "method": "task_arithmetic",
            "base": settings.base,
            "models": {m: {WEIGHT: 1.0} for m in settings.models},
            "params": {LAMBDA: _values(cfg, g, settings, "task_arithmetic_lambda")},
        }
    if method == "ties":
        density = _values(cfg, g, settings, "ties_density")
        return {
            "method": "ties",
            "base": settings.base,
            "models": {m: {WEIGHT: 1.0, DENSITY: density} for m in settings.models},
            "params": {LAMBDA: _values(cfg, g, settings, "ties_lambda")},
        }
    # slerp: t = 0 gives the first model of the pair (as `base`), t = 1 the second.
    if len(settings.models) > 2:
        a, b = str(cfg[f"g{g}_slerp_pair"]).split(",")
    else:
        a, b = settings.models
    # The slerp method interpolates from `base` to the single model in `models` (exactly two ends).
    return {
        "method": "slerp",
        "base": a,
        "models": {b: {}},
        "params": {SLERP_T: _values(cfg, g, settings, "slerp_t")},
    }


@strategy("lfs", settings=LfsSettings, build_space=build_space, initial_configs=initial_configs)
def trial_nodes(
    config: Mapping[str, Any], settings: LfsSettings, model_info: ModelInfo
) -> dict[str, dict[str, Any]]:
    cfg = checked_config(build_space(settings, model_info), config, strategy="lfs")
    nodes: dict[str, dict[str, Any]] = {}
    embed = str(cfg["embed"]) if settings.embed == "search" else settings.embed
    if embed == "average":
        nodes["embed"] = {
            "op": "merge",
            "method": "linear",
            "models": {m: {WEIGHT: 1.0} for m in settings.models},
        }
        embed_ref = "embed"
    elif embed == "base":
        embed_ref = settings.base
    else:
        embed_ref = embed
    slices = [
        {"merge": merge_spec(cfg, g, settings), "layers": [start, end]}
        for g, (start, end) in enumerate(groups(settings, model_info))
    ]
    nodes[FINAL_NODE] = {"op": "slice", "embed_from": embed_ref, "slices": slices}
    used = {cfg[f"g{g}_method"] for g in range(len(slices))}
    nodes.update(mc.statistics_nodes(used, settings.models, settings.calibration))
    return nodes
