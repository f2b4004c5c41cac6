"""The `slice` and `prune` nodes end to end: tiny real models (with BPE tokenizers) are sliced or pruned,
saved, and reloaded with plain `AutoModelForCausalLM`; logits are checked against hooked references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    IDS,
    assert_hf_folder,
    assert_one_line_error,
    generate_some,
    logits,
    reference_stack,
    reload,
    run,
    run_cli,
    saved_tensors,
)


@pytest.mark.parametrize(
    "slices, expected",
    [
        # depth grows: layers 0,1 of a then layer 1 of b
        ("[{model: a, layers: [0, 2]}, {model: b, layers: [1, 2]}]", [("a", 0), ("a", 1), ("b", 1)]),
        # the same layer repeated
        (
            "[{model: a, layers: [0, 1]}, {model: a, layers: [0, 1]}, {model: a, layers: [1, 2]}]",
            [("a", 0), ("a", 0), ("a", 1)],
        ),
    ],
    ids=["grow", "repeat"],
)
def test_slice_saves_a_loadable_deeper_model(tmp_path, models, slices, expected):
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        b: {{op: load, path: {models["b"]}}}
        stack: {{op: slice, slices: {slices}}}
        save: {{op: save, input: stack, path: {out}}}
        """,
    )
    merged = reload(out)
    assert merged.config.num_hidden_layers == len(expected)
    assert merged.config.vocab_size == reload(models["a"]).config.vocab_size
    ref = reference_stack(models["a"], [(models[m], i, 1.0) for m, i in expected])
    torch.testing.assert_close(logits(merged, IDS), logits(ref, IDS))
    assert_hf_folder(out, methods=["slice"], sources=["load(a)"] + (["load(b)"] if "b" in slices else []))
    generate_some(out)


def test_slice_scales_match_a_hooked_reference(tmp_path, models):
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        deep: {{op: load, path: {models["deep"]}}}
        stack:
          op: slice
          embed_from: a
          slices:
            - {{model: a, layers: [0, 2], scale: 0.5}}
            - {{model: deep, layers: [1, 4], scale: 1.7}}
            - {{model: a, layers: [1, 2]}}
        save: {{op: save, input: stack, path: {out}}}
        """,
    )
    merged = reload(out)
    assert merged.config.num_hidden_layers == 6
    plan = [(models["a"], 0, 0.5), (models["a"], 1, 0.5)]
    plan += [(models["deep"], i, 1.7) for i in (1, 2, 3)] + [(models["a"], 1, 1.0)]
    ref = reference_stack(models["a"], plan)
    got, want = logits(merged, IDS), logits(ref, IDS)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and the scales matter: without them the logits differ
    unscaled = reference_stack(models["a"], [(p, i, 1.0) for p, i, _ in plan])
    assert not torch.allclose(got, logits(unscaled, IDS), atol=1e-4)
    # the scaled layer's projections are the source's times the scale; everything else is copied
    src, saved = saved_tensors(models["deep"]), saved_tensors(out)
    torch.testing.assert_close(
        saved["model.layers.2.mlp.down_proj.weight"], src["model.layers.1.mlp.down_proj.weight"] * 1.7
    )
    assert saved["model.layers.2.mlp.up_proj.weight"].equal(src["model.layers.1.mlp.up_proj.weight"])


def test_slice_of_merged_layers(tmp_path, models):
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        b: {{op: load, path: {models["b"]}}}
        stack:
          op: slice
          slices:
            - {{model: a, layers: [0, 1]}}
            - merge: {{method: linear, models: {{a: {{weight: 0.5}}, b: {{weight: 0.5}}}}}}
              layers: [1, 2]
        save: {{op: save, input: stack, path: {out}}}
        """,
    )
    sa, sb, saved = saved_tensors(models["a"]), saved_tensors(models["b"]), saved_tensors(out)
    name = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(saved[name], (sa[name] + sb[name]) / 2)
    assert_hf_folder(out, methods=["slice", "linear"], sources=["load(a)", "load(b)"])
    generate_some(out)


