"""Shared fixtures: a private cache directory, small synthetic count matrices written by the tests, and mouse10k."""

import numpy as np
import pytest

from sia_bench.task import TaskError
from tasks.scrna_denoise import data as scdata


@pytest.fixture(scope="session")
def mouse10k_store():
    """mouse10k's zarr store: ``../shared/data`` when present, else the user's cache, else fetched into that cache
    from the scanpy sdist (pip). Skips only when none of these works (e.g. no package registry)."""
    shared = scdata.data_dir() / "scrna_denoise" / scdata.MOUSE10K_NAME
    if (shared / "X").exists():
        return shared
    try:
        return scdata.mouse10k_path()  # resolved before any test points SIA_BENCH_CACHE at a temporary folder
    except TaskError as err:
        pytest.skip(f"mouse10k is neither in {shared} nor fetchable: {err}")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Split files and fetched data go to a temporary cache, never to the user's."""
    monkeypatch.setenv("SIA_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def low_rank_counts(n_cells=80, n_genes=50, rank=3, depth=400, seed=0):
    """Poisson counts from a rank-``rank`` rate matrix: real structure for a denoiser to find."""
    rng = np.random.default_rng(seed)
    programs = rng.gamma(0.6, 1.0, size=(rank, n_genes))
    loadings = rng.dirichlet(np.full(rank, 0.3), size=n_cells)
    rates = loadings @ programs
    rates /= rates.sum(axis=1, keepdims=True)
    libsize = rng.lognormal(np.log(depth), 0.3, size=(n_cells, 1))
    return rng.poisson(rates * libsize).astype(np.float32)


@pytest.fixture
def counts():
    return low_rank_counts()


@pytest.fixture
def h5ad_path(tmp_path, counts):
    import anndata

    path = tmp_path / "tiny.h5ad"
    anndata.AnnData(counts).write_h5ad(path)
    return path
