"""`optimize`: SMAC search over merge recipes. Every trial is a subgraph run through the same
executor and cache as everything else, so whatever trials share is computed once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from graphmerge.errors import GraphmergeError, SpecError
from graphmerge.executor import RunContext, run_nodes
from graphmerge.nodes.evaluate import EvaluationOptions
from graphmerge.nodes.optimize_outputs import Recipe, score_models
from graphmerge.params import NodeParams
from graphmerge.plan import Model
from graphmerge.registry import node
from graphmerge.spec import GraphSpec, ancestors, build_graph

EVAL_NODE = "__evaluate__"


class ObjectiveEntry(NodeParams):
    task: str = Field(description="lm-eval task name")
    metric: str | None = Field(None, description="metric to optimise (default: the task's first)")
    weight: float = Field(1.0, ge=0, description="weight in the single-objective weighted sum")
    held_out: str | None = Field(
        None,
        description="task with the same metric on held-out data, scored for the best model and the sources",
    )


class EvaluationSettings(EvaluationOptions):
    """The `evaluate` node's lm-eval settings; `limit` applies when the facade has no budgets."""

    held_out_limit: int | None = Field(None, ge=1, description="held-out examples per task (None: all)")


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
        with_held_out = [o.task for o in self.objectives if o.held_out]
        if with_held_out and len(with_held_out) != len(self.objectives):
            raise ValueError(
                f"give `held_out` for every objective or for none (only {with_held_out} have one)"
            )
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
        "tasks": [o.model_dump(exclude_none=True, exclude={"held_out"}) for o in params.objectives],
        "include_path": [str(p) for p in params.include_path],
        **ev.model_dump(exclude={"limit", "held_out_limit"}),
        "limit": limit if limit is not None else ev.limit,
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
        self.trust_remote_code = ctx.trust_remote_code
        self._sizes: dict[str, int] | None = None

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
                graph,
                cache_dir=self.cache_root,
                device=self.device,
                progress=False,
                log=lambda _m: None,
                trust_remote_code=self.trust_remote_code,
            )
            spec = graph.nodes[self.node_name]
            ancestors_ = ancestors(graph, self.node_name)
            sub = GraphSpec(
                file=graph.file,
                dir=graph.dir,
                text=graph.text,
                vars=graph.vars,
                nodes={n: graph.nodes[n] for n in ancestors_},
                order=tuple(n for n in graph.order if n in ancestors_),
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
        with ctx.cache.search_trial():
            values = run_nodes(ctx, graph, initial=outer)
        delta = ctx.stats.since(before)
        # Trial models are lazy: their tensor work happens inside the evaluate node.
        evaluate_s = ctx.stats.op_seconds.get("evaluate", 0.0) - before.op_seconds.get("evaluate", 0.0)
        result = values[EVAL_NODE]
        extra_examples = {
            "examples_scored": self.examples_scored(limit),  # search/examples.py counts from these
            "examples_run": delta["examples_evaluated"],
        }
        return TrialOutcome(
            scores=dict(result["scores"]),
            cost_s=time.perf_counter() - started,
            extra={
                "executed": delta["tasks_executed"],
                "cached": delta["tasks_cached"],
                "cold_tasks": cold_task_count(values[self.params.output]),
                "evaluations_run": delta["evaluations_run"],
                "evaluations_cached": delta["evaluations_cached"],
                "tensor_s": round(delta["tensor_seconds"], 4),
                "evaluation_s": round(max(0.0, evaluate_s - delta["tensor_seconds"]), 4),
                **extra_examples,
            },
        )

    def examples_scored(self, limit: int | None) -> dict[str, int]:
        """Per objective task, the examples a trial at `limit` is scored on."""
        from graphmerge.evaluation.runner import example_count, task_sizes

        names = [o.task for o in self.params.objectives]
        if self._sizes is None:
            include = [str(p) for p in self.params.include_path]
            self._sizes = task_sizes(names, include, self.params.evaluation.eval_options())
        limit = limit if limit is not None else self.params.evaluation.limit
        return {
            n: example_count(self._sizes[n], limit) if n in self._sizes else int(limit or 0) for n in names
        }


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
    _check_held_out(params)
    if params.smac is not None:
        check_search(problem.space, _smac_settings(params), out_dir, initial_configs=problem.initial_configs)
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


def search_state(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> str:
    """For `viz`: how far the search's trial log has got (read directly: no SMAC import)."""
    out_dir = Path(params.out) if params.out else ctx.graph.dir / "out" / ctx.node_name
    trials = 0
    try:
        # search.trial_log.LOG_NAME, spelled out: importing graphmerge.search imports ConfigSpace
        for line in (out_dir / "trial_log.jsonl").read_text().splitlines():
            try:
                trials += json.loads(line).get("type") == "trial"
            except ValueError:  # a torn last line of an interrupted search
                continue
    except OSError:
        return "missing"
    smac = params.smac or {}
    if smac.get("n_trials") is None and smac.get("max_examples") is not None:
        return "partial" if trials else "missing"  # whether the examples are spent takes the whole log
    wanted = smac.get("n_trials", 1)
    return "cached" if trials >= wanted else "partial" if trials else "missing"


@node(
    "optimize",
    version="1",
    params=OptimizeParams,
    inputs=lambda p: p.refs(),
    outputs=OUTPUTS,
    effectful=True,
    extras=("search",),
    cache_state=search_state,
    check=optimize_check,
)
def optimize_node(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Search merge recipes with SMAC (or evaluate one fixed configuration of a strategy)."""
    from graphmerge.search import validate_config

    out_dir = Path(params.out) if params.out else ctx.graph.dir / "out" / ctx.node_name
    out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.cache.force:  # --force: a fresh search, not a resume; the old log is kept beside the new one
        from graphmerge.search.trial_log import LOG_NAME

        if (out_dir / LOG_NAME).exists():
            (out_dir / LOG_NAME).replace(out_dir / f"{LOG_NAME}.before-force")
    outer = dict(inputs)
    problem = build_problem(params, inputs, ctx.seed)
    runner = TrialRunner(ctx, params, outer, problem)

    if params.config is None:
        return _search(ctx, params, inputs, problem, runner, out_dir)
    config = validate_config(problem.space, params.config, where=f"{ctx.node_name}.config")
    outcome = runner(config, None)
    ctx.log(f"{ctx.node_name}: fixed configuration scores {dict(outcome.scores)}")
    recipe = _recipe(ctx, params, problem, config, "fixed configuration")
    recipe_path = _write_recipe(recipe, out_dir / "recipe.yaml")
    ctx.extras.update(trials=1, best={"config": dict(config), "scores": dict(outcome.scores)})
    return {
        "best": replace(runner.model_for(config), recipe=recipe.render),
        "pareto": {},
        "scores": dict(outcome.scores),
        "config": dict(config),
        "trials": None,
        "recipe": str(recipe_path),
        "report": None,
    }


def _recipe(
    ctx: RunContext, params: OptimizeParams, problem: SearchProblem, config: Mapping[str, Any], note: str
) -> Recipe:
    return Recipe(
        graph=ctx.graph,
        node_name=ctx.node_name,
        output=params.output,
        nodes=problem.make_nodes(config, None),
        config=dict(config),
        note=note,
    )


def _write_recipe(recipe: Recipe, path: Path) -> Path:
    from graphmerge.cache import atomic_write_bytes

    atomic_write_bytes(path, recipe.render(path.parent).encode())
    return path


def _smac_settings(params: OptimizeParams):
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


def held_out_spec(params: OptimizeParams) -> dict[str, Any] | None:
    """The evaluate spec that scores models on the objectives' held-out tasks (None: none declared)."""
    if not any(o.held_out for o in params.objectives):
        return None
    spec = evaluate_spec(params, "reference", params.evaluation.held_out_limit)
    spec["tasks"] = [
        {"task": o.held_out, "weight": o.weight, **({"metric": o.metric} if o.metric else {})}
        for o in params.objectives
    ]
    return spec


def _check_held_out(params: OptimizeParams) -> None:
    """Unknown held-out tasks or metrics are errors before the search, not after hours of trials."""
    from graphmerge.evaluation.tasks import task_metrics

    include = [str(p) for p in params.include_path]
    for o in params.objectives:
        if o.held_out is None:
            continue
        metrics = task_metrics(o.held_out, include)
        if o.metric is not None and o.metric not in metrics:
            raise SpecError(
                f"held-out task {o.held_out!r} does not report metric {o.metric!r}",
                where=f"objective {o.task}",
                fix=f"pick a held-out task with the same metric (it reports {metrics})",
            )


def _merge_worker_stats(ctx: RunContext, result: Any) -> None:
    """Trials run on Dask workers count their tasks and evaluations in the workers' own contexts; add them
    here so that --json tells the whole run's work."""
    for r in result.trials:
        if r.replayed or r.infeasible:
            continue
        ctx.stats.tasks_executed += int(r.extra.get("executed", 0))
        ctx.stats.tasks_cached += int(r.extra.get("cached", 0))
        ctx.stats.evaluations_run += int(r.extra.get("evaluations_run", 0))
        ctx.stats.evaluations_cached += int(r.extra.get("evaluations_cached", 0))


def _search(
    ctx: RunContext,
    params: OptimizeParams,
    inputs: Mapping[str, Any],
    problem: SearchProblem,
    runner: TrialRunner,
    out_dir: Path,
) -> dict[str, Any]:
    from graphmerge.search import progress_line, run_search
    from graphmerge.search.pareto import member_name

    settings = _smac_settings(params)
    _check_held_out(params)

    def on_trial(record, best) -> None:
        ctx.log(progress_line(record, best, settings.max_trials, max_examples=settings.max_examples))

    result = run_search(
        problem.space,
        runner,
        settings,
        out_dir,
        on_trial,
        initial_configs=problem.initial_configs,
        is_feasible=problem.is_feasible,
        write_reports=False,
    )
    if settings.n_workers > 1:
        _merge_worker_stats(ctx, result)
    if result.diverged:
        ctx.log(f"{ctx.node_name}: {result.divergence_note()}")
    if result.best is None:
        raise SpecError(
            "the search finished without a single feasible trial", fix="widen the space or raise n_trials"
        )
    best = result.best
    best_config = dict(best.config)
    sources = {ref: inputs[ref] for ref in params.refs()}
    # The sources on the search's own tasks at the best trial's budget: the reference lines of report.png.
    references = score_models(ctx, evaluate_spec(params, "reference", best.limit), sources)

    note = (
        f"best of {len(result.trials) + len(result.history)} trials of '{ctx.node_name}' "
        f"(trial #{best.number}, scores {dict(best.scores)})"
    )
    recipe = _recipe(ctx, params, problem, best_config, note)
    recipe_path = _write_recipe(recipe, out_dir / "best_recipe.yaml")
    best_model = replace(runner.model_for(best_config), recipe=recipe.render)
    pareto = {}
    for i, rec in enumerate(result.pareto):
        name = member_name(i)  # also the label of this point in pareto.png
        member = _recipe(ctx, params, problem, rec.config, f"{name}: trial #{rec.number}, {dict(rec.scores)}")
        _write_recipe(member, out_dir / f"{name}_recipe.yaml")
        pareto[name] = replace(runner.model_for(rec.config), recipe=member.render)

    if params.strategy == "prune" and params.base:
        reference = references[params.base]
        kept = best.score / reference["score"] if reference["score"] else None
        ctx.extras["unpruned"] = {
            "scores": reference["scores"],
            "score": reference["score"],
            "score_kept": kept,
        }
        ctx.log(
            f"{ctx.node_name}: unpruned {reference['scores']}; the pruned model keeps "
            + (f"{kept:.1%} of its score" if kept is not None else "an undefined share (unpruned score 0)")
        )
    held_out = _held_out(ctx, params, sources, best_model, pareto, out_dir)
    caption = None
    if held_out is not None:
        caption = (
            f"held-out ({' + '.join(held_out['tasks'].values())}): best {held_out['best']['score']:.4g}; "
            + ", ".join(f"{k} {v['score']:.4g}" for k, v in held_out["sources"].items())
        )
    files = result.write(out_dir, references={k: v["score"] for k, v in references.items()}, caption=caption)
    executed = [r.extra.get("executed", 0) for r in result.trials if not r.replayed]
    ctx.extras.update(
        trials=len(result.trials),
        trials_evaluated=result.evaluated,
        trials_replayed=result.replayed,
        trials_in_history=len(result.history),
        diverged=result.diverged,
        best={
            "trial": best.number,
            "config": best_config,
            "scores": dict(best.scores),
            "score": best.score,
            "budget": best.limit,
        },
        sources={k: {**v, "budget": best.limit} for k, v in references.items()},
        pareto=[
            {"name": member_name(i), "trial": r.number, "config": dict(r.config), "scores": dict(r.scores)}
            for i, r in enumerate(result.pareto)
        ],
        files={k: str(v) for k, v in {**files, "recipe": recipe_path}.items()},
    )
    if held_out is not None:
        ctx.extras["held_out"] = held_out
    ctx.extras["examples"] = {
        "total": result.examples_total,
        "this_run": sum(r.examples for r in result.trials if not r.replayed),
        "run": sum(int(r.extra.get("examples_run", 0)) for r in result.trials if not r.replayed),
        "at_best": best.examples_total,
        "max_examples": settings.max_examples,
    }
    if executed:
        ctx.extras["mean_executed_per_new_trial"] = sum(executed) / len(executed)
    ctx.log(f"{ctx.node_name}: best {dict(best.scores)} (trial #{best.number}) -> recipe {recipe_path}")
    return {
        "best": best_model,
        "pareto": pareto,
        "scores": dict(best.scores),
        "config": best_config,
        "trials": str(files.get("trials_jsonl", out_dir / "trials.jsonl")),
        "recipe": str(recipe_path),
        "report": str(files.get("report_png", "")),
    }


def _held_out(
    ctx: RunContext,
    params: OptimizeParams,
    sources: Mapping[str, Model],
    best: Model,
    pareto: Mapping[str, Model],
    out_dir: Path,
) -> dict[str, Any] | None:
    """Best model, Pareto members and sources scored on the held-out tasks; also written to held_out.json."""
    import json

    from graphmerge.cache import atomic_write_bytes

    spec = held_out_spec(params)
    if spec is None:
        return None
    scored = score_models(ctx, spec, {"best": best, **pareto, **sources})
    report = {
        "tasks": {o.task: o.held_out for o in params.objectives},
        "limit": spec["limit"],
        "best": scored["best"],
        "pareto": {k: scored[k] for k in pareto},
        "sources": {k: scored[k] for k in sources},
    }
    atomic_write_bytes(out_dir / "held_out.json", (json.dumps(report, indent=2) + "\n").encode())
    line = ", ".join(f"{k} {v['score']:.4g}" for k, v in report["sources"].items())
    ctx.log(f"{ctx.node_name}: held-out score: best {scored['best']['score']:.4g}; sources: {line}")
    return report
