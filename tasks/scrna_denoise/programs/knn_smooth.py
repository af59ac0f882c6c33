"""kNN smoothing (Wagner, Yan & Yanai 2018): repeatedly sum each cell's counts with its nearest neighbours.

As in the reference ``knn_smooth.py`` (v2, which OpenProblems runs with k=10): at step p, k_p = min(2^p - 1, k);
neighbours are found in the PCA space of the median-normalised, Freeman-Tukey transformed *smoothed* matrix, and
each cell becomes the sum of the *original* counts of itself and its k_p neighbours. (No distance dithering.)
"""

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors


def _freeman_tukey(x):
    libsize = x.sum(axis=1, keepdims=True)
    libsize[libsize == 0] = 1.0
    y = x / libsize * np.median(libsize)
    return np.sqrt(y) + np.sqrt(y + 1)


def denoise(counts, k=10, n_components=10):
    n_cells = counts.shape[0]
    k = max(1, min(k, n_cells - 1))
    steps = int(np.ceil(np.log2(k + 1)))
    smoothed = counts
    for step in range(1, steps + 1):
        k_step = min(2 ** step - 1, k)
        y = _freeman_tukey(smoothed)
        n_pc = max(1, min(n_components, min(y.shape) - 1))
        pcs = PCA(n_components=n_pc, svd_solver="randomized", random_state=0).fit_transform(y)
        _, idx = NearestNeighbors(n_neighbors=k_step + 1).fit(pcs).kneighbors(pcs)  # includes the cell itself
        rows = np.repeat(np.arange(n_cells), idx.shape[1])
        neighbours = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n_cells, n_cells))
        smoothed = np.asarray(neighbours @ counts)
    return smoothed
