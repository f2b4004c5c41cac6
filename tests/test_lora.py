"""LoRA: PEFT adapters load as lazy models, and `extract_lora` writes adapters peft loads.

Oracles: peft's own `merge_and_unload` for loading, numpy's SVD (Eckart-Young) for extraction.
"""

from __future__ import annotations

import json
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from graphmerge.runner import run_graph


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _peft_adapter(base: Path, out: Path, **lora) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora))
    with torch.no_grad():  # modules_to_save start as copies of the base; make them differ
        for name, p in peft_model.named_parameters():
            if "modules_to_save" in name:
                p.add_(torch.randn_like(p))
    peft_model.save_pretrained(out)
    return out


def _peft_merged(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    return {k: v.detach() for k, v in model.merge_and_unload().state_dict().items()}


def _run(tmp_path: Path, body: str) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n" + body)
    run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return conftest.make_llama(tmp_path_factory.mktemp("lora") / "base", 0, layers=2, hidden=16, vocab=64)


LORA_SETUPS = {
    "plain": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "patterns_embed_head": dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
        rank_pattern={"down_proj": 2},
        alpha_pattern={"v_proj": 3},
        modules_to_save=["lm_head"],
    ),
    "rslora": dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["o_proj", "up_proj"]),
}


@pytest.mark.parametrize("setup", list(LORA_SETUPS))
@pytest.mark.parametrize("form", ["folder", "plus"])
def test_adapter_loads_like_peft_merge(tmp_path, base, setup, form):
    adapter = _peft_adapter(base, tmp_path / "adapter", **LORA_SETUPS[setup])
    path = str(adapter) if form == "folder" else f"{base}+{adapter}"
    _run(
        tmp_path,
        f"  m: {{op: load, path: '{path}'}}\n  s: {{op: save, input: m, path: {tmp_path / 'out'}}}\n",
    )
    ours, theirs = _saved(tmp_path / "out"), _peft_merged(base, adapter)
    assert set(ours) == set(theirs)
    changed = 0
    for name, t in theirs.items():
        torch.testing.assert_close(ours[name], t, rtol=1e-5, atol=1e-6, msg=name)
        changed += not torch.equal(t, load_file(base / "model.safetensors")[name])
    assert changed >= 4  # the adapter really changed something


def test_adapter_tensors_are_cached_per_tensor(tmp_path, base):
    adapter = _peft_adapter(base, tmp_path / "adapter", **LORA_SETUPS["plain"])
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"nodes:\n  m: {{op: load, path: {adapter}}}\n  s: {{op: save, input: m, path: {tmp_path / 'o'}}}\n"
    )
    first = run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    assert first.stats.tasks_executed == 4  # q_proj and v_proj of 2 layers
    (tmp_path / "o" / "graphmerge.json").unlink()
    second = run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    assert second.stats.tasks_executed == 0 and second.stats.tasks_cached >= 4


def _tuned(base: Path, out: Path, rank: int) -> Path:
    """base + an exactly rank-`rank` change of every attention and MLP weight, and a new lm_head."""
    tensors = load_file(base / "model.safetensors")
    gen = torch.Generator().manual_seed(3)
    for name, t in tensors.items():
        if t.ndim == 2 and ".layers." in name:
            t += (
                torch.randn(t.shape[0], rank, generator=gen)
                @ torch.randn(rank, t.shape[1], generator=gen)
                * 0.1
            )
        if name == "lm_head.weight":
            t += torch.randn(t.shape, generator=gen)
    from safetensors.torch import save_file

    out.mkdir()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text((base / "config.json").read_text())
    return out


