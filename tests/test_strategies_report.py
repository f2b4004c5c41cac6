"""Strategy report hooks: what a strategy says about its finished search (prune: the score kept)."""

from __future__ import annotations

import pytest

from graphmerge.strategies import SearchOutcome, get_strategy, parse_settings


def _prune_settings():
    return parse_settings("prune", {"models": [], "base": "base", "remove": 1})


def test_prune_reports_the_share_of_the_unpruned_score_the_best_keeps():
    outcome = SearchOutcome(
        best_score=0.3,
        best_scores={"t": 0.3},
        sources={"base": {"scores": {"t": 0.4}, "score": 0.4}},
    )
    said = get_strategy("prune").report(_prune_settings(), outcome)
    unpruned = said.summary["unpruned"]
    assert unpruned["scores"] == {"t": 0.4} and unpruned["score"] == 0.4
    assert unpruned["score_kept"] == pytest.approx(0.75)
    assert said.lines == ("unpruned {'t': 0.4}; the pruned model keeps 75.0% of its score",)


def test_prune_report_with_an_unpruned_score_of_zero_has_no_share():
    outcome = SearchOutcome(
        best_score=0.1, best_scores={"t": 0.1}, sources={"base": {"scores": {"t": 0}, "score": 0}}
    )
    said = get_strategy("prune").report(_prune_settings(), outcome)
    assert said.summary["unpruned"]["score_kept"] is None and "undefined share" in said.lines[0]


@pytest.mark.parametrize("name", ["lfs", "lfs_mo", "dis"])
def test_other_strategies_have_no_report(name):
    assert get_strategy(name).report is None
