"""Leaderboard plots (matplotlib, Agg): val per generation with the lever marked, and best val against compute spent.

PNG bytes are deterministic: no software metadata, fixed fonts, sorted iteration.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Sequence

from sia_bench.leaderboard_compute import _num, auc_horizon, compute_curve, compute_unit

if TYPE_CHECKING:
    from sia_bench.leaderboard import Group, Run

LEVER_MARKERS = {"harness": ("o", "harness"), "weights": ("s", "weights"), "both": ("D", "harness + weights"),
                 "stop": ("X", "stop"), "start": ("*", "start"), "": (".", "no change")}


def _lever(gen: Any) -> str:
    levers = set(gen.levers)
    if gen.index == 0:
        return "start"
    if "stop" in levers:
        return "stop"
    if {"harness", "weights"} <= levers:
        return "both"
    return "harness" if "harness" in levers else "weights" if "weights" in levers else ""


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "sia-bench", "font.family": "DejaVu Sans"})
    return plt.subplots(figsize=(7, 4.2), dpi=100)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: identical bytes on regeneration
    plt.close(fig)
    return buf.getvalue()


def _arm_colours(group: Group) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {arm.name: cmap(i % 10) for i, arm in enumerate(sorted(group.arms, key=lambda a: a.name))}


def _runs_by_arm(group: Group) -> list[tuple[str, Run]]:
    return sorted(((arm.name, run) for arm in group.arms for run in arm.runs),
                  key=lambda ar: (ar[0], ar[1].record.seed, ar[1].record.run_id, ar[1].where))


def plot_curves(group: Group) -> bytes:
    """Val score of each generation's candidate (best so far when nothing new was scored), lever marked per point."""
    from matplotlib.lines import Line2D

    fig, ax = _figure()
    m, colours = group.metric, _arm_colours(group)
    used: set[str] = set()
    for name, run in _runs_by_arm(group):
        r = run.record
        xs = [g.index for g in r.generations]
        ys = [g.val.get(m, _num(g.best_so_far)) if g.val else _num(g.best_so_far) for g in r.generations]
        colour = colours[name]
        ax.plot(xs, ys, color=colour, alpha=0.7, linewidth=1.2)
        for x, y, g in zip(xs, ys, r.generations):
            marker = LEVER_MARKERS[_lever(g)][0]
            used.add(_lever(g))
            ax.scatter([x], [y], color=colour, marker=marker, s=40, edgecolors="black" if g.accepted else "none",
                       zorder=3)
    handles = [Line2D([], [], color=c, label=label) for label, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=LEVER_MARKERS[k][0], linestyle="", label=LEVER_MARKERS[k][1])
                for k in LEVER_MARKERS if k in used]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"val {m}")
    ax.set_title(f"{group.task}: val per generation (black edge = kept)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def plot_compute(group: Group, rows: Sequence[dict[str, Any]]) -> bytes:
    """Best val so far against cumulative compute (FLOPs, or task tokens where FLOPs are not recorded), a step per
    generation; the AUC horizon as a dashed line; baselines as dotted horizontal lines."""
    fig, ax = _figure()
    m, colours = group.metric, _arm_colours(group)
    unit = compute_unit(group)
    for label, colour in colours.items():
        ax.plot([], [], color=colour, label=label)
    for name, run in _runs_by_arm(group):
        xs, ys = compute_curve(run, unit)
        ax.step(xs, ys, where="post", color=colours[name], alpha=0.7, marker=".")
    horizon = auc_horizon(group, unit)
    if math.isfinite(horizon):
        ax.axvline(horizon, linestyle="--", color="grey", linewidth=0.8)
    for row in rows:
        if row["kind"] == "baseline" and not math.isnan(row["val"]["mean"]):
            ax.axhline(row["val"]["mean"], linestyle=":", color="grey", linewidth=1)
            ax.annotate(row["name"], (0, row["val"]["mean"]), fontsize=7, color="grey", xycoords=("axes fraction",
                                                                                                   "data"))
    ax.set_xlim(left=0)
    ax.legend(fontsize=7, loc="best")
    ax.set_xlabel(f"{unit.label} spent (test excluded)" + ("" if unit.flops else "; FLOPs not recorded"))
    ax.set_ylabel(f"best val {m} so far")
    ax.set_title(f"{group.task}: score against compute (dashed: AUC horizon)", fontsize=10)
    return _png(fig)
