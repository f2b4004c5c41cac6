"""SMAC driver: facades, resume/replay, extension, parallel dask trials, reports. Cheap analytic objectives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphmerge.errors import SpecError
from graphmerge.search import (
    Objective,
    SearchInterrupted,
    SmacSettings,
    TrialOutcome,
    build_space,
    progress_line,
    run_search,
)
from graphmerge.search.trial_log import LOG_NAME

SPACE = {
    "params": {
        "x": {"type": "float", "low": -5.0, "high": 5.0},
        "y": {"type": "float", "low": -5.0, "high": 5.0},
    }
}


def quadratic(config, limit):
    return TrialOutcome(scores={"score": -((config["x"] - 1.0) ** 2 + (config["y"] + 2.0) ** 2)})


def budget_quadratic(config, limit):
    # Low budgets see a noisier, biased version of the objective, like evaluating on fewer examples.
    assert isinstance(limit, int)
    return TrialOutcome(
        scores={"score": -((config["x"] - 1.0) ** 2 + (config["y"] + 2.0) ** 2) - 5.0 / limit},
        extra={"limit": limit},
    )


def logged(state_dir: Path) -> list[tuple]:
    """The parts of the trial log that must match between runs (times naturally differ)."""
    out = []
    for line in (state_dir / LOG_NAME).read_text().splitlines()[1:]:
        e = json.loads(line)
        out.append(
            (e["order"], json.dumps(e["config"], sort_keys=True), e["budget"], e["limit"], e["scores"])
        )
    return out


class Counting:
    def __init__(self, fn, interrupt_after: int | None = None):
        self.fn, self.calls, self.interrupt_after = fn, [], interrupt_after

    def __call__(self, config, limit):
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append((json.dumps(config, sort_keys=True), limit))
        return self.fn(config, limit)


def test_hpo_finds_near_optimum_and_writes_reports(tmp_path):
    lines = []
    settings = SmacSettings(facade="hpo", n_trials=25, seed=0, n_initial=5, max_budget=None)
    result = run_search(
        build_space(SPACE),
        quadratic,
        settings,
        tmp_path,
        on_trial=lambda r, b: lines.append(progress_line(r, b, 25)),
    )
    assert len(result.trials) == 25 and result.evaluated == 25
    assert result.best is not None and result.best.score > -0.5  # random search: about -1 expected
    assert abs(result.best_config["x"] - 1.0) < 0.7 and abs(result.best_config["y"] + 2.0) < 0.7
    assert all(r.limit is None for r in result.trials)
    assert len(lines) == 25 and lines[-1].startswith("trial 25/25") and "best" in lines[-1]
    for name in ("trials.jsonl", "trials.csv", "report.png", LOG_NAME):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "param:x" in (tmp_path / "trials.csv").read_text().splitlines()[0]


def test_multi_fidelity_uses_several_integer_budgets(tmp_path):
    settings = SmacSettings(facade="multi_fidelity", n_trials=14, min_budget=10, max_budget=90, eta=3, seed=0)
    result = run_search(build_space(SPACE), budget_quadratic, settings, tmp_path, on_trial=lambda r, b: None)
    limits = {r.limit for r in result.trials}
    assert len(limits) >= 2 and limits <= {10, 30, 90}
    assert result.best is not None and result.best.limit == max(limits)  # incumbent at the highest budget


def two_objectives(config, limit):
    x = config["x"]
    return TrialOutcome(scores={"a": -((x - 1.0) ** 2), "b": -((x + 1.0) ** 2)})


@pytest.mark.parametrize("budgets", [None, (30, 90)])
def test_multi_objective_returns_pareto_set(tmp_path, budgets):
    space = build_space({"params": {"x": {"type": "float", "low": -3.0, "high": 3.0}}})
    settings = SmacSettings(
        facade="multi_objective",
        n_trials=12,
        seed=0,
        n_initial=4,
        min_budget=budgets[0] if budgets else None,
        max_budget=budgets[1] if budgets else None,
        objectives=[Objective(name="a"), Objective(name="b")],
    )
    result = run_search(space, two_objectives, settings, tmp_path, on_trial=lambda r, b: None)
    assert len(result.pareto) >= 2
    front = [(r.scores["a"], r.scores["b"]) for r in result.pareto]
    for p in front:  # nobody in the front is dominated by anyone evaluated at that budget
        assert not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in front)
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    settings = SmacSettings(facade="multi_fidelity", n_trials=12, min_budget=10, max_budget=90, seed=3)
    space = build_space(SPACE)
    full = tmp_path / "full"
    run_search(space, budget_quadratic, settings, full, on_trial=lambda r, b: None, write_reports=False)

    part = tmp_path / "part"
    first = Counting(budget_quadratic, interrupt_after=5)
    with pytest.raises(SearchInterrupted, match="rerun"):
        run_search(space, first, settings, part, on_trial=lambda r, b: None)
    assert len(logged(part)) == 5

    second = Counting(budget_quadratic)
    result = run_search(space, second, settings, part, on_trial=lambda r, b: None)
    assert result.replayed == 5 and result.evaluated == 7 and not result.diverged
    assert len(second.calls) == 7
    assert all(c not in first.calls for c in second.calls)
    assert logged(part) == logged(full)


def test_sigkill_torn_line_and_extend_n_trials(tmp_path):
    space = build_space(SPACE)
    base = SmacSettings(facade="hpo", n_trials=8, seed=5, n_initial=3, max_budget=None)
    run_search(space, quadratic, base, tmp_path / "ref", on_trial=lambda r, b: None, write_reports=False)
    longer = base.model_copy(update={"n_trials": 11})
    run_search(
        space, quadratic, longer, tmp_path / "ref_long", on_trial=lambda r, b: None, write_reports=False
    )

    state = tmp_path / "run"
    run_search(space, quadratic, base, state, on_trial=lambda r, b: None, write_reports=False)
    with open(state / LOG_NAME, "a") as f:
        f.write('{"type": "trial", "order": 8, "conf')  # a kill in the middle of writing a line
    calls = Counting(quadratic)
    result = run_search(space, calls, longer, state, on_trial=lambda r, b: None, write_reports=False)
    assert result.replayed == 8 and len(calls.calls) == 3
    assert logged(state) == logged(tmp_path / "ref_long")
    assert logged(state)[:8] == logged(tmp_path / "ref")


def test_log_from_another_search_is_refused(tmp_path):
    space = build_space(SPACE)
    settings = SmacSettings(facade="hpo", n_trials=3, seed=0, n_initial=2, max_budget=None)
    run_search(space, quadratic, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
    with pytest.raises(SpecError, match="different search"):
        run_search(space, quadratic, settings.model_copy(update={"seed": 1}), tmp_path, write_reports=False)
    other = build_space({"params": {"x": {"type": "float", "low": -5.0, "high": 6.0}}})
    with pytest.raises(SpecError, match="different search"):
        run_search(other, quadratic, settings, tmp_path, write_reports=False)


def test_infeasible_and_failing_trials_get_worst_scores(tmp_path):
    space = build_space(SPACE)
    calls = Counting(quadratic)

    def flaky(config, limit):
        if config["y"] > 3.0:
            raise RuntimeError("out of memory")
        return calls(config, limit)

    settings = SmacSettings(
        facade="hpo",
        n_trials=10,
        seed=0,
        n_initial=6,
        max_budget=None,
        on_error="worst",
        objectives=[Objective(name="score", worst=-100.0)],
    )
    result = run_search(
        space,
        flaky,
        settings,
        tmp_path,
        on_trial=lambda r, b: None,
        is_feasible=lambda c: c["x"] < 2.5,
        initial_configs=[{"x": 4.0, "y": 0.0}, {"x": 0.0, "y": 4.0}],
    )
    bad = [r for r in result.trials if r.infeasible]
    assert {r.extra["reason"] for r in bad} >= {"infeasible", "error"}
    assert all(r.scores["score"] == -100.0 for r in bad)
    assert all(json.loads(c)["x"] < 2.5 for c, _ in calls.calls)  # infeasible configs were never evaluated
    assert result.best is not None and not result.best.infeasible

    with pytest.raises(RuntimeError, match="out of memory"):
        run_search(
            space,
            flaky,
            settings.model_copy(update={"on_error": "raise", "n_trials": 3}),
            tmp_path / "raise",
            initial_configs=[{"x": 0.0, "y": 4.0}],
            write_reports=False,
        )


def slow_quadratic(config, limit):
    import time

    time.sleep(0.05)
    return quadratic(config, limit)


def test_dask_local_cluster_two_workers(tmp_path):
    from dask.distributed import LocalCluster

    # One real process cluster for both runs (workers import torch via graphmerge: slow to start on CI).
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        settings = SmacSettings(
            facade="hpo",
            n_trials=6,
            seed=0,
            n_initial=4,
            max_budget=None,
            n_workers=2,
            scheduler_address=cluster.scheduler_address,
        )
        result = run_search(
            build_space(SPACE), slow_quadratic, settings, tmp_path, on_trial=lambda r, b: None
        )
        assert len(result.trials) == 6 and result.evaluated == 6
        assert [r.order for r in result.trials] == list(range(6))
        assert len(logged(tmp_path)) == 6
        assert len(cluster.scheduler_info["workers"]) == 2
        # Parallel resume: the log is a cache. The initial design replays for sure; the trajectory after it
        # depends on completion order, so later asks may be new configs (documented).
        again = run_search(build_space(SPACE), slow_quadratic, settings, tmp_path, on_trial=lambda r, b: None)
        assert again.replayed >= 4 and again.replayed + again.evaluated == 6


def test_progress_lines_fit_100_columns_and_number_trials_from_one():
    from graphmerge.search import TrialRecord

    long_names = {"a_rather_long_validation_task_name": 0.123456, "another_long_validation_task": 0.987654}
    rec = TrialRecord(
        order=41,
        config={},
        budget=200.0,
        limit=200,
        scores=long_names,
        score=1.11111,
        time_s=12.345,
        extra={"executed": 12, "cached": 27, "evaluations_run": 2, "evaluations_cached": 0, "cold_tasks": 39},
    )
    best = TrialRecord(order=9, config={}, budget=200.0, limit=200, scores={}, score=1.5)
    line = progress_line(rec, best, 100)
    assert len(line) <= 100, line
    assert line == (
        "trial 42/100 | budget 200 | score 1.111 (0.123/0.988) | best 1.5 #10 | tasks 12/39 evals 2/2 | 12.3s"
    )
    short = progress_line(
        TrialRecord(**{**rec.__dict__, "scores": {"add": 0.5, "rev": 0.61111}, "extra": {}}), best, 100
    )
    assert short == "trial 42/100 | budget 200 | score 1.111 (add=0.5 rev=0.611) | best 1.5 #10 | 12.3s"


def test_fewer_trials_keep_the_rest_as_history_and_the_best(tmp_path):
    space = build_space(SPACE)
    full = SmacSettings(facade="hpo", n_trials=12, seed=2, n_initial=4, max_budget=None)
    first = run_search(space, quadratic, full, tmp_path, on_trial=lambda r, b: None)
    cut = first.best.number - 1  # stop before the best trial: it is not asked again
    calls = Counting(quadratic)
    short = run_search(
        space, calls, full.model_copy(update={"n_trials": cut}), tmp_path, on_trial=lambda r, b: None
    )
    assert calls.calls == [] and len(short.trials) == cut and len(short.history) == 12 - cut
    assert short.best.score == first.best.score and short.best.number > cut
    rows = (tmp_path / "trials.csv").read_text().splitlines()
    header = rows[0].split(",")
    trial, history = header.index("trial"), header.index("history")
    cells = [r.split(",") for r in rows[1:]]
    assert [int(c[trial]) for c in cells] == list(range(1, 13))
    assert [int(c[history]) for c in cells] == [0] * cut + [1] * (12 - cut)


def test_log_from_other_library_versions_is_used_with_a_warning(tmp_path, caplog):
    space = build_space(SPACE)
    settings = SmacSettings(facade="hpo", n_trials=6, seed=0, n_initial=3, max_budget=None)
    run_search(space, quadratic, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    header = json.loads(lines[0])
    header["libraries"] = {**header["libraries"], "smac": "2.0.0"}
    (tmp_path / LOG_NAME).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    calls = Counting(quadratic)
    with caplog.at_level("WARNING", logger="graphmerge.search"):
        again = run_search(space, calls, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
    assert "smac 2.0.0" in caplog.text and "reused" in caplog.text
    assert calls.calls == [] and again.replayed == 6 and again.libraries_then["smac"] == "2.0.0"


def test_log_written_before_versions_were_recorded_is_accepted(tmp_path):
    """Older logs put SMAC's version into the fingerprint; the same search still opens them."""
    from importlib.metadata import version

    from graphmerge.search.configspace import legacy_space_fingerprint, to_configspace
    from graphmerge.search.driver import _fingerprint

    space = build_space(SPACE)
    settings = SmacSettings(facade="hpo", n_trials=4, seed=0, n_initial=2, max_budget=None)
    run_search(space, quadratic, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    header = json.loads(lines[0])
    del header["libraries"]
    # Those logs also hashed the space through ConfigSpace's serialisation.
    legacy_space = legacy_space_fingerprint(to_configspace(space))
    header["fingerprint"] = _fingerprint(legacy_space, settings, [], smac_version=version("smac"))
    (tmp_path / LOG_NAME).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    calls = Counting(quadratic)
    again = run_search(space, calls, settings, tmp_path, on_trial=lambda r, b: None, write_reports=False)
    assert calls.calls == [] and again.replayed == 4
