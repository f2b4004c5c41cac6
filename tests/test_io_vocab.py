"""Vocabulary alignment: id layout, vectorised row remapping vs a per-token oracle, and a union tokenizer
built from two BPE tokenizers trained here on different text."""

from __future__ import annotations

import os
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from graphmerge.errors import ModelError  # noqa: E402
from graphmerge.io.vocab import (  # noqa: E402
    build_vocab_alignment,
    remap_rows,
    tokenizer_vocab,
    write_aligned_tokenizer,
)

TEXT_A = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "the weather is nice today",
] * 30
TEXT_B = [
    "def merge(models): return sum(models)",
    "import torch as tensorflow",
    "for layer in layers: x = f(x)",
] * 30


def _train(texts, specials, vocab_size, out):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials[0]).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    a = _train(TEXT_A, ["<|endoftext|>"], 300, tmp_path_factory.mktemp("tok_a"))
    b = _train(TEXT_B, ["<|endoftext|>", "<|im_start|>"], 320, tmp_path_factory.mktemp("tok_b"))
    return {"a": a, "b": b}


def test_alignment_ids(toks):
    va, vb = tokenizer_vocab(toks["a"]), tokenizer_vocab(toks["b"])
    al = build_vocab_alignment({"a": va, "b": vb}, source="union", base="a", pad_to_multiple=64)
    assert al.anchor == "a"
    assert all(al.vocab[t] == i for t, i in va.items())  # base ids unchanged
    only_b = [t for t, _ in sorted(vb.items(), key=lambda kv: kv[1]) if t not in va]
    assert list(al.new_tokens) == only_b
    assert [al.vocab[t] for t in only_b] == list(range(len(va), len(va) + len(only_b)))
    assert al.size % 64 == 0 and al.size >= len(va) + len(only_b)
    ib = al.index_for("b")
    for t, i in vb.items():
        assert ib[al.vocab[t]] == i
    assert int((ib >= 0).sum()) == len(vb)
    assert int((al.index_for("a") >= 0).sum()) == len(va)

    same = build_vocab_alignment({"a": va, "b": vb}, source="base", base="a")
    assert dict(same.vocab) == va and same.new_tokens == () and same.size == len(va)
    other = build_vocab_alignment({"a": va, "b": vb}, source="b", base="a")
    assert other.anchor == "b" and dict(other.vocab) == vb
    # Deterministic: same input, same alignment.
    again = build_vocab_alignment(
        {"a": dict(va), "b": dict(vb)}, source="union", base="a", pad_to_multiple=64
    )
    assert dict(again.vocab) == dict(al.vocab) and torch.equal(again.index, al.index)
    with pytest.raises(ModelError, match="base 'z'"):
        build_vocab_alignment({"a": va}, base="z")
    with pytest.raises(ModelError, match="unknown tokenizer source"):
        build_vocab_alignment({"a": va}, source="c", base="a")


def _oracle(rows, al, target, fill):
    """Per-token reference implementation of remap_rows' documented rules."""
    k_models = len(al.models)
    b = al.models.index(al.base)
    out = torch.zeros((al.size, *rows[target].shape[1:]))
    for o in range(al.size):
        have = [k for k in range(k_models) if 0 <= int(al.index[k, o]) < rows[k].shape[0]]
        row = lambda k, o=o: rows[k][int(al.index[k, o])].float()  # noqa: E731
        if target in have:
            out[o] = row(target)
        elif not have:
            if al.models[target] == al.anchor and o < rows[target].shape[0]:
                out[o] = rows[target][o].float()
        elif fill == "zero":
            pass
        elif fill == "mean":
            out[o] = torch.stack([row(k) for k in have]).mean(0)
        elif len(have) == 1:
            out[o] = row(have[0])
        elif b in have:
            out[o] = row(b)
        else:
            out[o] = torch.stack([row(k) for k in have]).mean(0)
    return out.to(rows[target].dtype)


