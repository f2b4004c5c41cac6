"""Bad model folders: missing pieces, truncated or lying safetensors headers, pickles with code,
configs that want remote code, and models that cannot be merged with each other."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

from case import LINEAR_MERGE, Case, copy_model, graph_case, no_file, write

ONE = "nodes:\n  m: {op: load, path: m}\n"
MERGE = LINEAR_MERGE.replace("OTHER", "m")


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_st(path: Path, header: dict, body: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def _model(mutate):
    """Copy the tiny base model to m/, then let `mutate(folder)` break it."""

    def setup(root: Path) -> None:
        copy_model(root, "base", "base")
        mutate(copy_model(root, "m", "base"))

    return setup


def _truncate(folder: Path) -> None:
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])


def _header_len_lies(folder: Path) -> None:
    st = folder / "model.safetensors"
    raw = st.read_bytes()
    st.write_bytes(struct.pack("<Q", 10**12) + raw[8:])


def _header_garbage(folder: Path) -> None:
    st = folder / "model.safetensors"
    raw = st.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    st.write_bytes(raw[:8] + b"\xff" * n + raw[8 + n :])


def _offsets_lie(folder: Path) -> None:
    header, body = _header(folder / "model.safetensors")
    name = next(k for k in header if k != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin, end + 10**9]
    _write_st(folder / "model.safetensors", header, body)


def _shape_lies(folder: Path) -> None:
    header, body = _header(folder / "model.safetensors")
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [int(x) * 2 for x in header[name]["shape"]]
    _write_st(folder / "model.safetensors", header, body)


def _bad_dtype(folder: Path) -> None:
    header, body = _header(folder / "model.safetensors")
    name = next(k for k in header if k != "__metadata__")
    header[name]["dtype"] = "F128"
    _write_st(folder / "model.safetensors", header, body)


def _empty_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"")


def _shard(folder: Path, drop_shard: bool = False, drop_map: bool = False) -> None:
    header, body = _header(folder / "model.safetensors")
    names = [k for k in header if k != "__metadata__"]
    (folder / "model.safetensors").unlink()
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate([names[:half], names[half:]], start=1):
        fname = f"model-0000{i}-of-00002.safetensors"
        chunks, sub, pos = [], {}, 0
        for n in part:
            b, e = header[n]["data_offsets"]
            sub[n] = {**header[n], "data_offsets": [pos, pos + e - b]}
            chunks.append(body[b:e])
            pos += e - b
            weight_map[n] = fname
        _write_st(folder / fname, sub, b"".join(chunks))
    index = {"metadata": {}, "weight_map": weight_map}
    if drop_map:
        del index["weight_map"]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    if drop_shard:
        (folder / "model-00002-of-00002.safetensors").unlink()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def _pickle_with_code(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Exploit()}))


def _config(text: str | bytes):
    def mutate(folder: Path) -> None:
        write(folder, "config.json", text)

    return mutate


def _config_file(name: str, data: bytes):
    return lambda folder: write(folder, name, data)


def _auto_map(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(
        model_type="my_secret_arch",
        architectures=["MySecretForCausalLM"],
        auto_map={"AutoModelForCausalLM": "modeling_secret.MySecretForCausalLM"},
    )
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_secret.py").write_text("open('pwned', 'w').close()\n")


def _fewer_layers(folder: Path) -> None:
    header, body = _header(folder / "model.safetensors")
    header = {k: v for k, v in header.items() if ".layers.1." not in k}
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    _write_st(folder / "model.safetensors", header, body)


def _other_shape(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    name = "model.norm.weight"
    tensors[name] = torch.ones(tensors[name].shape[0] * 2)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _remove(*names: str):
    def mutate(folder: Path) -> None:
        for n in names:
            (folder / n).unlink()

    return mutate


def _case(name: str, mutate, *mentions: str, graph: str = ONE, **kw) -> Case:
    return Case(name, graph_case(graph, setup=_model(mutate)), mentions=("'m'", *mentions), **kw)


ALIGN = "nodes:\n  base: {op: load, path: base}\n  m: {op: load, path: m}\n  al: {op: align_tokenizer, models: [base, m]}\n"

CASES = [
    Case(
        "model_folder_missing",
        graph_case(ONE),
        mentions=("g.yaml:2", "'m'", "does not exist"),
    ),
    Case(
        "model_path_is_a_file",
        graph_case(ONE, setup=lambda r: write(r, "m", "x")),
        mentions=("'m'", "not a directory"),
    ),
    _case("config_missing", _remove("config.json"), "config.json"),
    _case("config_not_json", _config("{not json"), "config.json", "not valid JSON"),
    _case("config_binary", _config(bytes(range(256))), "config.json"),
    _case("config_a_list", _config("[1, 2]"), "config.json", "JSON object"),
    _case("no_weights", _remove("model.safetensors"), "no weights"),
    _case("safetensors_truncated", _truncate, "model.safetensors"),
    _case("safetensors_header_length_lies", _header_len_lies, "model.safetensors"),
    _case("safetensors_header_garbage", _header_garbage, "model.safetensors"),
    _case("safetensors_offsets_lie", _offsets_lie, "model.safetensors"),
    _case("safetensors_shape_lies", _shape_lies, "model.safetensors"),
    _case("safetensors_unknown_dtype", _bad_dtype, "model.safetensors", "F128"),
    _case("safetensors_empty_file", _empty_weights, "model.safetensors"),
    _case("shard_missing", lambda f: _shard(f, drop_shard=True), "model-00002-of-00002.safetensors"),
    _case("shard_index_without_weight_map", lambda f: _shard(f, drop_map=True), "weight_map"),
    _case(
        "shard_index_not_json", lambda f: (_shard(f), write(f, "model.safetensors.index.json", "{")), "index"
    ),
    _case("pickle_bin_with_code", _pickle_with_code, "pytorch_model.bin", check=no_file("pwned")),
    Case(
        "tokenizer_garbage",
        graph_case(ALIGN, setup=_model(_config_file("tokenizer.json", b"\x00garbage"))),
        mentions=("g.yaml:4", "'al'", "/m:", "cannot load tokenizer"),
    ),
    _case("merge_fewer_layers", _fewer_layers, "model.layers.1", graph=MERGE),
    Case(
        "merge_shape_mismatch",
        graph_case(MERGE, setup=_model(_other_shape)),
        mentions=("g.yaml:4", "'merged'", "model.norm.weight", "m: [256]"),
    ),
]
