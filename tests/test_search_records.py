"""Trial records (search/records.py): the one key for the examples lm-eval ran (`examples_run`), read
from logs that earlier versions wrote under `examples` (alone or beside it), never written twice."""

from __future__ import annotations

import json

import pytest

from graphmerge.search import Objective, SmacSettings, TrialOutcome, TrialRecord, build_space, run_search
from graphmerge.search.records import EXAMPLES_RUN
from graphmerge.search.trial_log import LOG_NAME

SPACE = {"params": {"x": {"type": "float", "low": -5.0, "high": 5.0}}}


def _line(extra: dict) -> dict:
    return {"order": 0, "config": {"x": 1.0}, "budget": None, "limit": 8, "scores": {"a": 0.5}, "score": 0.5,
            "extra": extra}  # fmt: skip


def test_the_old_key_is_read_as_the_current_one_and_only_the_current_one_is_written():
    old = TrialRecord.from_json(_line({"examples": 16, "executed": 3}))
    assert old.extra == {EXAMPLES_RUN: 16, "executed": 3}
    both = TrialRecord.from_json(_line({"examples": 16, EXAMPLES_RUN: 16}))
    assert both.extra == {EXAMPLES_RUN: 16}
    # Where both are there and disagree, the current key is the one that was read by its readers.
    assert TrialRecord.from_json(_line({"examples": 99, EXAMPLES_RUN: 16})).extra == {EXAMPLES_RUN: 16}
    new = TrialRecord.from_json(_line({EXAMPLES_RUN: 0}))
    assert new.extra == {EXAMPLES_RUN: 0}
    assert "examples" not in old.to_json()["extra"] and old.to_json()["extra"][EXAMPLES_RUN] == 16
    assert TrialRecord.from_json(old.to_json()) == old


def objective(config, limit):
    return TrialOutcome(scores={"a": -((config["x"] - 1.0) ** 2)}, extra={EXAMPLES_RUN: 7})


def _settings(n: int) -> SmacSettings:
    return SmacSettings(facade="hpo", n_trials=n, n_initial=3, seed=0, objectives=[Objective(name="a")])


def _entries(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _as_an_earlier_version_wrote_it(log, both: bool) -> None:
    lines = []
    for entry in _entries(log):
        if entry.get("type") == "trial":
            extra = entry["extra"]
            extra["examples"] = extra[EXAMPLES_RUN] if both else extra.pop(EXAMPLES_RUN)
        lines.append(json.dumps(entry))
    log.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("both", [False, True], ids=["old-key-only", "both-keys"])
def test_a_log_written_with_the_old_key_resumes_and_new_lines_carry_only_the_current_key(tmp_path, both):
    run_search(build_space(SPACE), objective, _settings(4), tmp_path, on_trial=lambda r, b: None)
    _as_an_earlier_version_wrote_it(tmp_path / LOG_NAME, both)
    calls = []

    def counting(config, limit):
        calls.append(config)
        return objective(config, limit)

    done = run_search(build_space(SPACE), counting, _settings(6), tmp_path, on_trial=lambda r, b: None)
    assert done.replayed == 4 and len(calls) == 2 and len(done.trials) == 6
    assert all(r.extra == {EXAMPLES_RUN: 7} for r in done.trials)
    trials = [e for e in _entries(tmp_path / LOG_NAME) if e.get("type") == "trial"]
    assert [("examples" in t["extra"]) for t in trials] == [True] * 4 + [False] * 2
    assert all(t["extra"][EXAMPLES_RUN] == 7 for t in trials[4:])


def test_an_objective_that_returns_the_old_key_is_logged_under_the_current_one(tmp_path):
    def old_style(config, limit):
        return TrialOutcome(scores={"a": -abs(config["x"])}, extra={"examples": 5})

    result = run_search(build_space(SPACE), old_style, _settings(3), tmp_path, on_trial=lambda r, b: None)
    assert all(r.extra == {EXAMPLES_RUN: 5} for r in result.trials)
    logged = [e["extra"] for e in _entries(tmp_path / LOG_NAME) if e.get("type") == "trial"]
    assert logged == [{EXAMPLES_RUN: 5}] * 3
