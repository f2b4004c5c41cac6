"""An `optimize` node's three ways to run, each returning its declared outputs: a whole search, one fixed
configuration, and the check `validate` (and `run`, before computing) makes. The `summary` output holds
what the run's summary (--json) reports of the search."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphmerge.errors import GraphmergeError, SpecError
from graphmerge.executor import UNCHECKED, RunContext, run_nodes
from graphmerge.optimize.params import OptimizeParams
from graphmerge.optimize.problem import SearchProblem, build_problem, configs_to_check
from graphmerge.optimize.recipe import Recipe, export
from graphmerge.optimize.report import Stopwatch, write_report_md
from graphmerge.optimize.scoring import Evaluator, check_held_out, held_out_report, score_models
from graphmerge.optimize.trials import TrialRunner, trial_graph
from graphmerge.plan import Model

OUTPUTS = ("best", "pareto", "scores", "config", "trials", "recipe", "report", "summary")


def _recipe(ctx: RunContext, params: OptimizeParams, problem: SearchProblem, config, note: str) -> Recipe:
    return Recipe(
        graph=ctx.graph,
        node_name=ctx.node_name,
        output=params.output,
        nodes=problem.make_nodes(config, None),
        config=dict(config),
        note=note,
    )


def check(
    ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any], evaluator: Evaluator, out_dir: Path
) -> dict[str, Any]:
    """The strategy settings, the space, the SMAC settings, the output folder, and the trial graph
    (merge parameters per tensor, tasks) of the default, initial and a sample of configurations,
    all planned, none evaluated. The best model stands in as the default configuration's."""
    from graphmerge.search import check_search

    problem = build_problem(params, inputs, ctx.seed)
    check_held_out(params)
    if params.smac is not None:
        check_search(problem.space, params.smac_settings(), out_dir, initial_configs=problem.initial_configs)
    configs = configs_to_check(params, problem, ctx.seed)
    best = None
    for config in configs:
        try:
            graph = trial_graph(ctx.graph, params, problem.make_nodes(config, None))
            model = run_nodes(ctx, graph, initial=dict(inputs))[params.output]
            if model is not UNCHECKED:
                evaluator.check(ctx, params.request(None), model)
        except SpecError as exc:
            where = f"trial configuration {config}" + (f": {exc.where}" if exc.where else "")
            raise SpecError(exc.what, where=where, fix=exc.fix) from None
        except GraphmergeError as exc:
            exc.where = f"trial configuration {config}" + (f": {exc.where}" if exc.where else "")
            exc.args = (exc.one_line(),)
            raise
        if best is None:
            best = model
    return outputs(best=best, config=configs[0] if configs else {})


def outputs(**given: Any) -> dict[str, Any]:
    """Every declared output, those not given empty."""
    empty: dict[str, Any] = {"pareto": {}, "scores": {}, "config": {}, "summary": {}}
    return {name: given.get(name, empty.get(name)) for name in OUTPUTS}


def fixed(
    ctx: RunContext, params: OptimizeParams, runner: TrialRunner, problem: SearchProblem, out_dir: Path
) -> dict[str, Any]:
    """One configuration evaluated, its recipe written."""
    from graphmerge.search import validate_config

    config = validate_config(problem.space, params.config or {}, where=f"{ctx.node_name}.config")
    outcome = runner(config, None)
    ctx.log(f"{ctx.node_name}: fixed configuration scores {dict(outcome.scores)}")
    recipe_path = out_dir / "recipe.yaml"
    best = export(
        _recipe(ctx, params, problem, config, "fixed configuration"), runner.model_for(config), recipe_path
    )
    return outputs(
        best=best,
        scores=dict(outcome.scores),
        config=dict(config),
        recipe=str(recipe_path),
        summary={"trials": 1, "best": {"config": dict(config), "scores": dict(outcome.scores)}},
    )


