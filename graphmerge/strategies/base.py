"""Shared pieces of the search strategies: model info, the strategy interface and its registry, config
validation.

A strategy turns a flat config (parameter name -> value) into a trial subgraph: node dicts in the graph file's
YAML shapes (README, "Graph files"), whose final model node is named `model`. Node references inside the
subgraph point either to other trial nodes or to the outer graph's model nodes, named exactly as in
`settings.models` / `base`. A strategy is one module: its settings model, its functions and one `@strategy`
on `trial_nodes` (built-ins: graphmerge/strategies/builtin.py; plugins: the `graphmerge.strategies`
entry-point group or `--plugin`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graphmerge.errors import SpecError
from graphmerge.registration import Registry
from graphmerge.search.space import SearchSpace, validate_config

# Parameter names of the built-in merge methods as the strategies emit them (mergekit conventions).
# Kept in one place so the emitted merge specs follow the method registry if a name changes there.
WEIGHT = "weight"  # per-model: linear weight / task-vector weight
DENSITY = "density"  # per-model: fraction of task-vector entries TIES keeps
LAMBDA = "lambda"  # global: task-vector scaling (task_arithmetic, ties)
SLERP_T = "t"  # global: slerp interpolation, 0 = base, 1 = the other model

FINAL_NODE = "model"


@dataclass(frozen=True)
class ModelInfo:
    """What strategies need to know about the models: decoder layer counts by graph reference."""

    num_layers: Mapping[str, int]

    def layers(self, ref: str, *, where: str = "strategy") -> int:
        if ref not in self.num_layers:
            raise SpecError(f"no layer count for model `{ref}`", where=where, fix="load it in the graph")
        n = int(self.num_layers[ref])
        if n < 1:
            raise SpecError(f"model `{ref}` has no decoder layers", where=where)
        return n

    def common_layers(self, refs: Sequence[str], *, where: str) -> int:
        counts = {r: self.layers(r, where=where) for r in refs}
        if len(set(counts.values())) != 1:
            raise SpecError(
                f"models must have the same number of layers, got {counts}",
                where=where,
                fix="merge models of one architecture, or use the dis strategy",
            )
        return next(iter(counts.values()))


class StrategySettings(BaseModel):
    """Fields every strategy has: the merged models and the optional base (pretrained) model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1)
    base: str | None = None

    @model_validator(mode="after")
    def _unique_models(self):
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct, got {self.models}")
        return self


@dataclass(frozen=True)
class SearchOutcome:
    """What a strategy's `report` hook sees once its search has finished: the best trial's scores and
    the source models' scores on the same tasks at the best trial's budget (model ref -> {scores, score})."""

    best_score: float
    best_scores: Mapping[str, float]
    sources: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class StrategyReport:
    """What a strategy adds to the run summary (--json) and to the log after its search."""

    summary: Mapping[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Strategy:
    """The interface the optimize node uses; a strategy module registers one with `@strategy`.
    `report(settings, outcome) -> StrategyReport`: optional, what the strategy says about its result."""

    name: str
    settings_type: type[StrategySettings]
    build_space: Callable[[Any, ModelInfo], SearchSpace]
    trial_nodes: Callable[[Mapping[str, Any], Any, ModelInfo], dict[str, dict[str, Any]]]
    initial_configs: Callable[[Any, ModelInfo], list[dict[str, Any]]]
    is_feasible: Callable[[Mapping[str, Any], Any, ModelInfo], bool]
    doc: str = ""
    report: Callable[[Any, SearchOutcome], StrategyReport] | None = None


def always_feasible(config: Mapping[str, Any], settings: Any, model_info: ModelInfo) -> bool:
    return True


STRATEGIES: Registry[Strategy] = Registry(
    "strategy", group="graphmerge.strategies", builtin="graphmerge.strategies.builtin", error=SpecError
)

TrialNodes = Callable[[Mapping[str, Any], Any, ModelInfo], dict[str, dict[str, Any]]]


def strategy(
    name: str,
    *,
    settings: type[StrategySettings],
    build_space: Callable[[Any, ModelInfo], SearchSpace],
    initial_configs: Callable[[Any, ModelInfo], list[dict[str, Any]]],
    is_feasible: Callable[[Mapping[str, Any], Any, ModelInfo], bool] = always_feasible,
    doc: str | None = None,
    report: Callable[[Any, SearchOutcome], StrategyReport] | None = None,
) -> Callable[[TrialNodes], TrialNodes]:
    """Register the decorated `trial_nodes(config, settings, model_info)` as search strategy `name`, with
    its settings model and space. `doc` defaults to the docstring of the module that defines it."""

    def register(trial_nodes: TrialNodes) -> TrialNodes:
        if doc is None:
            text = getattr(sys.modules.get(trial_nodes.__module__), "__doc__", None) or ""
        else:
            text = doc
        entry = Strategy(name, settings, build_space, trial_nodes, initial_configs, is_feasible, text, report)
        STRATEGIES.add(name, entry, trial_nodes, settings)
        return trial_nodes

    return register


def checked_config(space: SearchSpace, config: Mapping[str, Any], *, strategy: str) -> dict[str, Any]:
    """The fixed-config path: any explicit config (from a file or SMAC) is validated against the space, so a
    typo in a hand-written config is an error naming the key instead of a silently default-filled trial."""
    return validate_config(space, config, where=f"{strategy} config")


def filtered(values: Mapping[str, Any], filters: Mapping[str, str]) -> Any:
    """A merge parameter value: scalar if there is one parameter set, else the `merge` node's filter list
    (named sets first, in order, then the unfiltered default entry)."""
    if not filters:
        return values[DEFAULT_SET]
    out: list[dict[str, Any]] = [{"filter": f, "value": values[name]} for name, f in filters.items()]
    out.append({"value": values[DEFAULT_SET]})
    return out


DEFAULT_SET = "other"  # name of the parameter set for tensors no filter matches
