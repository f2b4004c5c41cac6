"""The foundation: graph spec, executor, content-addressed cache, CLI (issue: Foundation)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from safetensors.torch import load_file

from graphmerge.cli import main
from graphmerge.runner import run_graph

LINEAR = """
vars:
  base: {base}
  a: {a}
  b: {b}
  wa: 0.6
  out: {out}
nodes:
  base: {{op: load, path: ${{base}}}}
  a: {{op: load, path: ${{a}}}}
  b: {{op: load, path: ${{b}}}}
  mix_ab:
    op: merge
    method: linear
    models:
      a: {{weight: ${{wa}}}}
      b: {{weight: 0.4}}
  mix_base:
    op: merge
    method: linear
    models:
      base: {{weight: 0.5}}
      a: {{weight: 0.5}}
  save_ab: {{op: save, input: mix_ab, path: ${{out}}/ab}}
  save_base: {{op: save, input: mix_base, path: ${{out}}/base}}
"""


def write_graph(tmp_path: Path, models: dict[str, Path], out: Path, text: str = LINEAR) -> Path:
    graph = tmp_path / "graph.yaml"
    graph.write_text(text.format(out=out, **models))
    return graph


def tensors_of(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def n_tensors(folder: Path) -> int:
    return len(tensors_of(folder))


def test_second_run_executes_nothing_and_changes_rerun_only_their_tasks(tmp_path, tiny_llamas, cache_dir):
    out = tmp_path / "out"
    graph = write_graph(tmp_path, tiny_llamas, out)
    first = run_graph(graph, cache_dir=cache_dir, progress=False)
    per_model = n_tensors(tiny_llamas["base"])
    assert first.stats.tasks_executed == 2 * per_model
    assert (out / "ab" / "config.json").exists()

    second = run_graph(graph, cache_dir=cache_dir, progress=False)
    assert second.stats.tasks_executed == 0
    assert second.stats.outputs == []  # outputs are up to date, nothing rewritten

    changed = run_graph(graph, cache_dir=cache_dir, overrides={"wa": 0.7}, progress=False)
    assert changed.stats.tasks_executed == per_model  # only mix_ab's tasks
    assert changed.stats.outputs == [str(out / "ab")]

    fresh_out = tmp_path / "fresh"
    fresh = run_graph(
        write_graph(tmp_path, tiny_llamas, fresh_out),
        cache_dir=tmp_path / "empty",
        overrides={"wa": 0.7},
        progress=False,
    )
    assert fresh.stats.tasks_executed == 2 * per_model
    got, want = tensors_of(out / "ab"), tensors_of(fresh_out / "ab")
    assert got.keys() == want.keys()
    for name in got:
        assert got[name].dtype == want[name].dtype
        assert (
            got[name]
            .view(-1)
            .view(dtype=__import__("torch").uint8)
            .equal(want[name].view(-1).view(dtype=__import__("torch").uint8))
        ), name


def test_per_layer_recipe_change_reruns_only_that_layer(tmp_path, tiny_llamas, cache_dir):
    text = LINEAR.replace(
        "a: {{weight: ${{wa}}}}", 'a: {{weight: [{{filter: "layers.1.", value: ${{wa}}}}, {{value: 0.6}}]}}'
    )
    graph = write_graph(tmp_path, tiny_llamas, tmp_path / "out", text)
    run_graph(graph, cache_dir=cache_dir, progress=False)
    changed = run_graph(graph, cache_dir=cache_dir, overrides={"wa": 0.9}, progress=False)
    layer1 = [n for n in tensors_of(tiny_llamas["base"]) if "layers.1." in n]
    assert changed.stats.tasks_executed == len(layer1)


def test_json_summary_is_last_stdout_line(tmp_path, tiny_llamas, cache_dir, capsys):
    graph = write_graph(tmp_path, tiny_llamas, tmp_path / "out")
    assert main(["run", str(graph), "--cache-dir", str(cache_dir), "--json", "--no-progress"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["tasks"]["executed"] > 0
    assert main(["run", str(graph), "--cache-dir", str(cache_dir), "--json", "--no-progress"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["tasks"]["executed"] == 0
    assert second["outputs"] == []
    assert {"tasks", "evaluations", "outputs"} <= second.keys()


PLUGIN = '''
from graphmerge import Model, NodeParams, node, tensor_op

CALLS = []

@tensor_op("negate_tensor", version="1")
def negate_tensor(x):
    CALLS.append(1)
    return -x

class NegateParams(NodeParams):
    input: str
    only: str = ""

@node("negate", version="1", params=NegateParams, inputs=["input"])
def negate(ctx, params, inputs):
    """Negate every tensor whose name contains `only`."""
    model = inputs[params.input]
    return model.map_tensors("negate_tensor", names=lambda n: params.only in n)
'''


def test_custom_node_from_plugin_runs_is_listed_and_cached(tmp_path, tiny_llamas, cache_dir, capsys):
    plugin = tmp_path / "my_nodes.py"
    plugin.write_text(PLUGIN)
    graph = tmp_path / "g.yaml"
    graph.write_text(
        textwrap.dedent(
            f"""
            nodes:
              a: {{op: load, path: {tiny_llamas["a"]}}}
              neg: {{op: negate, input: a, only: mlp}}
              save: {{op: save, input: neg, path: {tmp_path / "neg"}}}
            """
        )
    )
    assert main(["nodes", "--plugin", str(plugin)]) == 0
    listing = capsys.readouterr().out
    assert "negate" in listing and "only" in listing

    args = [
        "run",
        str(graph),
        "--plugin",
        str(plugin),
        "--cache-dir",
        str(cache_dir),
        "--json",
        "--no-progress",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mlp = [n for n in tensors_of(tiny_llamas["a"]) if "mlp" in n]
    assert first["tasks"]["executed"] == len(mlp)
    src, got = tensors_of(tiny_llamas["a"]), tensors_of(tmp_path / "neg")
    for name in src:
        expected = -src[name] if "mlp" in name else src[name]
        assert got[name].equal(expected), name

    (tmp_path / "neg" / "graphmerge.json").unlink()  # force the save to run again
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["tasks"]["executed"] == 0 and second["tasks"]["cached"] == len(mlp)


def test_deleted_and_corrupted_blobs_are_reported_and_recomputed(tmp_path, tiny_llamas, cache_dir, capsys):
    out = tmp_path / "out"
    graph = write_graph(tmp_path, tiny_llamas, out)
    run_graph(graph, cache_dir=cache_dir, progress=False)
    before = tensors_of(out / "ab")
    blobs = sorted((cache_dir / "blobs").glob("*/*.safetensors"))
    blobs[0].unlink()
    data = bytearray(blobs[1].read_bytes())
    data[-1] ^= 0xFF
    blobs[1].write_bytes(bytes(data))

    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 1
    report = capsys.readouterr().out
    assert "1 missing, 1 corrupted" in report

    # Corrupt a third blob without telling verify: the run must notice on read and recompute.
    data = bytearray(blobs[2].read_bytes())
    data[-1] ^= 0xFF
    blobs[2].write_bytes(bytes(data))
    for stamp in out.glob("*/graphmerge.json"):
        stamp.unlink()
    rerun = run_graph(graph, cache_dir=cache_dir, progress=False)
    assert rerun.stats.tasks_executed == 3
    after = tensors_of(out / "ab")
    assert all(before[n].equal(after[n]) for n in before)
    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 0


def test_cache_stats_and_gc(tmp_path, tiny_llamas, cache_dir, capsys):
    graph = write_graph(tmp_path, tiny_llamas, tmp_path / "out")
    run_graph(graph, cache_dir=cache_dir, progress=False)
    stray = cache_dir / "blobs" / "00" / ".half-written.tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x" * 10)
    assert main(["cache", "stats", "--cache-dir", str(cache_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tensors"] == 2 * n_tensors(tiny_llamas["base"])
    assert main(["cache", "gc", "--cache-dir", str(cache_dir), "--json"]) == 0
    gc = json.loads(capsys.readouterr().out)
    assert gc["stray_files_removed"] == 1 and not stray.exists()
    assert main(["cache", "gc", "--cache-dir", str(cache_dir), "--max-size", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors_evicted"] == stats["tensors"]


def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  a: {op: load, path: does/not/exist}\n")
    assert main(["run", str(graph), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "node 'a'" in err[0]
    assert "Traceback" not in capsys.readouterr().err
