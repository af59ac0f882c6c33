"""The rule that scores degenerate outputs as no denoising, with a named failure.

The OpenProblems MSE compares log-normalised profiles, and the held-out molecules are a sparse 10% sample, so an
output that empties cells, piles a cell's mass onto a few genes or erases most observed molecules scores far above
any honest method (all zeros but one entry: 0.48; cubing the counts: 0.55; the best baseline: 0.09 on pbmc68k).
Such outputs are not denoisings of the input. The rule, checked on every output after the basic contract (shape,
finite, non-negative, not all zero), in this order; each clause is scale-free and compares the output with the
program's own input:

- ``out_of_range``: a non-zero value outside the float32 normal range [1.2e-38, 3.4e38] (denormals, 1e308):
  such values overflow or underflow the metric's per-cell normalisation.
- ``empty_cells``: a cell with input molecules whose output is all zero (normalisation is undefined for it).
- ``no_variation``: the log-normalised output barely varies between cells (mean per-gene standard deviation
  below 1% of the input's): constant or near-constant output.
- ``concentrated``: the cells' mass sits on a handful of genes: the median over cells of the effective number of
  genes (inverse Simpson index of the cell's profile) is below 20% of the input's.
- ``erased``: more than half of the entries holding input molecules are (near) zero after log-normalisation
  (below 0.01, i.e. under a millionth of the cell's output): the observed molecules were thrown away.

Honest baselines (no denoising, sqrt-PCA, MAGIC, kNN smoothing, ALRA) stay far from every threshold (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .metrics import TARGET_SUM

FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)
MIN_SPREAD_RATIO = 0.01
MIN_EFFECTIVE_GENES_RATIO = 0.2
MAX_ERASED_FRACTION = 0.5
ERASED_LOG_VALUE = 0.01


@dataclass(frozen=True)
class Degenerate:
    kind: str
    message: str


def _profiles(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row totals and row profiles (rows scaled to sum 1; empty rows stay zero), overflow-safe."""
    peak = x.max(axis=1, keepdims=True)
    scaled = x / np.where(peak > 0, peak, 1.0)  # in [0, 1]: the sum cannot overflow
    totals = scaled.sum(axis=1, keepdims=True)
    return totals.ravel() * peak.ravel(), scaled / np.where(totals > 0, totals, 1.0)


def _effective_genes(profile: np.ndarray) -> np.ndarray:
    return 1.0 / np.maximum(np.square(profile).sum(axis=1), 1e-300)


def _spread(log_profile: np.ndarray) -> float:
    return float(log_profile.std(axis=0).mean())


def check(out: np.ndarray, train: sp.csr_matrix | np.ndarray) -> Degenerate | None:
    """The first clause of the rule that ``out`` breaks, or None. ``out`` is finite and non-negative."""
    x = train.toarray() if sp.issparse(train) else np.asarray(train)
    x = x.astype(np.float64)
    out = np.asarray(out, dtype=np.float64)
    nonzero = out[out != 0]
    if nonzero.size and (nonzero.min() < FLOAT32_TINY or nonzero.max() > FLOAT32_MAX):
        bad = int(((nonzero < FLOAT32_TINY) | (nonzero > FLOAT32_MAX)).sum())
        return Degenerate("out_of_range", f"{bad} non-zero values outside the float32 normal range "
                                          f"[{FLOAT32_TINY:.2g}, {FLOAT32_MAX:.2g}] (denormal or huge)")
    out_total, out_profile = _profiles(out)
    in_total, in_profile = _profiles(x)
    lost = (in_total > 0) & (out_total == 0)
    if lost.any():
        return Degenerate("empty_cells", f"{int(lost.sum())} of {len(lost)} cells have counts in the input but "
                                         "an all-zero output")
    out_log, in_log = np.log1p(out_profile * TARGET_SUM), np.log1p(in_profile * TARGET_SUM)
    spread_in = _spread(in_log)
    if spread_in > 0 and _spread(out_log) < MIN_SPREAD_RATIO * spread_in:
        return Degenerate("no_variation", f"the output barely varies between cells (spread "
                                          f"{_spread(out_log) / spread_in:.2g} of the input's): constant output")
    cells = in_total > 0
    ratio = float(np.median(_effective_genes(out_profile[cells]) / _effective_genes(in_profile[cells])))
    if ratio < MIN_EFFECTIVE_GENES_RATIO:
        return Degenerate("concentrated", f"each cell's mass sits on a few genes (median effective number of "
                                          f"genes {ratio:.2g} of the input's)")
    observed = x > 0
    erased = float((out_log[observed] < ERASED_LOG_VALUE).mean()) if observed.any() else 0.0
    if erased > MAX_ERASED_FRACTION:
        return Degenerate("erased", f"{erased:.0%} of the entries with input molecules are zero in the output")
    return None
