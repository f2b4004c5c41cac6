"""`validate` makes every check `run` makes before computing, through the same code path, and
computes nothing; `run` fails those checks before its first tensor."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from graphmerge.cache import Cache
from graphmerge.cli import main
from graphmerge.errors import GraphmergeError
from graphmerge.runner import check_graph, run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"


def _graph(tmp_path: Path, density: str, out: str = "out") -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            nodes:
              base: {{op: load, path: {TINY / "base"}}}
              add: {{op: load, path: {TINY / "add"}}}
              merged:
                op: merge
                method: ties
                base: base
                models:
                  add: {{weight: 1.0, density: {density}}}
              save: {{op: save, input: merged, path: {out}}}
            """
        )
    )
    return path


def test_validate_finds_a_bad_value_for_some_tensors_only(tmp_path):
    # Only MLP tensors get 1.5: the range check runs per tensor on the lazy plan.
    path = _graph(tmp_path, '[{filter: "*mlp*", value: 1.5}, {value: 0.5}]')
    with pytest.raises(GraphmergeError) as info:
        check_graph(path, cache_dir=tmp_path / "cache")
    assert "mlp" in str(info.value) and "density" in str(info.value) and "node 'merged'" in str(info.value)
    # `run` fails identically, before computing anything.
    with pytest.raises(GraphmergeError) as run_info:
        run_graph(path, cache_dir=tmp_path / "cache", progress=False)
    assert str(run_info.value) == str(info.value)
    cache = Cache(tmp_path / "cache")
    assert list(cache.tensor_keys()) == [] and not (tmp_path / "out").exists()
    cache.close()


def test_validate_computes_and_writes_nothing(tmp_path, capsys):
    path = _graph(tmp_path, "0.5")
    assert main(["validate", str(path), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "ok (4 nodes" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # validate creates no cache
    (tmp_path / "cache").mkdir()
    assert main(["validate", str(path), "--cache-dir", str(tmp_path / "cache")]) == 0
    cache = Cache(tmp_path / "cache")
    assert list(cache.tensor_keys()) == [] and len(cache.digests) == 0  # no tensor computed, no file hashed
    cache.close()
    assert not (tmp_path / "out").exists()


def test_run_checks_the_output_before_merging(tmp_path):
    (tmp_path / "out").write_text("not a model\n")
    path = _graph(tmp_path, "0.5")
    with pytest.raises(GraphmergeError, match="not a model folder"):
        run_graph(path, cache_dir=tmp_path / "cache", progress=False)
    cache = Cache(tmp_path / "cache")
    assert list(cache.tensor_keys()) == []  # refused before a single merged tensor was computed
    cache.close()


def test_duplicate_keys_name_both_lines(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("nodes:\n  a: {op: load, path: x}\n  b: {op: load, path: y}\n  a: {op: load, path: z}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "g.yaml:4: duplicate key 'a' under 'nodes' (first at line 2" in err


def test_merge_keys_may_override_without_being_duplicates(tmp_path):
    # `<<: *anchor` then an explicit key is YAML's way to override: not a duplicate.
    path = tmp_path / "g.yaml"
    path.write_text(
        f"nodes:\n  a: &l {{op: load, path: {TINY / 'base'}}}\n  b: {{<<: *l, path: {TINY / 'add'}}}\n"
    )
    graph = check_graph(path, cache_dir=tmp_path / "cache")
    assert str(graph.nodes["b"].params.path).endswith("add")


def test_set_names_a_referenced_variable_even_without_a_default(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("nodes:\n  a: {op: load, path: ${model}}\n")
    from graphmerge.spec import load_graph

    assert str(load_graph(path, overrides={"model": str(TINY / "base")}).nodes["a"].params.path).endswith(
        "base"
    )
    with pytest.raises(GraphmergeError, match="did you mean 'model'"):
        load_graph(path, overrides={"modle": "x"})
