"""The pipelined executor: bit-identical to the sequential one, and bounded by its in-flight budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import saved_tensors as tensors_of
from safetensors.torch import load_file, save_file

from graphmerge.executor import ExecutorSettings
from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent

METHODS = """
nodes:
  base: {{op: load, path: {base}}}
  a: {{op: load, path: {a}}}
  b: {{op: load, path: {b}}}
  ties:
    op: merge
    method: ties
    base: base
    models:
      a: {{weight: 0.6, density: 0.5}}
      b: {{weight: 0.4, density: 0.7}}
  dare:
    op: merge
    method: dare_ties
    base: base
    models:
      a: {{weight: 0.5, density: 0.6}}
      b: {{weight: 0.5, density: 0.6}}
  slerp:
    op: merge
    method: slerp
    base: ties
    models: {{dare: {{}}}}
    params: {{t: 0.3}}
  save_ties: {{op: save, input: ties, path: {out}/ties}}
  save_slerp: {{op: save, input: slerp, path: {out}/slerp}}
"""


def _blobs(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cache / "blobs").glob("*/*.safetensors")}


def test_pipelined_and_sequential_executors_give_identical_outputs_and_caches(tmp_path, tiny_llamas):
    graph = tmp_path / "g.yaml"
    results = {}
    for mode in ("sequential", "pipelined"):
        graph.write_text(METHODS.format(out=tmp_path / mode, **tiny_llamas))
        # A budget smaller than one model: the reader and writer must wait on each other.
        settings = ExecutorSettings(in_flight=8 << 10, pipelined=mode == "pipelined")
        run = run_graph(
            graph, cache_dir=tmp_path / f"cache_{mode}", device="cpu", progress=False, executor=settings
        )
        assert run.stats.tasks_executed > 0
        results[mode] = (tensors_of(tmp_path / mode / "ties"), tensors_of(tmp_path / mode / "slerp"))
    for seq, pipe in zip(results["sequential"], results["pipelined"], strict=True):
        assert seq.keys() == pipe.keys()
        assert all(torch.equal(seq[k], pipe[k]) for k in seq)
    assert _blobs(tmp_path / "cache_sequential") == _blobs(tmp_path / "cache_pipelined")


def test_the_in_flight_budget_bounds_what_is_read_ahead_and_waiting_to_be_written(tmp_path, tiny_llamas):
    from graphmerge.runner import make_context
    from graphmerge.spec import load_graph

    graph = tmp_path / "g.yaml"
    graph.write_text(METHODS.format(out=tmp_path / "out", **tiny_llamas))
    model_bytes = sum(t.nbytes for t in load_file(tiny_llamas["a"] / "model.safetensors").values())
    largest = max(t.nbytes for t in load_file(tiny_llamas["a"] / "model.safetensors").values())
    budget = 2 * largest
    assert 3 * model_bytes > 4 * budget  # the inputs are far larger than the budget
    spec = load_graph(graph)
    ctx = make_context(
        spec,
        cache_dir=tmp_path / "c",
        device="cpu",
        progress=False,
        executor=ExecutorSettings(in_flight=budget),
    )
    from graphmerge.executor import run_nodes

    run_nodes(ctx, spec)
    ctx.cache.close()
    # At least one tensor always proceeds (else a full budget could stall the writer forever).
    assert 0 < ctx.executor.peak_in_flight <= budget + largest


LINEAR = """
nodes:
  a: {{op: load, path: {a}}}
  b: {{op: load, path: {b}}}
  c: {{op: load, path: {c}}}
  merged:
    op: merge
    method: linear
    models: {{a: {{weight: 0.5}}, b: {{weight: 0.3}}, c: {{weight: 0.2}}}}
  save: {{op: save, input: merged, path: {out}, max_shard_size: 32MB}}
"""


def _big_llama(path: Path, seed: int) -> int:
    """A float32 Llama-shaped folder of 72M parameters (288 MB); returns its largest tensor's bytes."""
    hidden, inter, layers, vocab = 1024, 4096, 4, 4096
    g = torch.Generator().manual_seed(seed)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    shapes["model.norm.weight"] = (hidden,)
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    path.mkdir(parents=True)
    save_file({k: torch.randn(s, generator=g) for k, s in shapes.items()}, str(path / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    (path / "config.json").write_text(json.dumps(config))
    return vocab * hidden * 4


def _peak_rss_of(argv: list[str], cwd: Path) -> int:
    """Peak resident set of one child process, in bytes (Linux reports KiB)."""
    code = textwrap.dedent(
        f"""
        import resource, subprocess, sys
        subprocess.run({argv!r}, check=True, cwd={str(cwd)!r}, stdout=subprocess.DEVNULL)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


@pytest.mark.slow
def test_peak_rss_of_a_merge_larger_than_the_budget_stays_under_budget_plus_margin(tmp_path):
    largest = max(_big_llama(tmp_path / name, seed) for seed, name in enumerate("abc"))
    model_bytes = sum(t.nbytes for t in load_file(tmp_path / "a" / "model.safetensors").values())
    graph = tmp_path / "g.yaml"
    graph.write_text(LINEAR.format(out=tmp_path / "out", **{n: tmp_path / n for n in "abc"}))
    cli = [sys.executable, "-m", "graphmerge.cli"]
    # The same process on a graph that merely loads the models: interpreter, torch, graphmerge.
    idle = tmp_path / "idle.yaml"
    idle.write_text("nodes:\n" + "".join(f"  {n}: {{op: load, path: {tmp_path / n}}}\n" for n in "abc"))
    baseline = _peak_rss_of(
        [*cli, "run", str(idle), "--cache-dir", str(tmp_path / "c0"), "--device", "cpu"], REPO
    )
    budget = 32 << 20
    peak = _peak_rss_of(
        [
            *cli,
            "run",
            str(graph),
            "--cache-dir",
            str(tmp_path / "c1"),
            "--device",
            "cpu",
            "--no-progress",
            "--in-flight",
            str(budget),
        ],
        REPO,
    )
    # Margin: what one task holds at once, whatever the model size (3 inputs, the method's float32
    # stack and result, the value waiting for its cache write), one output shard (32 MB) and
    # allocator slack (glibc arenas of the reader, writer and save threads).
    margin = 8 * largest + (32 << 20) + (80 << 20)
    # The budget bounds the executor's read-ahead and pending cache writes, and separately the
    # lead `save` keeps on its shard writer: twice the budget at most.
    assert 3 * model_bytes > 2 * (2 * budget + margin)  # the inputs dwarf the bound being tested
    print(
        f"peak above baseline {(peak - baseline) / 2**20:.1f} MiB, bound {(2 * budget + margin) / 2**20:.1f} MiB"
    )
    assert peak - baseline <= 2 * budget + margin, (peak - baseline) / 2**20
    assert len(tensors_of(tmp_path / "out")) == 4 * 9 + 3


def test_run_ahead_keeps_order_bounds_the_lead_and_stops_with_its_consumer():
    from graphmerge.executor import run_ahead

    produced: list[int] = []
    closed: list[bool] = []

    def items():
        try:
            for i in range(100):
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    got = []
    for i in run_ahead(items(), lambda _i: 10, limit=30):
        got.append(i)
        assert len(produced) - len(got) <= 4  # 3 within the budget, one being handed over
        if i == 40:
            break
    assert got == list(range(41)) and closed == [True] and len(produced) < 100

    def failing():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(run_ahead(failing(), lambda _i: 10**9, limit=1))  # larger than the budget: still flows
