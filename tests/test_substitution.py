"""The one `${name}` engine: graph variables at load, a search's parameters per trial."""

from __future__ import annotations

import pytest

from graphmerge.errors import SpecError
from graphmerge.substitution import UNSET, Scope, matches, substitute


def test_whole_reference_keeps_its_type_and_inline_references_are_formatted():
    scope = Scope(values={"w": 0.25, "n": 3, "flag": True, "name": "ties"})
    out = substitute({"a": "${w}", "b": ["${n}", "x-${name}-${n}"], "c": "${flag}", "d": 7}, scope, "here")
    assert out == {"a": 0.25, "b": [3, "x-ties-3"], "c": True, "d": 7}
    assert isinstance(out["a"], float) and isinstance(out["b"][0], int)


def test_names_for_a_later_pass_are_left_as_written():
    scope = Scope(values={"out": "o"}, later=("params.*", "budget"))
    out = substitute({"p": "${params.lam}", "q": "${out}/${budget}", "r": "${params.a.b}"}, scope, "here")
    assert out == {"p": "${params.lam}", "q": "o/${budget}", "r": "${params.a.b}"}


def test_undefined_names_are_errors_at_their_path_with_a_suggestion():
    scope = Scope(values={"budget": 4}, later=("params.*",))
    with pytest.raises(SpecError) as err:
        substitute({"nodes": {"m": {"k": [1, "${budget_max}"]}}}, scope, lambda p: "/".join(map(str, p)))
    msg = err.value.one_line()
    assert "nodes/m/k/1" in msg and "undefined variable ${budget_max}" in msg
    assert "did you mean ${budget}" in msg and "${params.NAME}" in msg


def test_unset_names_drop_the_entry_that_holds_them_but_not_half_a_string():
    scope = Scope(values={"params.a": 1}, unset=lambda n: n.startswith("params."))
    out = substitute({"a": "${params.a}", "b": "${params.b}", "l": ["${params.b}", 2]}, scope, "t")
    assert out == {"a": 1, "l": [2]}
    assert substitute("${params.b}", scope, "t") is UNSET
    with pytest.raises(SpecError, match="has no value"):
        substitute({"s": "x${params.b}"}, scope, "t")


def test_a_pattern_with_a_star_covers_the_names_under_its_prefix():
    assert matches("params.x", ["params.*"]) and matches("params.a.b", ["params.*"])
    assert not matches("paramsx", ["params.*"]) and not matches("budget_max", ["budget"])
    assert matches("budget", ["params.*", "budget"])
