"""Bad graph files."""

from __future__ import annotations

from pathlib import Path

from case import TIES_MERGE, Case, graph_case, no_file, tiny_models, tiny_models_and_output, write


def _graph(text: str):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(text)
        return ["validate", "g.yaml"]

    return build


_two_models = tiny_models


_with_output = tiny_models_and_output
MERGE = TIES_MERGE.replace("OUT", "out")

DUPLICATE_NODE = """\
nodes:
  base: {op: load, path: base}
  add: {op: load, path: add}
  merged: {op: merge, method: linear, models: {base: {weight: 0.5}, add: {weight: 0.5}}}
  merged: {op: merge, method: linear, models: {base: {weight: 0.9}, add: {weight: 0.1}}}
  save: {op: save, input: merged, path: out}
"""

CASES = [
    Case("unknown_op", _graph("nodes:\n  a: {op: lod, path: x}\n"), mentions=("g.yaml:2", "'a'", "load")),
    # The bug that replaced a saved model: two `merged:` keys, the last silently won.
    Case(
        "duplicate_node_name_run_keeps_output",
        graph_case(DUPLICATE_NODE, command="run", setup=_with_output),
        mentions=("g.yaml:5", "duplicate key 'merged'", "first at line 4"),
    ),
    Case(
        "duplicate_var",
        _graph("vars:\n  out: a\n  out: b\nnodes:\n  a: {op: load, path: x}\n"),
        mentions=("g.yaml:3", "duplicate key 'out'", "line 2", "vars"),
    ),
    Case(
        "duplicate_param_key",
        _graph("nodes:\n  a:\n    op: load\n    path: x\n    path: y\n"),
        mentions=("g.yaml:5", "duplicate key 'path'", "line 4", "nodes.a"),
    ),
    Case(
        "duplicate_top_level_key",
        _graph("nodes:\n  a: {op: load, path: x}\nnodes:\n  b: {op: load, path: y}\n"),
        mentions=("g.yaml:3", "duplicate key 'nodes'", "line 1"),
    ),
    Case(
        "duplicate_in_flow_mapping",
        _graph("nodes:\n  a: {op: load, path: x, path: y}\n"),
        mentions=("g.yaml:2", "duplicate key 'path'"),
    ),
    Case("binary_garbage", _graph("\x00\x01"), mentions=("g.yaml",)),
    Case(
        "binary_not_utf8",
        lambda root: [write(root, "g.yaml", bytes(range(128, 256)) * 4) and "validate", "g.yaml"],
        mentions=("g.yaml:1", "not UTF-8"),
    ),
    Case(
        "seed_not_int", _graph("seed: abc\nnodes:\n  a: {op: load, path: x}\n"), mentions=("g.yaml:1", "seed")
    ),
    Case(
        "seed_float", _graph("seed: 1.5\nnodes:\n  a: {op: load, path: x}\n"), mentions=("g.yaml:1", "seed")
    ),
    Case(
        "seed_bool", _graph("seed: true\nnodes:\n  a: {op: load, path: x}\n"), mentions=("g.yaml:1", "seed")
    ),
    Case(
        "vars_not_mapping",
        _graph("vars: [a, b]\nnodes:\n  a: {op: load, path: x}\n"),
        mentions=("g.yaml:1", "vars"),
    ),
    Case("vars_scalar", _graph("vars: 3\nnodes:\n  a: {op: load, path: x}\n"), mentions=("g.yaml:1", "vars")),
    Case("nodes_not_mapping", _graph("nodes: [a, b]\n"), mentions=("g.yaml:1", "nodes")),
    Case("no_nodes", _graph("vars: {a: 1}\n"), mentions=("g.yaml", "no nodes")),
    Case("empty_file", _graph(""), mentions=("g.yaml", "mapping")),
    Case("top_level_list", _graph("- a\n- b\n"), mentions=("g.yaml", "mapping")),
    Case("yaml_syntax", _graph("nodes:\n  a: {op: load, path: [x}\n"), mentions=("g.yaml:2", "invalid YAML")),
    Case(
        "python_object_tag",
        _graph("nodes:\n  a: !!python/object/apply:os.system ['touch pwned']\n"),
        mentions=("g.yaml:2",),
        check=no_file("pwned"),
    ),
    Case(
        "undefined_variable",
        _graph("vars: {model: x}\nnodes:\n  a: {op: load, path: ${modle}}\n"),
        mentions=("g.yaml:3", "${modle}", "${model}"),
    ),
    Case(
        "unknown_top_level",
        _graph("node:\n  a: {op: load, path: x}\nnodes: {}\n"),
        mentions=("g.yaml:1", "'node'", "no nodes"),
        one_line=False,
    ),
    Case(
        "unknown_input",
        _graph("nodes:\n  a: {op: load, path: x}\n  s: {op: save, input: aa, path: o}\n"),
        mentions=("g.yaml:3", "'aa'", "did you mean 'a'"),
    ),
    Case(
        "cycle",
        _graph("nodes:\n  a: {op: prune, input: b, remove: [0]}\n  b: {op: prune, input: a, remove: [0]}\n"),
        mentions=("g.yaml", "cycle"),
    ),
    Case("dotted_node_name", _graph("nodes:\n  a.b: {op: load, path: x}\n"), mentions=("g.yaml:2", "'a.b'")),
    Case("node_not_mapping", _graph("nodes:\n  a: 5\n"), mentions=("g.yaml:2", "'a'", "op")),
    Case(
        "unknown_parameter",
        _graph("nodes:\n  a: {op: load, pth: x}\n"),
        mentions=("g.yaml:2", "'a'", "did you mean 'path'"),
        one_line=False,  # the misspelt key and the then-missing `path`
    ),
    Case(
        "unknown_method",
        graph_case(MERGE.replace("ties", "tiez").replace("DENSITY", "0.5"), setup=_two_models),
        mentions=("g.yaml:6", "'merged'", "ties"),
    ),
    # `validate` used to say "ok" for this; `run` rejected it.
    Case(
        "density_out_of_range",
        graph_case(MERGE.replace("DENSITY", "1.5"), setup=_two_models),
        mentions=("g.yaml:4", "'merged'", "density", "1.5"),
    ),
    Case(
        "weight_not_a_number",
        graph_case(
            MERGE.replace("DENSITY", "0.5").replace("weight: 1.0", "weight: heavy"), setup=_two_models
        ),
        mentions=("g.yaml:4", "'merged'", "weight"),
    ),
    Case(
        "density_out_of_range_run_keeps_output",
        graph_case(MERGE.replace("DENSITY", "-0.5"), command="run", setup=_with_output),
        mentions=("g.yaml:4", "'merged'", "density"),
    ),
    Case(
        "save_over_a_file",
        graph_case(
            MERGE.replace("DENSITY", "0.5"), setup=lambda r: (_two_models(r), write(r, "out", "my notes\n"))
        ),
        mentions=("'save'", "out", "not a model folder"),
    ),
    Case(
        "save_into_unrelated_folder",
        graph_case(
            MERGE.replace("DENSITY", "0.5"),
            setup=lambda r: (_two_models(r), write(r, "out/thesis.tex", "\\section{}\n")),
        ),
        mentions=("'save'", "not a model folder"),
    ),
    Case(
        "save_under_a_file",
        graph_case(
            MERGE.replace("DENSITY", "0.5").replace("path: out", "path: notes/out"),
            setup=lambda r: (_two_models(r), write(r, "notes", "x\n")),
        ),
        mentions=("'save'", "notes", "is a file"),
    ),
    Case(
        "save_over_a_source_model",
        graph_case(MERGE.replace("DENSITY", "0.5").replace("path: out", "path: add"), setup=_two_models),
        mentions=("'save'", "node 'add'"),
    ),
    Case("graph_file_missing", lambda root: ["validate", "nope.yaml"], mentions=("nope.yaml", "not found")),
    Case(
        "graph_is_a_directory",
        lambda root: [(root / "g.yaml").mkdir() or "validate", "g.yaml"],
        mentions=("g.yaml",),
    ),
    Case(
        "prune_layer_out_of_range",
        graph_case(
            "nodes:\n  base: {op: load, path: base}\n  p: {op: prune, input: base, remove: [7]}\n",
            setup=_two_models,
        ),
        mentions=("g.yaml:3", "'p'", "[7]"),
    ),
    Case(
        "wrong_type_models_list",
        _graph("nodes:\n  a: {op: load, path: x}\n  m: {op: merge, method: linear, models: [a]}\n"),
        mentions=("g.yaml:3", "'m'", "models"),
    ),
]