@pytest.mark.parametrize("fill", ["only", "base", "mean", "zero"])
@pytest.mark.parametrize("source", ["union", "base", "m2"])
def test_remap_rows_matches_oracle(fill, source):
    vocabs = {
        "m0": {"a": 0, "b": 1, "c": 2, "x": 3},
        "m1": {"b": 0, "c": 1, "d": 2, "e": 3, "y": 4},
        "m2": {"e": 0, "d": 1, "c": 2, "f": 3, "x": 4, "z": 6},  # gap at id 5
    }
    al = build_vocab_alignment(vocabs, source=source, base="m0", pad_to_multiple=4)
    g = torch.Generator().manual_seed(0)
    # Row counts differ from vocab sizes on purpose: m0 has padding rows, m1 lacks a row for "y".
    rows = [torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(7, 3, generator=g)]
    for t in range(3):
        got = remap_rows(rows, al, t, fill)
        assert got.shape == (al.size, 3)
        torch.testing.assert_close(got, _oracle(rows, al, t, fill))
    # 1-D rows (an LM head bias) and bf16 work the same way.
    bias = [r[:, 0].to(torch.bfloat16) for r in rows]
    got = remap_rows(bias, al, 1, fill)
    assert got.dtype == torch.bfloat16 and got.shape == (al.size,)
    torch.testing.assert_close(got, _oracle(bias, al, 1, fill))


def test_remap_rows_errors():
    al = build_vocab_alignment({"m": {"a": 0}}, source="base", base="m")
    with pytest.raises(ModelError, match="unknown fill policy"):
        remap_rows([torch.zeros(1, 2)], al, 0, "median")
    with pytest.raises(ModelError, match="expected 1 row tensors"):
        remap_rows([torch.zeros(1, 2)] * 2, al, 0)


def test_remap_rows_speed_smoke():
    v, h = 30_000, 256
    vocabs = {f"m{k}": {f"t{i + k * 3000}": i for i in range(v)} for k in range(3)}
    al = build_vocab_alignment(vocabs, source="union", base="m0", pad_to_multiple=64)
    rows = [torch.randn(v, h) for _ in range(3)]
    t0 = time.perf_counter()
    for t in range(3):
        remap_rows(rows, al, t, "only")
    dt = time.perf_counter() - t0
    print(f"remap {al.size} x {h} x 3 models: {dt:.3f}s (see bench/align_vocab.py for 150k)")
    assert dt < 10


def test_union_tokenizer_loads_and_tokenizes(tmp_path, toks):
    import transformers

    ta = transformers.AutoTokenizer.from_pretrained(toks["a"])
    tb = transformers.AutoTokenizer.from_pretrained(toks["b"])
    al = build_vocab_alignment(
        {"a": tokenizer_vocab(toks["a"]), "b": tokenizer_vocab(toks["b"])}, source="union", base="a"
    )
    out = write_aligned_tokenizer(al, toks, tmp_path / "u")
    tu = transformers.AutoTokenizer.from_pretrained(out)
    assert not (out / "vocab.json").exists()
    # Every output token maps to its output id, and back.
    vocab = tu.get_vocab()
    assert all(vocab[t] == i for t, i in al.vocab.items())
    assert tu.convert_ids_to_tokens(al.vocab["<|im_start|>"]) == "<|im_start|>"
    # Special tokens of the other model are still matched as one token.
    enc = tu("<|im_start|>def merge", add_special_tokens=False)["input_ids"]
    assert enc[0] == al.vocab["<|im_start|>"]
    for text in TEXT_A[:3] + TEXT_B[:3] + ["unseen wörds ✓ 123"]:
        ids = tu(text, add_special_tokens=False)["input_ids"]
        assert tu.decode(ids) == text
        assert max(ids) < al.size
    # Anchor merges keep priority: the anchor's own text tokenizes exactly as before.
    for text in TEXT_A[:3]:
        assert tu.tokenize(text) == ta.tokenize(text)
    # Appended merges make the other model's tokens reachable: code is tokenized more coarsely.
    code = TEXT_B[0]
    n_union, n_a, n_b = (len(t(code, add_special_tokens=False)["input_ids"]) for t in (tu, ta, tb))
    assert n_union < n_a and n_b <= n_union

    # source: base keeps the anchor tokenizer byte for byte.
    base_only = build_vocab_alignment({"a": tokenizer_vocab(toks["a"]), "b": {}}, source="base", base="a")
    out2 = write_aligned_tokenizer(base_only, toks, tmp_path / "b")
    assert (out2 / "tokenizer.json").read_bytes() == (toks["a"] / "tokenizer.json").read_bytes()


def test_tokenizer_errors(tmp_path):
    with pytest.raises(ModelError) as e:
        tokenizer_vocab(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
