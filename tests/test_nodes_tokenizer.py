"""The `align_tokenizer` node end to end: models with different BPE vocabularies aligned, merged, saved
and reloaded with plain transformers."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    SPECIALS,
    TEXT_B,
    assert_hf_folder,
    generate_some,
    make_model,
    reload,
    run,
    saved_tensors,
)


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
