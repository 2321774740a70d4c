"""variance_partition and best_model on constructed r2 values.

The parts are float32 sums and differences of the r2 values: each input rounds to float32 and
each addition rounds once, every rounding within ``u`` of the largest magnitude involved, so a
part of k terms is within ``(2k - 1) u max|r2|`` of the float64 one (``rounding``). A part that
takes the wrong operand is off by 0.05 or more here.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score as sk_r2

from jaxenc.errors import AlignmentError
from jaxenc.metrics import (
    NOT_SIGNIFICANT,
    SHARED,
    UNIQUE_A,
    UNIQUE_B,
    best_model,
    variance_partition,
)
from tests._tolerance import U32


def rounding(roundings, *values):
    """``roundings`` float32 roundings, each within ``u`` of the largest of ``values``."""
    return roundings * U32 * max(float(np.nanmax(np.abs(v))) for v in values)


def test_parts_and_best_part_on_constructed_values():
    #            a-heavy  b-heavy  shared  nan      not sig.  synergy
    r2_a = np.array([0.30, 0.10, 0.30, np.nan, 0.30, 0.05])
    r2_b = np.array([0.10, 0.30, 0.30, 0.20, 0.10, 0.05])
    r2_ab = np.array([0.35, 0.35, 0.35, 0.30, 0.35, 0.30])
    significant = np.array([True, True, True, True, False, True])
    part = variance_partition(r2_a, r2_b, r2_ab, significant)
    atol = rounding(5, r2_a, r2_b, r2_ab)  # the shared part: 3 inputs, 2 additions
    assert_allclose(part.unique_a, r2_ab - r2_b, atol=atol)
    assert_allclose(part.unique_b, r2_ab - r2_a, atol=atol)
    assert_allclose(part.shared, r2_a + r2_b - r2_ab, atol=atol)
    assert_allclose(part.shared[:3], [0.05, 0.05, 0.25], atol=atol)
    assert_allclose(part.shared[5], -0.2, atol=atol)  # interaction: negative shared
    assert_array_equal(
        part.best_part, [UNIQUE_A, UNIQUE_B, SHARED, NOT_SIGNIFICANT, NOT_SIGNIFICANT, UNIQUE_A]
    )
    # Significant voxels with defined parts: 0, 1, 2, 5; one of them is best explained jointly.
    assert float(part.joint_fraction) == pytest.approx(1 / 4)


def test_parts_sum_to_joint_r2():
    rng = np.random.default_rng(0)
    r2_a, r2_b = rng.uniform(0, 0.3, 100), rng.uniform(0, 0.3, 100)
    r2_ab = np.maximum(r2_a, r2_b) + rng.uniform(0, 0.1, 100)
    part = variance_partition(r2_a, r2_b, r2_ab)
    # Three float32 parts (3 + 3 + 5 roundings) added in float32 (2 more).
    atol = rounding(13, r2_a, r2_b, r2_ab)
    assert_allclose(part.unique_a + part.unique_b + part.shared, r2_ab, atol=atol)
    assert_allclose(part.unique_a + part.shared, r2_a, atol=atol)
    expected_best = np.argmax(np.stack([r2_ab - r2_b, r2_ab - r2_a, r2_a + r2_b - r2_ab]), axis=0)
    assert_array_equal(part.best_part, expected_best)
    assert float(part.joint_fraction) == pytest.approx(np.mean(expected_best == SHARED))


def test_partition_of_planted_regression():
    # y = a-only + b-only + common source; linear fits recover the planted variances:
    # unique_a ~ 0.2, unique_b ~ 0.1, shared ~ 0.3 of var(y) = 1.
    rng = np.random.default_rng(1)
    n = 20000
    only_a, only_b, common, noise = rng.standard_normal((4, n))
    feats_a = np.stack([only_a, common], axis=1)
    feats_b = np.stack([only_b, common], axis=1)
    y = np.sqrt(0.2) * only_a + np.sqrt(0.1) * only_b + np.sqrt(0.3) * common + np.sqrt(0.4) * noise
    train, test = slice(0, n // 2), slice(n // 2, n)

    def held_out_r2(x):
        model = LinearRegression().fit(x[train], y[train])
        return np.array([sk_r2(y[test], model.predict(x[test]))])

    part = variance_partition(
        held_out_r2(feats_a), held_out_r2(feats_b), held_out_r2(np.hstack([feats_a, feats_b]))
    )
    parts = [part.unique_a[0], part.unique_b[0], part.shared[0]]
    # 0.03: a statistical margin (sampling error of held-out r2 over 10,000 rows), not rounding.
    assert_allclose(parts, [0.2, 0.1, 0.3], atol=0.03)
    assert int(part.best_part[0]) == SHARED


def test_best_model():
    scores = np.array(
        [
            [0.1, 0.5, np.nan, 0.2, 0.3, np.nan],
            [0.2, 0.4, 0.1, 0.2, 0.1, np.nan],
            [0.3, 0.1, np.nan, 0.1, 0.2, np.nan],
        ]
    )
    significant = np.array([True, True, True, True, False, True])
    assert_array_equal(
        best_model(scores, significant), [2, 0, 1, 0, NOT_SIGNIFICANT, NOT_SIGNIFICANT]
    )
    assert_array_equal(best_model(list(scores[:, :4])), [2, 0, 1, 0])


def test_shape_errors():
    with pytest.raises(AlignmentError, match="r2_ab"):
        variance_partition(np.zeros(3), np.zeros(3), np.zeros(4))
    with pytest.raises(AlignmentError, match="significant"):
        variance_partition(np.zeros(3), np.zeros(3), np.zeros(3), np.ones(2, bool))
    with pytest.raises(AlignmentError, match="n_models, n_voxels"):
        best_model(np.zeros(3))
    with pytest.raises(AlignmentError, match="different shapes"):
        best_model([np.zeros(3), np.zeros(4)])
