"""`graphmerge viz`: valid DOT and Mermaid, coloured by cache state."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pydot
import pytest
from conftest import tiny_search_yaml

from graphmerge.cli import main
from graphmerge.runner import run_graph
from graphmerge.spec import load_graph
from graphmerge.viz import COLOURS, cache_states, render

REPO = Path(__file__).resolve().parent.parent
SVG_NS = "http://www.w3.org/2000/svg"
SVG = "{" + SVG_NS + "}"


def _graph(tmp_path, tiny_llamas):
    path = tmp_path / "g.yaml"
    path.write_text(
        f"""
nodes:
  base: {{op: load, path: {tiny_llamas["base"]}}}
  a: {{op: load, path: {tiny_llamas["a"]}}}
  merged:
    op: merge
    method: linear
    models: {{base: {{weight: 0.5}}, a: {{weight: 0.5}}}}
  save: {{op: save, input: merged, path: {tmp_path / "out"}}}
"""
    )
    return path


def _dot_fill(dot_text: str, node: str) -> str:
    [graph] = pydot.graph_from_dot_data(dot_text)
    [n] = graph.get_node(f'"{node}"')
    return n.get("fillcolor").strip('"')


def test_dot_parses_and_is_coloured_by_cache_state(tmp_path, tiny_llamas, cache_dir):
    path = _graph(tmp_path, tiny_llamas)
    graph = load_graph(path)
    before = render(graph, "dot", cache_dir=cache_dir)
    [parsed] = pydot.graph_from_dot_data(before)
    names = {n.get_name().strip('"') for n in parsed.get_nodes()} - {"node"}
    assert names == {"base", "a", "merged", "save"}
    edges = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in parsed.get_edges()}
    assert edges == {("base", "merged"), ("a", "merged"), ("merged", "save")}
    assert "method: linear" in before
    run_graph(path, cache_dir=cache_dir, progress=False)
    after = render(graph, "dot", cache_dir=cache_dir)
    assert _dot_fill(after, "merged") == COLOURS["cached"]
    assert _dot_fill(after, "save") == COLOURS["cached"]


def test_mermaid_is_well_formed(tmp_path, tiny_llamas, cache_dir, capsys):
    path = _graph(tmp_path, tiny_llamas)
    assert main(["viz", str(path), "--format", "mermaid", "--cache-dir", str(cache_dir)]) == 0
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert lines[0] == "flowchart LR"
    node_line = re.compile(r'^  n_\w+\["[^"]*"\]$')
    edge_line = re.compile(r"^  n_\w+ (-->|-- \w+ -->) n_\w+$")
    class_line = re.compile(r"^  (classDef \w+ fill:#[0-9a-f]{6},stroke:#555|class n_\w+ \w+)$")
    for line in lines[1:]:
        assert node_line.match(line) or edge_line.match(line) or class_line.match(line), line
    assert sum(bool(edge_line.match(line)) for line in lines) == 3


def _svg_nodes(svg_text: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg_text)
    return {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("data-node")}


def test_html_is_self_contained_svg_with_states_and_parameters(tmp_path, tiny_llamas, cache_dir):
    path = _graph(tmp_path, tiny_llamas)
    out = tmp_path / "g.html"
    assert main(["viz", str(path), "--format", "html", "-o", str(out), "--cache-dir", str(cache_dir)]) == 0
    page = out.read_text()
    assert "<script" not in page and "http://" not in page.replace(SVG_NS, "") and "https://" not in page
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    nodes = _svg_nodes(svg)
    assert set(nodes) == {"base", "a", "merged", "save"}
    texts = [t.text for t in nodes["merged"].iter(f"{SVG}text")]
    assert texts[:3] == ["merged", "[merge]", "method: linear"]
    assert "  base(weight=0.5)" in texts or "models: base(weight=0.5), a(weight=0.5)" in texts
    assert {g.get("data-state") for g in nodes.values()} == {"unknown"}  # no cache yet: nothing known
    edges = {(p.get("data-from"), p.get("data-to")) for p in ET.fromstring(svg).iter(f"{SVG}path")}
    assert {("base", "merged"), ("a", "merged"), ("merged", "save")} <= edges

    run_graph(path, cache_dir=cache_dir, progress=False)
    assert main(["viz", str(path), "--format", "html", "-o", str(out), "--cache-dir", str(cache_dir)]) == 0
    page = out.read_text()
    nodes = _svg_nodes(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])
    assert {n: g.get("data-state") for n, g in nodes.items()} == dict.fromkeys(nodes, "cached")
    [rect] = nodes["merged"].iter(f"{SVG}rect")
    assert rect.get("fill") == COLOURS["cached"]


def test_png_is_drawn_without_graphviz(tmp_path, tiny_llamas, monkeypatch):
    path = _graph(tmp_path, tiny_llamas)
    monkeypatch.setattr("shutil.which", lambda _name: None)
    out = tmp_path / "g.png"
    assert (
        main(["viz", str(path), "--format", "png", "-o", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["viz", str(path), "--format", "png"]) == 2  # a PNG needs -o


@pytest.mark.slow
def test_finished_search_and_its_output_are_shown_as_done(tmp_path):
    graph = tmp_path / "s.yaml"
    graph.write_text(
        "vars: {n_trials: 2}\n"
        + tiny_search_yaml("{facade: hpo, n_trials: ${n_trials}, max_budget: 4, seed: 0}")
        + "  best: {op: save, input: search.best, path: out/best}\n"
    )
    cache = tmp_path / "cache"
    before = cache_states(load_graph(graph), cache)
    assert before == {}  # no cache yet: nothing is known
    run_graph(graph, cache_dir=cache, progress=False)
    states = cache_states(load_graph(graph), cache)
    assert states["search"] == "cached" and states["best"] == "written"
    assert cache_states(load_graph(graph, overrides={"n_trials": 5}), cache)["search"] == "partial"
    svg = render(load_graph(graph), "svg", cache_dir=cache)
    labels = [t.text for t in _svg_nodes(svg)["search"].iter(f"{SVG}text")]
    assert "strategy: lfs" in labels and any("n_trials=2" in (t or "") for t in labels)


def test_layout_ranks_by_longest_path_and_never_overlaps():
    from graphmerge.graph_layout import layout

    order = ["a", "b", "c", "d", "e"]
    edges = [("a", "c"), ("b", "c"), ("a", "d"), ("c", "e"), ("d", "e"), ("a", "e")]
    sizes = {n: (40.0 + 10 * i, 30.0 + 5 * i) for i, n in enumerate(order)}
    lay = layout(order, sizes, edges)
    xs = {n: lay.boxes[n].x for n in order}
    # a, b start; c, d one step in; e after the longest path a -> c -> e
    assert xs["a"] == xs["b"] < xs["c"] == xs["d"] < xs["e"]
    for n, box in lay.boxes.items():
        assert (box.w, box.h) == sizes[n]
        assert 0 <= box.x and box.x + box.w <= lay.width and 0 <= box.y and box.y + box.h <= lay.height
    for p, q in [("a", "b"), ("c", "d")]:  # same layer: stacked without overlap
        top, bottom = sorted((lay.boxes[p], lay.boxes[q]), key=lambda b: b.y)
        assert top.y + top.h < bottom.y
    for curve in lay.curves:  # from the right side of the source to the left side of the target
        assert curve.start == lay.boxes[curve.src].right_mid and curve.end == lay.boxes[curve.dst].left_mid
