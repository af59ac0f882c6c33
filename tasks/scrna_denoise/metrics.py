"""OpenProblems v1 denoising metrics (MSE and Poisson), written in numpy so that scoring is fast and exact.

Reference: openproblems-bio/openproblems v1, ``openproblems/tasks/denoising/metrics/{mse,poisson}.py`` (last v1
versions), and ``molecular_cross_validation.mcv_sweep.poisson_nll_loss`` (Batson et al. 2019):

- MSE: ``sc.pp.normalize_total(X, 10000)`` on the held-out test counts and on the denoised output separately, then
  ``log1p``, then ``sklearn.metrics.mean_squared_error`` (the mean over every cell and gene). Early v1 versions used
  ``median(test row sums)`` as the target sum instead of 10,000; ``target_sum`` lets you reproduce that.
- Poisson: ``denoised * test.sum() / train.sum()``, then ``poisson_nll_loss(test, denoised)``, where the loss is
  defined as ``poisson_nll_loss(y_pred, y_true) = mean(y_pred - y_true * log(y_pred + 1e-6))``. OpenProblems passes
  the *test counts* as ``y_pred`` and the *denoised values* as ``y_true``: the arguments are swapped. We compute that
  convention (``poisson_openproblems``, what the OpenProblems v1 leaderboard reported) and the corrected
  likelihood of the test counts under the denoised rates (``poisson``).

Perfect control: OpenProblems' "perfect denoising" returns the held-out counts themselves. For MSE (per-cell
normalised) the scale is irrelevant; for the corrected Poisson loss the held-out counts must first be put on the
training scale (``test * train.sum() / test.sum()``) so that, after the metric's own rescaling, the rates equal the
held-out counts, the loss's true minimum. :func:`perfect_losses` does that; the OpenProblems convention keeps the
unscaled held-out counts, exactly as OpenProblems scored its perfect method.

All losses are lower-is-better. :func:`normalised` turns a loss into the OpenProblems-style score
``(no_denoise - method) / (no_denoise - perfect)``: 1 for the perfect control, 0 for no denoising.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4
EPS = 1e-6


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _prepare(x):
    """float64 CSR for sparse input, float64 ndarray otherwise."""
    return x.tocsr().astype(np.float64) if sp.issparse(x) else np.asarray(x, dtype=np.float64)


def _nonzero(x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the stored entries of a CSR matrix."""
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    return rows, x.indices, x.data


def _gather(m, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    if rows.size == 0:  # scipy's fancy indexing with no indices returns a sparse matrix, not an empty array
        return np.zeros(0)
    return np.asarray(m[rows, cols]).ravel()


def log_normalise(x, target_sum: float = TARGET_SUM):
    """Scale every cell (row) to ``target_sum`` and log1p, as scanpy's normalize_total + log1p do.

    Rows that sum to zero stay zero (scanpy divides them by 1), so empty cells never produce NaN. Sparse input stays
    sparse (log1p(0) = 0), so scoring costs O(non-zeros) for sparse matrices.
    """
    x = _prepare(x)
    sums = np.asarray(x.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0  # scanpy: counts += counts == 0
    factors = target_sum / sums
    if sp.issparse(x):
        out = x.copy()
        out.data *= np.repeat(factors, np.diff(out.indptr))
        np.log1p(out.data, out=out.data)
        return out
    out = x * factors[:, None]
    return np.log1p(out, out=out)


def _sum_squared_difference(a, b) -> float:
    if sp.issparse(a) and sp.issparse(b):
        return float(np.square((a - b).data).sum())
    if not sp.issparse(a) and not sp.issparse(b):
        d = (a - b).ravel()
        return float(d @ d)
    if sp.issparse(b):
        a, b = b, a
    flat = b.ravel()  # a is sparse, b dense: sum(b^2) + sum over a's entries of (a^2 - 2ab)
    rows, cols, values = _nonzero(a)
    return float(flat @ flat + (values * (values - 2 * b[rows, cols])).sum())


def mse(test, denoised, target_sum: float = TARGET_SUM) -> float:
    """OpenProblems MSE: mean squared difference of the log-normalised test counts and denoised output."""
    a, b = log_normalise(test, target_sum), log_normalise(denoised, target_sum)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: test {a.shape}, denoised {b.shape}")
    return _sum_squared_difference(a, b) / float(np.prod(a.shape))


def poisson_nll_loss(y_pred, y_true) -> float:
    """``molecular_cross_validation.mcv_sweep.poisson_nll_loss``: ``mean(y_pred - y_true * log(y_pred + 1e-6))``.

    The dense reference formula; the scorers below compute the same sums over non-zeros only.
    """
    y_pred, y_true = _dense(y_pred), _dense(y_true)
    return float(np.mean(y_pred - y_true * np.log(y_pred + EPS)))


def _scale(train, test) -> float:
    """``test.sum() / train.sum()``: OpenProblems scales the denoised output by this before the Poisson loss."""
    train_sum, test_sum = float(train.sum()), float(test.sum())
    if train_sum <= 0:
        raise ValueError("training counts sum to zero; Poisson scaling is undefined")
    return test_sum / train_sum


def poisson_openproblems(train, test, denoised) -> float:
    """The OpenProblems v1 convention: ``poisson_nll_loss(test, scaled_denoised)``, arguments swapped.

    ``mean(test - s*den*log(test + eps))``; where test is 0 the log is the constant log(eps).
    """
    s, test, den = _scale(train, test), sp.csr_matrix(test, dtype=np.float64), _prepare(denoised)
    rows, cols, values = _nonzero(test)
    log_eps = np.log(EPS)
    den_total = float(den.sum())
    weighted = log_eps * den_total + (_gather(den, rows, cols) * (np.log(values + EPS) - log_eps)).sum()
    return float((values.sum() - s * weighted) / np.prod(test.shape))


def poisson(train, test, denoised) -> float:
    """The corrected Poisson NLL of the test counts given the scaled denoised rates (constant log(k!) dropped).

    ``mean(s*den - test*log(s*den + eps))``: the log is needed only where the test counts are non-zero.
    """
    s, test, den = _scale(train, test), sp.csr_matrix(test, dtype=np.float64), _prepare(denoised)
    rows, cols, values = _nonzero(test)
    total = s * float(den.sum()) - (values * np.log(s * _gather(den, rows, cols) + EPS)).sum()
    return float(total / np.prod(test.shape))


def all_losses(train, test, denoised, target_sum: float = TARGET_SUM) -> dict[str, float]:
    return {"mse": mse(test, denoised, target_sum), "poisson": poisson(train, test, denoised),
            "poisson_openproblems": poisson_openproblems(train, test, denoised)}


def perfect_losses(train, test, target_sum: float = TARGET_SUM) -> dict[str, float]:
    """Losses of the perfect control (see the module docstring for the per-metric scaling)."""
    on_train_scale = sp.csr_matrix(test, dtype=np.float64) * (float(train.sum()) / max(float(test.sum()), 1e-12))
    return {"mse": mse(test, test, target_sum), "poisson": poisson(train, test, on_train_scale),
            "poisson_openproblems": poisson_openproblems(train, test, test)}


def normalised(loss: float, null: float, perfect: float) -> float:
    """``(null - loss) / (null - perfect)``: 1 = perfect control, 0 = no denoising; NaN when they coincide."""
    if not np.isfinite(loss) or null == perfect:
        return float("nan")
    return float((null - loss) / (null - perfect))
