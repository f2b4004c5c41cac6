"""Writers for search results: trials JSONL/CSV, convergence plot, Pareto plot. All written atomically
(temp file in the same directory + os.replace) so a crash never leaves a half-written report behind."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Literal

from .pareto import member_name
from .records import Objective, TrialRecord


def trials_jsonl(records: Sequence[TrialRecord], asked: int | None = None) -> bytes:
    """One JSON object per trial, numbered like the progress lines (`trial`, 1-based). Records past the
    first `asked` are logged trials this run did not ask for again (`history: true`)."""
    asked = len(records) if asked is None else asked
    rows = []
    for i, r in enumerate(records):
        data = r.to_json()
        data.pop("order")
        rows.append({"trial": r.number, "history": i >= asked, **data})
    return "".join(json.dumps(d, sort_keys=True, default=str) + "\n" for d in rows).encode()


def trials_csv(
    records: Sequence[TrialRecord], objectives: Sequence[Objective], asked: int | None = None
) -> bytes:
    """One row per trial; config parameters as columns (blank when inactive for that trial)."""
    asked = len(records) if asked is None else asked
    params = sorted({k for r in records for k in r.config})
    header = ["trial", "budget", "limit", "score", *[f"score:{o.name}" for o in objectives]]
    header += ["infeasible", "replayed", "history", "time_s", "examples", "examples_total", "extra"]
    header += [f"param:{p}" for p in params]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i, r in enumerate(records):
        row = [r.number, "" if r.budget is None else r.budget, "" if r.limit is None else r.limit, r.score]
        row += [r.scores.get(o.name, "") for o in objectives]
        row += [
            int(r.infeasible),
            int(r.replayed),
            int(i >= asked),
            round(r.time_s, 3),
            r.examples,
            r.examples_total,
            json.dumps(dict(r.extra), default=str),
        ]
        row += [r.config.get(p, "") for p in params]
        w.writerow(row)
    return buf.getvalue().encode()


def _figure():
    # Figure + Agg canvas directly, never pyplot: no global state, safe off the main thread, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def convergence_png(
    records: Sequence[TrialRecord],
    best: TrialRecord | None = None,
    references: Mapping[str, float] | None = None,
    title: str = "search convergence",
    caption: str | None = None,
    by: Literal["trial", "examples"] = "trial",
) -> bytes:
    """Each trial's weighted score (colour = budget) and the best-so-far line per budget level; the reported
    best is circled, and each reference (e.g. a source model's score) is a dashed horizontal line.
    `by`: the x axis, trial number or the evaluation examples the search had spent after the trial (what
    makes searches at different budgets comparable)."""

    def x_of(r: TrialRecord) -> int:
        return r.number if by == "trial" else r.examples_total

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    budgets = sorted({r.budget for r in records if r.budget is not None})
    levels: list[float | None] = budgets if budgets else [None]
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    last = max((x_of(r) for r in records), default=1)
    for i, level in enumerate(levels):
        color = cmap(0.15 + 0.7 * i / max(1, len(levels) - 1))
        pts = [r for r in records if r.budget == level and not r.infeasible]
        label = "trials" if level is None else f"budget {level:g}"
        ax.scatter([x_of(r) for r in pts], [r.score for r in pts], s=14, color=color, alpha=0.6, label=label)
        xs, ys, top = [], [], None
        for r in pts:
            top = r.score if top is None else max(top, r.score)
            xs.append(x_of(r))
            ys.append(top)
        if xs:
            xs.append(last)
            ys.append(ys[-1])
            ax.step(xs, ys, where="post", color=color, linewidth=1.8)
    bad = [r for r in records if r.infeasible]
    if bad:
        lo = min((r.score for r in records), default=0.0)
        ax.scatter([x_of(r) for r in bad], [lo] * len(bad), marker="x", color="red", s=16, label="infeasible")
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for i, (name, value) in enumerate(sorted((references or {}).items())):
        ax.axhline(
            value, color="0.35", linestyle=styles[i % len(styles)], linewidth=1.0, label=f"{name} {value:.4g}"
        )
    if best is not None:
        ax.scatter(
            [x_of(best)],
            [best.score],
            s=120,
            facecolors="none",
            edgecolors="tab:red",
            linewidths=1.8,
            label=f"best: trial #{best.number} ({best.score:.4g})",
            zorder=5,
        )
    ax.set_xlabel("trial" if by == "trial" else "evaluation examples spent by the search")
    ax.set_ylabel("weighted score (higher is better)")
    if caption is None:
        ax.set_title(title)
    else:
        ax.set_title(f"{title}\n{caption}", fontsize=9)
    ax.grid(alpha=0.3)
    if records:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def pareto_png(
    records: Sequence[TrialRecord], front: Sequence[TrialRecord], objectives: Sequence[Objective]
) -> bytes:
    """Scatter of the first two objectives (all trials grey, Pareto set highlighted and connected)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    a, b = objectives[0], objectives[1]
    pts = [r for r in records if not r.infeasible]
    ax.scatter(
        [r.scores[a.name] for r in pts], [r.scores[b.name] for r in pts], s=12, color="0.7", label="trials"
    )
    names = {id(r): f"{member_name(i)} (#{r.number})" for i, r in enumerate(front)}
    fr = sorted(front, key=lambda r: a.utility(r.scores[a.name]))
    ax.plot(
        [r.scores[a.name] for r in fr],
        [r.scores[b.name] for r in fr],
        "o-",
        color="tab:red",
        label=f"Pareto set ({len(fr)})",
    )
    for r in fr:
        ax.annotate(
            names[id(r)],
            (r.scores[a.name], r.scores[b.name]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel(f"{a.name} ({'max' if a.maximize else 'min'})")
    ax.set_ylabel(f"{b.name} ({'max' if b.maximize else 'min'})")
    title = "Pareto front"
    if len(objectives) > 2:
        title += f" (first 2 of {len(objectives)} objectives)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
