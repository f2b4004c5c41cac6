"""What an `optimize` node leaves behind besides the trial table: standalone recipes that rebuild a chosen
model (paths relative to wherever the recipe is written) and the scores of models on given tasks.

Kept apart from the node itself: these are the parts a user reads and reruns, and the node stays the loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graphmerge.errors import SpecError
from graphmerge.executor import RunContext
from graphmerge.nodes.card import plain
from graphmerge.plan import Model
from graphmerge.spec import GraphSpec, ancestors, path_fields


def _relative(value: Any, folder: Path) -> Any:
    """A graph path value (absolute after loading) rewritten relative to `folder`; other values unchanged."""
    if isinstance(value, str) and "+" in value:  # MODEL+ADAPTER
        return "+".join(_relative(v, folder) for v in value.split("+"))
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, folder)
    if isinstance(value, list):
        return [_relative(v, folder) for v in value]
    return value


def _outer_nodes(graph: GraphSpec, names: Sequence[str], folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for n in names:
        spec = graph.nodes[n]
        paths = path_fields(type(spec.params))
        out[n] = {k: _relative(v, folder) if k in paths else v for k, v in spec.raw.items()}
    return out


@dataclass(frozen=True)
class Recipe:
    """The standalone graph that rebuilds one model: the search graph's ancestors of the `optimize` node
    (the source models), the trial's nodes, and a save node. Rendered for a folder, so that its paths are
    relative to where the file is written and the folder can move together with the models it names."""

    graph: GraphSpec
    node_name: str
    output: str
    nodes: Mapping[str, Any]
    config: Mapping[str, Any]
    note: str

    def render(self, folder: Path) -> str:
        names = sorted(ancestors(self.graph, self.node_name), key=self.graph.order.index)
        clash = [n for n in names if n in self.nodes]
        if clash:
            raise SpecError(
                f"graph node names {clash} clash with the strategy's trial node names",
                fix="rename those nodes",
            )
        out_nodes: dict[str, Any] = _outer_nodes(self.graph, names, Path(folder).absolute())
        out_nodes.update(self.nodes)
        out_nodes["save"] = {"op": "save", "input": self.output, "path": "${out}"}
        doc = {"seed": self.graph.seed, "vars": {"out": f"out/{self.node_name}_best"}, "nodes": out_nodes}
        header = (
            f"# {self.note}\n# configuration: {dict(self.config)}\n"
            "# rebuild it: graphmerge run THIS_FILE [--set out=FOLDER] (paths are relative to this file)\n"
        )
        return header + yaml.safe_dump(plain(doc), sort_keys=False, default_flow_style=None, width=120)


def score_models(
    ctx: RunContext, eval_spec: Mapping[str, Any], models: Mapping[str, Model]
) -> dict[str, dict[str, Any]]:
    """{name: {scores: {task: value}, score: weighted sum}} for each model, through the evaluation cache."""
    from graphmerge.nodes.evaluate import EvaluateParams, run_evaluation

    params = EvaluateParams(**{**eval_spec, "input": "reference"})
    weights = {t.task: t.weight for t in params.tasks}
    out = {}
    started = time.perf_counter()
    for name, model in models.items():
        scores = dict(run_evaluation(ctx, params, model)["scores"])
        out[name] = {"scores": scores, "score": sum(scores[t] * w for t, w in weights.items())}
    # Counted with the evaluate nodes' time, so that a search's report splits its wall time completely.
    ctx.stats.op_seconds["evaluate"] = (
        ctx.stats.op_seconds.get("evaluate", 0.0) + time.perf_counter() - started
    )
    return out
