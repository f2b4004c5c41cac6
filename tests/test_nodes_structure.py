"""I/O and structure nodes end to end: load, save, slice, prune, align_tokenizer (+ merge).

Every test builds tiny real transformers models (with real BPE tokenizers) on disk, runs a YAML graph,
and reloads the saved folder with plain `AutoModelForCausalLM` / `AutoTokenizer`.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import conftest
import pytest
import torch
from safetensors.torch import load_file

from graphmerge.cli import main
from graphmerge.runner import run_graph

TEXT_A = """the quick brown fox jumps over the lazy dog
a lazy dog sleeps while the quick fox runs over the hill
the brown dog and the brown fox are good friends"""

TEXT_B = """lorem ipsum dolor sit amet consectetur adipiscing elit
sed do eiusmod tempor incididunt ut labore et dolore magna aliqua
ut enim ad minim veniam quis nostrud exercitation ullamco laboris"""

SPECIALS = ["<unk>", "<s>", "</s>"]


# ---------------------------------------------------------------------------------------------- helpers
def make_tokenizer(path: Path, text: str, vocab_size: int):
    """Train a small BPE tokenizer on `text` and save it as a PreTrainedTokenizerFast into `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(text.splitlines() * 3, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.save_pretrained(path)
    return fast


def make_model(
    path: Path,
    seed: int,
    *,
    text: str | None = TEXT_A,
    vocab_size: int = 60,
    layers: int = 2,
    hidden: int = 16,
    tie: bool = False,
    safe: bool = True,
    max_shard_size: str | None = None,
) -> Path:
    """A tiny random Llama folder; with `text`, a BPE tokenizer trained on it sets the vocabulary."""
    vocab = vocab_size
    if text is not None:
        vocab = len(make_tokenizer(path, text, vocab_size))
    conftest.make_llama(
        path,
        seed,
        layers=layers,
        hidden=hidden,
        vocab=vocab,
        tie=tie,
        noise=0.05,
        max_shard_size=max_shard_size,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    if not safe:  # an old-style PyTorch checkpoint (transformers 5 no longer writes .bin itself)
        weights = path / "model.safetensors"
        torch.save(dict(load_file(weights)), path / "pytorch_model.bin")
        weights.unlink()
    return path


def graph_file(tmp_path: Path, body: str, name: str = "graph.yaml") -> Path:
    g = tmp_path / name
    g.write_text("nodes:\n" + textwrap.indent(textwrap.dedent(body).strip() + "\n", "  "))
    return g


def run(tmp_path: Path, body: str):
    return run_graph(graph_file(tmp_path, body), cache_dir=tmp_path / "cache", progress=False)


def reload(out: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(out).eval()


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def generate_some(model_dir: Path, text: str = "the quick fox") -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = reload(model_dir)
    ids = tok(text, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    assert int(out.max()) < model.config.vocab_size
    return out[0].tolist()


def assert_hf_folder(out: Path, *, methods: list[str], sources: list[str], sharded: bool = False) -> None:
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "README.md", "graph.yaml", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "generation_config.json" in names
    if sharded:
        assert "model.safetensors.index.json" in names
        index = json.loads((out / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
        assert len(shards) > 1 and shards <= names
    else:
        assert "model.safetensors" in names
    card = (out / "README.md").read_text()
    for word in methods + sources:
        assert word in card, (word, card)
    assert "nodes:" in (out / "graph.yaml").read_text()


def reference_stack(embed_from: Path, layers: list[tuple[Path, int, float]]):
    """An in-memory transformers model: embeddings/norm/head of `embed_from`, then the listed source
    layers, each with its attention and MLP branch outputs multiplied by the scale (forward hooks)."""
    from transformers import AutoModelForCausalLM

    sources = {p: reload(p) for p in {embed_from, *(p for p, _, _ in layers)}}
    top = sources[embed_from]
    config = type(top.config).from_dict(top.config.to_dict())
    config.num_hidden_layers = len(layers)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.model.embed_tokens.load_state_dict(top.model.embed_tokens.state_dict())
    model.model.norm.load_state_dict(top.model.norm.state_dict())
    model.lm_head.load_state_dict(top.lm_head.state_dict())
    for j, (p, i, scale) in enumerate(layers):
        layer = model.model.layers[j]
        layer.load_state_dict(sources[p].model.layers[i].state_dict())
        if scale != 1.0:
            layer.self_attn.register_forward_hook(
                lambda mod, args, out, s=scale: (out[0] * s, *out[1:]) if isinstance(out, tuple) else out * s
            )
            layer.mlp.register_forward_hook(lambda mod, args, out, s=scale: out * s)
    return model


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 5, 9, 13, 7, 22, 3, 40]])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("structure")
    return {
        "a": make_model(root / "a", 1),
        "b": make_model(root / "b", 2),  # same tokenizer as a: same vocabulary
        "deep": make_model(root / "deep", 3, layers=4),
        "other_tok": make_model(root / "other_tok", 4, text=TEXT_B, vocab_size=90),
    }


# ---------------------------------------------------------------------------------------------- 1 + 2
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


# ---------------------------------------------------------------------------------------------- 3
@pytest.mark.parametrize("wa, wb", [(0.5, 0.5), (0.3, 0.7)])
def test_align_tokenizer_then_linear_merge(tmp_path, models, wa, wb):
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        b: {{op: load, path: {models["other_tok"]}}}
        aligned: {{op: align_tokenizer, models: [a, b], base: a, source: union}}
        mix:
          op: merge
          method: linear
          models: {{aligned.a: {{weight: {wa}}}, aligned.b: {{weight: {wb}}}}}
        save: {{op: save, input: mix, path: {out}}}
        """,
    )
    tok_a = AutoTokenizer.from_pretrained(models["a"])
    tok_b = AutoTokenizer.from_pretrained(models["other_tok"])
    tok = AutoTokenizer.from_pretrained(out)
    va, vb, v = tok_a.get_vocab(), tok_b.get_vocab(), tok.get_vocab()
    assert len(va) != len(vb)
    assert set(v) == set(va) | set(vb)
    assert all(v[t] == i for t, i in va.items())  # the base's ids are kept

    merged = reload(out)
    assert merged.config.vocab_size == len(v)
    sa, sb, saved = saved_tensors(models["a"]), saved_tensors(models["other_tok"]), saved_tensors(out)
    only_b = sorted(set(vb) - set(va))
    shared = sorted(t for t in set(va) & set(vb) if t not in SPECIALS and va[t] != vb[t])
    assert only_b and shared
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert saved[name].shape[0] == len(v)
        for t in only_b:  # exactly B's row (mixing a row with itself)
            torch.testing.assert_close(saved[name][v[t]], sb[name][vb[t]], rtol=1e-6, atol=0)
            if wa == 0.5:
                assert saved[name][v[t]].equal(sb[name][vb[t]])
        for t in shared:
            torch.testing.assert_close(saved[name][v[t]], wa * sa[name][va[t]] + wb * sb[name][vb[t]])
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(saved[name], wa * sa[name] + wb * sb[name])

    assert_hf_folder(out, methods=["align_tokenizer", "linear"], sources=["load(a)", "load(other_tok)"])
    # B-only words tokenize through the aligned tokenizer into B's tokens
    ids = tok("lorem ipsum")["input_ids"]
    assert any(i >= len(va) for i in ids)
    generate_some(out, "the quick lorem ipsum")


def test_align_tokenizer_pad_and_fill_zero(tmp_path, models):
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        b: {{op: load, path: {models["other_tok"]}}}
        aligned: {{op: align_tokenizer, models: [a, b], source: union, fill: zero, pad_to_multiple: 32}}
        save: {{op: save, input: aligned.a, path: {out}}}
        """,
    )
    from transformers import AutoTokenizer

    v = AutoTokenizer.from_pretrained(out).get_vocab()
    saved, sa = saved_tensors(out), saved_tensors(models["a"])
    emb = saved["model.embed_tokens.weight"]
    assert emb.shape[0] % 32 == 0 and emb.shape[0] >= len(v)
    assert reload(out).config.vocab_size == emb.shape[0]
    n_a = sa["model.embed_tokens.weight"].shape[0]
    assert emb[:n_a].equal(sa["model.embed_tokens.weight"])
    assert (emb[n_a:] == 0).all()
    generate_some(out)


# ---------------------------------------------------------------------------------------------- 4
def run_cli(tmp_path: Path, body: str, capsys, name: str = "graph.yaml") -> tuple[int, list[str]]:
    g = graph_file(tmp_path, body, name)
    capsys.readouterr()
    rc = main(["run", str(g), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    return rc, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(rc: int, err: list[str], node: str, *words: str) -> None:
    assert rc == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and f"node '{node}'" in err[0], err
    for w in words:
        assert w in err[0], (w, err)


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


# ---------------------------------------------------------------------------------------------- 5
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


def test_tied_and_untied_models_align_and_merge(tmp_path, models):
    tied = make_model(tmp_path / "tied", 8, text=TEXT_B, vocab_size=90, tie=True)
    out = tmp_path / "out"
    run(
        tmp_path,
        f"""
        a: {{op: load, path: {models["a"]}}}
        t: {{op: load, path: {tied}}}
        aligned: {{op: align_tokenizer, models: [a, t]}}
        mix: {{op: merge, method: linear, models: {{aligned.a: {{weight: 0.5}}, aligned.t: {{weight: 0.5}}}}}}
        save: {{op: save, input: mix, path: {out}}}
        """,
    )
    from transformers import AutoTokenizer

    vt = AutoTokenizer.from_pretrained(tied).get_vocab()
    va = AutoTokenizer.from_pretrained(models["a"]).get_vocab()
    v = AutoTokenizer.from_pretrained(out).get_vocab()
    saved, st = saved_tensors(out), saved_tensors(tied)
    sa = saved_tensors(models["a"])
    t = sorted(set(vt) - set(va))[0]
    # the tied model's head row for a token only it knows is its embedding row
    assert saved["lm_head.weight"][v[t]].equal(st["model.embed_tokens.weight"][vt[t]])
    # a shared token's head row mixes a's head row with the tied model's embedding row
    s = next(x for x in sorted(set(va) & set(vt)) if x not in SPECIALS)
    torch.testing.assert_close(
        saved["lm_head.weight"][v[s]],
        0.5 * sa["lm_head.weight"][va[s]] + 0.5 * st["model.embed_tokens.weight"][vt[s]],
    )
    assert not reload(out).config.tie_word_embeddings
    generate_some(out)


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
