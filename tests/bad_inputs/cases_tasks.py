"""Bad evaluation tasks: unknown names, missing data, broken task files, models that cannot be
evaluated. All caught by `validate` (and by `run` before any model work)."""

from __future__ import annotations

from pathlib import Path

from case import Case, copy_model, copy_tasks, graph_case, write

GRAPH = """\
nodes:
  m: {op: load, path: m}
  ev: {op: evaluate, input: m, tasks: TASKS, include_path: [tasks], limit: 5}
"""


def _setup(mutate=None):
    def setup(root: Path) -> None:
        copy_model(root, "m", "add")
        tasks = copy_tasks(root)
        if mutate is not None:
            mutate(root, tasks)

    return setup


def _case(name: str, tasks: str, *mentions: str, mutate=None, graph: str = GRAPH, **kw) -> Case:
    return Case(
        name, graph_case(graph.replace("TASKS", tasks), setup=_setup(mutate)), mentions=mentions, **kw
    )


def _rm(rel: str):
    return lambda root, tasks: (root / rel).unlink()


CASES = [
    _case("task_unknown", "[tiny_ad]", "g.yaml:3", "'ev'", "tiny_ad", "tiny_add", slow=True),
    _case("task_metric_unknown", "[{task: tiny_add, metric: bleu}]", "'ev'", "bleu", "exact_match"),
    _case("task_is_a_tag", "[tiny]", "'ev'", "tag"),
    _case("task_data_missing", "[tiny_add]", "'ev'", "add.jsonl", mutate=_rm("tasks/data/add.jsonl")),
    _case(
        "task_yaml_broken",
        "[tiny_add]",
        "'ev'",
        "tiny_add",
        mutate=lambda root, tasks: write(tasks, "tiny_add.yaml", "task: tiny_add\noutput_type: [\n"),
        slow=True,
    ),
    _case(
        "include_path_missing",
        "[tiny_add]",
        "'ev'",
        "nope",
        graph=GRAPH.replace("include_path: [tasks]", "include_path: [nope]"),
    ),
    _case(
        "model_without_tokenizer",
        "[tiny_add]",
        "'ev'",
        "tokenizer",
        mutate=lambda root, tasks: [
            (root / "m" / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")
        ],
    ),
    _case(
        "results_file_is_a_folder",
        "[tiny_add]",
        "'ev'",
        "results",
        graph=GRAPH.replace("limit: 5}", "limit: 5, results_file: results}"),
        mutate=lambda root, tasks: (root / "results").mkdir(),
    ),
    _case(
        "limit_zero", "[tiny_add]", "g.yaml:3", "'ev'", "limit", graph=GRAPH.replace("limit: 5", "limit: 0")
    ),
    _case("tasks_empty", "[]", "g.yaml:3", "'ev'", "tasks"),
]
