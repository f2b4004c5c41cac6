"""Shared test helpers: tiny real model folders with trained BPE tokenizers, graph files, reading
saved tensors back, and the one-line-error checks of the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import conftest
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
    """Every tensor of a folder's safetensors files (one file or shards), by name."""
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


# TIES of a and b over base, saved: format with base, a, b (model folders) and out.
TIES = """
nodes:
  base: {{op: load, path: {base}}}
  a: {{op: load, path: {a}}}
  b: {{op: load, path: {b}}}
  merged:
    op: merge
    method: ties
    base: base
    models:
      a: {{weight: 0.6, density: 0.5}}
      b: {{weight: 0.4, density: 0.7}}
  save: {{op: save, input: merged, path: {out}}}
"""


LINEAR = """
vars:
  base: {base}
  a: {a}
  b: {b}
  wa: 0.6
  out: {out}
nodes:
  base: {{op: load, path: ${{base}}}}
  a: {{op: load, path: ${{a}}}}
  b: {{op: load, path: ${{b}}}}
  mix_ab:
    op: merge
    method: linear
    models:
      a: {{weight: ${{wa}}}}
      b: {{weight: 0.4}}
  mix_base:
    op: merge
    method: linear
    models:
      base: {{weight: 0.5}}
      a: {{weight: 0.5}}
  save_ab: {{op: save, input: mix_ab, path: ${{out}}/ab}}
  save_base: {{op: save, input: mix_base, path: ${{out}}/base}}
"""


def write_graph(tmp_path: Path, models: dict[str, Path], out: Path, text: str = LINEAR) -> Path:
    graph = tmp_path / "graph.yaml"
    graph.write_text(text.format(out=out, **models))
    return graph


def n_tensors(folder: Path) -> int:
    return len(saved_tensors(folder))


REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"

# TIES of the bundled tiny experts onto their base, saved to ${out}; density is a var.
TINY_TIES_GRAPH = f"""
vars:
  density: 0.5
  out: out
nodes:
  base: {{op: load, path: {TINY / "base"}}}
  add: {{op: load, path: {TINY / "add"}}}
  reverse: {{op: load, path: {TINY / "reverse"}}}
  merged:
    op: merge
    method: ties
    base: base
    models:
      add: {{weight: 1.0, density: ${{density}}}}
      reverse: {{weight: 1.0, density: ${{density}}}}
    params: {{lambda: 1.0}}
  save: {{op: save, input: merged, path: ${{out}}}}
"""
