"""`optimize`: SMAC search over merge recipes (or one fixed configuration). The search bridge
(graphmerge/optimize) does the work; this node hands it the evaluation it owns and declares the outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from graphmerge.executor import RunContext
from graphmerge.nodes.evaluate import check_evaluation, check_writable_file, run_evaluation
from graphmerge.optimize import run
from graphmerge.optimize.params import OptimizeParams
from graphmerge.optimize.scoring import Evaluator
from graphmerge.registry import node

EVALUATOR = Evaluator(run=run_evaluation, check=check_evaluation)


def optimize_check(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    out_dir = params.out_dir(ctx.graph.dir, ctx.node_name)
    check_writable_file(out_dir / "trials.jsonl")
    return run.check(ctx, params, inputs, EVALUATOR, out_dir)


def search_state(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> str:
    """For `viz`: how far the search's trial log has got (read directly: no SMAC import)."""
    out_dir = params.out_dir(ctx.graph.dir, ctx.node_name)
    trials = 0
    try:
        # search.trial_log.LOG_NAME, spelled out: viz need not import the search package
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
    outputs=run.OUTPUTS,
    effectful=True,
    extras=("search",),
    cache_state=search_state,
    check=optimize_check,
    summary=lambda name, value: value["summary"],
)
def optimize_node(ctx: RunContext, params: OptimizeParams, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Search merge recipes with SMAC (or evaluate one fixed configuration of a strategy)."""
    from graphmerge.optimize.problem import build_problem
    from graphmerge.optimize.trials import TrialRunner

    out_dir = params.out_dir(ctx.graph.dir, ctx.node_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.cache.force:  # --force: a fresh search, not a resume; the old log is kept beside the new one
        from graphmerge.search.trial_log import LOG_NAME

        if (out_dir / LOG_NAME).exists():
            (out_dir / LOG_NAME).replace(out_dir / f"{LOG_NAME}.before-force")
    problem = build_problem(params, inputs, ctx.seed)
    runner = TrialRunner(ctx, params, dict(inputs), problem, EVALUATOR)
    if params.config is None:
        return run.search(ctx, params, inputs, runner, problem, out_dir)
    return run.fixed(ctx, params, runner, problem, out_dir)
