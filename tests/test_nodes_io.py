"""The `save` node end to end: a failed run leaves the previous output untouched."""

from __future__ import annotations

from helpers import (
    assert_one_line_error,
    generate_some,
    graph_file,
    run_cli,
)

from graphmerge.cli import main

FAILING_PLUGIN = '''
from graphmerge import NodeParams, node, tensor_op
from graphmerge.errors import ModelError

@tensor_op("explode_tensor", version="1")
def explode_tensor(x):
    raise ModelError("boom while computing a tensor")

class ExplodeParams(NodeParams):
    input: str

@node("explode", version="1", params=ExplodeParams, inputs=["input"])
def explode(ctx, params, inputs):
    """Plans fine; fails while the save node computes the last tensors."""
    model = inputs[params.input]
    return model.map_tensors("explode_tensor", names=lambda n: "lm_head" in n)
'''


def test_failed_run_leaves_previous_output_untouched(tmp_path, models, capsys):
    out = tmp_path / "out"
    good = f"""
        a: {{op: load, path: {models["a"]}}}
        b: {{op: load, path: {models["b"]}}}
        mix: {{op: merge, method: linear, models: {{a: {{weight: 0.5}}, b: {{weight: 0.5}}}}}}
        save: {{op: save, input: mix, path: {out}}}
        """
    rc, err = run_cli(tmp_path, good, capsys)
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # fails while planning (shape mismatch)
    bad_plan = good.replace(str(models["b"]), str(models["other_tok"]))
    rc, err = run_cli(tmp_path, bad_plan, capsys, "bad_plan.yaml")
    assert_one_line_error(rc, err, "mix", "different shapes")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # fails halfway through writing (a tensor op raises while the save streams tensors)
    plugin = tmp_path / "explode_plugin.py"
    plugin.write_text(FAILING_PLUGIN)
    g = graph_file(
        tmp_path,
        good.replace(
            "save: {op: save, input: mix",
            "boom: {op: explode, input: mix}\n        save: {op: save, input: boom",
        ),
        "bad_run.yaml",
    )
    capsys.readouterr()
    rc = main(
        ["run", str(g), "--plugin", str(plugin), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert_one_line_error(rc, err, "save", "boom")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]  # no temp left behind
    generate_some(out)
