"""Bad inputs to the new merge methods (tsv_m, iso_c, iso_cts, wudi, regmean, fisher) and to the
`statistics` node: missing or malformed calibration data, bad parameters, missing statistics."""

from __future__ import annotations

from pathlib import Path

from case import Case

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
LOADS = "".join(f"  {m}: {{op: load, path: {TINY / m}}}\n" for m in ("base", "add", "reverse"))


def _graph(body: str, command: str = "run", files: dict[str, str] | None = None):
    def build(root: Path) -> list[str]:
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        (root / "g.yaml").write_text("nodes:\n" + LOADS + body)
        return [command, "g.yaml"]

    return build


def _stats(kind: str, calibration: str) -> str:
    return f"  stats:\n    op: statistics\n    kind: {kind}\n    models: [add, reverse]\n    calibration: {calibration}\n"


REGMEAN = "  merged:\n    op: merge\n    method: regmean\n    statistics: stats\n    models: {add: null, reverse: null}\n"

CASES = [
    Case(
        "calibration_file_missing",
        _graph(_stats("gram", "{file: nowhere.jsonl}") + REGMEAN),
        mentions=("nowhere.jsonl", "does not exist", "stats"),
    ),
    Case(
        "calibration_jsonl_without_text_field",
        _graph(
            _stats("fisher", "{file: c.jsonl}"), files={"c.jsonl": '{"text": "12+3=15."}\n{"prompt": "x"}\n'}
        ),
        mentions=("c.jsonl:2", "'text'", "text_field"),
    ),
    # `validate` finds bad calibration data without tokenizing it (no torch, no transformers).
    Case(
        "calibration_file_missing_validate",
        _graph(_stats("gram", "{file: nowhere.jsonl}") + REGMEAN, command="validate"),
        mentions=("nowhere.jsonl", "does not exist", "stats"),
    ),
    Case(
        "calibration_jsonl_without_text_field_validate",
        _graph(
            _stats("fisher", "{file: c.jsonl}"),
            command="validate",
            files={"c.jsonl": '{"text": "12+3=15."}\n{"prompt": "x"}\n'},
        ),
        mentions=("c.jsonl:2", "'text'", "text_field"),
    ),
    Case(
        "calibration_both_tasks_and_file",
        _graph(_stats("gram", "{file: c.jsonl, tasks: [tiny_add]}"), command="validate"),
        mentions=("g.yaml", "stats", "not both"),
    ),
    Case(
        "regmean_without_statistics",
        _graph(
            "  merged: {op: merge, method: regmean, models: {add: null, reverse: null}}\n", command="validate"
        ),
        mentions=("g.yaml", "merged", "statistics"),
    ),
    Case(
        "regmean_given_fisher_statistics",
        _graph(_stats("fisher", "{file: c.jsonl}") + REGMEAN, files={"c.jsonl": '{"text": "12+3=15."}\n'}),
        mentions=("merged", "kind gram", "kind: gram"),
    ),
    Case(
        "regmean_model_without_statistics",
        _graph(
            "  stats:\n    op: statistics\n    kind: gram\n    models: [add]\n    calibration: {file: c.jsonl}\n"
            + REGMEAN,
            files={"c.jsonl": '{"text": "12+3=15."}\n'},
        ),
        mentions=("merged", "'reverse'", "models:"),
    ),
    Case(
        "tsv_k_out_of_range",
        _graph(
            "  merged: {op: merge, method: tsv_m, base: base, models: {add: null}, params: {k: 1.5}}\n"
            "  out: {op: save, input: merged, path: out}\n"
        ),
        mentions=("merged", "'k'", "1.5"),
    ),
    Case(
        "wudi_unknown_parameter",
        _graph(
            "  merged: {op: merge, method: wudi, base: base, models: {add: null}, params: {step: 10}}\n",
            command="validate",
        ),
        mentions=("merged", "step", "steps"),
    ),
    Case(
        "lfs_regmean_without_calibration",
        _graph(
            "  search:\n    op: optimize\n    strategy: lfs\n    base: base\n    models: [add, reverse]\n"
            "    settings: {methods: [linear, regmean]}\n    objectives: [{task: tiny_add}]\n"
            f"    include_path: [{TINY.parent.parent / 'graphs' / 'tasks'}]\n    config: {{}}\n"
        ),
        mentions=("search", "calibration"),
    ),
]
