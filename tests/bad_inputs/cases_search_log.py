"""A search's trial log or held-out setup that cannot be used: refused before any trial runs, log untouched."""

from __future__ import annotations

import json
from pathlib import Path

from case import Case

REPO = Path(__file__).resolve().parents[2]


def _graph(objectives: str) -> str:
    return f"""vars:
  models: {REPO / "models" / "tiny"}
nodes:
  base: {{op: load, path: ${{models}}/base}}
  add: {{op: load, path: ${{models}}/add}}
  search:
    op: optimize
    strategy: lfs
    base: base
    models: [add]
    settings: {{layer_granularity: 2, methods: [linear]}}
    objectives: {objectives}
    include_path: [{REPO / "graphs" / "tasks"}]
    smac: {{facade: multi_fidelity, n_trials: 4, min_budget: 2, max_budget: 4, eta: 2}}
    out: out
"""


VALID = "[{task: tiny_add_val, metric: exact_match, held_out: tiny_add}]"


def _with_log(log_text: str, objectives: str = VALID):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(_graph(objectives))
        (root / "out").mkdir()
        (root / "out" / "trial_log.jsonl").write_text(log_text)
        return ["run", "g.yaml"]

    return build


HEADER_OTHER_SEARCH = json.dumps({"type": "header", "version": 1, "fingerprint": "0123456789abcdef"}) + "\n"

CASES = [
    Case(
        "search_log_not_json",
        _with_log('{"type": "header", "fingerprint": \n'),
        mentions=("trial_log.jsonl", "line 1 is not valid JSON", "delete"),
        may_change=(".graphmerge/**",),
    ),
    Case(
        "search_log_without_header",
        _with_log(json.dumps({"type": "trial", "order": 0}) + "\n"),
        mentions=("trial_log.jsonl", "no header line"),
    ),
    Case(
        "search_log_of_another_search",
        _with_log(HEADER_OTHER_SEARCH),
        mentions=("trial_log.jsonl", "different search", "another state dir"),
    ),
    Case(
        "search_held_out_on_some_objectives_only",
        _with_log(
            HEADER_OTHER_SEARCH,
            "[{task: tiny_add_val, held_out: tiny_add}, {task: tiny_reverse_val}]",
        ),
        mentions=("search", "held_out", "every objective"),
    ),
    Case(
        "search_held_out_unknown_task",
        _with_log(HEADER_OTHER_SEARCH, "[{task: tiny_add_val, held_out: tiny_ad}]"),
        mentions=("tiny_ad'", "tiny_add"),
    ),
]
