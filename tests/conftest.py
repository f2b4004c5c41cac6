"""Shared fixtures: real (tiny, random) Hugging Face model folders and an isolated cache."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent

# A suite started in the background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and
# so would every process it starts: the Ctrl-C tests' children would then never see their SIGINT.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def make_llama(
    path: Path,
    seed: int,
    *,
    layers: int = 2,
    hidden: int = 16,
    vocab: int = 64,
    tie: bool = False,
    noise: float = 0.02,
    max_shard_size: str | None = None,
    **config: object,
) -> Path:
    """A tiny random Llama folder with every tensor distinct (norms start as all-ones, so noise is
    added everywhere), saved as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=tie,
            **config,
        )
    )
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * noise)
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    return path


@pytest.fixture(scope="session")
def tiny_llamas(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llamas")
    return {name: make_llama(root / name, seed) for seed, name in enumerate(["base", "a", "b"])}


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Llamas with real BPE tokenizers: a and b share a vocabulary, deep has 4 layers, other_tok
    has its own vocabulary."""
    from helpers import TEXT_B, make_model

    root = tmp_path_factory.mktemp("structure")
    return {
        "a": make_model(root / "a", 1),
        "b": make_model(root / "b", 2),  # same tokenizer as a: same vocabulary
        "deep": make_model(root / "deep", 3, layers=4),
        "other_tok": make_model(root / "other_tok", 4, text=TEXT_B, vocab_size=90),
    }


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def tiny_search_yaml(smac: str, *, out: str | None = None) -> str:
    """The `nodes:` of a small LFS search over the bundled tiny models (add + reverse experts),
    with `smac` as its SMAC settings (a YAML flow mapping) and optionally its `out` folder."""
    tiny = REPO / "models" / "tiny"
    return f"""nodes:
  base: {{op: load, path: {tiny / "base"}}}
  add: {{op: load, path: {tiny / "add"}}}
  reverse: {{op: load, path: {tiny / "reverse"}}}
  search:
    op: optimize
    strategy: lfs
    base: base
    models: [add, reverse]
    objectives: [{{task: tiny_add, metric: exact_match}}]
    include_path: [{REPO / "graphs" / "tasks"}]
    smac: {smac}
""" + (f"    out: {out}\n" if out else "")
