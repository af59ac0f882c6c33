"""Compute in the leaderboard: which unit a table uses, each run's best-val-so-far curve against compute, and the
area under that curve (AUC) with its normalisation.

FLOPs (the ledger's ``flops``, test pass excluded) when every run of a table recorded them; otherwise task-model
tokens, and the page says so. Curves are built from the per-generation ledgers, so they add up to the run's spend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sia_bench.leaderboard import Group, Run


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class ComputeUnit:
    """How a table measures compute: FLOPs when every run's ledger has them, else task tokens (said so)."""

    flops: bool
    budget: float | None  # the group's compute budget in this unit, when one was set

    @property
    def label(self) -> str:
        return "FLOPs" if self.flops else "task tokens"

    def of(self, ledger: Any) -> float:
        return float(ledger.total_flops(exclude_test=True)) if self.flops else float(ledger.task_tokens())


def _has_flops(ledger: Any) -> bool:
    """FLOPs recorded: some charged, or none needed (no task-model tokens and nothing of unknown size, e.g. a
    tool-only control that never calls the model spent 0 FLOPs, it did not fail to record them)."""
    if sum(getattr(ledger, "flops", {}).values()) > 0:
        return True
    return hasattr(ledger, "flops") and ledger.task_tokens() == 0 and not getattr(ledger, "flops_unknown", {})


def compute_unit(group: Group) -> ComputeUnit:
    flops = all(_has_flops(r.record.ledger) for r in group.runs)
    budget = getattr(group.runs[0].record.budget, "compute_flops", None) if flops else None
    return ComputeUnit(flops, float(budget) if budget else None)


def compute_curve(run: Run, unit: ComputeUnit) -> tuple[list[float], list[float]]:
    """Cumulative compute after each generation and the best val score so far at that point."""
    spent, xs, ys = 0.0, [], []
    for gen in run.record.generations:
        spent += unit.of(gen.ledger)
        xs.append(spent)
        ys.append(_num(gen.best_so_far))
    return xs, ys


def compute_auc(run: Run, unit: ComputeUnit, horizon: float) -> float:
    """Area under normalised best-val-so-far against compute, divided by ``horizon``: 1.0 = the perfect control from
    the first FLOP. Before generation 0 is scored the run is credited with the null control (0); after it stops its
    best stays; compute beyond ``horizon`` is not counted. NaN when the val controls coincide."""
    controls = run.record.controls.get("val", {})
    metric = run.record.task["metric"]
    null, perfect = (_num(controls.get(c, {}).get(metric)) for c in ("null", "perfect"))
    if not (horizon > 0 and math.isfinite(null) and math.isfinite(perfect)) or perfect == null:
        return math.nan
    xs, ys = compute_curve(run, unit)
    area, previous_x, previous_y = 0.0, 0.0, 0.0
    for x, y in zip(xs + [horizon], ys + [ys[-1] if ys else 0.0]):
        x = min(x, horizon)
        area += max(0.0, x - previous_x) * previous_y
        previous_x, previous_y = max(previous_x, x), (y - null) / (perfect - null) if math.isfinite(y) else 0.0
    return area / horizon


def auc_horizon(group: Group, unit: ComputeUnit) -> float:
    """The compute budget when one was set, else the most compute any run of the group spent."""
    return unit.budget or max((compute_curve(r, unit)[0][-1] for r in group.runs if r.record.generations),
                              default=math.nan)
