"""`graphmerge viz`: valid DOT and Mermaid, coloured by cache state."""

from __future__ import annotations

import re

import pydot

from graphmerge.cli import main
from graphmerge.runner import run_graph
from graphmerge.spec import load_graph
from graphmerge.viz import COLOURS, render


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


def test_html_and_png_messages(tmp_path, tiny_llamas, cache_dir, capsys, monkeypatch):
    path = _graph(tmp_path, tiny_llamas)
    out = tmp_path / "g.html"
    assert main(["viz", str(path), "--format", "html", "-o", str(out), "--cache-dir", str(cache_dir)]) == 0
    assert "flowchart LR" in out.read_text()
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert main(["viz", str(path), "--format", "png", "-o", str(tmp_path / "g.png")]) == 2
    assert "Graphviz" in capsys.readouterr().err
