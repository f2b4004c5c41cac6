"""Node results reach a run's summary through what each node type declares (`@node(summary=...)`)."""

from __future__ import annotations

from pydantic import Field

from graphmerge.params import NodeParams
from graphmerge.registry import node
from graphmerge.runner import run_graph


class _TallyParams(NodeParams):
    count: int = Field(ge=0)


@node(
    "_summary_tally",
    version="1",
    params=_TallyParams,
    summary=lambda name, value: {"tallies": {name: value["count"]}, "last": name},
)
def _tally(ctx, params, inputs):
    return {"count": params.count}


@node("_summary_silent", version="1", params=_TallyParams)
def _silent(ctx, params, inputs):
    return {"count": params.count}


def test_declared_summaries_are_merged_in_graph_order_and_silent_nodes_add_nothing(tmp_path):
    text = """
nodes:
  a: {op: _summary_tally, count: 1}
  quiet: {op: _summary_silent, count: 5}
  b: {op: _summary_tally, count: 2}
"""
    result = run_graph(text=text, cache_dir=tmp_path / "c", progress=False)
    assert result.extras["tallies"] == {"a": 1, "b": 2}
    assert result.extras["last"] == "b"
    summary = result.summary()
    assert summary["tallies"] == {"a": 1, "b": 2} and "quiet" not in str(summary.get("tallies"))
    assert "cache" in summary
