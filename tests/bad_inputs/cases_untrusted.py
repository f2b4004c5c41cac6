"""Model folders that carry Python (auto_map): no code runs without --trust-remote-code, and the
refusal is one line naming the folder and the flag."""

from __future__ import annotations

import sys
from pathlib import Path

from case import Case

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from remote_code_folder import TINY, make_remote_code_folder  # noqa: E402

TASKS = Path(__file__).resolve().parents[2] / "graphs" / "tasks"


def _no_marker(root: Path, err: str) -> None:
    assert not (root / "marker.txt").exists(), "code from the model folder ran"


def _evaluate_custom(root: Path) -> list[str]:
    make_remote_code_folder(root / "custom", root / "marker.txt")
    (root / "g.yaml").write_text(
        f"nodes:\n  m: {{op: load, path: custom}}\n"
        f"  ev: {{op: evaluate, input: m, tasks: [tiny_add], include_path: [{TASKS}], limit: 2}}\n"
    )
    return ["run", "g.yaml", "--no-progress"]


def _align_custom_without_tokenizer_json(root: Path) -> list[str]:
    make_remote_code_folder(root / "custom", root / "marker.txt")
    (root / "custom" / "tokenizer.json").unlink()  # only the folder's own class could load it
    (root / "g.yaml").write_text(
        f"nodes:\n  a: {{op: load, path: custom}}\n  b: {{op: load, path: {TINY / 'add'}}}\n"
        "  al: {op: align_tokenizer, models: [a, b]}\n"
    )
    return ["run", "g.yaml", "--no-progress"]


def _graph_setting_not_bool(root: Path) -> list[str]:
    (root / "g.yaml").write_text(
        f'trust_remote_code: "yes"\nnodes:\n  m: {{op: load, path: {TINY / "base"}}}\n'
    )
    return ["validate", "g.yaml"]


CASES = [
    Case(
        "evaluate_folder_with_custom_code",
        _evaluate_custom,
        mentions=("custom", "--trust-remote-code", "model code"),
        check=_no_marker,
        env={"HF_MODULES_CACHE": "hf_modules"},
    ),
    Case(
        "align_tokenizer_folder_with_custom_tokenizer_code",
        _align_custom_without_tokenizer_json,
        mentions=("custom", "--trust-remote-code", "tokenizer code", "'al'"),
        check=_no_marker,
        env={"HF_MODULES_CACHE": "hf_modules"},
    ),
    Case("trust_remote_code_not_a_bool", _graph_setting_not_bool, mentions=("g.yaml:1", "trust_remote_code")),
]
