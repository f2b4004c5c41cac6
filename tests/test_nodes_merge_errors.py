"""The `merge` node's errors end to end: mismatched shapes name the tensor and the models."""

from __future__ import annotations

from helpers import (
    assert_one_line_error,
    run_cli,
)


def test_shape_mismatch_in_merge_names_tensor_and_models(tmp_path, models, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        b: {{op: load, path: {models["other_tok"]}}}
        mix: {{op: merge, method: linear, models: {{a: {{weight: 0.5}}, b: {{weight: 0.5}}}}}}
        save: {{op: save, input: mix, path: {out}}}
        """,
        capsys,
    )
    assert_one_line_error(rc, err, "mix", "different shapes", "a: [60, 16]", "b: [90, 16]")
    assert "tensor model.embed_tokens.weight" in err[0] or "tensor lm_head.weight" in err[0]
    assert not out.exists()