def _merge_worker_stats(ctx: RunContext, result: Any) -> None:
    """Trials run on Dask workers count their tasks and evaluations in the workers' own contexts; add them
    here so that --json tells the whole run's work."""
    from graphmerge.search.records import EXAMPLES_RUN

    for r in result.trials:
        if r.replayed or r.infeasible:
            continue
        ctx.stats.tasks_executed += int(r.extra.get("executed", 0))
        ctx.stats.tasks_cached += int(r.extra.get("cached", 0))
        ctx.stats.evaluations_run += int(r.extra.get("evaluations_run", 0))
        ctx.stats.evaluations_cached += int(r.extra.get("evaluations_cached", 0))
        ctx.stats.examples_evaluated += int(r.extra.get(EXAMPLES_RUN, 0))


def search(
    ctx: RunContext,
    params: OptimizeParams,
    inputs: Mapping[str, Model],
    runner: TrialRunner,
    problem: SearchProblem,
    out_dir: Path,
) -> dict[str, Any]:
    """The SMAC search, then the recipes of the best trial and of each Pareto member, the sources'
    reference scores, the strategy's report and the held-out scores."""
    from graphmerge.search import progress_line, run_search
    from graphmerge.search.pareto import member_name
    from graphmerge.search.records import EXAMPLES_RUN
    from graphmerge.strategies import SearchOutcome

    settings = params.smac_settings()
    check_held_out(params)
    clock = Stopwatch.start(ctx)

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
    if settings.distributed:
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
    references = score_models(ctx, runner.evaluator.run, params.request(best.limit), sources)

    note = (
        f"best of {len(result.trials) + len(result.history)} trials of '{ctx.node_name}' "
        f"(trial #{best.number}, scores {dict(best.scores)})"
    )
    recipe_path = out_dir / "best_recipe.yaml"
    best_model = export(
        _recipe(ctx, params, problem, best_config, note), runner.model_for(best_config), recipe_path
    )
    pareto = {}
    for i, rec in enumerate(result.pareto):
        name = member_name(i)  # also the label of this point in pareto.png
        member = _recipe(ctx, params, problem, rec.config, f"{name}: trial #{rec.number}, {dict(rec.scores)}")
        pareto[name] = export(member, runner.model_for(rec.config), out_dir / f"{name}_recipe.yaml")

    summary: dict[str, Any] = {}
    if problem.strategy is not None and problem.strategy.report is not None:
        said = problem.strategy.report(
            problem.settings,
            SearchOutcome(best_score=best.score, best_scores=dict(best.scores), sources=references),
        )
        summary.update(said.summary)
        for line in said.lines:
            ctx.log(f"{ctx.node_name}: {line}")
    held_out = held_out_report(ctx, runner.evaluator.run, params, sources, best_model, pareto, out_dir)
    caption = None
    if held_out is not None:
        caption = (
            f"held-out ({' + '.join(held_out['tasks'].values())}): best {held_out['best']['score']:.4g}; "
            + ", ".join(f"{k} {v['score']:.4g}" for k, v in held_out["sources"].items())
        )
    files = result.write(out_dir, references={k: v["score"] for k, v in references.items()}, caption=caption)
    files["report_md"] = write_report_md(
        ctx, clock, settings=settings, result=result, references=references, held_out=held_out,
        recipe_path=recipe_path, out_dir=out_dir, in_flight=result.in_flight,
    )  # fmt: skip
    executed = [r.extra.get("executed", 0) for r in result.trials if not r.replayed]
    summary.update(
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
        summary["held_out"] = held_out
    summary["examples"] = {
        "total": result.examples_total,
        "this_run": sum(r.examples for r in result.trials if not r.replayed),
        "run": sum(int(r.extra.get(EXAMPLES_RUN, 0)) for r in result.trials if not r.replayed),
        "at_best": best.examples_total,
        "max_examples": settings.max_examples,
    }
    if executed:
        summary["mean_executed_per_new_trial"] = sum(executed) / len(executed)
    ctx.log(f"{ctx.node_name}: best {dict(best.scores)} (trial #{best.number}) -> recipe {recipe_path}")
    return outputs(
        best=best_model,
        pareto=pareto,
        scores=dict(best.scores),
        config=best_config,
        trials=str(files.get("trials_jsonl", out_dir / "trials.jsonl")),
        recipe=str(recipe_path),
        report=str(files.get("report_png", "")),
        summary=summary,
    )
