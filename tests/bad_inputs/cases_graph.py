"""Bad graph files."""

from __future__ import annotations

from pathlib import Path

from case import Case


def _graph(text: str):
    def build(root: Path) -> list[str]:
        (root / "g.yaml").write_text(text)
        return ["validate", "g.yaml"]

    return build


CASES = [
    Case(
        "unknown_op",
        _graph("nodes:\n  a: {op: lod, path: x}\n"),
        mentions=("g.yaml:2", "'a'", "load"),
    ),
]
