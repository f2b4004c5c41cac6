"""`optimize`: SMAC search over merge recipes. Every trial is a subgraph run through the same
executor and cache as everything else, so whatever trials share is computed once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from graphmerge.errors import GraphmergeError, SpecError
from graphmerge.executor import RunContext, run_nodes
from graphmerge.params import NodeParams
from graphmerge.plan import Model
from graphmerge.registry import node
from graphmerge.spec import GraphSpec, build_graph

EVAL_NODE = "__evaluate__"


class ObjectiveEntry(NodeParams):
    task: str = Field(description="lm-eval task name")
    metric: str | None = Field(None, description="metric to optimise (default: the task's first)")
    weight: float = Field(1.0, ge=0, description="weight in the single-objective weighted sum")


class EvaluationSettings(NodeParams):
    limit: int | None = Field(None, ge=1, description="examples per task when the facade has no budgets")
    num_fewshot: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class OptimizeParams(NodeParams):
    strategy: Literal["lfs", "lfs_mo", "dis", "prune"] | None = Field(
        None, description="a built-in search space + trial template (or give space: and trial:)"
    )
    models: list[str] = Field(min_length=1, description="model nodes the trials merge (and may reference)")
    base: str | None = Field(None, description="base model node")
    settings: dict[str, Any] = Field(default_factory=dict, description="strategy settings")
    objectives: list[ObjectiveEntry] = Field(min_length=1, description="tasks to maximise")
    include_path: list[Path] = Field(default_factory=list, description="folders of task YAMLs")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    smac: dict[str, Any] | None = Field(
        None, description="SMAC settings: facade, n_trials, min/max_budget, seed, ..."
    )
    config: dict[str, Any] | None = Field(
        None, description="evaluate this one configuration instead of searching"
    )
    space: dict[str, Any] | None = Field(
        None, description="explicit search space (params, conditions, forbidden)"
    )
    trial: dict[str, Any] | None = Field(
        None, description="explicit trial subgraph: nodes using ${params.X}, ${budget}"
    )
    output: str = Field("model", description="the trial node whose model is evaluated")
    out: Path | None = Field(
        None, description="folder for trials, report, recipe (default: out/NODE next to the graph)"
    )

    @model_validator(mode="after")
    def _shape(self) -> OptimizeParams:
        if (self.strategy is None) == (self.trial is None):
            raise ValueError("give either `strategy:` or an explicit `space:` + `trial:`")
        if self.trial is not None and self.space is None and self.config is None:
            raise ValueError("an explicit `trial:` needs a `space:` (or a fixed `config:`)")
        if self.smac is None and self.config is None:
            raise ValueError("give `smac:` to search or `config:` to evaluate one configuration")
        if self.smac is not None and self.config is not None:
            raise ValueError("give `smac:` or `config:`, not both")
        return self

    def refs(self) -> list[str]:
        return list(dict.fromkeys(([self.base] if self.base else []) + self.models))


def objective_names(params: OptimizeParams) -> list[str]:
    return [o.task for o in params.objectives]


@dataclass
class SearchProblem:
    """The space, how to turn a configuration into trial nodes, and the strategy's extras."""

    space: Any
    make_nodes: Callable[[Mapping[str, Any], int | None], dict[str, Any]]
    initial_configs: list[dict[str, Any]] = field(default_factory=list)
    is_feasible: Callable[[Mapping[str, Any]], bool] | None = None


def build_problem(params: OptimizeParams, models: Mapping[str, Model], seed: int) -> SearchProblem:
    from graphmerge.search import build_space, substitute_params
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
            space=strategy.build_space(settings, info),
            make_nodes=lambda config, limit: strategy.trial_nodes(config, settings, info),
            initial_configs=strategy.initial_configs(settings, info),
            is_feasible=lambda config: strategy.is_feasible(config, settings, info),
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


def evaluate_spec(params: OptimizeParams, input_ref: str, limit: int | None) -> dict[str, Any]:
    """The `evaluate` node parameters that score a model for this search's objectives."""
    ev = params.evaluation
    return {
        "input": input_ref,
        "tasks": [o.model_dump(exclude_none=True) for o in params.objectives],
        "include_path": [str(p) for p in params.include_path],
        "limit": limit if limit is not None else ev.limit,
        "num_fewshot": ev.num_fewshot,
        "batch_size": ev.batch_size,
        "seed": ev.seed,
        "dtype": ev.dtype,
    }


