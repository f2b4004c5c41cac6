"""Plugins register nodes and tensor ops: a custom node is listed, runs and is cached."""

from __future__ import annotations

import json
import textwrap

from helpers import saved_tensors

from graphmerge.cli import main

PLUGIN = '''
from graphmerge import Model, NodeParams, node, tensor_op

CALLS = []

@tensor_op("negate_tensor", version="1")
def negate_tensor(x):
    CALLS.append(1)
    return -x

class NegateParams(NodeParams):
    input: str
    only: str = ""

@node("negate", version="1", params=NegateParams, inputs=["input"])
def negate(ctx, params, inputs):
    """Negate every tensor whose name contains `only`."""
    model = inputs[params.input]
    return model.map_tensors("negate_tensor", names=lambda n: params.only in n)
'''


def test_custom_node_from_plugin_runs_is_listed_and_cached(tmp_path, tiny_llamas, cache_dir, capsys):
    plugin = tmp_path / "my_nodes.py"
    plugin.write_text(PLUGIN)
    graph = tmp_path / "g.yaml"
    graph.write_text(
        textwrap.dedent(
            f"""
            nodes:
              a: {{op: load, path: {tiny_llamas["a"]}}}
              neg: {{op: negate, input: a, only: mlp}}
              save: {{op: save, input: neg, path: {tmp_path / "neg"}}}
            """
        )
    )
    assert main(["nodes", "--plugin", str(plugin)]) == 0
    listing = capsys.readouterr().out
    assert "negate" in listing and "only" in listing

    args = [
        "run",
        str(graph),
        "--plugin",
        str(plugin),
        "--cache-dir",
        str(cache_dir),
        "--json",
        "--no-progress",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mlp = [n for n in saved_tensors(tiny_llamas["a"]) if "mlp" in n]
    assert first["tasks"]["executed"] == len(mlp)
    src, got = saved_tensors(tiny_llamas["a"]), saved_tensors(tmp_path / "neg")
    for name in src:
        expected = -src[name] if "mlp" in name else src[name]
        assert got[name].equal(expected), name

    (tmp_path / "neg" / "graphmerge.json").unlink()  # force the save to run again
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["tasks"]["executed"] == 0 and second["tasks"]["cached"] == len(mlp)
