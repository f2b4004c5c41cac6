"""Drawing a graph as DOT, Mermaid, SVG, HTML or PNG, coloured by what the cache already holds.

SVG, HTML and PNG are laid out here (graphmerge/graph_layout.py): no Graphviz, no browser library,
nothing fetched. PNG is drawn with matplotlib (the [viz] extra)."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from graphmerge.cache import default_cache_dir
from graphmerge.errors import GraphmergeError
from graphmerge.executor import RunContext, lookup_ref, node_cache_key
from graphmerge.extras import require_extra
from graphmerge.graph_layout import Layout, layout
from graphmerge.plan import Model
from graphmerge.spec import GraphSpec

COLOURS = {
    "cached": "#a6e3a1",
    "written": "#d4f0c9",
    "partial": "#f9e2af",
    "missing": "#f5f5f5",
    "unknown": "#ffffff",
}
LEGEND = {
    "cached": "cached / done",
    "written": "output exists (its inputs are decided by a search)",
    "partial": "partly cached",
    "missing": "not computed",
    "unknown": "unknown until upstream nodes run",
}
# Shown first when present; every other parameter the graph sets follows.
KEY_PARAMS = ("method", "strategy", "path", "tasks", "limit", "remove", "keep", "source")
MAX_LINE = 46
MAX_PARAM_LINES = 10


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(
            f"{k}({_fmt(v)})" if isinstance(v, dict) else f"{k}={_fmt(v)}" for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, dict) and "task" in v for v in value):
            return ", ".join(str(v["task"]) for v in value)
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "\u2026"


def _param_lines(graph: GraphSpec, name: str) -> list[str]:
    """`key: value` for the parameters the graph sets, references (drawn as edges) left out."""
    spec = graph.nodes[name]
    dumped = spec.params.model_dump(mode="json")
    refs = set(spec.inputs)
    chosen = [k for k in KEY_PARAMS if k in spec.params.model_fields_set]
    chosen += sorted(k for k in spec.params.model_fields_set if k not in chosen)
    lines = []
    for key in chosen:
        value = dumped.get(key)
        if value in (None, [], {}) or (isinstance(value, str) and value in refs):
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) and v in refs for v in value):
            continue
        if key in ("path", "out") or key.endswith("_path"):
            value = [Path(v).name for v in value] if isinstance(value, list) else Path(str(value)).name
        text = f"{key}: {_fmt(value)}"
        if len(text) > MAX_LINE and isinstance(value, dict):  # one entry per line (models, smac)
            lines.append(f"{key}:")
            lines.extend(_clip(f"  {_fmt({k: v})}") for k, v in value.items())
        else:
            lines.append(_clip(text))
    if len(lines) > MAX_PARAM_LINES:
        lines = [*lines[: MAX_PARAM_LINES - 1], f"(+{len(lines) - MAX_PARAM_LINES + 1} more)"]
    return lines


def _label(graph: GraphSpec, name: str) -> str:
    spec = graph.nodes[name]
    return "\n".join([name, f"[{spec.op}]", *_param_lines(graph, name)])


def cache_states(graph: GraphSpec, cache_dir: Path | str | None) -> dict[str, str]:
    """Plan the lazy nodes (nothing is computed) and ask the cache about each node's result. Nodes
    with side effects answer through their own `cache_state`: the rule they skip work by (save's
    output stamp, evaluate's stored scores), so viz and a run never disagree about "up to date"."""
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
            ctx.node_name = name
            try:
                inputs = {ref: lookup_ref(values, ref) for ref in spec.inputs}
            except KeyError:  # downstream of a node that must run first (a search's best model)
                states[name] = _written_state(spec) if nt.effectful else "unknown"
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
            if nt.effectful:  # never run here; a node that can tell declares a cache_state
                states[name] = "unknown"
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


def _written_state(spec) -> str:
    """An output folder that graphmerge wrote, when the model it should hold is not known yet."""
    path = getattr(spec.params, "path", None)
    return "written" if path is not None and (Path(path) / "graphmerge.json").is_file() else "unknown"


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


_FONT = 12.0
_CHAR_W = _FONT * 0.6  # monospace advance
_LINE_H = _FONT * 1.35
_PAD = 8.0


def _sizes(labels: dict[str, list[str]]) -> dict[str, tuple[float, float]]:
    return {
        n: (max(len(line) for line in lines) * _CHAR_W + 2 * _PAD, len(lines) * _LINE_H + 2 * _PAD)
        for n, lines in labels.items()
    }


def _laid_out(graph: GraphSpec) -> tuple[dict[str, list[str]], Layout, list[tuple[str, str, str]]]:
    labels = {name: _label(graph, name).split("\n") for name in graph.order}
    edges = _edges(graph)
    return labels, layout(graph.order, _sizes(labels), [(s, d) for s, d, _ in edges]), edges


def to_svg(graph: GraphSpec, states: dict[str, str]) -> str:
    """A standalone SVG drawing: boxes coloured by cache state, every parameter in the tooltip."""
    labels, lay, edges = _laid_out(graph)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" font-family="ui-monospace, Menlo, Consolas, monospace" '
        f'font-size="{_FONT:g}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for curve, (_, _, output) in zip(lay.curves, edges):
        (x0, y0), (ax, ay), (bx, by), (x1, y1) = curve.start, curve.c1, curve.c2, curve.end
        out.append(
            f'<path class="edge" data-from="{html.escape(curve.src)}" data-to="{html.escape(curve.dst)}" '
            f'd="M{x0:.1f},{y0:.1f} C{ax:.1f},{ay:.1f} {bx:.1f},{by:.1f} {x1:.1f},{y1:.1f}" '
            'fill="none" stroke="#555" stroke-width="1.3" marker-end="url(#arrow)"/>'
        )
        if output:
            out.append(
                f'<text x="{x1 - 6:.1f}" y="{y1 - 5:.1f}" text-anchor="end" fill="#555" '
                f'font-size="{_FONT - 2:g}">{html.escape(output)}</text>'
            )
    for name in graph.order:
        box, state = lay.boxes[name], states.get(name, "unknown")
        full = json.dumps(graph.nodes[name].params.model_dump(mode="json"), default=str)
        out.append(f'<g class="node {state}" data-node="{html.escape(name)}" data-state="{state}">')
        out.append(f"<title>{html.escape(f'{name} ({state}): {full}')}</title>")
        out.append(
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="6" '
            f'fill="{COLOURS[state]}" stroke="#555"/>'
        )
        for i, line in enumerate(labels[name]):
            weight = ' font-weight="bold"' if i == 0 else ""
            y = box.y + _PAD + _LINE_H * (i + 0.75)
            out.append(f'<text x="{box.x + _PAD:.1f}" y="{y:.1f}"{weight}>{html.escape(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_html(graph: GraphSpec, states: dict[str, str]) -> str:
    """One self-contained page (inline SVG, no script, nothing fetched): opens offline."""
    title = html.escape(str(graph.file.name if graph.file else "graph"))
    shown = [s for s in COLOURS if s in states.values()] or ["unknown"]
    legend = " ".join(
        f'<span class="key" style="background:{COLOURS[s]}">{html.escape(LEGEND[s])}</span>' for s in shown
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}} .key{{border:1px solid #555;border-radius:4px;padding:2px 8px;margin-right:6px}}</style>
</head><body><h1>{title}</h1>
<p>{legend}</p>
<p><small>Hover a node for all its parameters.</small></p>
{to_svg(graph, states)}</body></html>
"""


def to_png(graph: GraphSpec, states: dict[str, str]) -> bytes:
    require_extra("viz", "viz --format png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MplPath

    labels, lay, edges = _laid_out(graph)
    dpi = 100
    fig = Figure(figsize=(lay.width / dpi, lay.height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)  # SVG coordinates: y grows downwards
    ax.axis("off")
    points = 72 / dpi  # font sizes are in points, the layout in pixels
    for curve, (_, _, output) in zip(lay.curves, edges):
        verts = [curve.start, curve.c1, curve.c2, curve.end]
        codes = [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4]
        ax.add_patch(
            FancyArrowPatch(path=MplPath(verts, codes), arrowstyle="-|>", mutation_scale=10, color="#555")
        )
        if output:
            x1, y1 = curve.end
            ax.text(x1 - 6, y1 - 5, output, ha="right", fontsize=(_FONT - 2) * points, color="#555")
    for name in graph.order:
        box = lay.boxes[name]
        ax.add_patch(
            FancyBboxPatch(
                (box.x, box.y),
                box.w,
                box.h,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor=COLOURS[states.get(name, "unknown")],
                edgecolor="#555",
            )
        )
        for i, line in enumerate(labels[name]):
            ax.text(
                box.x + _PAD,
                box.y + _PAD + _LINE_H * (i + 0.75),
                line,
                family="monospace",
                fontsize=_FONT * points,
                fontweight="bold" if i == 0 else "normal",
            )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render(graph: GraphSpec, fmt: str, cache_dir: Path | str | None = None) -> Any:
    states = cache_states(graph, cache_dir)
    renderers = {"dot": to_dot, "mermaid": to_mermaid, "svg": to_svg, "html": to_html, "png": to_png}
    if fmt not in renderers:
        raise GraphmergeError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(renderers)}")
    return renderers[fmt](graph, states)
