"""ShardedRidgeCV on 8 host devices against the single-device RidgeCV and scikit-learn's Ridge.

Each ``_check_*`` function runs in a child process with 8 CPU devices (tests/_sharded.py).
37 voxels (one constant) with ``voxel_batch=2`` pad to 48 columns, 6 per device in 3 batches,
so padding, batching inside a shard and constant voxels are all exercised. Tolerances (float32
compute, float64 decompositions, condition numbers in the hundreds): best alphas equal exactly;
CV scores 1e-5 absolute; predictions, coefficients and intercepts 1e-4 relative to the
response scale, both against RidgeCV and against sklearn Ridge refitted per voxel with the
chosen alpha.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from tests._sharded import run_sharded

ALPHAS = np.logspace(-1, 4, 11)
N_VOXELS = 37


def planted(n=120, p=16, v=N_VOXELS, seed=0):
    """Correlated features with an offset, voxels from no signal to strong, one constant."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) @ (np.eye(p) + 0.3 * rng.standard_normal((p, p))) + 2.0
    W = rng.standard_normal((p, v)) * np.linspace(0.0, 0.6, v)
    Y = X @ W + rng.standard_normal((n, v)) + 5.0
    Y[:, 3] = 7.0
    return X, Y


def _fit_both(**options):
    import warnings

    from jaxenc.distributed import make_mesh
    from jaxenc.errors import DataWarning
    from jaxenc.models import RidgeCV
    from jaxenc.models.ridge_sharded import ShardedRidgeCV

    X, Y = planted()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the planted constant voxel
        ref = RidgeCV(ALPHAS, **options).fit(X, Y)
        sharded = ShardedRidgeCV(make_mesh(), alphas=ALPHAS, voxel_batch=2, **options).fit(X, Y)
    return X, Y, ref, sharded


def _check_equal(X, Y, ref, sharded):
    from jax.sharding import PartitionSpec as P
    from sklearn.linear_model import Ridge

    v = N_VOXELS
    scale = np.abs(Y).max()
    assert sharded.coef_.shape == (X.shape[1], 48) and sharded.n_voxels_ == v
    assert sharded.coef_.sharding.spec == P(None, "data")
    assert sharded.best_alphas_.sharding.spec == P("data")
    best = np.asarray(sharded.best_alphas_)
    assert_array_equal(best[:v], ref.best_alphas_)
    assert np.isnan(best[v:]).all()  # padding columns are constant
    assert_allclose(np.asarray(sharded.cv_scores_)[:, :v], ref.cv_scores_, atol=1e-5)
    coef = np.asarray(sharded.coef_)[:, :v]
    intercept = np.asarray(sharded.intercept_)[:v]
    assert_allclose(coef, ref.coef_, atol=1e-4 * scale)
    assert_allclose(intercept, ref.intercept_, atol=1e-4 * scale)
    pred = sharded.predict(X)
    assert pred.sharding.spec == P(None, "data")
    pred = np.asarray(pred)
    assert_allclose(pred[:, :v], ref.predict(X), atol=1e-4 * scale)
    assert_allclose(pred[:, v:], 0.0)
    for j in range(v):
        if np.isnan(best[j]):
            assert_allclose(pred[:, j], Y[0, j], rtol=1e-6)
            continue
        sk = Ridge(alpha=best[j], fit_intercept=ref.fit_intercept).fit(X, Y[:, j])
        assert_allclose(coef[:, j], sk.coef_, atol=1e-4 * scale)
        assert_allclose(pred[:, j], sk.predict(X), atol=1e-4 * scale)
    assert_allclose(sharded.score(X, Y), ref.score(X, Y), atol=1e-5)


def _check_per_voxel_r2():
    _check_equal(*_fit_both(cv=5))


def _check_shared_alpha_correlation_split_batches():
    X, Y, ref, sharded = _fit_both(cv=5, alpha_per_target=False, scoring="correlation",
                                   split_batch=2)
    assert np.unique(ref.best_alphas_[~np.isnan(ref.best_alphas_)]).size == 1
    _check_equal(X, Y, ref, sharded)


def _check_dual_no_intercept_and_errors():
    from jaxenc.distributed import make_mesh
    from jaxenc.errors import AlignmentError, ConfigError
    from jaxenc.models import RidgeCV
    from jaxenc.models.ridge_sharded import ShardedRidgeCV

    # 40 features > 24 training rows per split: dual (kernel) decompositions.
    X, Y = planted(n=30, p=40, seed=1)
    Y = Y[:, :5] + np.random.default_rng(2).standard_normal((30, 5))
    ref = RidgeCV(ALPHAS, cv=5, fit_intercept=False).fit(X, Y)
    sharded = ShardedRidgeCV(make_mesh(), alphas=ALPHAS, cv=5, fit_intercept=False).fit(X, Y)
    assert_array_equal(np.asarray(sharded.best_alphas_)[:5], ref.best_alphas_)
    assert_allclose(np.asarray(sharded.predict(X))[:, :5], ref.predict(X),
                    atol=1e-4 * np.abs(Y).max())
    with pytest.raises(AlignmentError, match="features"):
        sharded.predict(X[:, :3])
    with pytest.raises(ConfigError, match="not fitted"):
        ShardedRidgeCV(make_mesh()).predict(X)
    with pytest.raises(ConfigError, match="axes"):
        ShardedRidgeCV(make_mesh(), axis="voxels", alphas=ALPHAS).fit(X, Y)


def test_per_voxel_alphas_match_ridgecv_and_sklearn():
    run_sharded(__file__, "_check_per_voxel_r2")


def test_shared_alpha_correlation_in_split_batches():
    run_sharded(__file__, "_check_shared_alpha_correlation_split_batches")


def test_dual_mode_without_intercept_and_errors():
    run_sharded(__file__, "_check_dual_no_intercept_and_errors")
