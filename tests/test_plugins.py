"""The README's plugin example: a custom merge method and a custom node, loaded with --plugin."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from graphmerge.cli import main

REPO = Path(__file__).resolve().parent.parent
PLUGIN = str(REPO / "examples/custom_nodes.py")


def test_plugin_method_and_node_run_and_are_listed(tmp_path, capsys):
    assert main(["nodes", "--plugin", PLUGIN]) == 0
    listing = capsys.readouterr().out
    assert "noise" in listing and "elementwise_max" in listing

    out = tmp_path / "custom"
    args = [
        "run",
        str(REPO / "examples/custom.yaml"),
        "--plugin",
        PLUGIN,
        "--set",
        f"out={out}",
        "--cache-dir",
        str(tmp_path / "c"),
        "--json",
        "--no-progress",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = load_file(str(out / "model.safetensors"))
    a = load_file(str(REPO / "models/tiny/add/model.safetensors"))
    b = load_file(str(REPO / "models/tiny/reverse/model.safetensors"))
    for name, value in got.items():
        expected = torch.maximum(a[name], b[name])
        if "mlp" in name:
            assert not value.equal(expected) and torch.allclose(value, expected, atol=0.01)
        else:
            assert value.equal(expected), name
    n_mlp = sum("mlp" in n for n in got)
    assert first["tasks"]["executed"] == len(got) + n_mlp  # every max, plus noise on the MLP tensors

    (out / "graphmerge.json").unlink()
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["tasks"]["executed"] == 0  # plugin tasks are cached like built-ins