def test_extract_lora_exact_rank_roundtrips_through_peft(tmp_path, base):
    tuned = _tuned(base, tmp_path / "tuned", rank=2)
    _run(
        tmp_path,
        f"  base: {{op: load, path: {base}}}\n  tuned: {{op: load, path: {tuned}}}\n"
        f"  x: {{op: extract_lora, model: tuned, base: base, rank: 2, modules_to_save: [lm_head],"
        f" path: {tmp_path / 'ad'}}}\n",
    )
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["modules_to_save"] == ["lm_head"] and len(cfg["target_modules"]) == 14
    written = (tmp_path / "ad" / "adapter_model.safetensors").stat().st_mtime_ns
    graph = tmp_path / "g.yaml"
    again = run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    assert (tmp_path / "ad" / "adapter_model.safetensors").stat().st_mtime_ns == written  # up to date
    assert again.values["x"]["modules"] == 14 and not again.stats.outputs
    graph.write_text(graph.read_text().replace("rank: 2", "rank: 3"))
    run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["r"] == 3
    graph.write_text(graph.read_text().replace("rank: 3", "rank: 2"))
    run_graph(graph, cache_dir=tmp_path / "cache", device="cpu", progress=False)
    merged, want = _peft_merged(base, tmp_path / "ad"), load_file(tuned / "model.safetensors")
    for name, t in want.items():
        torch.testing.assert_close(merged[name], t, rtol=1e-4, atol=1e-5, msg=name)
    # ... and graphmerge's own adapter loading gives the same model
    _run(
        tmp_path,
        f"  m: {{op: load, path: {tmp_path / 'ad'}}}\n  s: {{op: save, input: m, path: {tmp_path / 'o'}}}\n",
    )
    for name, t in _saved(tmp_path / "o").items():
        torch.testing.assert_close(t, want[name], rtol=1e-4, atol=1e-5, msg=name)


def test_extract_lora_truncates_like_svd_and_energy_picks_ranks(tmp_path, base):
    tuned = _tuned(base, tmp_path / "tuned", rank=3)
    _run(
        tmp_path,
        f"  base: {{op: load, path: {base}}}\n  tuned: {{op: load, path: {tuned}}}\n"
        f"  r1: {{op: extract_lora, model: tuned, base: base, rank: 1, targets: [q_proj], path: {tmp_path / 'r1'}}}\n"
        f"  e: {{op: extract_lora, model: tuned, base: base, energy: 0.999999, path: {tmp_path / 'e'}}}\n",
    )
    merged = _peft_merged(base, tmp_path / "r1")
    b, t = load_file(base / "model.safetensors"), load_file(tuned / "model.safetensors")
    name = "model.layers.1.self_attn.q_proj.weight"
    u, s, vh = np.linalg.svd((t[name] - b[name]).double().numpy())
    best_rank1 = b[name].double().numpy() + s[0] * np.outer(u[:, 0], vh[0])
    np.testing.assert_allclose(merged[name].double().numpy(), best_rank1, atol=1e-5)
    assert torch.equal(
        merged["model.layers.1.self_attn.k_proj.weight"], b["model.layers.1.self_attn.k_proj.weight"]
    )
    cfg = json.loads((tmp_path / "e" / "adapter_config.json").read_text())
    assert cfg["r"] == 3 and not cfg["rank_pattern"]  # exactly rank 3 everywhere: energy keeps all 3


def test_bad_adapter_is_one_clear_error(tmp_path, base):
    from graphmerge.errors import ModelError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True})
    )
    with pytest.raises(ModelError, match="use_dora"):
        _run(
            tmp_path,
            f"  m: {{op: load, path: '{base}+{bad}'}}\n  s: {{op: save, input: m, path: {tmp_path / 'o'}}}\n",
        )


def test_mergekit_model_plus_lora_input(tmp_path, base):
    """mergekit's `model+lora` syntax in a config run directly: the LoRA-merged model, averaged."""
    adapter = _peft_adapter(base, tmp_path / "adapter", **LORA_SETUPS["plain"])
    cfg = tmp_path / "mk.yml"
    cfg.write_text(
        f"merge_method: linear\nmodels:\n  - model: {base}+{adapter}\n    parameters: {{weight: 3}}\n"
        f"  - model: {base}\n    parameters: {{weight: 1}}\n"
    )
    run_graph(
        cfg, overrides={"out": str(tmp_path / "o")}, cache_dir=tmp_path / "c", device="cpu", progress=False
    )
    ours, lora, plain = (
        _saved(tmp_path / "o"),
        _peft_merged(base, adapter),
        load_file(base / "model.safetensors"),
    )
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"):
        torch.testing.assert_close(ours[name], (3 * lora[name] + plain[name]) / 4, rtol=1e-5, atol=1e-6)
