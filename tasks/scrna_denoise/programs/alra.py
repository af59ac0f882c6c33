"""ALRA (Linderman et al. 2022): zero-preserving low-rank imputation, ported from KlugerLab/ALRA ``alra.R``.

Wrapped exactly as OpenProblems v1 runs it: sqrt of the counts, *then* library-size normalisation to 1, ALRA,
square, times the library size of the sqrt data, so the output is far below the count scale (about 0.5-2% of it);
OpenProblems' swapped Poisson loss rewards that (see metrics.py). ALRA itself: rank-k randomized SVD with k
chosen by ``choose_k`` (the last gap between successive singular values more than 6 SDs above the mean gap of
singular values 80-99); per gene, zero every value at or below |0.1% quantile|; rescale the survivors to the mean
and SD of the gene's non-zero input values; clip negatives; restore original non-zeros that were zeroed.
``n_components`` > 0 fixes k.
"""

import numpy as np
from sklearn.utils.extmath import randomized_svd


def choose_k(x, k_max=100, thresh=6.0, noise_start=80):
    k_max = min(k_max, min(x.shape) - 1)
    _, s, _ = randomized_svd(x, n_components=k_max, n_iter=2, random_state=0)
    diffs = s[:-1] - s[1:]
    start = min(noise_start, max(len(diffs) - 3, 0))
    tail = diffs[start - 1:len(diffs) - 1]  # R: diffs[noise_start:(length(diffs)-1)], 1-based
    sd = tail.std(ddof=1) if tail.size > 1 else 0.0
    if sd == 0:
        return max(1, min(10, len(s)))
    above = np.nonzero((diffs - tail.mean()) / sd > thresh)[0]
    return int(above.max() + 1) if above.size else 1


def _nonzero_mean_sd(m):
    nz = m != 0
    n = nz.sum(axis=0)
    safe = np.maximum(n, 1)
    mean = np.where(nz, m, 0).sum(axis=0) / safe
    var = (np.where(nz, m - mean, 0) ** 2).sum(axis=0) / np.maximum(n - 1, 1)
    sd = np.sqrt(var)
    sd[n < 2] = np.nan
    return mean, sd


def alra(x, k, quantile_prob=0.001):
    u, s, vt = randomized_svd(x, n_components=k, n_iter=10, random_state=0)
    low = (u * s) @ vt
    mins = np.abs(np.quantile(low, quantile_prob, axis=0))
    low[low <= mins] = 0.0
    mu1, sd1 = _nonzero_mean_sd(low)
    mu2, sd2 = _nonzero_mean_sd(x)
    ok = ~np.isnan(sd1) & ~np.isnan(sd2) & ~((sd1 == 0) & (sd2 == 0)) & (sd1 != 0)
    ratio = np.where(ok, sd2 / np.where(ok, sd1, 1.0), 1.0)
    shift = np.where(ok, mu2 - mu1 * ratio, 0.0)
    zero = low == 0
    out = low * ratio + shift
    out[zero] = 0.0
    out[out < 0] = 0.0
    restore = (x > 0) & (out == 0)
    out[restore] = x[restore]
    return out


def denoise(counts, n_components=0):
    root = np.sqrt(counts)
    libsize = root.sum(axis=1, keepdims=True)
    libsize[libsize == 0] = 1.0
    x = root / libsize
    k = n_components if n_components and n_components > 0 else choose_k(x)
    k = max(1, min(k, min(x.shape) - 1))
    y = alra(x, k)
    return np.square(y) * libsize
