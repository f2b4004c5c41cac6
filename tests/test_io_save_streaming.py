"""`save` with a plan: each tensor goes to its shard file as it arrives (nothing buffered), and the
files are byte for byte those of the buffering writer; tensors that stray from the plan still save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graphmerge.io.save import PlannedTensor, save_hf_model
from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"
CONFIG = {"model_type": "llama", "num_hidden_layers": 1}


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(64, 32, generator=g),
        "b.weight": torch.randn(32, generator=g).to(torch.bfloat16),
        "c.ids": torch.arange(40, dtype=torch.int64),
        "d.empty": torch.empty(0, 8),
        "e.weight": torch.randn(128, 16, generator=g),
    }


def _plan(tensors: dict[str, torch.Tensor], dtype: str | None) -> list[PlannedTensor]:
    def saved(t: torch.Tensor) -> str:
        return dtype if dtype and t.is_floating_point() else str(t.dtype).removeprefix("torch.")

    return [PlannedTensor(n, tuple(t.shape), saved(t)) for n, t in tensors.items()]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if "safetensors" in p.name}


@pytest.mark.parametrize("shard", ["2GB", "3KB"], ids=["one-file", "sharded"])
@pytest.mark.parametrize("dtype", [None, torch.float16], ids=["as-is", "cast"])
def test_streamed_files_equal_buffered_ones_and_reach_disk_before_the_end(tmp_path, shard, dtype):
    tensors = _tensors()
    on_disk = []

    def arriving():
        for i, (name, t) in enumerate(tensors.items()):
            if i:  # what was yielded before is already in a shard file of the hidden temporary folder
                on_disk.append(sum(p.stat().st_size for p in tmp_path.glob(".streamed*/shard-*")))
            yield name, t

    dname = str(dtype).removeprefix("torch.") if dtype else None
    save_hf_model(tmp_path / "buffered", CONFIG, tensors.items(), dtype=dtype, max_shard_size=shard)
    save_hf_model(
        tmp_path / "streamed", CONFIG, arriving(), dtype=dtype, max_shard_size=shard, plan=_plan(tensors, dname)
    )
    buffered, streamed = _files(tmp_path / "buffered"), _files(tmp_path / "streamed")
    assert buffered == streamed
    assert (len(buffered) > 2) == (shard == "3KB")  # several shards and their index
    first = tensors["a.weight"].numel() * (2 if dtype else 4)
    assert on_disk[0] >= first and on_disk == sorted(on_disk)


@pytest.mark.parametrize("stray", ["shape", "dtype", "name", "missing", "extra"])
def test_tensors_that_stray_from_the_plan_are_saved_all_the_same(tmp_path, stray):
    tensors = _tensors()
    plan = _plan(tensors, None)
    if stray == "shape":
        plan[2] = PlannedTensor("c.ids", (41,), "int64")
    elif stray == "dtype":
        plan[1] = PlannedTensor("b.weight", (32,), "float32")
    elif stray == "name":
        plan[3], plan[4] = plan[4], plan[3]
    elif stray == "missing":
        plan = plan[:-1]
    else:
        plan.append(PlannedTensor("f.weight", (2,), "float32"))
    save_hf_model(tmp_path / "buffered", CONFIG, tensors.items(), max_shard_size="3KB")
    save_hf_model(tmp_path / "streamed", CONFIG, tensors.items(), max_shard_size="3KB", plan=plan)
    assert _files(tmp_path / "buffered") == _files(tmp_path / "streamed")


def test_a_graph_save_streams_what_the_plan_promised(tmp_path, monkeypatch):
    """The save node's plan (from the tasks' shapes and dtypes) matches what the merge computes: the
    streaming writer takes every tensor, and the folder equals the one saved without a plan."""
    from graphmerge.io import save
    from graphmerge.nodes import io

    streamed = []
    write = save._StreamingShards.write
    monkeypatch.setattr(save._StreamingShards, "write", lambda self, t: (streamed.append(1), write(self, t)))
    text = f"""nodes:
  base: {{op: load, path: {TINY / "base"}}}
  add: {{op: load, path: {TINY / "add"}}}
  reverse: {{op: load, path: {TINY / "reverse"}}}
  merged: {{op: merge, method: ties, base: base, models: {{add: {{weight: 1.0, density: 0.5}}, reverse: {{weight: 1.0, density: 0.7}}}}}}
  save: {{op: save, input: merged, path: ${{out}}, dtype: float16, max_shard_size: 200KB}}
"""
    run_graph(text=text, overrides={"out": str(tmp_path / "out")}, cache_dir=tmp_path / "cache", progress=False)
    n = len(streamed)
    monkeypatch.setattr(io, "_save_plan", lambda model, dtype: None)
    run_graph(text=text, overrides={"out": str(tmp_path / "again")}, cache_dir=tmp_path / "cache", progress=False)
    assert len(streamed) == n
    out, again = _files(tmp_path / "out"), _files(tmp_path / "again")
    assert out == again and len(out) > 2
    import json

    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert n == len(index["weight_map"]) > 10
