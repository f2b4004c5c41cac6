"""What `save` writes beside the weights so a model can be trusted and rebuilt: the resolved graph
(`graph.yaml`) and a Hugging Face model card (`README.md`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from graphmerge.plan import Model
from graphmerge.spec import GraphSpec, ancestors, plain

__all__ = ["component_versions", "model_card", "plain", "resolved_graph_yaml"]


def component_versions(graph: GraphSpec) -> dict[str, Any]:
    """Versions of graphmerge and of every node type and merge method the graph uses; those defined
    outside graphmerge (plugins) also name their module."""
    import graphmerge
    from graphmerge.methods import get_method

    def entry(version: str, fn: Any) -> str:
        module = getattr(fn, "__module__", "") or ""
        if module == "graphmerge" or module.startswith("graphmerge."):
            return version
        source = getattr(sys.modules.get(module), "__file__", None) or module
        return f"{version} (plugin {source})"

    nodes: dict[str, str] = {}
    methods: dict[str, str] = {}
    for spec in graph.nodes.values():
        nt = spec.node_type
        nodes[nt.name] = entry(nt.version, nt.fn)
        method = getattr(spec.params, "method", None)
        if spec.op == "merge" and isinstance(method, str):
            m = get_method(method)
            methods[m.name] = entry(m.version, m.fn)
    return {"graphmerge": graphmerge.__version__, "node_types": nodes, "merge_methods": methods}


def resolved_graph_yaml(graph: GraphSpec) -> str:
    """The graph as it ran: variables and --set overrides substituted, relative paths made absolute,
    component versions recorded in the header. `graphmerge run` accepts it as it is."""
    versions = component_versions(graph)
    header = [
        "# The graph that produced this model, resolved: variables and --set overrides applied,",
        "# relative paths made absolute. Rerun it with `graphmerge run graph.yaml`.",
        f"# graphmerge {versions['graphmerge']}",
        "# node types: " + ", ".join(f"{k} {v}" for k, v in versions["node_types"].items()),
    ]
    if versions["merge_methods"]:
        header.append(
            "# merge methods: " + ", ".join(f"{k} {v}" for k, v in versions["merge_methods"].items())
        )
    doc: dict[str, Any] = {"seed": graph.seed}
    if graph.trust_remote_code:
        doc["trust_remote_code"] = True
    doc["nodes"] = {name: dict(spec.raw) for name, spec in graph.nodes.items()}
    body = yaml.safe_dump(plain(doc), sort_keys=False, default_flow_style=None, width=110)
    return "\n".join(header) + "\n" + body


def _effective_params(spec: Any) -> dict[str, Any]:
    """A node's parameters with defaults filled in, a merge's method parameters included."""
    out = {"op": spec.op, **spec.params.model_dump(mode="json")}
    if spec.op == "merge":
        from graphmerge.methods import get_method

        m = get_method(out["method"])
        defaults = {k: p.default for k, p in m.global_params.items() if p.default is not None}
        out["params"] = {**defaults, **out["params"]}
        model_defaults = {k: p.default for k, p in m.model_params.items() if p.default is not None}
        out["models"] = {
            ref: {**model_defaults, **(given or {})} if ref != out["base"] else given
            for ref, given in out["models"].items()
        }
    return out


def _model_id(path: str) -> str:
    """A folder inside a Hugging Face hub cache (`models--org--name/snapshots/REV`) is `org/name`,
    which the Hub links; any other folder is named by its path."""
    for part in reversed(Path(path).parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return path


def _source_models(graph: GraphSpec, names: list[str]) -> list[str]:
    return [_model_id(str(graph.nodes[n].raw.get("path"))) for n in names if graph.nodes[n].op == "load"]


def model_card(graph: GraphSpec, save_node: str, model: Model, dtype: str | None) -> str:
    """A model card with `base_model` metadata (every source model), and for every node that built
    the model, its operation and all of its parameters (defaults included)."""
    from huggingface_hub import ModelCard, ModelCardData

    before = ancestors(graph, save_node)
    upstream = [n for n in graph.order if n in before]
    sources = _source_models(graph, upstream)
    merges = [graph.nodes[n] for n in upstream if graph.nodes[n].op == "merge"]
    methods = list(dict.fromkeys(str(getattr(s.params, "method", "")) for s in merges))
    data = ModelCardData(
        base_model=sources or None,
        library_name="transformers",
        tags=["merge", "graphmerge", *methods],
    )
    steps = {n: _effective_params(graph.nodes[n]) for n in upstream if graph.nodes[n].op != "load"}
    lines = [
        "# Merged model",
        "",
        "Produced by [graphmerge](https://pypi.org/project/graphmerge/); `graph.yaml` beside this card is",
        "the resolved graph that rebuilds it (`graphmerge run graph.yaml`).",
        "",
        "## Sources",
        "",
        *[f"- `{n}`: `{graph.nodes[n].raw.get('path')}`" for n in upstream if graph.nodes[n].op == "load"],
        "",
        "## Method",
        "",
        *[f"- `{s.name}`: **{getattr(s.params, 'method', '')}**" for s in merges],
        "",
        "## Every step and parameter",
        "",
        "```yaml",
        yaml.safe_dump(plain(steps), sort_keys=False, width=110).rstrip(),
        "```",
        "",
        "## Recipe",
        "",
        *[f"- `{step}`" for step in model.provenance],
        "",
        f"Model key (Merkle root of its tensors): `{model.key}`",
        f"dtype: {dtype or 'as sources'}",
        "",
    ]
    card = ModelCard.from_template(
        data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}", body="\n".join(lines)
    )
    return str(card)
