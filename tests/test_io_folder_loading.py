"""Model folders as `load` reads them, end to end: missing or damaged files are one-line errors; sharded
safetensors, PyTorch .bin and tied embeddings load, merge, save and reload."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    IDS,
    assert_hf_folder,
    assert_one_line_error,
    generate_some,
    logits,
    make_model,
    reload,
    run,
    run_cli,
    saved_tensors,
)


def test_missing_config_json(tmp_path, models, capsys):
    import shutil

    src = tmp_path / "noconfig"
    shutil.copytree(models["a"], src)
    (src / "config.json").unlink()
    out = tmp_path / "out"
    rc, err = run_cli(
        tmp_path, f"m: {{op: load, path: {src}}}\nsave: {{op: save, input: m, path: {out}}}", capsys
    )
    assert_one_line_error(rc, err, "m", "config.json")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage_header"])
def test_truncated_or_corrupted_safetensors(tmp_path, models, capsys, damage):
    import shutil

    src = tmp_path / "bad"
    shutil.copytree(models["a"], src)
    st = src / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:8] + b"\xff" * 64 + data[72:])
    out = tmp_path / "out"
    rc, err = run_cli(
        tmp_path, f"m: {{op: load, path: {src}}}\nsave: {{op: save, input: m, path: {out}}}", capsys
    )
    assert_one_line_error(rc, err, "m", "model.safetensors")
    assert not out.exists()


def test_load_sharded_safetensors_and_pytorch_bin(tmp_path):
    sharded = make_model(tmp_path / "sharded", 5, max_shard_size="10KB")
    pt = make_model(tmp_path / "pt", 5, safe=False)
    assert (sharded / "model.safetensors.index.json").exists()
    assert list(pt.glob("*.bin")) and not list(pt.glob("*.safetensors"))
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        sharded: {{op: load, path: {sharded}}}
        pt: {{op: load, path: {pt}}}
        mix: {{op: merge, method: linear, models: {{sharded: {{weight: 0.5}}, pt: {{weight: 0.5}}}}}}
        save_mix: {{op: save, input: mix, path: {out}/mix}}
        save_pt: {{op: save, input: pt, path: {out}/pt}}
        """,
    )
    # same seed: both copies hold the same weights, so the mix equals either
    ref = reload(sharded)
    for name in ("mix", "pt"):
        torch.testing.assert_close(logits(reload(out / name), IDS), logits(ref, IDS))
    assert_hf_folder(out / "mix", methods=["linear"], sources=["load(sharded)", "load(pt)"])
    generate_some(out / "pt")


def test_tied_embeddings_merge_save_reload(tmp_path):
    a = make_model(tmp_path / "ta", 6, tie=True)
    b = make_model(tmp_path / "tb", 7, tie=True)
    assert "lm_head.weight" not in saved_tensors(a)
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {a}}}
        b: {{op: load, path: {b}}}
        mix: {{op: merge, method: linear, models: {{a: {{weight: 0.3}}, b: {{weight: 0.7}}}}}}
        save: {{op: save, input: mix, path: {out}}}
        """,
    )
    merged = reload(out)
    assert merged.config.tie_word_embeddings
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    sa, sb = saved_tensors(a), saved_tensors(b)
    name = "model.embed_tokens.weight"
    torch.testing.assert_close(merged.model.embed_tokens.weight.detach(), 0.3 * sa[name] + 0.7 * sb[name])
    torch.testing.assert_close(merged.lm_head.weight.detach(), 0.3 * sa[name] + 0.7 * sb[name])
    generate_some(out)
