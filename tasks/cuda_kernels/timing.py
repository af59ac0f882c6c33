"""Timing statistics for interleaved candidate / eager samples, taken by the driver's own clock.

A sample is one command to a worker that runs K calls on K different fresh inputs; its per-call time is, on the cpu
backend, the CPU seconds the worker's whole process tree used for it (the cgroup's kernel counter: a neighbour that
preempts the pinned core does not inflate it, and the program cannot forge it), and on a GPU the driver's wall time
from sending the command to reading the reply; either divided by K. Candidate and eager samples
alternate (the order flips every round), each after a cache flush. Sampling stops once the 95% confidence interval
of each median is within the target (+-1% by default) or the time budget is spent; the speed-up is the ratio of the
medians, with a distribution-free interval from the paired per-round ratios.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

Z95 = 1.959964


def median_ci(values: list[float]) -> tuple[float, float, float]:
    """(median, low, high): the order-statistic 95% interval of the median (needs >= 6 values to be finite)."""
    xs = sorted(values)
    n = len(xs)
    med = statistics.median(xs)
    if n < 6:
        return med, xs[0], xs[-1]
    lo = max(0, int(math.floor(n / 2 - Z95 * math.sqrt(n) / 2)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + Z95 * math.sqrt(n) / 2)))
    return med, xs[lo], xs[hi]


@dataclass
class Stats:
    """Per-call time summary of one function's samples, in microseconds."""

    n: int
    median_us: float
    ci_low_us: float
    ci_high_us: float
    min_us: float
    iqr_pct: float

    @property
    def ci_halfwidth_pct(self) -> float:
        return 100.0 * (self.ci_high_us - self.ci_low_us) / 2 / self.median_us if self.median_us else math.inf

    @classmethod
    def of(cls, samples_us: list[float]) -> "Stats":
        med, lo, hi = median_ci(samples_us)
        xs = sorted(samples_us)
        q1, q3 = xs[len(xs) // 4], xs[(3 * len(xs)) // 4]
        return cls(len(xs), med, lo, hi, xs[0], 100.0 * (q3 - q1) / med if med else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median_us": self.median_us, "ci95_us": [self.ci_low_us, self.ci_high_us],
                "ci_halfwidth_pct": self.ci_halfwidth_pct, "min_us": self.min_us, "iqr_pct": self.iqr_pct}


@dataclass
class Series:
    """The paired samples of one timed shape."""

    candidate: list[float]
    eager: list[float]
    candidate_wall: list[float] = field(default_factory=list)
    eager_wall: list[float] = field(default_factory=list)

    def converged(self, target_pct: float, min_rounds: int) -> bool:
        if len(self.candidate) < min_rounds:
            return False
        return all(Stats.of(v).ci_halfwidth_pct <= target_pct for v in (self.candidate, self.eager))

    def summary(self) -> dict[str, Any]:
        cand, eager = Stats.of(self.candidate), Stats.of(self.eager)
        ratios = [e / c for e, c in zip(self.eager, self.candidate) if c > 0]
        r_med, r_lo, r_hi = median_ci(ratios)
        out = {"candidate": cand.to_dict(), "eager": eager.to_dict(),
               "speedup": eager.median_us / cand.median_us if cand.median_us > 0 else 0.0,
               "paired_ratio": {"median": r_med, "ci95": [r_lo, r_hi]}}
        out["samples_us"] = {"candidate": [round(v, 1) for v in self.candidate], "eager": [round(v, 1) for v in self.eager]}
        if self.candidate_wall and self.eager_wall:
            out["wall"] = {"candidate_median_us": statistics.median(self.candidate_wall),
                           "eager_median_us": statistics.median(self.eager_wall)}
        return out


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-12)) for v in values) / len(values)) if values else float("nan")
