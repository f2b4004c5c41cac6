"""Bad inputs at the front doors: mergekit configs, hub references, LoRA adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from case import Case

TINY = Path(__file__).resolve().parent.parent.parent / "models" / "tiny"
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def _file(name: str, text: str, *argv: str):
    def build(root: Path) -> list[str]:
        (root / name).write_text(text)
        return [a.replace("{root}", str(root)) for a in argv]

    return build


def _with_models(text: str, *argv: str):
    def build(root: Path) -> list[str]:
        for m in ("base", "add"):
            shutil.copytree(TINY / m, root / m)
        (root / "g.yaml").write_text(text)
        return list(argv)

    return build


def _adapter(config: dict, tensors: bool = True):
    def build(root: Path) -> list[str]:
        shutil.copytree(TINY / "base", root / "base")
        (root / "ad").mkdir()
        (root / "ad" / "adapter_config.json").write_text(json.dumps(config))
        if tensors:
            (root / "ad" / "adapter_model.safetensors").write_bytes(
                b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"
            )
        (root / "g.yaml").write_text(
            "nodes:\n  m: {op: load, path: base+ad}\n  s: {op: save, input: m, path: out}\n"
        )
        return ["run", "g.yaml", "--no-progress"]

    return build


def _adapter_without_base(root: Path) -> list[str]:
    (root / "ad").mkdir()
    (root / "ad" / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8})
    )
    (root / "g.yaml").write_text("nodes:\n  m: {op: load, path: ad}\n  s: {op: save, input: m, path: out}\n")
    return ["run", "g.yaml", "--no-progress"]


def _no_graph_written(root: Path, err: str) -> None:
    assert not (root / "g.yaml").exists(), "convert wrote a graph despite the error"


MK_MODELS = "models:\n  - model: base\n    parameters: {weight: 1.0}\n"
CASES = [
    Case(
        "mergekit_unsupported_key",
        _file("mk.yml", "merge_method: linear\nmodules: {text: {}}\n", "run", "mk.yml"),
        mentions=("mk.yml", "key 'modules'"),
    ),
    Case(
        "mergekit_unknown_key",
        _file(
            "mk.yml",
            "merge_method: linear\n" + MK_MODELS + "lora_rank: 8\n",
            "convert",
            "mk.yml",
            "-o",
            "g.yaml",
        ),
        mentions=("mk.yml", "key 'lora_rank'"),
        check=_no_graph_written,
    ),
    Case(
        "mergekit_unknown_method",
        _file("mk.yml", "merge_method: ram\n" + MK_MODELS, "convert", "mk.yml"),
        mentions=("mk.yml", "key 'merge_method'", "ram"),
    ),
    Case(
        "mergekit_bad_token_source",
        _file(
            "mk.yml",
            "merge_method: linear\n"
            + MK_MODELS
            + "tokenizer: {source: union, tokens: {'<x>': {source: {kind: odd}}}}\n",
            "validate",
            "mk.yml",
        ),
        mentions=("mk.yml", "key 'tokenizer.tokens.<x>.source'"),
    ),
    Case(
        "convert_not_mergekit",
        _file("g.yaml", "nodes: {}\n", "convert", "g.yaml"),
        mentions=("g.yaml", "merge_method"),
    ),
    Case(
        "hub_model_missing_offline",
        _file(
            "g.yaml",
            "nodes:\n  m: {op: load, path: org/absent@v1}\n  s: {op: save, input: m, path: out}\n",
            "run",
            "g.yaml",
        ),
        mentions=("org/absent@v1", "HF_HUB_OFFLINE", "HF_HOME"),
        env={**OFFLINE, "HF_HOME": "hf_home_empty"},
    ),
    Case(
        "hub_model_missing_validate_offline",
        _file("g.yaml", "nodes:\n  m: {op: load, path: hf://org/absent}\n", "validate", "g.yaml"),
        mentions=("g.yaml", "'m'", "key 'path'", "org/absent"),
        env={**OFFLINE, "HF_HOME": "hf_home_empty"},
    ),
    Case(
        "adapter_dora",
        _adapter({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True}),
        mentions=("ad", "use_dora"),
    ),
    Case(
        "adapter_not_lora",
        _adapter({"peft_type": "IA3"}),
        mentions=("ad", "IA3"),
    ),
    Case(
        "adapter_damaged_weights",
        _adapter({"peft_type": "LORA", "r": 4, "lora_alpha": 8}),
        mentions=("ad", "adapter_model.safetensors"),
    ),
    Case(
        "adapter_without_base",
        _adapter_without_base,
        mentions=("ad", "base_model_name_or_path", "MODEL+ADAPTER"),
    ),
    Case(
        "extract_lora_rank_and_energy",
        _with_models(
            "nodes:\n  b: {op: load, path: base}\n  a: {op: load, path: add}\n"
            "  x: {op: extract_lora, model: a, base: b, rank: 4, energy: 0.9, path: ad}\n",
            "run",
            "g.yaml",
        ),
        mentions=("g.yaml", "'x'", "rank"),
    ),
]
