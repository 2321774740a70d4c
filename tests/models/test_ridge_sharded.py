"""ShardedRidgeCV on 8 host devices against the single-device RidgeCV and scikit-learn's Ridge.

Each ``_check_*`` function runs in a child process with 8 CPU devices (tests/_sharded.py).
37 voxels (one constant) with ``voxel_batch=2`` pad to 40 columns, 5 per device in batches of
2, 2 and 1 (the last one narrower), so padding, batching inside a shard, a batch that does not
divide the shard and constant voxels are all exercised. Tolerances (float32
compute, float64 decompositions): best alphas equal exactly; coefficients, intercepts and
predictions within ``ridge_atols`` (tests/_tolerance.py: float32 dot products of n terms
amplified by the condition number of X_c^T X_c + alpha I, per voxel at its alpha; two float32
solvers against RidgeCV, one against sklearn Ridge refitted per voxel with the chosen alpha);
CV scores within the r2 change those prediction errors allow. A voxel solved with another
voxel's alpha, split or batch moves its coefficients by 1e-2 or more of their norm.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from tests._sharded import run_sharded
from tests._tolerance import assert_within, correlation_atol, ridge_atols, rounding_bound

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
    assert sharded.coef_.shape == (X.shape[1], 40) and sharded.n_voxels_ == v
    assert sharded.coef_.sharding.spec == P(None, "data")
    assert sharded.best_alphas_.sharding.spec == P("data")
    best = np.asarray(sharded.best_alphas_)
    assert_array_equal(best[:v], ref.best_alphas_)
    assert np.isnan(best[v:]).all()  # padding columns are constant
    alphas = np.where(np.isnan(best[:v]), ALPHAS.max(), best[:v])
    two = ridge_atols(X, Y, ref.coef_, alphas, ref.fit_intercept, computations=2)
    # CV scores at every alpha: r2 moves by at most 2 |prediction error|_2 / |y_c| (times
    # sqrt(max(1, 1 - r2)): the residual's size), at the smallest alpha's (worst) conditioning,
    # plus the score's own centred sums.
    worst = ridge_atols(X, Y, ref.coef_, np.full(v, ALPHAS.min()), ref.fit_intercept, computations=2)
    spread = np.linalg.norm(Y - Y.mean(axis=0), axis=0)
    live = spread > 0
    cv_atol = np.zeros(v)
    cv_atol[live] = 2 * worst["predict_norm"][live] / spread[live]
    cv_atol = cv_atol * np.sqrt(np.maximum(1, 1 - np.nan_to_num(ref.cv_scores_))) + correlation_atol(len(Y), 1, 2)
    assert_within(np.asarray(sharded.cv_scores_)[:, :v], ref.cv_scores_, atol=cv_atol)
    coef = np.asarray(sharded.coef_)[:, :v]
    intercept = np.asarray(sharded.intercept_)[:v]
    assert_within(coef, ref.coef_, atol=two["coef"])
    assert_within(intercept, ref.intercept_, atol=two["intercept"])
    pred = sharded.predict(X)
    assert pred.sharding.spec == P(None, "data")
    pred = np.asarray(pred)
    assert_within(pred[:, :v], ref.predict(X), atol=two["predict"])
    assert_allclose(pred[:, v:], 0.0)
    for j in range(v):
        if np.isnan(best[j]):
            # A constant voxel predicts its mean: a float32 sum of n equal values, within
            # rounding_bound of them (the float32 value itself is 7.0, exact).
            assert_allclose(pred[:, j], Y[0, j], rtol=rounding_bound([len(Y)]))
            continue
        sk = Ridge(alpha=best[j], fit_intercept=ref.fit_intercept).fit(X, Y[:, j])
        one = ridge_atols(X, Y[:, [j]], sk.coef_[:, None], [best[j]], ref.fit_intercept)
        assert_allclose(coef[:, j], sk.coef_, atol=one["coef"][0])
        assert_allclose(pred[:, j], sk.predict(X), atol=one["predict"][0])
    # The score is r2 of the predictions, in float64: their errors, as for the CV scores.
    score_atol = 2 * np.max(two["predict_norm"][live] / spread[live])
    assert_allclose(sharded.score(X, Y), ref.score(X, Y), atol=score_atol)


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
    # More features than rows: the kernel form, kappa = (s_max^2 + alpha) / alpha.
    bounds = ridge_atols(X, Y, ref.coef_, ref.best_alphas_, fit_intercept=False, computations=2)
    assert_within(np.asarray(sharded.predict(X))[:, :5], ref.predict(X), atol=bounds["predict"])
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