@pytest.mark.parametrize(
    "how, kept", [("remove: [1, 3]", [0, 2]), ("keep: [3, 0, 1]", [3, 0, 1])], ids=["remove", "keep"]
)
def test_prune_saves_a_loadable_shallower_model(tmp_path, models, how, kept):
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        deep: {{op: load, path: {models["deep"]}}}
        pruned: {{op: prune, input: deep, {how}}}
        save: {{op: save, input: pruned, path: {out}, max_shard_size: 8KB}}
        """,
    )
    merged = reload(out)
    assert merged.config.num_hidden_layers == len(kept)
    ref = reference_stack(models["deep"], [(models["deep"], i, 1.0) for i in kept])
    torch.testing.assert_close(logits(merged, IDS), logits(ref, IDS))
    assert_hf_folder(out, methods=["prune"], sources=["load(deep)"], sharded=True)
    generate_some(out)


def test_slice_range_out_of_bounds(tmp_path, models, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        s: {{op: slice, slices: [{{model: a, layers: [1, 5]}}]}}
        save: {{op: save, input: s, path: {out}}}
        """,
        capsys,
    )
    assert_one_line_error(rc, err, "s", "out of bounds", "'a'")
    assert not out.exists()


@pytest.mark.parametrize("how", ["remove: [0, 1, 2, 3]", "keep: []", "remove: [0, 7]"])
def test_prune_of_every_layer_or_bad_index(tmp_path, models, capsys, how):
    out = tmp_path / "out"
    rc, err = run_cli(
        tmp_path,
        f"""
        deep: {{op: load, path: {models["deep"]}}}
        p: {{op: prune, input: deep, {how}}}
        save: {{op: save, input: p, path: {out}}}
        """,
        capsys,
    )
    assert_one_line_error(rc, err, "p", "layer")
    assert not out.exists()


def make_qwen2(path: Path, seed: int, layers: int, max_window_layers: int) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=max_window_layers,
        tie_word_embeddings=False,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def test_slice_per_layer_config_follows_each_source(tmp_path):
    """`layer_types` entries come from each layer's own source model, even when that model is deeper
    than the one giving the embeddings."""
    r = make_qwen2(tmp_path / "r", 9, layers=2, max_window_layers=2)  # [full, full]
    d = make_qwen2(tmp_path / "d", 10, layers=4, max_window_layers=1)  # [full, sliding, sliding, sliding]
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        r: {{op: load, path: {r}}}
        d: {{op: load, path: {d}}}
        s: {{op: slice, embed_from: r, slices: [{{model: r, layers: [0, 1]}}, {{model: d, layers: [2, 4]}}]}}
        save: {{op: save, input: s, path: {out}}}
        """,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert config["layer_types"] == ["full_attention", "sliding_attention", "sliding_attention"]
    assert reload(out).config.num_hidden_layers == 3


def test_scale_on_unrecognised_architecture_is_an_error(tmp_path, capsys):
    from safetensors.torch import save_file

    src = tmp_path / "custom"
    src.mkdir()
    (src / "config.json").write_text(
        json.dumps({"model_type": "custom", "num_hidden_layers": 2, "vocab_size": 8})
    )
    tensors = {"embed_tokens.weight": torch.randn(8, 4), "norm.weight": torch.ones(4)}
    tensors.update({f"layers.{i}.mixer.weight": torch.randn(4, 4) for i in range(2)})
    save_file(tensors, str(src / "model.safetensors"))
    out = tmp_path / "out"
    rc, err = run_cli(
        tmp_path,
        f"""
        m: {{op: load, path: {src}}}
        s: {{op: slice, slices: [{{model: m, layers: [0, 2], scale: 0.5}}]}}
        save: {{op: save, input: s, path: {out}}}
        """,
        capsys,
    )
    assert_one_line_error(rc, err, "s", "cannot apply scale 0.5")
    assert not out.exists()
