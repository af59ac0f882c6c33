"""Statistics behind the leaderboard's verdicts: intervals for one arm, paired tests between arms, Holm, power.

Design the numbers rest on: every arm and seed is scored on the *same* test instances, so an arm's results form a
matrix ``scores[seed, instance]`` (a crossed design: seeds x instances), and two arms are compared instance by
instance (paired). Everything here is a pure function of its inputs: resampling uses a fixed seed, so a leaderboard
regenerated from the same records prints the same intervals.

- One run with 0/1 scores: the Wilson score interval (and Clopper-Pearson, the exact one, on request).
- An arm over seeds: a two-way (crossed) percentile bootstrap that resamples seeds *and* instances.
- Two arms: the mean paired difference, its two-way bootstrap interval, an exact paired test (McNemar or sign-flip
  permutation), Holm's step-down adjustment over the comparisons shown, and the minimum detectable difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.80
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000
PERMUTATION_RESAMPLES = 20_000
EXACT_ENUMERATION_MAX = 16  # up to 2**16 sign patterns are enumerated; more use the grid or Monte Carlo
GRID_MAX_SUM = 5_000_000  # the exact grid convolution is used while sum |k_i| stays below this
_CHUNK = 2_000  # resamples per vectorised block: bounds memory at _CHUNK x instances floats


class StatsError(ValueError):
    """Input the statistics cannot use (empty, ragged, non-finite); the message says what is wrong."""


@dataclass(frozen=True)
class Interval:
    estimate: float
    lo: float
    hi: float
    method: str  # how the interval was made, in words a table can print


@dataclass(frozen=True)
class PairedComparison:
    """Arm A minus arm B on the same instances; ``difference`` > 0 means A scored higher."""

    difference: float
    lo: float
    hi: float
    p_value: float
    test: str  # the exact paired test used, in words
    n_instances: int
    seeds_a: int
    seeds_b: int
    a_better: int  # instances where A's seed mean beats B's
    b_better: int
    sd_difference: float  # standard deviation of the per-instance differences (ddof=1)
    mdd: float  # minimum detectable difference at the observed discordance / variance (NaN when none)


def _matrix(scores: Sequence[Sequence[float]] | np.ndarray, what: str) -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise StatsError(f"{what}: scores must be a seeds x instances table of numbers") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise StatsError(f"{what}: need at least one seed and one instance, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise StatsError(f"{what}: {int((~np.isfinite(arr)).sum())} scores are NaN or infinite")
    return arr


def is_binary(scores: np.ndarray) -> bool:
    return bool(np.isin(scores, (0.0, 1.0)).all())


@lru_cache(maxsize=64)
def _quantile(q: float) -> float:
    """Standard normal quantile."""
    from scipy.stats import norm

    return float(norm.ppf(q))


def _z(level: float) -> float:
    """Two-sided critical value: 1.96 for level 0.95."""
    return _quantile(1 - (1 - level) / 2)


# -- one proportion ---------------------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, level: float = LEVEL) -> Interval:
    """Wilson score interval for a binomial proportion: the set of p whose score test does not reject at ``level``.

    Unlike the Wald interval it never has zero width at 0/n or n/n and covers close to nominal for small n.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise StatsError(f"Wilson interval needs 0 <= successes <= n and n > 0, got {successes}/{n}")
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges, where rounding would leave 1e-17
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, lo, hi, f"Wilson ({successes}/{n})")


