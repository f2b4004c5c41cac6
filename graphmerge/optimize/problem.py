"""A search problem: the space, and how a configuration becomes trial nodes. A strategy brings both; an
explicit `space:` + `trial:` template is filled by the one substitution engine."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphmerge.errors import SpecError
from graphmerge.optimize.params import TRIAL_NAMES, OptimizeParams
from graphmerge.plan import Model
from graphmerge.substitution import Scope, matches, substitute


@dataclass(frozen=True)
class SearchProblem:
    """The space, how to turn a configuration into trial nodes, and the strategy (None: a template)."""

    space: Any
    make_nodes: Callable[[Mapping[str, Any], int | None], dict[str, Any]]
    initial_configs: list[dict[str, Any]] = field(default_factory=list)
    is_feasible: Callable[[Mapping[str, Any]], bool] | None = None
    strategy: Any = None
    settings: Any = None


def substitute_params(
    template: Any,
    config: Mapping[str, Any],
    budget: int | None,
    *,
    known: Any = None,
    where: str = "trial",
) -> Any:
    """`${params.NAME}` and `${budget}` replaced in a trial template. A reference to an inactive
    conditional parameter (or to the budget when there is none) drops the entry that holds it; `known`
    (the space's parameter names) makes any other `params.` name an error instead of an inactive one."""
    from graphmerge.search.space import python_scalar

    known_set = set(known) if known is not None else None
    values: dict[str, Any] = {f"params.{k}": python_scalar(v) for k, v in config.items()}
    if budget is not None:
        values["budget"] = budget

    def unset(name: str) -> bool:
        if name == "budget":
            return True
        return name.startswith("params.") and (known_set is None or name[len("params.") :] in known_set)

    def undefined(name: str) -> tuple[str, str | None]:
        if matches(name, TRIAL_NAMES):
            return f"`${{{name}}}` names no parameter of the search space", None
        return f"undefined variable ${{{name}}}", "a trial template knows ${params.NAME} and ${budget}"

    def at(path: tuple) -> str:
        return where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)

    out = substitute(template, Scope(values=values, unset=unset, undefined=undefined), at)
    return out if isinstance(out, Mapping) or not isinstance(template, Mapping) else {}


def build_problem(params: OptimizeParams, models: Mapping[str, Model], seed: int) -> SearchProblem:
    from graphmerge.search.space_yaml import build_space
    from graphmerge.strategies import ModelInfo, get_strategy, parse_settings

    if params.strategy is not None:
        info = ModelInfo(num_layers={ref: m.layout.num_layers for ref, m in models.items()})
        strategy = get_strategy(params.strategy)
        settings = parse_settings(
            params.strategy,
            {"models": params.models, "base": params.base, **params.settings},
            where="optimize.settings",
        )
        return SearchProblem(
            space=strategy_space(strategy, settings, info),
            make_nodes=lambda config, limit: strategy.trial_nodes(config, settings, info),
            initial_configs=strategy.initial_configs(settings, info),
            is_feasible=lambda config: strategy.is_feasible(config, settings, info),
            strategy=strategy,
            settings=settings,
        )
    space = build_space(params.space or {"params": {}}, seed=seed, where="optimize.space")
    template = params.trial or {}
    template_nodes = template.get("nodes", template)
    return SearchProblem(
        space=space,
        make_nodes=lambda config, limit: substitute_params(
            template_nodes, config, limit, known=list(space.keys()), where="trial"
        ),
    )


def strategy_space(strategy: Any, settings: Any, info: Any) -> Any:
    """The strategy's space, which must be a SearchSpace (a plugin written against ConfigSpace gets one
    error that says what to return instead)."""
    from graphmerge.search.space import SearchSpace

    space = strategy.build_space(settings, info)
    if not isinstance(space, SearchSpace):
        raise SpecError(
            f"strategy '{strategy.name}': build_space returned {type(space).__name__}, not a SearchSpace",
            where="optimize.strategy",
            fix="build it from graphmerge.search.space (Float, Integer, Categorical, ... and SearchSpace)",
        )
    return space


# Configurations a check plans besides the default and the strategy's initial ones: a seeded sample,
# so a space whose corners a merge method rejects is caught before the search, not at trial 37.
CHECK_SAMPLES = 8


def configs_to_check(params: OptimizeParams, problem: SearchProblem, seed: int) -> list[dict[str, Any]]:
    from graphmerge.search.sampling import sample_configs
    from graphmerge.search.space import validate_config

    if params.config is not None:
        return [validate_config(problem.space, params.config, where="config")]
    configs = [dict(c) for c in problem.initial_configs]
    configs.append(problem.space.default_config())
    configs += sample_configs(problem.space, CHECK_SAMPLES, seed)
    feasible = [c for c in configs if problem.is_feasible is None or problem.is_feasible(c)]
    return list({json.dumps(c, sort_keys=True, default=str): c for c in feasible}.values())


def output_node(params: OptimizeParams, nodes: Mapping[str, Any]) -> None:
    if params.output not in nodes:
        raise SpecError(
            f"the trial subgraph has no node '{params.output}'",
            fix="name its final model node `model` or set `output:`",
        )
