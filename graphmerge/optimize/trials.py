"""One trial: a configuration's nodes run as a subgraph through the same executor and cache as
everything else (so whatever trials share is computed once), then its model scored."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from graphmerge.context import make_context
from graphmerge.executor import RunContext, run_nodes
from graphmerge.optimize.params import OptimizeParams
from graphmerge.optimize.problem import SearchProblem, build_problem, output_node
from graphmerge.optimize.scoring import Evaluator
from graphmerge.plan import Model
from graphmerge.spec import GraphSpec, ancestors, build_graph, load_graph


def trial_graph(graph: GraphSpec, params: OptimizeParams, nodes: Mapping[str, Any]) -> GraphSpec:
    """A configuration's nodes as a graph whose references may name the enclosing graph's nodes."""
    output_node(params, nodes)
    return build_graph({"nodes": dict(nodes), "seed": graph.seed}, graph_dir=graph.dir, external=graph.nodes)


def upstream(graph: GraphSpec, node_name: str) -> GraphSpec:
    """The part of `graph` that `node_name` depends on."""
    names = ancestors(graph, node_name)
    return replace(
        graph, nodes={n: graph.nodes[n] for n in names}, order=tuple(n for n in graph.order if n in names)
    )


def cold_task_count(model: Model) -> int:
    """How many tensor tasks building `model` takes with an empty cache (source reads excluded)."""
    seen: set[str] = set()
    stack = list(model.tensors.values())
    count = 0
    while stack:
        task = stack.pop()
        if task.local_key in seen:
            continue
        seen.add(task.local_key)
        if task.cached:
            count += 1
        stack.extend(task.inputs)
    return count


class TrialRunner:
    """objective(config, limit) for the search driver. Picklable, so Dask workers can run trials:
    a worker rebuilds the graph's context from the graph text and shares the on-disk cache."""

    def __init__(
        self,
        ctx: RunContext,
        params: OptimizeParams,
        outer: Mapping[str, Any],
        problem: SearchProblem,
        evaluator: Evaluator,
    ):
        self._ctx: RunContext | None = ctx
        self._outer: Mapping[str, Any] | None = outer
        self._problem: SearchProblem | None = problem
        self.params = params
        self.evaluator = evaluator
        self.node_name = ctx.node_name
        self.graph_text = ctx.graph.text
        self.graph_file = ctx.graph.file
        self.graph_dir = ctx.graph.dir
        self.variables = dict(ctx.graph.vars)
        self.cache_root = ctx.cache.location  # a folder or an fsspec URL: what a worker opens
        self.device = str(ctx.device)
        self.trust_remote_code = ctx.trust_remote_code
        self._sizes: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ctx=None, _outer=None, _problem=None)
        return state

    def _ensure(self) -> tuple[RunContext, Mapping[str, Any], SearchProblem]:
        if self._ctx is None:
            # A Dask worker: the graph's context rebuilt from its text, as `run` builds it.
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
            values = run_nodes(ctx, upstream(graph, self.node_name))
            inputs = {ref: values[ref] for ref in graph.nodes[self.node_name].inputs}
            self._ctx, self._outer = ctx, values
            self._problem = build_problem(self.params, inputs, graph.seed)
        assert self._outer is not None and self._problem is not None
        return self._ctx, self._outer, self._problem

    def model_for(self, config: Mapping[str, Any]) -> Model:
        """The trial's model, planned but not computed (nothing is evaluated)."""
        ctx, outer, problem = self._ensure()
        graph = trial_graph(ctx.graph, self.params, problem.make_nodes(config, None))
        return run_nodes(ctx, graph, initial=outer)[self.params.output]

    def __call__(self, config: Mapping[str, Any], limit: int | None):
        from graphmerge.search import TrialOutcome
        from graphmerge.search.examples import SCORED
        from graphmerge.search.records import EXAMPLES_RUN

        ctx, outer, problem = self._ensure()
        started = time.perf_counter()
        before = ctx.stats.snapshot()
        graph = trial_graph(ctx.graph, self.params, problem.make_nodes(config, limit))
        with ctx.cache.search_trial():
            model = run_nodes(ctx, graph, initial=outer)[self.params.output]
            # Trial models are lazy: their tensor work happens inside the evaluation.
            evaluating = time.perf_counter()
            result = self.evaluator.run(ctx, self.params.request(limit), model)
            evaluate_s = time.perf_counter() - evaluating
        ctx.stats.op_seconds["evaluate"] = ctx.stats.op_seconds.get("evaluate", 0.0) + evaluate_s
        delta = ctx.stats.since(before)
        extra_examples = {
            SCORED: self.examples_scored(limit),  # search/examples.py counts from these
            EXAMPLES_RUN: delta["examples_evaluated"],
        }
        return TrialOutcome(
            scores=dict(result["scores"]),
            cost_s=time.perf_counter() - started,
            extra={
                "executed": delta["tasks_executed"],
                "cached": delta["tasks_cached"],
                "cold_tasks": cold_task_count(model),
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
