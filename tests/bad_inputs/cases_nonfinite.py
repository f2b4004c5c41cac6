"""NaN/Inf: a source holding them is a warning naming the tensor and the load node; a merge that
turns finite inputs into them is an error naming the method (unless `allow_nonfinite: true`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from case import Case
from safetensors.torch import load_file, save_file

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
POISONED = "model.layers.1.mlp.down_proj.weight"


def _poisoned_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    tensors = load_file(dest / "model.safetensors")
    t = tensors[POISONED].clone()
    t.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), float("nan")])
    tensors[POISONED] = t
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def _merge_graph(merge: str, add: str = f"{TINY / 'add'}"):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(
            f"nodes:\n  base: {{op: load, path: {TINY / 'base'}}}\n  add: {{op: load, path: {add}}}\n"
            f"  m:\n{merge}  save: {{op: save, input: m, path: out}}\n"
        )
        return ["run", "g.yaml", "--no-progress"]

    return build


_OVERFLOW = """    op: merge
    method: task_arithmetic
    base: base
    models: {add: {weight: 1.0}}
    params: {lambda: 1.0e+9}
    dtype: float16
"""


def _no_output(root: Path, err: str) -> None:
    assert not (root / "out").exists(), "a failed merge must not leave an output"


def _source_nan(root: Path) -> list[str]:
    _poisoned_copy(TINY / "add", root / "add_nan")
    return _merge_graph(
        "    op: merge\n    method: linear\n    models: {base: {weight: 1.0}, add: {weight: 1.0}}\n",
        add=str(root / "add_nan"),
    )(root)


def _output_has_nan(root: Path, err: str) -> None:
    out = load_file(root / "out" / "model.safetensors")[POISONED]
    assert torch.isnan(out).any(), "the warning must describe what was written"


CASES = [
    Case(
        "merge_overflows_float16",
        _merge_graph(_OVERFLOW),
        mentions=("task_arithmetic", "Inf", "allow_nonfinite", "'save'", "of merge node 'm'"),
        check=_no_output,
    ),
    Case(
        "source_holds_nan_warns",
        _source_nan,
        exit_code=0,
        mentions=("warning:", POISONED, "model 'add'", "2 NaN and 1 Inf"),
        may_change=(".graphmerge/**", "out/**"),
        check=_output_has_nan,
    ),
    Case(
        "allow_nonfinite_keeps_them",
        _merge_graph(_OVERFLOW + "    allow_nonfinite: true\n"),
        exit_code=0,
        may_change=(".graphmerge/**", "out/**"),
        check=lambda root, err: (root / "out" / "model.safetensors").is_file() or _fail("no output"),
    ),
]


def _fail(message: str) -> None:
    raise AssertionError(message)
