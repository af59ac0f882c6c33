"""The joint arm's lever choice by evidence: val gain per unit of compute, with a stated exploration and stop rule.

Evidence: every finished generation that pulled a lever (``harness``, ``weights`` or ``both``) contributes its val
*gain* — the candidate's val score minus the best val before it (signed, in the metric's better direction; a proposal
that produced no candidate gains 0) — and its *cost*, the compute the generation charged (estimated FLOPs, or task
tokens where FLOPs are unknown). The rule, in full:

1. **Explore**: levers never tried are tried once, in the order harness, weights, both — skipping any whose cost
   (estimated from the other levers, or unknown) cannot fit in the remaining compute.
2. **Exploit with optimism** (UCB1): for each tried lever, ``ucb = mean_gain + c * s * sqrt(ln(N) / n)`` where ``N``
   counts all tried generations, ``n`` this lever's, and ``s`` the spread of the observed gains (their standard
   deviation, at least ``resolution``, the smallest change val can show: 1 / number of val instances). The chosen
   lever maximises ``ucb / mean_cost`` among the levers whose mean cost fits in the remaining compute.
3. **Stop** when the chosen lever's ``ucb`` is below ``min_gain`` (default: half the val resolution): not even the
   optimistic estimate expects one more val instance to flip; or when no lever fits the remaining compute.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

LEVERS = ("harness", "weights", "both")


def lever_of(levers: Sequence[str]) -> str | None:
    kinds = {x for x in levers if x in ("harness", "weights")}
    if kinds == {"harness", "weights"}:
        return "both"
    return next(iter(kinds)) if kinds else None


def generation_cost(ledger: Any) -> float:
    """Compute a generation charged: estimated FLOPs when the ledger has them, else task tokens."""
    total = getattr(ledger, "total_flops", None)
    if callable(total):
        value = total(exclude_test=True)
        if value:
            return float(value)
    return float(ledger.task_tokens()) if hasattr(ledger, "task_tokens") else 0.0


@dataclass
class Evidence:
    lever: str
    gains: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.gains)

    @property
    def mean_gain(self) -> float:
        return sum(self.gains) / self.n if self.n else math.nan

    @property
    def mean_cost(self) -> float:
        return sum(self.costs) / self.n if self.n else math.nan


def collect_evidence(history: Sequence[Any], metric: str, higher_is_better: bool = True) -> dict[str, Evidence]:
    """Per lever, the signed val gains and costs of the generations that pulled it (generation 0 excluded)."""
    sign = 1.0 if higher_is_better else -1.0
    out = {lever: Evidence(lever) for lever in LEVERS}
    for prev, gen in zip(history, history[1:]):
        lever = lever_of(gen.levers)
        if lever is None:
            continue
        before = prev.best_so_far
        value = gen.val.get(metric) if gen.candidate is not None else None
        gain = 0.0
        if value is not None and before is not None and math.isfinite(value) and math.isfinite(before):
            gain = sign * (value - before)
        out[lever].gains.append(gain)
        out[lever].costs.append(generation_cost(gen.ledger))
    return out


@dataclass
class Choice:
    lever: str  # harness | weights | both | stop
    reason: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def choose_lever(evidence: dict[str, Evidence], remaining: float | None, resolution: float, c: float = 1.0,
                 min_gain: float | None = None, order: Sequence[str] = LEVERS) -> Choice:
    """Apply the rule in the module docstring. ``remaining`` is the compute left (None: unlimited)."""
    min_gain = resolution / 2 if min_gain is None else min_gain
    known_costs = [e.mean_cost for e in evidence.values() if e.n]
    fits = lambda cost: remaining is None or not math.isfinite(cost) or cost <= remaining  # noqa: E731
    for lever in order:
        e = evidence[lever]
        if e.n == 0:
            guess = max(known_costs) if known_costs else math.nan
            if fits(guess):
                return Choice(lever, f"explore: {lever} not tried yet")
    tried = [e for e in evidence.values() if e.n and e.lever in order]
    if not tried:
        return Choice("stop", "no lever fits the remaining compute")
    total = sum(e.n for e in tried)
    gains = [g for e in tried for g in e.gains]
    spread = max(statistics.pstdev(gains) if len(gains) > 1 else 0.0, resolution)
    scores = {}
    for e in tried:
        ucb = e.mean_gain + c * spread * math.sqrt(math.log(max(total, 2)) / e.n)
        cost = e.mean_cost if e.mean_cost > 0 else 1.0
        scores[e.lever] = {"n": e.n, "mean_gain": e.mean_gain, "ucb": ucb, "mean_cost": e.mean_cost,
                           "ucb_per_cost": ucb / cost}
    affordable = [lv for lv in scores if fits(scores[lv]["mean_cost"])]
    if not affordable:
        return Choice("stop", "no lever fits the remaining compute", scores)
    best = max(affordable, key=lambda lv: (scores[lv]["ucb_per_cost"], -order.index(lv)))
    if scores[best]["ucb"] < min_gain:
        return Choice("stop", f"expected gain too small: best upper bound {scores[best]['ucb']:.4f} ({best}) < "
                              f"{min_gain:.4f}", scores)
    return Choice(best, f"evidence: {best} has the highest optimistic val gain per compute "
                        f"({scores[best]['ucb']:.4f} over {scores[best]['mean_cost']:.3g})", scores)