def trial_graph(
    ctx_graph: GraphSpec, params: OptimizeParams, nodes: dict[str, Any], limit: int | None
) -> GraphSpec:
    nodes = dict(nodes)
    if params.output not in nodes:
        raise SpecError(
            f"the trial subgraph has no node '{params.output}'",
            fix="name its final model node `model` or set `output:`",
        )
    nodes[EVAL_NODE] = {"op": "evaluate", **evaluate_spec(params, params.output, limit)}
    return build_graph(
        {"nodes": nodes, "seed": ctx_graph.seed}, graph_dir=ctx_graph.dir, external=ctx_graph.nodes
    )


def cold_task_count(model: Model) -> int:
    """How many tensor tasks building `model` takes with an empty cache (source reads excluded)."""
    seen: set[str] = set()
    stack = list(model.tensors.values())
    count = 0
    while stack:
        task = stack.pop()
        if task.key in seen:
            continue
        seen.add(task.key)
        if task.cached:
            count += 1
        stack.extend(task.inputs)
    return count


class TrialRunner:
    """objective(config, limit) for the search driver. Picklable, so Dask workers can run trials:
    a worker rebuilds the graph's context from the graph text and shares the on-disk cache."""

    def __init__(
        self, ctx: RunContext, params: OptimizeParams, outer: Mapping[str, Any], problem: SearchProblem
    ):
        self._ctx: RunContext | None = ctx
        self._outer: Mapping[str, Any] | None = outer
        self._problem: SearchProblem | None = problem
        self.params = params
        self.node_name = ctx.node_name
        self.graph_text = ctx.graph.text
        self.graph_file = ctx.graph.file
        self.graph_dir = ctx.graph.dir
        self.variables = dict(ctx.graph.vars)
        self.cache_root = ctx.cache.root
        self.device = str(ctx.device)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ctx=None, _outer=None, _problem=None)
        return state

    def _ensure(self) -> tuple[RunContext, Mapping[str, Any], SearchProblem]:
        if self._ctx is None:
            from graphmerge.runner import make_context
            from graphmerge.spec import load_graph

            graph = load_graph(
                self.graph_file, text=self.graph_text, overrides=self.variables, base_dir=self.graph_dir
            )
            ctx = make_context(
                graph, cache_dir=self.cache_root, device=self.device, progress=False, log=lambda _m: None
            )
            spec = graph.nodes[self.node_name]
            ancestors = _ancestors(graph, self.node_name)
            sub = GraphSpec(
                file=graph.file,
                dir=graph.dir,
                text=graph.text,
                vars=graph.vars,
                nodes={n: graph.nodes[n] for n in ancestors},
                order=tuple(n for n in graph.order if n in ancestors),
                seed=graph.seed,
                lines=graph.lines,
            )
            values = run_nodes(ctx, sub)
            inputs = {ref: values[ref] for ref in spec.inputs}
            self._ctx, self._outer = ctx, values
            self._problem = build_problem(self.params, inputs, graph.seed)
        assert self._outer is not None and self._problem is not None
        return self._ctx, self._outer, self._problem

    def model_for(self, config: Mapping[str, Any]) -> Model:
        """The trial's model, planned but not computed (nothing is evaluated)."""
        ctx, outer, problem = self._ensure()
        nodes = problem.make_nodes(config, None)
        graph = build_graph(
            {"nodes": nodes, "seed": ctx.graph.seed}, graph_dir=ctx.graph.dir, external=ctx.graph.nodes
        )
        return run_nodes(ctx, graph, initial=outer)[self.params.output]

    def __call__(self, config: Mapping[str, Any], limit: int | None):
        from graphmerge.search import TrialOutcome

        ctx, outer, problem = self._ensure()
        started = time.perf_counter()
        before = ctx.stats.snapshot()
        graph = trial_graph(ctx.graph, self.params, problem.make_nodes(config, limit), limit)
        values = run_nodes(ctx, graph, initial=outer)
        delta = ctx.stats.since(before)
        result = values[EVAL_NODE]
        return TrialOutcome(
            scores=dict(result["scores"]),
            cost_s=time.perf_counter() - started,
            extra={
                "executed": delta["tasks_executed"],
                "cached": delta["tasks_cached"],
                "cold_tasks": cold_task_count(values[self.params.output]),
                "evaluations_run": delta["evaluations_run"],
                "evaluations_cached": delta["evaluations_cached"],
            },
        )


def _ancestors(graph: GraphSpec, name: str) -> set[str]:
    out: set[str] = set()
    stack = [r.split(".")[0] for r in graph.nodes[name].inputs]
    while stack:
        n = stack.pop()
        if n in out or n not in graph.nodes:
            continue
        out.add(n)
        stack.extend(r.split(".")[0] for r in graph.nodes[n].inputs)
    return out


