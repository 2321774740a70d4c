"""Significance masks against scipy's Benjamini-Hochberg, and best-model shares against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from jaxenc.analysis import (
    all_significant,
    any_significant,
    best_model_shares,
    joint_best_share,
    significance_masks,
)
from jaxenc.errors import AlignmentError, ConfigError


def _p_values(rng, n=300):
    # A mix of true effects (small p) and nulls (uniform p).
    return np.where(rng.random(n) < 0.3, rng.random(n) * 1e-3, rng.random(n))


def test_significance_masks_match_scipy_bh():
    rng = np.random.default_rng(0)
    p = {"audio": _p_values(rng), "semantic": _p_values(rng), "joint": _p_values(rng)}
    masks = significance_masks(p, alpha=0.1)
    assert list(masks) == ["audio", "semantic", "joint"]
    for name, values in p.items():
        expected = false_discovery_control(values, method="bh") <= 0.1
        np.testing.assert_array_equal(masks[name], expected)
        assert masks[name].dtype == bool
    np.testing.assert_array_equal(any_significant(masks), np.logical_or.reduce(list(masks.values())))
    np.testing.assert_array_equal(all_significant(masks), np.logical_and.reduce(list(masks.values())))
    np.testing.assert_array_equal(any_significant(list(masks.values())), any_significant(masks))


def test_masks_reject_mismatched_inputs():
    with pytest.raises(AlignmentError, match="one shape"):
        significance_masks({"a": np.full(3, 0.5), "b": np.full(4, 0.5)})
    with pytest.raises(ConfigError, match="nothing given"):
        any_significant({})
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        significance_masks({"a": np.array([0.1, 1.5])})


def test_best_model_shares_and_joint_share_match_numpy():
    rng = np.random.default_rng(1)
    r2_a, r2_b, r2_ab = rng.standard_normal((3, 200))
    r2_ab[:5] = np.nan
    significant = rng.random(200) < 0.7
    winner = np.argmax(np.stack([r2_a, r2_b, r2_ab]), axis=0)
    # NaN is ignored by best_model: where only r2_ab is NaN the better of a and b wins, and
    # every significant voxel is counted.
    winner[:5] = np.argmax(np.stack([r2_a[:5], r2_b[:5]]), axis=0)
    counted = significant
    shares = best_model_shares({"a": r2_a, "b": r2_b, "ab": r2_ab}, significant)
    for i, name in enumerate(["a", "b", "ab"]):
        assert shares[name] == pytest.approx(np.mean(winner[counted] == i))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert joint_best_share(r2_a, r2_b, r2_ab, significant) == pytest.approx(shares["ab"])
    assert np.isnan(joint_best_share(r2_a, r2_b, r2_ab, np.zeros(200, bool)))