def clopper_pearson_interval(successes: int, n: int, level: float = LEVEL) -> Interval:
    """Clopper-Pearson ("exact") interval from beta quantiles: guaranteed coverage, wider than Wilson."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= successes <= n:
        raise StatsError(f"Clopper-Pearson interval needs 0 <= successes <= n and n > 0, got {successes}/{n}")
    tail = (1 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - tail, successes + 1, n - successes))
    return Interval(successes / n, lo, hi, f"Clopper-Pearson ({successes}/{n})")


# -- bootstrap --------------------------------------------------------------------------------------------------------
def _counts(rng: np.random.Generator, units: int, draws: int) -> np.ndarray:
    """How often each of ``units`` is drawn in each of ``draws`` resamples of size ``units`` (with replacement)."""
    idx = rng.integers(0, units, size=(draws, units))
    flat = (idx + units * np.arange(draws)[:, None]).ravel()
    return np.bincount(flat, minlength=draws * units).reshape(draws, units).astype(float)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _decompose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``x[seed, instance]`` into per-instance means over seeds and seed main effects (row mean - grand mean),
    the latter shrunk to the seed variance component a two-way ANOVA estimates, ``max(0, (MS_seed - MS_error) / N)``,
    and scaled by sqrt(S / (S - 1)) to undo the bootstrap's (S - 1) / S variance bias (S, the seeds, is small).

    Why: a row mean carries seed x instance noise that the instance means already carry; resampling raw rows and
    columns counts that noise twice and makes intervals too wide (coverage near 99% in our simulation).
    """
    s, n = x.shape
    instance_means = x.mean(axis=0)
    effects = x.mean(axis=1) - x.mean()
    ss_seed = float((effects ** 2).sum())
    if s < 2 or n < 2 or ss_seed == 0:
        return instance_means, np.zeros(s)
    residual = x - x.mean(axis=1, keepdims=True) - instance_means[None, :] + x.mean()
    ms_error = float((residual ** 2).sum()) / ((s - 1) * (n - 1))
    ms_seed = n * ss_seed / (s - 1)
    shrink = math.sqrt(max(0.0, 1.0 - ms_error / ms_seed) * s / (s - 1))
    return instance_means, effects * shrink


