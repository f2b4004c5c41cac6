"""`viz` colours a `save` by the rule `save` itself skips a write by: an output folder is "cached"
exactly when a run would leave it alone (same stamp: model, dtype, shard size; every shard there)."""

from __future__ import annotations

from graphmerge.runner import run_graph
from graphmerge.spec import load_graph
from graphmerge.viz import cache_states

GRAPH = """nodes:
  base: {{op: load, path: {base}}}
  a: {{op: load, path: {a}}}
  merged: {{op: merge, method: linear, models: {{base: {{weight: 0.5}}, a: {{weight: 0.5}}}}}}
  save: {{op: save, input: merged, path: {out}, dtype: {dtype}}}
"""


def _write(tmp_path, tiny_llamas, dtype: str):
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.format(out=tmp_path / "out", dtype=dtype, **tiny_llamas))
    return graph


def _save_writes(graph, cache) -> bool:
    run = run_graph(graph, cache_dir=cache, progress=False, device="cpu")
    return bool(run.values["save"]["written"])


def test_viz_says_cached_exactly_when_save_would_skip(tmp_path, tiny_llamas):
    cache = tmp_path / "cache"
    graph = _write(tmp_path, tiny_llamas, "float32")
    assert cache_states(load_graph(graph), cache).get("save", "missing") == "missing"
    assert _save_writes(graph, cache)
    assert cache_states(load_graph(graph), cache)["save"] == "cached"
    assert not _save_writes(graph, cache)  # the run agrees: nothing to write

    # Same model, another dtype: the folder's model key matches, but save would rewrite it.
    graph = _write(tmp_path, tiny_llamas, "bfloat16")
    assert cache_states(load_graph(graph), cache)["save"] == "missing"
    assert _save_writes(graph, cache)
    assert cache_states(load_graph(graph), cache)["save"] == "cached"

    # A weight file deleted behind graphmerge's back: the stamp is there, save would rewrite.
    (tmp_path / "out" / "model.safetensors").unlink()
    assert cache_states(load_graph(graph), cache)["save"] == "missing"
    assert _save_writes(graph, cache)
