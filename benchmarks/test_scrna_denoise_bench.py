"""scrna_denoise performance: the MCV split plus both metrics on mouse10k, against a straightforward scanpy-based
implementation measured in the same run, and the baselines' run times.

Run: ``pytest benchmarks/test_scrna_denoise_bench.py --benchmark-enable -p no:cacheprovider -s``
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from sia_bench.task import TaskError
from tasks.scrna_denoise import data as scdata
from tasks.scrna_denoise import metrics


@pytest.fixture(scope="module")
def mouse10k():
    """From ../shared/data, else the cache, else fetched from the scanpy sdist (verified by checksum)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return scdata.drop_empty(scdata.load_mouse10k()).counts
        except TaskError as err:
            pytest.skip(f"mouse10k unavailable: {err}")


def ours(counts, seed=0):
    train, test, _ = scdata.mcv_split(counts, seed)
    den = train  # no denoising: the metric cost does not depend on the method
    return metrics.mse(test, den), metrics.poisson(train, test, den), metrics.poisson_openproblems(train, test, den)


def scanpy_reference(counts, seed=0):
    """The OpenProblems code path: dense RandomState binomial, AnnData + sc.pp.normalize_total/log1p, sklearn MSE."""
    import anndata
    import scanpy as sc
    import sklearn.metrics

    x = counts.toarray()
    rng = np.random.RandomState(seed)
    train = rng.binomial(x, 0.9)
    test = x - train
    keep = train.sum(axis=0) > 0
    train, test = train[:, keep].astype(np.float64), test[:, keep].astype(np.float64)
    den = train
    t, d = anndata.AnnData(test.copy()), anndata.AnnData(den.copy())
    for a in (t, d):
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    mse = sklearn.metrics.mean_squared_error(t.X, d.X)
    scaled = den * test.sum() / train.sum()
    swapped = np.mean(test - scaled * np.log(test + 1e-6))
    corrected = np.mean(scaled - test * np.log(scaled + 1e-6))
    return mse, corrected, swapped


def test_split_and_metrics_speed(benchmark, mouse10k):
    import scanpy  # noqa: F401 - import cost kept out of the timing

    start = time.perf_counter()
    reference = scanpy_reference(mouse10k)
    reference_s = time.perf_counter() - start
    result = benchmark.pedantic(ours, args=(mouse10k,), rounds=3, iterations=1)
    ours_s = benchmark.stats.stats.mean if benchmark.stats else None
    if ours_s is None:  # benchmark disabled: time one call
        start = time.perf_counter()
        ours(mouse10k)
        ours_s = time.perf_counter() - start
    print(f"\nmouse10k {mouse10k.shape}: split+3 metrics ours {ours_s:.3f} s, scanpy-based {reference_s:.3f} s, "
          f"ratio {reference_s / ours_s:.1f}x")
    # Different random streams, same distribution: the losses agree closely but not exactly.
    assert np.allclose(result, reference, rtol=0.02)
    assert ours_s < 1.0


def test_metrics_equal_scanpy_on_the_same_split(mouse10k):
    """With the same split, our MSE equals the scanpy/sklearn computation to float precision."""
    import anndata
    import scanpy as sc
    import sklearn.metrics

    train, test, _ = scdata.mcv_split(mouse10k, 0)
    den = train.toarray() * np.random.default_rng(0).random(train.shape)
    t, d = anndata.AnnData(test.toarray().astype(np.float64)), anndata.AnnData(den.copy())
    for a in (t, d):
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    assert metrics.mse(test, den) == pytest.approx(sklearn.metrics.mean_squared_error(t.X, d.X), rel=1e-9)


@pytest.mark.parametrize("name", ["no_denoise", "sqrt_pca", "knn_smooth", "magic", "alra"])
def test_baseline_times(name, mouse10k, tmp_path, monkeypatch):
    from baselines.scrna_denoise import BASELINES
    from tasks.scrna_denoise.task import ScrnaDenoiseTask

    monkeypatch.setenv("SIA_BENCH_CACHE", str(tmp_path))
    task = ScrnaDenoiseTask(dataset="mouse10k")
    inst = task.split("val")
    start = time.perf_counter()
    score = task.score(inst[0], BASELINES[name].predict(task, inst)[0])
    seconds = time.perf_counter() - start
    print(f"\n{name} (mouse10k {inst[0].id}, {inst[0].input['n_cells']} cells): mse_norm {score.value:.4f} "
          f"poisson_norm {score.details['poisson_norm']:.4f} program {score.details.get('program_seconds', 0):.1f} s, "
          f"scored in {seconds:.1f} s")
    assert score.details["failure"] is None
