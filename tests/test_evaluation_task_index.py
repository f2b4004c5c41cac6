"""The include-path task index that `validate` uses instead of lm-eval's: the same entries as lm-eval's
own TaskManager index (the oracle), and the same task hashes, metrics and filters either way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graphmerge.evaluation import tasks as task_lookup
from graphmerge.evaluation.task_index import include_path_index

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "graphs" / "tasks"


def _write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(textwrap.dedent(text))


@pytest.fixture()
def task_folder(tmp_path) -> Path:
    """Tasks with includes (two sharing a base), !function entries, tags, a group, a Python task,
    a duplicate name, an unreadable YAML and an ignored folder."""
    root = tmp_path / "tasks"
    _write(root, "_base.yaml", "output_type: generate_until\ndataset_path: json\ntag: [family]\n")
    _write(root, "utils.py", "def process(doc):\n    return doc\n")
    _write(
        root,
        "a.yaml",
        """\
        include: _base.yaml
        task: task_a
        process_docs: !function utils.process
        metric_list: [{metric: exact_match}]
        filter_list: [{name: strict, filter: [{function: take_first}]}, {name: loose, filter: []}]
        """,
    )
    _write(root, "sub/b.yaml", "include: ../_base.yaml\ntask: task_b\ntag: other\noutput_type: multiple_choice\n")
    _write(root, "sub/b_again.yaml", "task: task_b\noutput_type: loglikelihood\n")
    _write(root, "both.yaml", "include: [_base.yaml, sub/b.yaml]\ntask: task_both\n")  # shared base: skipped
    _write(root, "group.yaml", "group: grp\ntask: [task_a, task_b]\naggregate_metric_list: [{metric: acc}]\n")
    _write(root, "py.yaml", "task: py_task\nclass: !function utils.process\n")
    _write(root, "broken.yaml", "task: [unclosed\n")
    _write(root, "__pycache__/hidden.yaml", "task: hidden\n")
    return root


def _lm_eval_index(paths: list[Path]) -> dict:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in paths], include_defaults=False).task_index


@pytest.mark.parametrize("which", ["bundled", "constructed"])
def test_entries_equal_lm_evals_own_index(which, task_folder):
    paths = [TASKS] if which == "bundled" else [TASKS, task_folder]
    keys = tuple(str(p.resolve()) for p in paths)
    ours = include_path_index(keys, task_lookup._signature(keys)).task_index
    theirs = _lm_eval_index(paths)
    assert sorted(ours) == sorted(theirs) and len(ours) > 5
    for name, entry in theirs.items():
        mine = ours[name]
        assert mine.kind == entry.kind.name.lower(), name
        assert mine.yaml_path == entry.yaml_path, name
        assert mine.cfg == entry.cfg, name
        assert mine.tags == entry.tags, name


def test_lookups_give_what_lm_eval_gives_and_import_no_lm_eval(task_folder, tmp_path):
    """Metrics, filters, data files and task hashes through the include-path index, in a fresh
    interpreter that must not import lm-eval, equal those computed through lm-eval's TaskManager."""
    probe = textwrap.dedent(
        f"""
        import json, sys
        from graphmerge.evaluation import tasks as t
        paths = [{str(TASKS)!r}, {str(task_folder)!r}]
        out = {{}}
        for name in ["tiny_add", "tiny_sort_mc", "task_a", "task_b", "grp", "family"]:
            out[name] = [t.task_metrics(name, paths), t.task_filters(name, paths),
                         t.task_config_hash(name, paths), t.is_group_or_tag(name, paths)]
        out["files"] = [str(p) for p in t.task_data_files("tiny_add", paths)]
        out["lm_eval"] = any(m.split(".")[0] == "lm_eval" for m in sys.modules)
        print(json.dumps(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path, timeout=300
    )
    light = json.loads(proc.stdout.strip().splitlines()[-1])
    assert light.pop("lm_eval") is False

    # The oracle: the same functions answering from lm-eval's TaskManager.
    paths = [str(TASKS), str(task_folder)]
    manager = task_lookup.task_manager(paths, [])

    def through_lm_eval(name: str):
        return manager, manager.task_index[name]

    original = task_lookup._entry
    task_lookup._entry = lambda name, include_path: through_lm_eval(name)
    try:
        for name, (metrics, filters, digest, grouped) in ((k, v) for k, v in light.items() if k != "files"):
            assert metrics == task_lookup.task_metrics(name, paths), name
            assert filters == task_lookup.task_filters(name, paths), name
            assert digest == task_lookup.task_config_hash(name, paths), name
            assert grouped == task_lookup.is_group_or_tag(name, paths), name
        assert light["files"] == [str(p) for p in task_lookup.task_data_files("tiny_add", paths)]
    finally:
        task_lookup._entry = original
    assert light["grp"][3] and light["family"][3] and not light["task_a"][3]
    assert light["task_a"][1] == ["strict", "loose"]


def test_an_edited_yaml_is_seen(task_folder):
    paths = [str(task_folder)]
    assert task_lookup.task_metrics("task_a", paths) == ["exact_match"]
    _write(task_folder, "a.yaml", "include: _base.yaml\ntask: task_a\nmetric_list: [{metric: bleu}]\n")
    assert task_lookup.task_metrics("task_a", paths) == ["bleu"]
