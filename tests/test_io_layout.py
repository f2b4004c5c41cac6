"""Layout detection on real (tiny, random) transformers models of each supported family, plus scale folding
checked against a hook-based reference model."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402

from graphmerge.errors import ModelError  # noqa: E402
from graphmerge.io.folder import ModelFolder  # noqa: E402
from graphmerge.io.layout import (  # noqa: E402
    config_with_layers,
    config_with_vocab,
    detect_layout,
    fold_layer_scale,
)

_DECODER = dict(
    hidden_size=16,
    intermediate_size=32,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=64,
    max_position_embeddings=64,
)
# family -> (config class, kwargs, expected embeddings, final norms, head tied?)
ARCHS = {
    "llama": ("LlamaConfig", dict(_DECODER, num_hidden_layers=3, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", dict(_DECODER, num_hidden_layers=3, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(_DECODER, num_hidden_layers=3, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(_DECODER, num_hidden_layers=3, head_dim=8)),
    "gemma": ("GemmaConfig", dict(_DECODER, num_hidden_layers=3, head_dim=8)),
    "gemma2": ("Gemma2Config", dict(_DECODER, num_hidden_layers=4, head_dim=8)),
    "phi3": ("Phi3Config", dict(_DECODER, num_hidden_layers=3, pad_token_id=0)),
    "gpt2": ("GPT2Config", dict(n_embd=16, n_layer=3, n_head=2, vocab_size=64, n_positions=64)),
}

RESIDUAL = {
    "llama": ("self_attn.o_proj.weight", "mlp.down_proj.weight"),
    "mistral": ("self_attn.o_proj.weight", "mlp.down_proj.weight"),
    "qwen2": ("self_attn.o_proj.weight", "mlp.down_proj.weight"),
    "qwen3": ("self_attn.o_proj.weight", "mlp.down_proj.weight"),
    "gemma": ("self_attn.o_proj.weight", "mlp.down_proj.weight"),
    # Post-branch RMSNorms: the scale has to live in the norm weight (see fold_layer_scale).
    "gemma2": ("post_attention_layernorm.weight", "post_feedforward_layernorm.weight"),
    "phi3": ("self_attn.o_proj.weight", "mlp.down_proj.weight"),
    "gpt2": ("attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"),
}


def _model(arch: str, seed: int = 0):
    cls_name, kw = ARCHS[arch]
    cfg = getattr(transformers, cls_name)(**kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    # Norm weights start at 1 (or 0 for Gemma); randomise everything so folding mistakes show.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for arch in ARCHS:
        d = tmp_path_factory.mktemp(arch)
        _model(arch).save_pretrained(d)
        out[arch] = d
    return out


@pytest.mark.parametrize("arch", list(ARCHS))
def test_detect_layout_real_models(arch, saved):
    f = ModelFolder.open(saved[arch])
    lay = detect_layout(f.config, f.tensor_names)
    n = f.config.get("num_hidden_layers", f.config.get("n_layer"))
    assert lay.num_layers == n
    assert lay.layer_count_key == ("n_layer" if arch == "gpt2" else "num_hidden_layers")
    assert lay.vocab_key == "vocab_size"
    if arch == "gpt2":
        assert lay.layer_prefix == "transformer.h."
        assert lay.token_embedding == "transformer.wte.weight"
        assert set(lay.embeddings) == {"transformer.wte.weight", "transformer.wpe.weight"}
        assert set(lay.final_norms) == {"transformer.ln_f.weight", "transformer.ln_f.bias"}
    else:
        assert lay.layer_prefix == "model.layers."
        assert lay.embeddings == ("model.embed_tokens.weight",)
        assert lay.final_norms == ("model.norm.weight",)
    tied = f.config.get("tie_word_embeddings", True)
    assert lay.tie_word_embeddings == tied
    assert lay.lm_head == (() if tied else ("lm_head.weight",))
    assert lay.other == ()
    # Every tensor has exactly one role; layers partition the per-layer tensors.
    per_layer = [lay.layer_tensors(i) for i in range(n)]
    assert sum(map(len, per_layer)) + len(lay.non_layer_tensors) == len(f.tensor_names)
    assert len({len(t) for t in per_layer}) == 1
    for i in range(n):
        assert all(lay.layer_of(t) == i for t in per_layer[i])
        res = lay.residual_output_projections(i)
        assert {lay.layer_suffix(t) for t in res} == set(RESIDUAL[arch])
    name = per_layer[1][0]
    moved = lay.renamed(name, 7)
    assert moved == name.replace(f"{lay.layer_prefix}1.", f"{lay.layer_prefix}7.")
    assert lay.role(name) == "layer" and lay.role(lay.token_embedding) == "embedding"
    with pytest.raises(ModelError, match="out of range"):
        lay.layer_tensors(n)


def test_name_pattern_fallback_and_errors():
    names = [
        f"backbone.blocks.{i}.{p}.weight" for i in range(4) for p in ("mixer.out_proj", "ffn.fc2", "norm")
    ]
    names += ["backbone.tok_embeddings.weight", "backbone.norm_f.weight", "head.weight", "backbone.extra.3.x"]
    lay = detect_layout({"model_type": "custom", "n_layers": 4, "vocab_size": 10}, names)
    assert (
        lay.layer_prefix == "backbone.blocks." and lay.num_layers == 4 and lay.layer_count_key == "n_layers"
    )
    assert lay.token_embedding == "backbone.tok_embeddings.weight"
    assert lay.final_norms == ("backbone.norm_f.weight",)
    assert lay.layer_of("backbone.extra.3.x") is None
    with pytest.raises(ModelError) as e:
        detect_layout({"model_type": "custom", "num_hidden_layers": 5, "vocab_size": 10}, names)
    msg = str(e.value)
    assert "\n" not in msg and "cannot understand the model layout" in msg and "backbone.blocks." in msg
    with pytest.raises(ModelError, match="no layer count"):
        detect_layout({"vocab_size": 10}, names)
    with pytest.raises(ModelError, match="no token embedding"):
        detect_layout({"num_hidden_layers": 4, "vocab_size": 10}, [n for n in names if "embed" not in n])
    # A scale cannot be folded when no residual projection is recognised: error, not silent no-op.
    with pytest.raises(ModelError, match="residual output projection"):
        fold_layer_scale("backbone.blocks.0.norm.weight", torch.ones(2), 0.5, lay)
    assert fold_layer_scale("backbone.blocks.0.norm.weight", torch.ones(2), 1.0, lay) is not None


def test_original_gpt2_checkpoint_names():
    # The hub's gpt2 checkpoint has no "transformer." prefix and stores the causal-mask buffer attn.bias.
    names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    for i in range(2):
        names += [
            f"h.{i}.{s}"
            for s in ("attn.bias", "attn.c_attn.weight", "attn.c_proj.weight", "attn.c_proj.bias")
        ]
        names += [
            f"h.{i}.{s}" for s in ("mlp.c_fc.weight", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_1.weight")
        ]
    lay = detect_layout({"model_type": "gpt2", "n_layer": 2, "vocab_size": 50257}, names)
    assert lay.layer_prefix == "h." and lay.token_embedding == "wte.weight" and lay.tie_word_embeddings
    assert lay.final_norms == ("ln_f.weight", "ln_f.bias") and lay.lm_head == ()
    assert lay.residual_output_projections(1) == (
        "h.1.attn.c_proj.weight",
        "h.1.attn.c_proj.bias",
        "h.1.mlp.c_proj.weight",
        "h.1.mlp.c_proj.bias",
    )


def test_config_with_layers_and_vocab(saved):
    cfg = json.loads((saved["gemma2"] / "config.json").read_text())
    assert cfg["layer_types"] == ["sliding_attention", "full_attention"] * 2
    c6 = config_with_layers(cfg, 6)
    assert c6["num_hidden_layers"] == 6 and c6["layer_types"] == ["sliding_attention", "full_attention"] * 3
    c3 = config_with_layers(cfg, 3, layer_sources=[1, 1, 0])
    assert c3["layer_types"] == ["full_attention", "full_attention", "sliding_attention"]
    assert cfg["num_hidden_layers"] == 4  # input untouched
    g = json.loads((saved["gpt2"] / "config.json").read_text())
    assert config_with_layers(g, 5)["n_layer"] == 5
    assert config_with_vocab(g, 128)["vocab_size"] == 128 and g["vocab_size"] == 64
    # The edited config is accepted by transformers and builds a model of that depth.
    m = transformers.AutoModelForCausalLM.from_config(transformers.Gemma2Config(**config_with_layers(cfg, 6)))
    assert len(m.model.layers) == 6


def _branch_modules(arch, layer):
    if arch == "gpt2":
        return [layer.attn, layer.mlp]
    if arch == "gemma2":
        return [layer.post_attention_layernorm, layer.post_feedforward_layernorm]
    return [layer.self_attn, layer.mlp]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "phi3"])
def test_fold_layer_scale_matches_scaled_branches(arch):
    scales = [0.5, 1.7, 0.0, 1.0][: ARCHS[arch][1].get("num_hidden_layers", ARCHS[arch][1].get("n_layer"))]
    ref = _model(arch, seed=1)
    layers = ref.transformer.h if arch == "gpt2" else ref.model.layers

    def scaler(s):
        def hook(mod, inp, out):
            # Reference semantics: the branch output is multiplied by s before the residual add.
            return (out[0] * s, *out[1:]) if isinstance(out, tuple) else out * s

        return hook

    for layer, s in zip(layers, scales):
        for mod in _branch_modules(arch, layer):
            mod.register_forward_hook(scaler(s))

    sd = ref.state_dict()
    lay = detect_layout(ref.config.to_dict(), list(sd))
    folded = {}
    for name, t in sd.items():
        i = lay.layer_of(name)
        folded[name] = fold_layer_scale(name, t, scales[i], lay) if i is not None else t
    changed = {n for n in sd if not torch.equal(sd[n], folded[n])}
    assert changed == {
        n for i, s in enumerate(scales) if s != 1.0 for n in lay.residual_output_projections(i)
    }

    model = _model(arch, seed=99)
    model.load_state_dict(folded)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(ids).logits
        got = model(ids).logits
        plain = _model(arch, seed=1)(ids).logits
    assert not torch.allclose(plain, want, atol=1e-3)  # the scales matter
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_fold_keeps_dtype():
    lay = detect_layout(
        {"num_hidden_layers": 1, "vocab_size": 4},
        ["model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"],
    )
    t = torch.ones(2, 2, dtype=torch.bfloat16)
    out = fold_layer_scale("model.layers.0.mlp.down_proj.weight", t, 0.25, lay)
    assert out.dtype == torch.bfloat16 and torch.all(out == 0.25)
    assert fold_layer_scale("model.embed_tokens.weight", t, 0.25, lay) is t
