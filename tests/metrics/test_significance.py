"""Block permutation test and Benjamini-Hochberg against direct numpy / scipy computations."""

import numpy as np
import pytest
import scipy.stats
from numpy.testing import assert_allclose, assert_array_equal

from jaxenc.errors import ConfigError
from jaxenc.metrics import block_permutations, fdr_bh, permutation_test
from tests._tolerance import U32, correlation_atol


def test_block_permutations_move_whole_blocks():
    n, size = 53, 10  # last block holds 3 TRs
    orders = np.asarray(block_permutations(n, 20, block_size=size, seed=3))
    assert orders.shape == (20, n)
    for order in orders:
        assert_array_equal(np.sort(order), np.arange(n))
        # Inside a block TRs stay consecutive: a TR that does not open a block follows its
        # predecessor.
        inner = order % size != 0
        assert_array_equal(order[1:][inner[1:]], order[:-1][inner[1:]] + 1)
        assert order[0] % size == 0
    assert len({tuple(o) for o in orders}) > 15  # the permutations differ


# One shape and one set of static arguments for every permutation test below, so JAX compiles
# the test once. 99 permutations in batches of 32 leave a padded batch.
N_TRS, N_VOXELS, N_PERM = 100, 1000, 99


def null_data(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_TRS, N_VOXELS)), rng.standard_normal((N_TRS, N_VOXELS))


def test_p_values_match_numpy_over_the_same_permutations():
    y_true, noise = null_data(0)
    y_pred = 0.2 * y_true + noise
    orders = np.asarray(block_permutations(N_TRS, N_PERM, block_size=10, seed=11))

    def corr(a, b):  # Pearson r per column, from z-scores
        return np.mean(scipy.stats.zscore(a) * scipy.stats.zscore(b), axis=0)

    observed = corr(y_true, y_pred)
    null = np.array([corr(y_true, y_pred[o]) for o in orders])
    # jaxenc compares float32 correlations, each within correlation_atol of these (7e-6 for a
    # difference of two): a null r that close to the observed one may count either way on some
    # machine, so the expected p is the range those pairs allow; it pins all but a few voxels
    # (pairs 3e-6 apart do occur among these 99,000) to one count, and an off-by-one in the count
    # or the wrong tail moves p by 1 / (N_PERM + 1) = 0.01 at every voxel.
    margin = correlation_atol(N_TRS, computations=2)
    for alternative, null_stat, observed_stat in [
        ("greater", null, observed),
        ("two-sided", np.abs(null), np.abs(observed)),
    ]:
        lowest = (1 + (null_stat >= observed_stat + margin).sum(axis=0)) / (1 + N_PERM)
        highest = (1 + (null_stat >= observed_stat - margin).sum(axis=0)) / (1 + N_PERM)
        assert np.mean(lowest < highest) < 0.01
        got = np.asarray(permutation_test(y_true, y_pred, N_PERM, block_size=10, seed=11, alternative=alternative))
        # p = (1 + count) / (1 + N_PERM) in float32: a division, which XLA may compute as a
        # product with the reciprocal, two roundings.
        assert np.all((got >= lowest * (1 - 2 * U32)) & (got <= highest * (1 + 2 * U32))), alternative


def test_null_p_values_are_roughly_uniform():
    # 1000 independent null voxels: P(p <= 0.05) = 0.05; the fraction lies in 0.05 +- 0.02
    # (about 3 binomial SDs).
    y_true, y_pred = null_data(1)
    p = np.asarray(permutation_test(y_true, y_pred, N_PERM, block_size=10, seed=2))
    assert 0.03 <= np.mean(p <= 0.05) <= 0.07
    assert 0.4 <= np.median(p) <= 0.6
    assert p.min() >= 1 / (N_PERM + 1) and p.max() <= 1


def test_strong_signal_reaches_the_smallest_p_value():
    y_true, noise = null_data(2)
    y_pred = y_true + 0.3 * noise
    p = permutation_test(y_true, y_pred, N_PERM)
    assert_allclose(p, 1 / (N_PERM + 1))
    # A strong negative correlation is significant two-sided only.
    assert np.all(np.asarray(permutation_test(y_true, -y_pred, N_PERM)) == 1.0)
    two = permutation_test(y_true, -y_pred, N_PERM, alternative="two-sided")
    assert_allclose(two, 1 / (N_PERM + 1))


def test_constant_and_nan_voxels():
    y_true, _ = null_data(3)
    y_pred = y_true.copy()
    y_pred[:, 0] = 1.0
    y_true[5, 1] = np.nan
    p = np.asarray(permutation_test(y_true, y_pred, N_PERM))
    assert p[0] == 1.0
    assert np.isnan(p[1])
    assert_allclose(p[2:], 1 / (N_PERM + 1))


def test_fdr_bh_matches_scipy_and_step_up_rule():
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(0, 1, 400), rng.uniform(0, 0.002, 100)])
    p[:3] = p[3]  # ties
    rejected, adjusted = fdr_bh(p, alpha=0.05)
    # p rounded to float32, times m, divided by j (a product with the reciprocal: two roundings):
    # 4 u; the cumulative minimum is exact. A rank off by one moves adjusted p by 1 / m = 2e-3.
    assert_allclose(adjusted, scipy.stats.false_discovery_control(p, method="bh"), rtol=4 * U32)
    # Step-up: reject the i smallest, i the largest rank with p_(i) <= i alpha / m.
    m = p.size
    sorted_p = np.sort(p)
    passing = np.nonzero(sorted_p <= np.arange(1, m + 1) * 0.05 / m)[0]
    threshold = sorted_p[passing[-1]]
    assert_array_equal(rejected, p <= threshold)


def test_fdr_bh_ignores_nan():
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.05, 50)
    with_nan = np.insert(p, [3, 20], np.nan)
    rejected, adjusted = fdr_bh(with_nan)
    keep = ~np.isnan(with_nan)
    assert_allclose(np.asarray(adjusted)[keep], scipy.stats.false_discovery_control(p), rtol=4 * U32)
    assert np.all(np.isnan(np.asarray(adjusted)[~keep]))
    assert not np.any(np.asarray(rejected)[~keep])


def test_bad_arguments():
    y = np.random.default_rng(6).standard_normal((30, 2))
    with pytest.raises(ConfigError, match="block"):
        permutation_test(y, y, block_size=30)
    with pytest.raises(ConfigError, match="n_permutations"):
        permutation_test(y, y, n_permutations=0)
    with pytest.raises(ConfigError, match="alternative"):
        permutation_test(y, y, alternative="less")
    with pytest.raises(ConfigError, match="alpha"):
        fdr_bh(np.array([0.1]), alpha=1.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        fdr_bh(np.array([0.1, 1.2]))