def _reference_scores(
    ctx: RunContext, params: OptimizeParams, model: Model, limit: int | None
) -> dict[str, Any]:
    """The objectives' weighted score of an input model (cached like any evaluation)."""
    from graphmerge.nodes.evaluate import EvaluateParams, run_evaluation

    eval_params = EvaluateParams(**evaluate_spec(params, "reference", limit))
    result = run_evaluation(ctx, eval_params, model)
    weights = {o.task: o.weight for o in params.objectives}
    result["score"] = sum(result["scores"][t] * w for t, w in weights.items())
    return result


def export_recipe(
    ctx: RunContext, params: OptimizeParams, config: Mapping[str, Any], nodes: dict[str, Any], note: str
) -> str:
    """A standalone graph that rebuilds the chosen model without searching."""
    outer_names = sorted(_ancestors(ctx.graph, ctx.node_name), key=lambda n: ctx.graph.order.index(n))
    clash = [n for n in outer_names if n in nodes]
    if clash:
        raise SpecError(
            f"graph node names {clash} clash with the strategy's trial node names", fix="rename those nodes"
        )
    out_nodes: dict[str, Any] = {n: dict(ctx.graph.nodes[n].raw) for n in outer_names}
    out_nodes.update(nodes)
    out_nodes["save"] = {"op": "save", "input": params.output, "path": "${out}"}
    doc = {"seed": ctx.graph.seed, "vars": {"out": f"out/{ctx.node_name}_best"}, "nodes": out_nodes}
    header = f"# {note}\n# configuration: {dict(config)}\n"
    return header + yaml.safe_dump(_plain(doc), sort_keys=False, default_flow_style=None, width=120)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def smac_settings(params: OptimizeParams):
    from graphmerge.search import Objective, SmacSettings

    try:
        return SmacSettings(
            **{
                **(params.smac or {}),
                "objectives": [Objective(name=o.task, weight=o.weight) for o in params.objectives],
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "smac"
        raise SpecError(
            f"smac.{key}: {err['msg']}", fix="see the optimize node's `smac` keys in the README"
        ) from None


# Configurations a check plans besides the default and the strategy's initial ones: a seeded sample,
# so a space whose corners a merge method rejects is caught before the search, not at trial 37.
CHECK_SAMPLES = 8


def _configs_to_check(params: OptimizeParams, problem: SearchProblem, seed: int) -> list[dict[str, Any]]:
    from graphmerge.search import config_to_dict, validate_config

    if params.config is not None:
        return [validate_config(problem.space, params.config, where="config")]
    configs = [dict(c) for c in problem.initial_configs]
    configs.append(config_to_dict(problem.space.get_default_configuration()))
    problem.space.seed(seed)
    sampled = problem.space.sample_configuration(CHECK_SAMPLES)
    configs += [config_to_dict(c) for c in (sampled if isinstance(sampled, list) else [sampled])]
    feasible = [c for c in configs if problem.is_feasible is None or problem.is_feasible(c)]
    return list({json.dumps(c, sort_keys=True, default=str): c for c in feasible}.values())


def optimize_check(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy settings, the space, the SMAC settings, the output folder, and the trial graph
    (merge parameters per tensor, tasks) of the default, initial and a sample of configurations,
    all planned, none evaluated. The best model stands in as the default configuration's."""
    from graphmerge.nodes.evaluate import check_writable_file
    from graphmerge.search import check_search

    out_dir = Path(params.out) if params.out else ctx.graph.dir / "out" / ctx.node_name
    check_writable_file(out_dir / "trials.jsonl")
    problem = build_problem(params, inputs, ctx.seed)
    if params.smac is not None:
        check_search(problem.space, smac_settings(params), out_dir, initial_configs=problem.initial_configs)
    configs = _configs_to_check(params, problem, ctx.seed)
    best = None
    for config in configs:
        graph = trial_graph(ctx.graph, params, problem.make_nodes(config, None), None)
        try:
            values = run_nodes(ctx, graph, initial=dict(inputs))
        except SpecError as exc:
            exc.where = f"trial configuration {config}" + (f": {exc.where}" if exc.where else "")
            raise SpecError(exc.what, where=exc.where, fix=exc.fix) from None
        except GraphmergeError as exc:
            exc.where = f"trial configuration {config}" + (f": {exc.where}" if exc.where else "")
            exc.args = (exc.one_line(),)
            raise
        if best is None:
            best = values[params.output]
    return {
        "best": best,
        "pareto": {},
        "scores": {},
        "config": configs[0] if configs else {},
        "trials": None,
        "recipe": None,
        "report": None,
    }


OUTPUTS = ("best", "pareto", "scores", "config", "trials", "recipe", "report")


@node(
    "optimize",
    version="1",
    params=OptimizeParams,
    inputs=lambda p: p.refs(),
    outputs=OUTPUTS,
    effectful=True,
    check=optimize_check,
)
def optimize_node(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Search merge recipes with SMAC (or evaluate one fixed configuration of a strategy)."""
    from graphmerge.cache import atomic_write_bytes
    from graphmerge.search import progress_line, run_search, validate_config

    out_dir = Path(params.out) if params.out else ctx.graph.dir / "out" / ctx.node_name
    out_dir.mkdir(parents=True, exist_ok=True)
    outer = dict(inputs)
    problem = build_problem(params, inputs, ctx.seed)
    runner = TrialRunner(ctx, params, outer, problem)

    if params.config is not None:
        config = validate_config(problem.space, params.config, where=f"{ctx.node_name}.config")
        outcome = runner(config, None)
        ctx.log(f"{ctx.node_name}: fixed configuration scores {dict(outcome.scores)}")
        best_model = runner.model_for(config)
        recipe = export_recipe(ctx, params, config, problem.make_nodes(config, None), "fixed configuration")
        recipe_path = out_dir / "recipe.yaml"
        atomic_write_bytes(recipe_path, recipe.encode())
        ctx.extras.update(trials=1, best={"config": dict(config), "scores": dict(outcome.scores)})
        return {
            "best": best_model,
            "pareto": {},
            "scores": dict(outcome.scores),
            "config": dict(config),
            "trials": None,
            "recipe": str(recipe_path),
            "report": None,
        }

    settings = smac_settings(params)
    n_trials = settings.n_trials

    def on_trial(record, best) -> None:
        ctx.log(progress_line(record, best, n_trials))

    result = run_search(
        problem.space,
        runner,
        settings,
        out_dir,
        on_trial,
        initial_configs=problem.initial_configs,
        is_feasible=problem.is_feasible,
    )
    if result.best is None:
        raise SpecError(
            "the search finished without a single feasible trial", fix="widen the space or raise n_trials"
        )
    best_config = dict(result.best.config)
    best_model = runner.model_for(best_config)
    pareto = {f"pareto_{i}": runner.model_for(r.config) for i, r in enumerate(result.pareto)}
    note = f"best of {len(result.trials)} trials of '{ctx.node_name}' (trial #{result.best.order}, scores {dict(result.best.scores)})"
    recipe_path = out_dir / "best_recipe.yaml"
    atomic_write_bytes(
        recipe_path,
        export_recipe(ctx, params, best_config, problem.make_nodes(best_config, None), note).encode(),
    )
    for i, rec in enumerate(result.pareto):
        path = out_dir / f"pareto_{i}_recipe.yaml"
        atomic_write_bytes(
            path,
            export_recipe(
                ctx,
                params,
                rec.config,
                problem.make_nodes(rec.config, None),
                f"Pareto member {i}: {dict(rec.scores)}",
            ).encode(),
        )
    if params.strategy == "prune" and params.base:
        reference = _reference_scores(ctx, params, inputs[params.base], result.best.limit)
        kept = result.best.score / reference["score"] if reference["score"] else None
        ctx.extras["unpruned"] = {
            "scores": reference["scores"],
            "score": reference["score"],
            "score_kept": kept,
        }
        ctx.log(
            f"{ctx.node_name}: unpruned {reference['scores']}; the pruned model keeps "
            + (f"{kept:.1%} of its score" if kept is not None else "an undefined share (unpruned score 0)")
        )
    executed = [r.extra.get("executed", 0) for r in result.trials if not r.replayed]
    ctx.extras.update(
        trials=len(result.trials),
        trials_evaluated=result.evaluated,
        trials_replayed=result.replayed,
        best={
            "config": best_config,
            "scores": dict(result.best.scores),
            "score": result.best.score,
            "budget": result.best.limit,
        },
        pareto=[{"config": dict(r.config), "scores": dict(r.scores)} for r in result.pareto],
        files={k: str(v) for k, v in {**result.files, "recipe": recipe_path}.items()},
    )
    if executed:
        ctx.extras["mean_executed_per_new_trial"] = sum(executed) / len(executed)
    ctx.log(f"{ctx.node_name}: best {dict(result.best.scores)} -> recipe {recipe_path}")
    return {
        "best": best_model,
        "pareto": pareto,
        "scores": dict(result.best.scores),
        "config": best_config,
        "trials": str(result.files.get("trials_jsonl", out_dir / "trials.jsonl")),
        "recipe": str(recipe_path),
        "report": str(result.files.get("report_png", "")),
    }
