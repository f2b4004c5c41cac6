"""Drawing a graph as DOT, Mermaid, HTML or PNG, coloured by what the cache already holds."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from graphmerge.cache import default_cache_dir
from graphmerge.errors import GraphmergeError
from graphmerge.executor import RunContext, lookup_ref, node_cache_key
from graphmerge.plan import Model
from graphmerge.spec import GraphSpec

COLOURS = {"cached": "#a6e3a1", "partial": "#f9e2af", "missing": "#f5f5f5", "unknown": "#ffffff"}
KEY_PARAMS = ("method", "path", "strategy", "tasks", "limit", "remove", "keep", "source")


def _label(graph: GraphSpec, name: str) -> str:
    spec = graph.nodes[name]
    dumped = spec.params.model_dump(mode="json")
    details = []
    for key in KEY_PARAMS:
        value = dumped.get(key)
        if value in (None, [], {}):
            continue
        if key == "path":
            value = Path(str(value)).name
        if key == "tasks" and isinstance(value, list):
            value = ",".join(t.get("task", "?") if isinstance(t, dict) else str(t) for t in value)
        details.append(f"{key}: {value}")
    return "\n".join([name, f"[{spec.op}]", *details])


def cache_states(graph: GraphSpec, cache_dir: Path | str | None) -> dict[str, str]:
    """Plan the lazy nodes (nothing is computed) and ask the cache about each node's result."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    if not root.exists():
        return {}
    from graphmerge.runner import make_context

    ctx: RunContext = make_context(graph, cache_dir=root, device="cpu", progress=False, log=lambda _m: None)
    states: dict[str, str] = {}
    values: dict[str, Any] = {}
    try:
        for name in graph.order:
            spec = graph.nodes[name]
            nt = spec.node_type
            try:
                inputs = {ref: lookup_ref(values, ref) for ref in spec.inputs}
            except KeyError:
                states[name] = "unknown"
                continue
            if nt.cache_state is not None:
                try:
                    states[name] = nt.cache_state(ctx, spec.params, inputs)
                except GraphmergeError:
                    states[name] = "unknown"
                continue
            if nt.cached:
                key = node_cache_key(spec, inputs)
                hit = ctx.cache.get_result(key)
                states[name] = "cached" if hit is not None else "missing"
                if hit is not None:
                    values[name] = hit
                continue
            if nt.effectful:
                states[name] = _save_state(spec, inputs)
                continue
            try:
                value = nt.fn(ctx, spec.params, inputs)
            except GraphmergeError:
                states[name] = "unknown"
                continue
            values[name] = value
            states[name] = _model_state(ctx, value)
    finally:
        ctx.cache.close()
    return states


def _model_state(ctx: RunContext, value: Any) -> str:
    models = (
        [value]
        if isinstance(value, Model)
        else [v for v in value.values() if isinstance(v, Model)]
        if isinstance(value, dict)
        else []
    )
    tasks = [t for m in models for t in m.tensors.values() if t.cached]
    if not models:
        return "unknown"
    if not tasks:
        return "cached"  # only source reads: nothing to compute
    hits = sum(ctx.cache.has_tensor(t.key) for t in tasks)
    return "cached" if hits == len(tasks) else "partial" if hits else "missing"


def _save_state(spec, inputs: dict[str, Any]) -> str:
    path = getattr(spec.params, "path", None)
    model = next((v for v in inputs.values() if isinstance(v, Model)), None)
    if path is None or model is None:
        return "unknown"
    stamp = Path(path) / "graphmerge.json"
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("model_key") == model.key:
                return "cached"
        except (OSError, ValueError):
            pass
    return "missing"


def _edges(graph: GraphSpec) -> list[tuple[str, str, str]]:
    out = []
    for name, spec in graph.nodes.items():
        for ref in spec.inputs:
            src, _, output = ref.partition(".")
            out.append((src, name, output))
    return out


def to_dot(graph: GraphSpec, states: dict[str, str]) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [
        "digraph graphmerge {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for name in graph.order:
        colour = COLOURS[states.get(name, "unknown")]
        lines.append(f"  {q(name)} [label={q(_label(graph, name))}, fillcolor={q(colour)}];")
    for src, dst, output in _edges(graph):
        attr = f" [label={q(output)}]" if output else ""
        lines.append(f"  {q(src)} -> {q(dst)}{attr};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def to_mermaid(graph: GraphSpec, states: dict[str, str]) -> str:
    lines = ["flowchart LR"]
    for name in graph.order:
        label = _label(graph, name).replace('"', "'").replace("\n", "<br/>")
        lines.append(f'  {_mermaid_id(name)}["{label}"]')
    for src, dst, output in _edges(graph):
        arrow = f"-- {output} -->" if output else "-->"
        lines.append(f"  {_mermaid_id(src)} {arrow} {_mermaid_id(dst)}")
    for state, colour in COLOURS.items():
        lines.append(f"  classDef {state} fill:{colour},stroke:#555")
    for name in graph.order:
        lines.append(f"  class {_mermaid_id(name)} {states.get(name, 'unknown')}")
    return "\n".join(lines) + "\n"


def to_html(graph: GraphSpec, states: dict[str, str]) -> str:
    # Mermaid renders in the browser; the diagram text stays readable without JavaScript too.
    body = html.escape(to_mermaid(graph, states))
    title = html.escape(str(graph.file.name if graph.file else "graph"))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<script type="module">import mermaid from "https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs"; mermaid.initialize({{startOnLoad: true}});</script>
</head><body><h1>{title}</h1>
<p>green: cached, yellow: partly cached, grey: not computed</p>
<pre class="mermaid">
{body}</pre></body></html>
"""


def render(graph: GraphSpec, fmt: str, cache_dir: Path | str | None = None) -> Any:
    states = cache_states(graph, cache_dir)
    if fmt == "dot":
        return to_dot(graph, states)
    if fmt == "mermaid":
        return to_mermaid(graph, states)
    if fmt == "html":
        return to_html(graph, states)
    if fmt == "png":
        dot = shutil.which("dot")
        if dot is None:
            raise GraphmergeError(
                "PNG output needs Graphviz's `dot` program, which is not installed",
                fix="install graphviz (e.g. apt-get install graphviz) or use --format dot|mermaid|html",
            )
        proc = subprocess.run(
            [dot, "-Tpng"], input=to_dot(graph, states).encode(), capture_output=True, check=False
        )
        if proc.returncode != 0:
            raise GraphmergeError(f"graphviz failed: {proc.stderr.decode().strip()}")
        return proc.stdout
    raise GraphmergeError(f"unknown format {fmt!r}", fix="use dot, mermaid, html or png")
