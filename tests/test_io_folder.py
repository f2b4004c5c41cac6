"""ModelFolder: lazy reading of real transformers checkpoints, validation, tensor digests."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from graphmerge.errors import ModelError  # noqa: E402
from graphmerge.io import folder as folder_mod  # noqa: E402
from graphmerge.io.folder import ModelFolder, tensor_digest  # noqa: E402


def _tiny_llama(path, **save_kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path, **save_kw)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    sd = _tiny_llama(d)
    (d / "tokenizer.json").write_text("{}")
    (d / "tokenizer_config.json").write_text("{}")
    return d, sd


def test_open_single_safetensors(llama_dir):
    d, sd = llama_dir
    f = ModelFolder.open(d)
    assert f.format == "safetensors"
    assert f.config["model_type"] == "llama"
    assert set(f.tensor_names) == set(sd)
    # File order is data order, which is what the header offsets say.
    offsets = [f.info(n).begin for n in f.tensor_names]
    assert offsets == sorted(offsets)
    for n, t in sd.items():
        assert f.shape(n) == tuple(t.shape)
        assert f.dtype(n) == t.dtype
        assert torch.equal(f.read(n), t)
    assert [p.name for p in f.tokenizer_files()] == ["tokenizer.json", "tokenizer_config.json"]
    assert isinstance(f.generation_config, dict)
    assert "model.norm.weight" in f


def test_open_sharded_safetensors(tmp_path):
    sd = _tiny_llama(tmp_path, max_shard_size="8KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    f = ModelFolder.open(tmp_path)
    assert len(f.files) > 1
    assert set(f.tensor_names) == set(sd)
    for n, t in sd.items():
        assert torch.equal(f.read(n), t)


def test_pytorch_bin_single_and_sharded(tmp_path, llama_dir):
    d, sd = llama_dir
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text((d / "config.json").read_text())
    torch.save(sd, single / "pytorch_model.bin")
    f = ModelFolder.open(single)
    assert f.format == "pytorch"
    assert f.tensor_names == tuple(sd)
    for n, t in sd.items():
        assert torch.equal(f.read(n), t)
    # Digests depend on content only, not on the file format.
    assert f.tensor_digests() == ModelFolder.open(d).tensor_digests()

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((d / "config.json").read_text())
    names = list(sd)
    parts = {"pytorch_model-00001-of-00002.bin": names[:5], "pytorch_model-00002-of-00002.bin": names[5:]}
    weight_map = {}
    for fname, ns in parts.items():
        torch.save({n: sd[n] for n in ns}, sharded / fname)
        weight_map.update(dict.fromkeys(ns, fname))
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    f2 = ModelFolder.open(sharded)
    assert set(f2.tensor_names) == set(sd) and len(f2.files) == 2
    assert torch.equal(f2.read(names[-1]), sd[names[-1]])


def test_digests_match_in_memory_and_are_memoised(tmp_path, llama_dir, monkeypatch):
    d, sd = llama_dir
    f = ModelFolder.open(d)
    calls = []
    real = ModelFolder.hash_tensors
    monkeypatch.setattr(ModelFolder, "hash_tensors", lambda self, p, ns: calls.append(p) or real(self, p, ns))
    memo: dict = {}
    dig = f.tensor_digests(memo)
    assert list(dig) == list(f.tensor_names)
    for n, t in sd.items():
        assert dig[n] == tensor_digest(t)
    random = [dig[n] for n in dig if "norm" not in n]  # norms are all ones, hence equal
    assert len(set(random)) == len(random)
    assert dig["model.norm.weight"] == dig["model.layers.0.input_layernorm.weight"]
    assert f.tensor_digests(memo) == dig and len(calls) == 1  # second call: no re-hash
    key = next(iter(memo))
    assert key[0] == str(f.files[0]) and key[1] == f.files[0].stat().st_size
    # dtype is part of the digest: same values in another dtype differ.
    t = sd["model.norm.weight"]
    assert tensor_digest(t) != tensor_digest(t.to(torch.float64))
    assert tensor_digest(t) != tensor_digest(t.reshape(1, -1))
    # A changed file (new mtime) is hashed again.
    st = f.files[0].stat()
    os.utime(f.files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    f.tensor_digests(memo)
    assert len(calls) == 2


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_config(tmp_path):
    with pytest.raises(ModelError) as e:
        ModelFolder.open(tmp_path)
    assert (
        _one_line(e)
        == f"missing config.json in {tmp_path.resolve()} (point `path` at a Hugging Face model folder)"
    )
    with pytest.raises(ModelError, match="does not exist"):
        ModelFolder.open(tmp_path / "nope")


def _copy_model(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst / "model.safetensors"


def test_truncated_safetensors(tmp_path, llama_dir):
    st = _copy_model(llama_dir[0], tmp_path / "m")
    data = st.read_bytes()
    st.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelError) as e:
        ModelFolder.open(tmp_path / "m")
    msg = _one_line(e)
    assert str(st) in msg and "file has" in msg


def test_corrupted_header(tmp_path, llama_dir):
    st = _copy_model(llama_dir[0], tmp_path / "m")
    data = bytearray(st.read_bytes())
    data[8:20] = b"@@@@@@@@@@@@"
    st.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        ModelFolder.open(tmp_path / "m")
    assert str(st) in _one_line(e) and "not valid JSON" in str(e.value)

    st.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    with pytest.raises(ModelError, match="does not fit"):
        ModelFolder.open(tmp_path / "m")
    st.write_bytes(b"abc")
    with pytest.raises(ModelError, match="shorter"):
        ModelFolder.open(tmp_path / "m")
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    st.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(ModelError, match="does not match its shape"):
        ModelFolder.open(tmp_path / "m")


def test_missing_tensor_and_missing_shard(tmp_path, llama_dir):
    f = ModelFolder.open(llama_dir[0])
    with pytest.raises(ModelError) as e:
        f.read("model.layers.0.self_attn.o_proj.weigth")
    assert "did you mean 'model.layers.0.self_attn.o_proj.weight'" in _one_line(e)

    _tiny_llama(tmp_path / "sh", max_shard_size="8KB")
    shard = sorted((tmp_path / "sh").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelError) as e:
        ModelFolder.open(tmp_path / "sh")
    assert shard.name in _one_line(e) and "missing" in str(e.value)


def test_no_weights_and_bad_bin(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        ModelFolder.open(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a zip file")
    with pytest.raises(ModelError) as e:
        ModelFolder.open(tmp_path)
    assert "pytorch_model.bin" in _one_line(e)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ModelError, match="config.json is not valid JSON"):
        ModelFolder.open(tmp_path)


def test_tokenizer_file_list_is_public():
    assert "tokenizer.json" in folder_mod.TOKENIZER_FILE_NAMES
