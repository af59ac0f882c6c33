"""The OpenProblems denoising metrics against values computed by hand on tiny arrays."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from tasks.scrna_denoise import metrics
from tasks.scrna_denoise.data import mcv_split, to_counts


def test_log_normalise_by_hand():
    x = np.array([[1.0, 3.0], [0.0, 0.0]])
    out = metrics.log_normalise(x, target_sum=4)
    assert out[0] == pytest.approx([math.log(2), math.log(4)])
    assert out[1].tolist() == [0.0, 0.0]  # an empty cell stays zero, never NaN


def test_mse_by_hand():
    test = np.array([[1.0, 1.0], [2.0, 0.0]])
    den = np.array([[3.0, 1.0], [1.0, 1.0]])
    # target 10: test -> [[5,5],[10,0]], den -> [[7.5,2.5],[5,5]]
    expected = np.mean([(math.log(6) - math.log(8.5)) ** 2, (math.log(6) - math.log(3.5)) ** 2,
                        (math.log(11) - math.log(6)) ** 2, (0 - math.log(6)) ** 2])
    assert metrics.mse(test, den, target_sum=10) == pytest.approx(expected)
    assert metrics.mse(sp.csr_matrix(test), den, target_sum=10) == pytest.approx(expected)
    assert metrics.mse(test, test) == 0.0


def test_poisson_both_conventions_by_hand():
    train = np.array([[2.0, 2.0]])  # sum 4
    test = np.array([[1.0, 0.0]])   # sum 1 -> denoised scaled by 1/4
    den = np.array([[2.0, 4.0]])    # scaled -> [0.5, 1.0]
    corrected = np.mean([0.5 - 1.0 * math.log(0.5 + 1e-6), 1.0 - 0.0])
    swapped = np.mean([1.0 - 0.5 * math.log(1.0 + 1e-6), 0.0 - 1.0 * math.log(0.0 + 1e-6)])
    assert metrics.poisson(train, test, den) == pytest.approx(corrected)
    assert metrics.poisson_openproblems(train, test, den) == pytest.approx(swapped)
    assert metrics.poisson_nll_loss([2.0], [3.0]) == pytest.approx(2.0 - 3.0 * math.log(2.0 + 1e-6))


def test_poisson_rejects_empty_training_counts():
    with pytest.raises(ValueError, match="sum to zero"):
        metrics.poisson(np.zeros((1, 2)), np.ones((1, 2)), np.ones((1, 2)))


def test_normalised_controls():
    assert metrics.normalised(3.0, null=3.0, perfect=1.0) == 0.0
    assert metrics.normalised(1.0, null=3.0, perfect=1.0) == 1.0
    assert metrics.normalised(2.5, null=3.0, perfect=1.0) == pytest.approx(0.25)
    assert math.isnan(metrics.normalised(1.0, null=2.0, perfect=2.0))
    assert math.isnan(metrics.normalised(float("nan"), null=3.0, perfect=1.0))


def test_perfect_scores_one_and_no_denoise_zero_on_a_real_split(counts):
    train, test, _ = mcv_split(to_counts(counts), seed=0)
    null = metrics.all_losses(train, test, train)
    perfect = metrics.perfect_losses(train, test)
    for name in null:
        assert metrics.normalised(perfect[name], null[name], perfect[name]) == 1.0
        assert metrics.normalised(null[name], null[name], perfect[name]) == 0.0
    assert perfect["mse"] == 0.0 < null["mse"]
    assert perfect["poisson"] < null["poisson"]  # the truth is more likely than the noisy input
    assert perfect["poisson_openproblems"] < null["poisson_openproblems"]


def test_corrected_poisson_perfect_is_the_minimum(counts):
    """No output beats the perfect control on the corrected loss (rates equal to the counts minimise it)."""
    train, test, _ = mcv_split(to_counts(counts), seed=1)
    best = metrics.perfect_losses(train, test)["poisson"]
    rng = np.random.default_rng(0)
    for candidate in (train.toarray(), train.toarray() * 3, rng.random(train.shape), test.toarray() + 0.5):
        assert metrics.poisson(train, test, candidate) >= best


@pytest.mark.parametrize("sparse_test, sparse_den", [(True, False), (True, True), (False, False), (False, True)])
def test_fast_paths_equal_the_dense_formulas(counts, sparse_test, sparse_den):
    """The O(non-zeros) scorers agree with the plain dense formulas for every sparse/dense combination."""
    train, test, _ = mcv_split(to_counts(counts), seed=2)
    rng = np.random.default_rng(0)
    den = train.toarray() * rng.random(train.shape) + (rng.random(train.shape) < 0.1)
    den[0] = 0.0  # an empty output cell
    t = test if sparse_test else test.toarray()
    d = sp.csr_matrix(den) if sparse_den else den
    dense_test, scale = test.toarray().astype(float), test.sum() / train.sum()

    def lognorm(x):
        sums = x.sum(axis=1, keepdims=True)
        sums[sums == 0] = 1
        return np.log1p(x / sums * 1e4)

    assert metrics.mse(t, d) == pytest.approx(np.mean((lognorm(dense_test) - lognorm(den)) ** 2), rel=1e-10)
    assert metrics.poisson(train, t, d) == pytest.approx(metrics.poisson_nll_loss(den * scale, dense_test), rel=1e-10)
    assert metrics.poisson_openproblems(train, t, d) == pytest.approx(
        metrics.poisson_nll_loss(dense_test, den * scale), rel=1e-10)


def test_empty_held_out_counts_give_finite_losses():
    """Issue 17: a held-out part with no molecules crashed the Poisson scorers (NotImplementedError)."""
    train, test = sp.csr_matrix(np.array([[1.0, 2.0], [3.0, 0.0]])), sp.csr_matrix((2, 2))
    for den in (train, train.toarray()):
        losses = metrics.all_losses(train, test, den)
        assert all(np.isfinite(v) for v in losses.values()) and losses["poisson"] == 0.0
