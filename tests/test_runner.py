"""The runner end to end: reruns execute only what changed, the JSON summary, one-line errors."""

from __future__ import annotations

import json

from helpers import LINEAR, n_tensors, saved_tensors, write_graph

from graphmerge.cli import main
from graphmerge.runner import run_graph


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
    got, want = saved_tensors(out / "ab"), saved_tensors(fresh_out / "ab")
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
    layer1 = [n for n in saved_tensors(tiny_llamas["base"]) if "layers.1." in n]
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


def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys):
    graph = tmp_path / "g.yaml"
    graph.write_text("nodes:\n  a: {op: load, path: does/not/exist}\n")
    assert main(["run", str(graph), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "node 'a'" in err[0]
    assert "Traceback" not in capsys.readouterr().err
