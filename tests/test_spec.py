"""Graph validation: every problem named with file, line, node and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import Field

from graphmerge import NodeParams, node
from graphmerge.cli import main
from graphmerge.errors import SpecError
from graphmerge.spec import load_graph, parse_set_overrides

REPO = Path(__file__).resolve().parent.parent


class RatioParams(NodeParams):
    input: str
    ratio: float = Field(0.5, ge=0.0, le=1.0)


@node("test_ratio", version="1", params=RatioParams, inputs=["input"])
def _ratio(ctx, params, inputs):
    return inputs[params.input]


def problems(tmp_path, body: str) -> list[str]:
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(body))
    with pytest.raises(SpecError) as info:
        load_graph(path)
    return info.value.one_line().splitlines()


def test_unknown_op_suggests(tmp_path):
    [msg] = problems(tmp_path, "nodes:\n  a: {op: lod, path: x}\n")
    assert "g.yaml:2: node 'a': key 'op'" in msg and "did you mean 'load'" in msg


def test_unknown_input(tmp_path):
    [msg] = problems(
        tmp_path, "nodes:\n  a: {op: load, path: x}\n  s:\n    op: save\n    input: aa\n    path: o\n"
    )
    assert (
        "g.yaml:5: node 's': key 'input'" in msg and "unknown input 'aa'" in msg and "did you mean 'a'" in msg
    )


def test_cycle_is_named(tmp_path):
    [msg] = problems(
        tmp_path,
        """
        nodes:
          a: {op: test_ratio, input: b}
          b: {op: test_ratio, input: c}
          c: {op: test_ratio, input: a}
        """,
    )
    # arrows follow the data: a feeds c (c's input is a), c feeds b, b feeds a
    assert "g.yaml:3: node 'a': cycle: a -> c -> b -> a" in msg


def test_missing_parameter(tmp_path):
    [msg] = problems(tmp_path, "nodes:\n  a: {op: load}\n")
    assert "g.yaml:2: node 'a': key 'path'" in msg and "missing required parameter" in msg


def test_unknown_parameter(tmp_path):
    [msg] = problems(tmp_path, "nodes:\n  a:\n    op: load\n    path: x\n    pth: y\n")
    assert "g.yaml:5: node 'a': key 'pth'" in msg and "unknown parameter" in msg


def test_wrong_type_and_range(tmp_path):
    msgs = problems(
        tmp_path,
        """
        nodes:
          a: {op: load, path: x}
          r1:
            op: test_ratio
            input: a
            ratio: lots
          r2:
            op: test_ratio
            input: a
            ratio: 1.5
        """,
    )
    assert len(msgs) == 2  # every problem is reported, not only the first
    assert "g.yaml:7: node 'r1': key 'ratio'" in msgs[0] and "valid number" in msgs[0]
    assert "g.yaml:11: node 'r2': key 'ratio'" in msgs[1] and "less than or equal to 1" in msgs[1]


def test_undefined_variable_and_set_override(tmp_path):
    [msg] = problems(tmp_path, "vars: {model: x}\nnodes:\n  a: {op: load, path: ${modle}}\n")
    assert "node 'a'" in msg and "undefined variable ${modle}" in msg and "did you mean ${model}" in msg
    path = tmp_path / "ok.yaml"
    path.write_text(
        "vars: {model: m, r: 0.1}\nnodes:\n  a: {op: load, path: ${model}}\n  b: {op: test_ratio, input: a, ratio: ${r}}\n"
    )
    graph = load_graph(path, overrides=parse_set_overrides(["r=0.25"]))
    assert graph.nodes["b"].params.ratio == 0.25  # whole-string references keep the value's type
    from graphmerge.io.hub import locate_model

    assert locate_model(graph.nodes["a"].params.path, graph.dir) == tmp_path / "m"  # relative to the graph file


def test_validate_cli_reports_all_and_exits_nonzero(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("nodes:\n  a: {op: lod}\n  b: {op: save, input: zz, path: o}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "g.yaml:" in line for line in err)
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"nodes:\n  a: {{op: load, path: {REPO / 'models/tiny/base'}}}\n")
    assert main(["validate", str(ok), "--cache-dir", str(tmp_path / "cache")]) == 0
