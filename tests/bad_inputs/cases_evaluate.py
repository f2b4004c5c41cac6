"""Bad `evaluate` settings: option values lm-eval would reject, filters a task does not have,
a vLLM backend without vLLM. Each names the graph line, the node and the key or task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from case import Case

REPO = Path(__file__).resolve().parents[2]


def _graph(options: str, metric: str = "exact_match", command: str = "validate"):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(
            "nodes:\n"
            f"  add: {{op: load, path: {REPO / 'models/tiny/add'}}}\n"
            "  score:\n"
            "    op: evaluate\n"
            "    input: add\n"
            f"    tasks: [{{task: tiny_add, metric: '{metric}'}}]\n"
            f"    include_path: [{REPO / 'graphs/tasks'}]\n"
            f"    {options}\n"
        )
        return [command, "g.yaml"]

    return build


CASES = [
    Case(
        "evaluate_batch_size_word",
        _graph("batch_size: fast"),
        mentions=("g.yaml:8", "'score'", "batch_size", "auto"),
    ),
    Case(
        "evaluate_limit_not_count_or_fraction",
        _graph("limit: 1.5"),
        mentions=("g.yaml:8", "limit", "fraction"),
    ),
    Case("evaluate_limit_negative", _graph("limit: -3"), mentions=("g.yaml:8", "limit", "positive")),
    Case(
        "evaluate_multiturn_without_chat_template",
        _graph("fewshot_as_multiturn: true"),
        mentions=("g.yaml:8", "fewshot_as_multiturn", "apply_chat_template"),
    ),
    Case(
        "evaluate_gen_kwargs_not_pairs",
        _graph("gen_kwargs: temperature"),
        mentions=("gen_kwargs", "NAME=VALUE"),
    ),
    Case("evaluate_threads_zero", _graph("threads: 0"), mentions=("g.yaml:8", "threads")),
    Case(
        "evaluate_bootstrap_negative", _graph("bootstrap_iters: -1"), mentions=("g.yaml:8", "bootstrap_iters")
    ),
    Case(
        "evaluate_unknown_filter",
        _graph("limit: 5", metric="exact_match,flexible-extract", command="run"),
        mentions=("'score'", "tiny_add", "flexible-extract", "strip"),
    ),
    Case(
        "evaluate_metric_filter_malformed",
        _graph("limit: 5", metric="exact_match,", command="run"),
        mentions=("tiny_add", "NAME,FILTER"),
    ),
]

if importlib.util.find_spec("vllm") is None:
    CASES.append(
        Case(
            "evaluate_vllm_not_installed",
            _graph("backend: vllm"),
            mentions=("g.yaml:8", "backend", "pip install", "graphmerge[vllm]"),
        )
    )
