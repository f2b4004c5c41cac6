"""A left-to-right layered layout of a DAG, for drawing graphs without Graphviz or a browser library.

Pure function of node sizes and edges: layer = longest path from a source; within a layer, nodes
are ordered by the mean position of their neighbours (a few barycentre sweeps reduce crossings);
edges are cubic curves from the right side of a box to the left side of the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LAYER_GAP = 70.0
NODE_GAP = 24.0
MARGIN = 16.0


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def right_mid(self) -> tuple[float, float]:
        return self.x + self.w, self.y + self.h / 2

    @property
    def left_mid(self) -> tuple[float, float]:
        return self.x, self.y + self.h / 2


@dataclass(frozen=True)
class Curve:
    """A cubic Bezier curve from `start` to `end` with control points `c1`, `c2`."""

    src: str
    dst: str
    start: tuple[float, float]
    c1: tuple[float, float]
    c2: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True)
class Layout:
    boxes: Mapping[str, Box]
    curves: tuple[Curve, ...]
    width: float
    height: float


def _layers(order: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    preds: dict[str, list[str]] = {n: [] for n in order}
    for src, dst in edges:
        preds[dst].append(src)
    rank: dict[str, int] = {}
    for name in order:  # `order` is topological
        rank[name] = 1 + max((rank[p] for p in preds[name]), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for name in order:
        layers[rank[name]].append(name)
    return layers


def _reorder(layers: list[list[str]], edges: Sequence[tuple[str, str]], sweeps: int = 4) -> None:
    neighbours: dict[str, list[str]] = {n: [] for layer in layers for n in layer}
    for src, dst in edges:
        neighbours[src].append(dst)
        neighbours[dst].append(src)
    for sweep in range(sweeps):
        indices = range(1, len(layers)) if sweep % 2 == 0 else range(len(layers) - 2, -1, -1)
        for i in indices:
            ref = layers[i - 1] if sweep % 2 == 0 else layers[i + 1]
            pos = {n: k for k, n in enumerate(ref)}
            current = {n: k for k, n in enumerate(layers[i])}

            def centre(name: str, pos: dict[str, int] = pos, current: dict[str, int] = current) -> float:
                near = [pos[m] for m in neighbours[name] if m in pos]
                return sum(near) / len(near) if near else float(current[name])

            layers[i].sort(key=centre)


def layout(
    order: Sequence[str], sizes: Mapping[str, tuple[float, float]], edges: Sequence[tuple[str, str]]
) -> Layout:
    """Place nodes (given in topological `order`, each `sizes[name] = (w, h)`) left to right."""
    layers = _layers(order, edges)
    _reorder(layers, edges)
    heights = [sum(sizes[n][1] for n in layer) + NODE_GAP * (len(layer) - 1) for layer in layers]
    total_h = max(heights, default=0.0)
    boxes: dict[str, Box] = {}
    x = MARGIN
    for layer, layer_h in zip(layers, heights):
        w_max = max(sizes[n][0] for n in layer)
        y = MARGIN + (total_h - layer_h) / 2
        for name in layer:
            w, h = sizes[name]
            boxes[name] = Box(x, y, w, h)  # left-aligned: every edge into a layer ends at one x
            y += h + NODE_GAP
        x += w_max + LAYER_GAP
    curves = []
    for src, dst in edges:
        (x0, y0), (x1, y1) = boxes[src].right_mid, boxes[dst].left_mid
        bend = max((x1 - x0) / 2, LAYER_GAP / 2)
        curves.append(Curve(src, dst, (x0, y0), (x0 + bend, y0), (x1 - bend, y1), (x1, y1)))
    width = x - LAYER_GAP + MARGIN if layers else 2 * MARGIN
    return Layout(boxes=boxes, curves=tuple(curves), width=width, height=total_h + 2 * MARGIN)
