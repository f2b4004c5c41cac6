"""Running a whole graph: the glue between the CLI and the executor."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphmerge.cache import default_cache_dir
from graphmerge.context import make_context
from graphmerge.executor import ExecutorSettings, RunStats, check_nodes, run_nodes
from graphmerge.spec import GraphSpec, load_graph
from graphmerge.store import Store


@dataclass
class RunResult:
    graph: GraphSpec
    values: dict[str, Any]
    stats: RunStats
    extras: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {
            "graph": str(self.graph.file) if self.graph.file else None,
            "tasks": {"total": s.tasks_total, "executed": s.tasks_executed, "cached": s.tasks_cached},
            "tensors_read": s.tensors_read,
            "evaluations": {"run": s.evaluations_run, "cached": s.evaluations_cached},
            "examples_evaluated": s.examples_evaluated,
            "nodes_cached": s.nodes_cached,
            "statistics": {"computed": s.statistics_computed, "cached": s.statistics_cached},
            "outputs": s.outputs,
            "seconds": round(self.seconds, 3),
        }
        out.update(self.extras)
        return out


def node_summaries(graph: GraphSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """What the graph's nodes declare for the run summary (NodeType.summary), merged in graph order."""
    out: dict[str, Any] = {}
    for name in graph.order:
        summary = graph.nodes[name].node_type.summary
        if summary is None or name not in values:
            continue
        for key, value in summary(name, values[name]).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def run_graph(
    path: Path | str | None = None,
    *,
    text: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    cache_dir: Path | str | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
    cache_max_size: int | str | None = None,
    executor: ExecutorSettings | None = None,
    store: Store | None = None,
) -> RunResult:
    """`force`: recompute everything, ignoring what earlier runs cached (see graphmerge/cache.py)."""
    start = time.perf_counter()
    graph = load_graph(path, text=text, overrides=overrides)
    ctx = make_context(
        graph,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
        log=log,
        trust_remote_code=trust_remote_code,
        force=force,
        cache_max_size=cache_max_size,
        executor=executor,
        store=store,
    )
    try:
        # Everything `validate` checks fails here, before the first tensor is computed.
        check_nodes(ctx, graph)
        values = run_nodes(ctx, graph)
        extras = {**node_summaries(graph, values), "cache": ctx.cache.run_summary()}
    finally:
        ctx.cache.close()
    return RunResult(
        graph=graph, values=values, stats=ctx.stats, extras=extras, seconds=time.perf_counter() - start
    )


def check_graph(
    path: Path | str | None = None,
    *,
    text: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    cache_dir: Path | str | None = None,
    trust_remote_code: bool = False,
) -> GraphSpec:
    """`validate`: the graph, then every check `run` makes before computing (the same code path)."""
    graph = load_graph(path, text=text, overrides=overrides)
    root = Path(cache_dir or default_cache_dir())
    with tempfile.TemporaryDirectory(prefix="graphmerge-validate-") as scratch:
        # Checking reads an existing cache (scores already there) but never creates one.
        ctx = make_context(
            graph,
            cache_dir=root if root.is_dir() else scratch,
            device="cpu",
            progress=False,
            trust_remote_code=trust_remote_code,
            checking=True,
        )
        try:
            check_nodes(ctx, graph)
        finally:
            ctx.cache.close()
    return graph
