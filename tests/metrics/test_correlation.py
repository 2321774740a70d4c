"""pearson_r and r2_score against scipy and scikit-learn on the same data.

The float32 results are compared within ``tolerance`` (derived from float32 rounding below),
not a number read off one machine.
"""

import jax
import numpy as np
import pytest
import scipy.stats
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import r2_score as sk_r2

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import pearson_r, r2_score
from tests._tolerance import correlation_atol


def responses(n=120, v=30, seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.standard_normal((n, v)) * rng.uniform(0.5, 3, v) + rng.normal(0, 20, v)
    y_pred = 0.6 * y_true + rng.standard_normal((n, v)) * 2 + rng.normal(0, 5, v)
    return y_true, y_pred


def tolerance(y_true, y_pred) -> float:
    """Float32 bound on r or r2 of these columns against a float64 reference.

    ``correlation_atol``: three centred sums of n rows, the centring costing ``u * rms / std``
    (the columns' offsets reach 100 times their spread here, so about 1e-5; the uncentred
    one-pass formula would err by ``u * (rms / std)^2``, about 1e-3, and a ddof or centring bug
    by 1e-2 or more). r2 = 1 - SS_res / SS_tot carries the same relative errors on the ratio,
    so ``|1 - r2| <= 1 + |r2|`` scales them: the same bound as ``atol`` and ``rtol``.
    """
    both = np.concatenate([y_true, y_pred], axis=1) if y_true.ndim == 2 else np.stack([y_true, y_pred], 1)
    spread = both.std(axis=0)
    live = spread > 0  # a constant column (a mean prediction) centres to no rounding that matters
    rms_over_std = float(np.max(np.sqrt(np.mean(both[:, live] ** 2, axis=0)) / spread[live]))
    return correlation_atol(len(y_true), rms_over_std)


def test_pearson_r_matches_scipy_per_column():
    y_true, y_pred = responses()
    expected = [scipy.stats.pearsonr(t, p).statistic for t, p in zip(y_true.T, y_pred.T, strict=True)]
    assert_allclose(pearson_r(y_true, y_pred), expected, atol=tolerance(y_true, y_pred))


def test_r2_matches_sklearn_raw_values():
    y_true, y_pred = responses(seed=1)
    y_pred[:, 0] = y_true[:, 0].mean()  # a mean prediction scores exactly 0
    y_pred[:, 1] = -y_true[:, 1]  # strongly negative r2
    expected = sk_r2(y_true, y_pred, multioutput="raw_values")
    bound = tolerance(y_true, y_pred)
    assert_allclose(r2_score(y_true, y_pred), expected, rtol=bound, atol=bound)


def test_constant_columns():
    y_true, y_pred = responses(v=4, seed=2)
    y_true[:, 0] = 3.0  # dead voxel, imperfect prediction
    y_true[:, 1] = 3.0  # dead voxel, perfect prediction
    y_pred[:, 1] = 3.0
    y_pred[:, 2] = -1.0  # constant prediction of a live voxel
    r = np.asarray(pearson_r(y_true, y_pred))
    assert np.all(np.isfinite(r))
    assert_array_equal(r[:3], 0.0)
    # sklearn's force_finite rule for SS_tot = 0: 1 if perfect else 0.
    expected = sk_r2(y_true, y_pred, multioutput="raw_values")
    live = [2, 3]  # the dead voxels' columns are constant: exact 0 or 1, no rounding to allow for
    got = np.asarray(r2_score(y_true, y_pred))
    assert_allclose(got[:2], expected[:2], rtol=0, atol=0)
    bound = tolerance(y_true[:, live], y_pred[:, live])
    assert_allclose(got[live], expected[live], rtol=bound, atol=bound)


def test_one_dimensional_and_jit_inside_jit():
    y_true, y_pred = responses(v=3, seed=3)
    scalar = pearson_r(y_true[:, 1], y_pred[:, 1])
    assert scalar.shape == ()
    assert_allclose(scalar, scipy.stats.pearsonr(y_true[:, 1], y_pred[:, 1]).statistic,
                    atol=tolerance(y_true[:, 1], y_pred[:, 1]))
    both = jax.jit(lambda a, b: (pearson_r(a, b), r2_score(a, b)))(y_true, y_pred)
    expected = sk_r2(y_true, y_pred, multioutput="raw_values")
    bound = tolerance(y_true, y_pred)
    assert_allclose(both[1], expected, rtol=bound, atol=bound)


def test_bad_shapes():
    y_true, y_pred = responses(v=3)
    with pytest.raises(AlignmentError, match="y_pred has shape"):
        pearson_r(y_true, y_pred[:-1])
    with pytest.raises(AlignmentError, match="y_pred has shape"):
        r2_score(y_true, y_pred.T)
    with pytest.raises(AlignmentError, match="expected"):
        pearson_r(y_true[None], y_pred[None])
    with pytest.raises(ConfigError, match="2 TRs"):
        r2_score(y_true[:1], y_pred[:1])
