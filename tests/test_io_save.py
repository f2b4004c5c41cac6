"""write_hf_model: outputs load with plain transformers, sharding, atomic replacement on crash."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402

from graphmerge.errors import ModelError, SpecError  # noqa: E402
from graphmerge.io.folder import ModelFolder  # noqa: E402
from graphmerge.io.save import parse_size, write_hf_model  # noqa: E402

TEXT = ["the quick brown fox jumps over the lazy dog", "merging models layer by layer", "hello world"] * 20


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny Llama with a real (trained-in-test) BPE tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("src")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", "</s>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(d)
    cfg = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=tok.get_vocab_size(),
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def _tensors(folder: ModelFolder, log=None):
    for n in folder.tensor_names:
        if log is not None:
            log.append(n)
        yield n, folder.read(n)


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("10kb") == 10_000
    assert parse_size(123) == 123 and parse_size("123") == 123
    for bad in ("2 parsecs", "", "-1GB", 0, True):
        with pytest.raises(SpecError):
            parse_size(bad)


def test_roundtrip_loads_and_generates(tmp_path, source):
    src = ModelFolder.open(source)
    out = write_hf_model(
        tmp_path / "out",
        src.config,
        _tensors(src),
        tokenizer_from=source,
        generation_config_from=source,
        dtype=torch.bfloat16,
        max_shard_size="2GB",
        model_card="# merged\n",
        extra_files={"graphmerge.yaml": "nodes: {}\n"},
    )
    assert out == (tmp_path / "out").absolute()
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and "model.safetensors.index.json" not in names
    assert {"config.json", "generation_config.json", "README.md", "graphmerge.yaml", "tokenizer.json"} <= set(
        names
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16" and cfg["num_hidden_layers"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left

    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    ref = transformers.AutoModelForCausalLM.from_pretrained(source)
    for n, p in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[n], p.to(torch.bfloat16))
    ids = tok("hello world", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 5
    assert isinstance(tok.decode(gen[0]), str)


def test_sharding_small_max_shard_size(tmp_path, source):
    src = ModelFolder.open(source)
    out = write_hf_model(
        tmp_path / "sh", src.config, _tensors(src), tokenizer_from=source, max_shard_size="6KB"
    )
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 3 and shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    for s in shards:  # each shard fits the limit unless it holds one tensor bigger than the limit
        f = ModelFolder.open(out)
        in_shard = [n for n in f.tensor_names if f.info(n).file.name == s.name]
        assert sum(f.read(n).nbytes for n in in_shard) <= 6000 or len(in_shard) == 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(src.tensor_names)
    assert index["metadata"]["total_size"] == sum(src.read(n).nbytes for n in src.tensor_names)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    ref = transformers.AutoModelForCausalLM.from_pretrained(source)
    for n, p in ref.state_dict().items():
        assert torch.equal(model.state_dict()[n], p)


def test_crash_mid_write_keeps_previous_output(tmp_path, source):
    src = ModelFolder.open(source)
    out = write_hf_model(tmp_path / "out", src.config, _tensors(src), model_card="v1")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def exploding():
        for i, item in enumerate(_tensors(src)):
            if i == 7:
                raise RuntimeError("merge blew up")
            yield item

    with pytest.raises(RuntimeError, match="blew up"):
        write_hf_model(tmp_path / "out", src.config, exploding(), model_card="v2", max_shard_size="4KB")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    # A successful rewrite replaces the old output completely (no stale files survive).
    (out / "stale.txt").write_text("old")
    write_hf_model(tmp_path / "out", src.config, _tensors(src), model_card="v2", max_shard_size="6KB")
    assert (out / "README.md").read_text() == "v2" and not (out / "stale.txt").exists()
    assert not (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_memory_bounded_streaming(tmp_path, source):
    """Tensors are consumed one at a time and written shard by shard, not collected first."""
    src = ModelFolder.open(source)
    seen: list[str] = []
    shard_sizes = []
    import graphmerge.io.save as save_mod

    real_save = save_mod.save_file

    def spy(tensors, path, metadata=None):
        shard_sizes.append((len(seen), sum(t.nbytes for t in tensors.values()), len(tensors)))
        return real_save(tensors, path, metadata=metadata)

    save_mod.save_file = spy
    try:
        write_hf_model(tmp_path / "o", src.config, _tensors(src, seen), max_shard_size="6KB")
    finally:
        save_mod.save_file = real_save
    assert len(shard_sizes) >= 3
    assert shard_sizes[0][0] < len(src.tensor_names)  # first shard flushed before the iterator ended
    assert all(b <= 6000 or k == 1 for _, b, k in shard_sizes)


def test_refuses_to_replace_non_model_folder_and_bad_extra_files(tmp_path, source):
    src = ModelFolder.open(source)
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ModelError, match="not a model folder"):
        write_hf_model(precious, src.config, _tensors(src))
    assert (precious / "thesis.tex").exists()
    with pytest.raises(ModelError, match="plain relative path"):
        write_hf_model(tmp_path / "x", src.config, _tensors(src), extra_files={"../evil": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    with pytest.raises(ModelError, match="no tensors"):
        write_hf_model(tmp_path / "x", src.config, iter(()))


def test_tied_and_view_tensors_are_saved(tmp_path):
    w = torch.randn(4, 4)
    fused = torch.randn(8, 4)
    out = write_hf_model(
        tmp_path / "t",
        {"model_type": "llama"},
        [("a", w), ("b", w), ("c", fused[:4]), ("d", fused[4:])],
        dtype=torch.float16,
    )
    f = ModelFolder.open(out)
    assert torch.equal(f.read("b"), w.half()) and torch.equal(f.read("d"), fused[4:].half())
    assert f.config["torch_dtype"] == "float16"


def test_stale_temp_of_dead_writer_is_cleaned(tmp_path, source):
    src = ModelFolder.open(source)
    dead_pid = 2**22 + 12345  # above the default pid_max: never alive
    stale = tmp_path / f".out.graphmerge-tmp-{dead_pid}-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    write_hf_model(tmp_path / "out", src.config, _tensors(src))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