def _replicates(x: np.ndarray, rng: np.random.Generator, resamples: int, y: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap replicates of the mean of ``x`` (or of ``x - y`` paired by instance): one instance resample per
    replicate, shared by both arms, plus an independent resample of each arm's seed effects."""
    arms = [_decompose(x)] + ([_decompose(y)] if y is not None else [])
    n = x.shape[1]
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        w_inst = _counts(rng, n, b)
        values = np.zeros(b)
        for sign, (means, effects) in zip((1.0, -1.0), arms):
            values += sign * (w_inst @ means) / n
            if effects.any():
                values += sign * (_counts(rng, effects.size, b) @ effects) / effects.size
        out[start:start + b] = values
    return out


def hierarchical_bootstrap(scores: Sequence[Sequence[float]] | np.ndarray, level: float = LEVEL,
                           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of ``scores[seed, instance]`` with a two-level percentile-bootstrap interval.

    Estimator: the grand mean (= the mean of the seed means). The design is crossed (every seed scores the same
    instances), so both levels are resampled independently: instances (with replacement) through their means over
    seeds, which carry instance and seed x instance variation, and seeds through their main effects, shrunk to the
    ANOVA estimate of the seed variance (see ``_decompose``). With one seed it is the ordinary instance bootstrap.
    With 3 seeds the seed level rests on 3 values: when seeds differ a lot, the interval is only indicative.
    """
    x = _matrix(scores, "hierarchical bootstrap")
    s, n = x.shape
    estimate = float(x.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, "no interval: one instance")
    lo, hi = _percentiles(_replicates(x, np.random.default_rng(seed), resamples), level)
    return Interval(estimate, lo, hi, f"bootstrap over {s} seed{'s' if s > 1 else ''} x {n} instances")


def arm_interval(scores: Sequence[Sequence[float]] | np.ndarray, level: float = LEVEL) -> Interval:
    """The interval the leaderboard shows for one arm: Wilson for 0/1 scores from one run (or from seeds that agree
    on every instance, so that the seed level has no variance), else the two-level bootstrap."""
    x = _matrix(scores, "arm interval")
    if is_binary(x) and (x == x[0]).all():
        iv = wilson_interval(int(x[0].sum()), x.shape[1], level)
        if x.shape[0] > 1:
            agree = f"; the {x.shape[0]} seeds agree on every instance)"
            iv = Interval(iv.estimate, iv.lo, iv.hi, iv.method[:-1] + agree)
        return iv
    return hierarchical_bootstrap(x, level)


# -- paired tests -----------------------------------------------------------------------------------------------------
def mcnemar_exact(a_better: int, b_better: int) -> float:
    """Exact McNemar test (two-sided): under H0 each discordant pair favours A or B with probability 1/2, so the
    p-value is ``min(1, 2 P[Binomial(a + b, 1/2) <= min(a, b)])``. Concordant pairs carry no information."""
    from scipy.stats import binom

    if a_better < 0 or b_better < 0:
        raise StatsError("discordant-pair counts must be >= 0")
    m = a_better + b_better
    if m == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(a_better, b_better), m, 0.5)))


def sign_flip_test(differences: Sequence[float] | np.ndarray, grid: int | None = None,
                   resamples: int = PERMUTATION_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, str]:
    """Two-sided paired permutation test of H0 "each per-instance difference is symmetric about 0" (the arm labels
    are exchangeable within an instance); statistic ``|sum d_i|``; p = P(|sum of randomly signed d_i| >= observed).

    Exact when the differences lie on a grid of step ``1/grid`` (0/1 scores averaged over seeds do) by convolving the
    sign distribution, or when at most 2**16 sign patterns exist (full enumeration); otherwise Monte Carlo with
    ``resamples`` random sign vectors and the (1 + hits) / (1 + resamples) estimate, which never reports p = 0.
    Returns the p-value and the method in words.
    """
    d = np.asarray(differences, dtype=float).ravel()
    if d.size == 0 or not np.isfinite(d).all():
        raise StatsError("sign-flip test needs at least one finite paired difference")
    d = d[d != 0]
    if d.size == 0:
        return 1.0, "sign-flip, exact (no nonzero difference)"
    if grid is not None:
        k = np.rint(np.abs(d) * grid).astype(np.int64)
        if np.allclose(k, np.abs(d) * grid, rtol=0, atol=1e-9) and int(k.sum()) <= GRID_MAX_SUM:
            return _grid_p(k, int(round(float(d.sum()) * grid))), f"sign-flip, exact (grid 1/{grid})"
    if d.size <= EXACT_ENUMERATION_MAX:
        patterns = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        totals = np.abs(patterns @ np.abs(d))
        return float((totals >= abs(d.sum()) - _tol(d)).mean()), f"sign-flip, exact ({2 ** d.size} patterns)"
    rng = np.random.default_rng(seed)
    observed, hits = abs(d.sum()) - _tol(d), 0
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        signs = rng.integers(0, 2, size=(b, d.size)) * 2 - 1
        hits += int((np.abs(signs @ np.abs(d)) >= observed).sum())
    return (1 + hits) / (1 + resamples), f"sign-flip, Monte Carlo ({resamples} draws, seed {seed})"


def _tol(d: np.ndarray) -> float:
    return 1e-9 * max(1.0, float(np.abs(d).sum()))


def _grid_p(k: np.ndarray, observed: int) -> float:
    """P(|sum of +-k_i| >= |observed|) with independent fair signs. Equal k's are grouped: c copies of +-v sum to
    v (2j - c) with j ~ Binomial(c, 1/2); the groups' distributions are convolved (FFT), so the cost grows with the
    number of distinct values (at most the grid size), not with the number of instances."""
    from scipy.signal import fftconvolve
    from scipy.stats import binom

    dist = np.ones(1)  # over sums -offset .. +offset
    offset = 0
    for value, count in zip(*np.unique(k, return_counts=True)):
        kernel = np.zeros(2 * int(value) * int(count) + 1)
        kernel[::2 * int(value)] = binom.pmf(np.arange(count + 1), count, 0.5)
        dist = np.clip(fftconvolve(dist, kernel), 0.0, None) if dist.size > 1 else kernel
        offset += int(value) * int(count)
    sums = np.arange(-offset, offset + 1)
    return float(min(1.0, dist[np.abs(sums) >= abs(observed)].sum()))


def paired_comparison(a: Sequence[Sequence[float]] | np.ndarray, b: Sequence[Sequence[float]] | np.ndarray,
                      level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> PairedComparison:
    """Arm A against arm B on the same instances (columns aligned by the caller).

    Estimator: per instance, the mean over each arm's seeds; the difference is the mean over instances of
    ``mean_A(i) - mean_B(i)``. Interval: the two-level percentile bootstrap of ``hierarchical_bootstrap``, one
    instance resample shared by both arms (that is what pairs them) and each arm's seed effects resampled on their
    own. Test: exact McNemar when both arms are one run of 0/1 scores; otherwise the sign-flip permutation test on
    the per-instance differences (exact on the 1/lcm(seeds_A, seeds_B) grid of 0/1 scores, Monte Carlo for
    continuous scores). The test conditions on the
    seeds that were run (are these runs of A better than these runs of B on the test population?); seed-to-seed
    variation enters the interval, not the p-value.
    """
    x, y = _matrix(a, "arm A"), _matrix(b, "arm B")
    if x.shape[1] != y.shape[1]:
        raise StatsError(f"paired comparison needs the same instances: {x.shape[1]} vs {y.shape[1]} columns")
    n, sa, sb = x.shape[1], x.shape[0], y.shape[0]
    d = x.mean(axis=0) - y.mean(axis=0)
    binary = is_binary(x) and is_binary(y)
    a_better, b_better = int((d > 0).sum()), int((d < 0).sum())
    if binary and sa == sb == 1:
        p, test = mcnemar_exact(a_better, b_better), f"McNemar, exact ({a_better} vs {b_better} discordant)"
    else:
        p, test = sign_flip_test(d, grid=math.lcm(sa, sb) if binary else None, seed=seed)
    lo = hi = math.nan
    if n >= 2:
        lo, hi = _percentiles(_replicates(x, np.random.default_rng(seed), resamples, y), level)
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    if binary and sa == sb == 1:
        mdd = min_detectable_difference(n, discordance=(a_better + b_better) / n)
    else:
        mdd = min_detectable_difference(n, sd=sd)
    return PairedComparison(float(d.mean()), lo, hi, p, test, n, sa, sb, a_better, b_better, sd, mdd)


# -- multiplicity and power -------------------------------------------------------------------------------------------
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values (same order as given): sort ascending, multiply the j-th smallest
    by (m - j + 1), take the running maximum, cap at 1. Rejecting adjusted p < alpha controls the family-wise error
    rate at alpha under any dependence between the tests."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise StatsError(f"Holm needs p-values in [0, 1], got {list(p_values)}")
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    out = np.empty_like(p)
    out[order] = np.minimum(scaled, 1.0)
    return [float(v) for v in out]


def min_detectable_difference(n: int, *, discordance: float | None = None, sd: float | None = None,
                              alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true paired difference detected with probability ``power`` by a two-sided test at ``alpha`` on n
    instances (normal approximation; one comparison, before Holm).

    - 0/1 scores, given the discordance psi (share of instances where the arms disagree): McNemar's power formula
      (Connor 1987), solving ``delta sqrt(n) = z_a sqrt(psi) + z_b sqrt(psi - delta^2)`` for delta.
    - otherwise, given the standard deviation of the per-instance differences: ``(z_a + z_b) sd / sqrt(n)``.
    NaN when the assumption makes every difference undetectable or trivially detectable (psi = 0 or sd = 0).
    """
    if n <= 0:
        raise StatsError(f"minimum detectable difference needs n > 0, got {n}")
    if (discordance is None) == (sd is None):
        raise StatsError("give exactly one of discordance (0/1 scores) or sd (continuous scores)")
    z_a, z_b = _z(1 - alpha), _quantile(power)  # two-sided alpha; power is one-sided
    if sd is not None:
        return (z_a + z_b) * sd / math.sqrt(n) if sd > 0 and math.isfinite(sd) else math.nan
    psi = float(discordance)
    if not 0 < psi <= 1:
        return math.nan
    lo, hi = 0.0, math.sqrt(psi)  # |delta| <= psi <= sqrt(psi); solve f(delta) = 0 by bisection

    def f(delta: float) -> float:
        return delta * math.sqrt(n) - z_a * math.sqrt(psi) - z_b * math.sqrt(max(psi - delta * delta, 0.0))

    if f(min(psi, hi)) < 0:
        return math.nan  # not even the largest possible difference (every discordant pair one way) is detectable
    hi = min(psi, hi)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return hi
