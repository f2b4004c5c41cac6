"""Standalone recipes that rebuild a chosen model: the search graph's sources, the trial's nodes and a
save node, with paths relative to wherever the recipe is written. Written once per chosen model (the
best, a fixed configuration, each Pareto member) by `export`, which also attaches it to the model so
that `save` writes it into the model card."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from graphmerge.atomic import atomic_write_bytes
from graphmerge.errors import SpecError
from graphmerge.plan import Model
from graphmerge.spec import GraphSpec, ancestors, path_fields, plain


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


def export(recipe: Recipe, model: Model, path: Path) -> Model:
    """Write `recipe` to `path` and return `model` carrying it (for its model card)."""
    atomic_write_bytes(path, recipe.render(path.parent).encode())
    return replace(model, recipe=recipe.render)
