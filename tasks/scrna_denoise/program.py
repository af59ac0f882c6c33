"""Square-root PCA denoiser: library-size normalise, sqrt, keep the top principal components, map back to counts.

Contract: ``denoise(counts)`` gets a dense float64 array (cells x genes, raw UMI counts of the training molecules)
and returns a non-negative, finite array of the same shape on the count scale. Keyword arguments that the harness
parameters name (n_components, k, t) are filled in when the function declares them.
"""

import numpy as np
from sklearn.utils.extmath import randomized_svd


def denoise(counts, n_components=30):
    libsize = counts.sum(axis=1, keepdims=True)
    libsize[libsize == 0] = 1.0
    scale = np.median(libsize)
    x = np.sqrt(counts / libsize * scale)  # variance-stabilised expression
    mean = x.mean(axis=0)
    k = max(1, min(n_components, min(x.shape) - 1))
    u, s, vt = randomized_svd(x - mean, n_components=k, random_state=0)
    smooth = (u * s) @ vt + mean
    smooth = np.clip(smooth, 0, None) ** 2  # back from the sqrt scale
    return smooth / scale * libsize
