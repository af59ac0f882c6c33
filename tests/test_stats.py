"""Statistics: textbook values checked by hand, and simulations (coverage, false-positive rate, power) kept to seconds.

Simulations use a fixed seed, so they are deterministic; their tolerances are about 2.5 simulation standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sia_bench.stats import (StatsError, arm_interval, clopper_pearson_interval, hierarchical_bootstrap, holm,
                             mcnemar_exact, min_detectable_difference, paired_comparison, sign_flip_test,
                             wilson_interval)


# -- known values ---------------------------------------------------------------------------------------------------
def test_wilson_six_of_sixteen_by_hand():
    # p = 0.375, z = 1.959964, z^2/n = 0.240086: centre (0.375 + 0.120043) / 1.240086 = 0.399200,
    # half-width 1.959964 * sqrt(0.375 * 0.625 / 16 + 3.841459 / 1024) / 1.240086 = 0.214388.
    # (The issue quotes [0.19, 0.61]; the lower end is 0.185: 0.19 was a rounding slip.)
    iv = wilson_interval(6, 16)
    assert iv.estimate == 0.375
    assert (round(iv.lo, 4), round(iv.hi, 4)) == (0.1848, 0.6136)
    assert wilson_interval(0, 10).lo == 0.0 and wilson_interval(0, 10).hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10).hi == 1.0


def test_clopper_pearson_by_hand():
    # 0/n: the upper end solves (1 - p)^n = 0.025, so p = 1 - 0.025^(1/n); n/n mirrors it.
    assert clopper_pearson_interval(0, 10).hi == pytest.approx(1 - 0.025 ** 0.1)
    assert clopper_pearson_interval(10, 10).lo == pytest.approx(0.025 ** 0.1)
    iv = clopper_pearson_interval(6, 16)
    assert (round(iv.lo, 4), round(iv.hi, 4)) == (0.152, 0.6457)
    wilson = wilson_interval(6, 16)
    assert iv.lo < wilson.lo and iv.hi > wilson.hi  # exact is wider


def test_mcnemar_exact_by_hand():
    # 10 discordant pairs favour A, 2 favour B: P(Bin(12, 1/2) <= 2) = (1 + 12 + 66) / 4096, doubled.
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # 6-0 is the smallest all-one-way split under 0.05


def test_sign_flip_test_agrees_with_mcnemar_and_enumeration():
    diffs = [1] * 10 + [-1] * 2 + [0] * 20  # concordant pairs are dropped
    p_grid, how = sign_flip_test(diffs, grid=1)
    assert p_grid == pytest.approx(2 * 79 / 4096) and "exact" in how
    p_enum, how = sign_flip_test(np.array(diffs) * 0.37)  # continuous values, 12 nonzero: all 4096 patterns
    assert p_enum == pytest.approx(2 * 79 / 4096) and "4096 patterns" in how
    # Grid (exact) and Monte Carlo agree on a larger problem.
    d = np.random.default_rng(0).integers(-3, 4, size=300) / 3
    p_exact, _ = sign_flip_test(d, grid=3)
    p_mc, how = sign_flip_test(d, resamples=100_000)
    assert "Monte Carlo" in how and p_mc == pytest.approx(p_exact, abs=0.006)
    assert sign_flip_test([0.0, 0.0]) == (1.0, "sign-flip, exact (no nonzero difference)")


def test_holm_on_a_known_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 0.5 x 2 = 1.0 caps, and the running max carries it
    assert holm([]) == []
    with pytest.raises(StatsError):
        holm([0.1, float("nan")])


def test_min_detectable_difference_textbook_forms():
    # Continuous: n * mdd^2 / sd^2 = (1.95996 + 0.84162)^2 = 7.849 (the "8 / delta^2" rule for a paired design).
    assert 64 * min_detectable_difference(64, sd=1.0) ** 2 == pytest.approx(7.8489, abs=1e-3)
    # 0/1 (Connor 1987): delta sqrt(n) = z_a sqrt(psi) + z_b sqrt(psi - delta^2) holds at the answer.
    n, psi = 256, 0.3
    delta = min_detectable_difference(n, discordance=psi)
    assert delta * math.sqrt(n) == pytest.approx(1.959964 * math.sqrt(psi) + 0.841621 * math.sqrt(psi - delta ** 2),
                                                 abs=1e-4)
    assert math.isnan(min_detectable_difference(16, discordance=0.0))
    assert math.isnan(min_detectable_difference(4, discordance=0.1))  # 4 instances cannot detect anything
    with pytest.raises(StatsError):
        min_detectable_difference(10)


def test_bad_input_is_a_clear_error():
    for bad in ([], [[]], [[1.0, float("nan")]], [["a"]]):
        with pytest.raises(StatsError):
            hierarchical_bootstrap(bad)
    with pytest.raises(StatsError, match="same instances"):
        paired_comparison([[1, 0, 1]], [[1, 0]])
    with pytest.raises(StatsError):
        wilson_interval(5, 3)


def test_identical_seeds_give_the_instance_bootstrap_and_one_run_gives_wilson():
    row = np.r_[np.ones(6), np.zeros(10)]
    one = arm_interval(row[None, :])
    assert one.method == "Wilson (6/16)" and (round(one.lo, 4), round(one.hi, 4)) == (0.1848, 0.6136)
    three = arm_interval(np.tile(row, (3, 1)))  # a deterministic arm: 3 seeds, identical scores
    assert three.method == "Wilson (6/16; the 3 seeds agree on every instance)" and three.lo == one.lo
    boot = hierarchical_bootstrap(np.tile(row, (3, 1)))  # the seed level adds nothing: the instance bootstrap
    assert boot.estimate == 0.375 and 0.1 < boot.lo < 0.2 and 0.55 < boot.hi < 0.65  # about 0.375 +- 1.96 x 0.121
    assert boot == hierarchical_bootstrap(np.tile(row, (3, 1)))  # seeded: the same interval every time
    varied = np.tile(row, (3, 1))
    varied[0, 0] = 0.0
    assert arm_interval(varied).method == "bootstrap over 3 seeds x 16 instances"


def test_paired_comparison_reports_test_counts_and_direction():
    a = np.r_[np.ones(10), np.zeros(2), np.ones(10), np.zeros(10)][None, :]
    b = np.r_[np.zeros(10), np.ones(2), np.ones(10), np.zeros(10)][None, :]
    c = paired_comparison(a, b)
    assert (c.a_better, c.b_better, c.n_instances) == (10, 2, 32)
    assert c.difference == pytest.approx(8 / 32) and c.lo < c.difference < c.hi
    assert c.p_value == pytest.approx(2 * 79 / 4096) and c.test.startswith("McNemar, exact")
    assert paired_comparison(b, a).difference == pytest.approx(-8 / 32)
    seeds = paired_comparison(np.tile(a, (3, 1)), np.tile(b, (2, 1)))
    assert seeds.test.startswith("sign-flip, exact") and seeds.p_value == pytest.approx(c.p_value)


# -- simulations ----------------------------------------------------------------------------------------------------
def _binomial_arm(rng, difficulty, seeds, shift=0.0):
    return (rng.random((seeds, difficulty.size)) < np.clip(difficulty + shift, 0, 1)).astype(float)


def test_wilson_coverage_near_nominal():
    rng = np.random.default_rng(1)
    for n, p in ((64, 0.2), (256, 0.5)):
        hits = [wilson_interval(int(k), n).lo <= p <= wilson_interval(int(k), n).hi
                for k in rng.binomial(n, p, size=2000)]
        assert 0.93 <= np.mean(hits) <= 0.97, (n, p, np.mean(hits))


@pytest.mark.parametrize("seeds", [1, 3])
def test_hierarchical_bootstrap_coverage_near_nominal(seeds):
    """Instances of varying difficulty (Beta(2, 3), mean 0.4), each seed an independent 0/1 draw per instance."""
    rng = np.random.default_rng(2 + seeds)
    hits = 0
    for rep in range(300):
        iv = hierarchical_bootstrap(_binomial_arm(rng, rng.beta(2, 3, size=100), seeds), resamples=1000, seed=rep)
        hits += iv.lo <= 0.4 <= iv.hi
    assert 0.92 <= hits / 300 <= 0.985


def test_paired_interval_coverage_and_test_size():
    rng = np.random.default_rng(5)
    true_gain = np.clip(rng.beta(2, 3, size=2_000_000) + 0.1, 0, 1).mean() - 0.4
    hits = 0
    for rep in range(300):
        base = rng.beta(2, 3, size=120)
        c = paired_comparison(_binomial_arm(rng, base, 3, 0.1), _binomial_arm(rng, base, 3), resamples=1000,
                              seed=rep)
        hits += c.lo <= true_gain <= c.hi
    assert 0.92 <= hits / 300 <= 0.985
    for seeds in (1, 3):  # no difference between arms: exact tests reject at most about 5% of the time
        rejected = 0
        for rep in range(800):
            base = rng.beta(2, 3, size=100)
            c = paired_comparison(_binomial_arm(rng, base, seeds), _binomial_arm(rng, base, seeds), resamples=2,
                                  seed=rep)
            rejected += c.p_value < 0.05
        assert 0.015 <= rejected / 800 <= 0.06, (seeds, rejected / 800)


def test_min_detectable_difference_has_the_stated_power():
    """At delta = MDD the exact McNemar test rejects about 80% of the time (the exact test is a little conservative)."""
    from scipy.stats import binom

    n, psi = 256, 0.3
    delta = min_detectable_difference(n, discordance=psi)
    rng = np.random.default_rng(6)
    cells = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=4000)
    a, b = cells[:, 0], cells[:, 1]
    p = np.minimum(1.0, 2 * binom.cdf(np.minimum(a, b), a + b, 0.5))
    assert 0.74 <= (p < 0.05).mean() <= 0.84
