"""Evaluation examples a search spends (search/examples.py) and the `max_examples` stopping rule."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pydantic import ValidationError

from graphmerge.search import Objective, SmacSettings, TrialOutcome, TrialRecord, build_space, run_search
from graphmerge.search.examples import SCORED, ExampleLedger, examples_to_reach
from graphmerge.search.trial_log import LOG_NAME

SPACE = {"params": {"x": {"type": "float", "low": -5.0, "high": 5.0}}}
TASKS = [Objective(name="a"), Objective(name="b")]
TASK_SIZE = 60  # one task smaller than the top budget: its count stops at its size


def objective(config, limit):
    """Two tasks scored on the first `limit` examples, `b` capped at TASK_SIZE; lower budgets are biased."""
    x = config["x"]
    return TrialOutcome(
        scores={"a": -((x - 1.0) ** 2) - 3.0 / limit, "b": -abs(x) - 1.0 / limit},
        extra={SCORED: {"a": limit, "b": min(limit, TASK_SIZE)}},
    )


def record(order, x, limit, counts=None, infeasible=False) -> TrialRecord:
    extra = {} if counts is None else {SCORED: counts}
    return TrialRecord(
        order, {"x": x}, float(limit), limit, {"a": 0.0}, float(order), infeasible, extra=extra
    )


def test_ledger_charges_only_new_examples_per_configuration_and_task():
    ledger = ExampleLedger(TASKS)
    rows = [
        record(0, 0.5, 10, {"a": 10, "b": 10}),  # new: 20
        record(1, 0.5, 30, {"a": 30, "b": 30}),  # promotion: 20 + 20 new
        record(2, 0.5, 30, {"a": 30, "b": 30}),  # asked again: nothing new
        record(3, 0.7, 90, {"a": 90, "b": 60}),  # another configuration, b capped at its size: 150
        record(4, 0.9, 90, None),  # a log from before the count: the limit per objective, 180
        record(5, 0.1, 90, {"a": 90, "b": 60}, infeasible=True),  # never evaluated
    ]
    charged = [ledger.charge(r) for r in rows]
    assert [r.examples for r in charged] == [20, 40, 0, 150, 180, 0]
    assert [r.examples_total for r in charged] == [20, 60, 60, 210, 390, 390]
    assert examples_to_reach(charged, 3.0, 90) == 210
    assert examples_to_reach(charged, 3.0, None) == 210
    assert examples_to_reach(charged, 99.0, None) is None


def test_stopping_rule_settings():
    assert SmacSettings().max_trials == 500  # neither given: the old default
    assert SmacSettings(max_examples=1000).max_trials is None  # only the examples stop it
    assert SmacSettings(n_trials=7, max_examples=1000).max_trials == 7
    for bad in ({"max_examples": 0}, {"n_trials": 0}, {"max_examples": "lots"}, {"max_examples": 2.5}):
        with pytest.raises(ValidationError):
            SmacSettings(**bad)


def _mf(**kw) -> SmacSettings:
    return SmacSettings(
        facade="multi_fidelity", min_budget=10, max_budget=90, eta=3, seed=0, objectives=TASKS, **kw
    )


def _rows(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_max_examples_stops_the_search_and_is_recorded(tmp_path):
    result = run_search(
        build_space(SPACE), objective, _mf(max_examples=700), tmp_path, on_trial=lambda r, b: None
    )
    totals = [r.examples_total for r in result.trials]
    # It stops with the first trial that reaches the budget: the trial before it had not.
    assert totals[-1] >= 700 > totals[-2]
    assert totals == sorted(totals) and result.examples_total == totals[-1]
    assert sum(r.examples for r in result.trials) == totals[-1]
    assert all(r.examples == 0 for r in result.trials if r.infeasible)
    rows = _rows(tmp_path / "trials.csv")
    assert [int(r["examples_total"]) for r in rows] == totals
    jsonl = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert [j["examples"] for j in jsonl] == [r.examples for r in result.trials]
    assert (tmp_path / "examples.png").read_bytes()[:4] == b"\x89PNG"
    # Same count by hand: per configuration and task, only examples beyond those scored before.
    seen: dict[str, dict[str, int]] = {}
    expected = 0
    for r in result.trials:
        done = seen.setdefault(json.dumps(r.config, sort_keys=True), {})
        for task, n in {"a": r.limit, "b": min(r.limit, TASK_SIZE)}.items():
            expected += max(0, n - done.get(task, 0))
            done[task] = max(n, done.get(task, 0))
    assert expected == totals[-1]


def test_n_trials_stops_first_when_it_comes_first(tmp_path):
    result = run_search(
        build_space(SPACE),
        objective,
        _mf(n_trials=5, max_examples=10**6),
        tmp_path,
        on_trial=lambda r, b: None,
    )
    assert len(result.trials) == 5 and result.examples_total < 10**6


def test_resume_and_extension_count_the_same_examples(tmp_path):
    """A log cut short, then resumed, then extended: totals equal those of one uninterrupted search."""
    ref = run_search(
        build_space(SPACE), objective, _mf(max_examples=1200), tmp_path / "ref", on_trial=lambda r, b: None
    )
    state = tmp_path / "resumed"
    run_search(build_space(SPACE), objective, _mf(max_examples=500), state, on_trial=lambda r, b: None)
    lines = (state / LOG_NAME).read_text().splitlines()
    (state / LOG_NAME).write_text("\n".join(lines[:-2]) + "\n")  # as if killed two trials earlier
    calls = []

    def counting(config, limit):
        calls.append(limit)
        return objective(config, limit)

    done = run_search(build_space(SPACE), counting, _mf(max_examples=1200), state, on_trial=lambda r, b: None)
    key = [(json.dumps(r.config, sort_keys=True), r.limit, r.examples, r.examples_total) for r in ref.trials]
    assert [
        (json.dumps(r.config, sort_keys=True), r.limit, r.examples, r.examples_total) for r in done.trials
    ] == key
    assert done.replayed == len(lines) - 3 and len(calls) == len(ref.trials) - done.replayed
    assert done.best is not None and ref.best is not None and done.best.config == ref.best.config
