"""RidgeCV, BandedRidgeCV and BootstrapChunks against scipy, scikit-learn and himalaya.

Every reference is computed here from the same arrays: scipy.linalg.solve of the normal
equations, sklearn Ridge in a loop over the same folds, himalaya's RidgeCV and BandedRidgeCV
with the same alphas, splits and band weights. Tolerances: float64 fits agree with float64
references to 1e-9 relative; float32 results within ``tests._tolerance.ridge_rtol`` of the
problem (sqrt(n) u kappa: float32 dot products of n terms, amplified by the condition number of
X_c^T X_c + alpha I; 5.8e-3 for ``planted()`` at the smallest alpha, where a batching or fold
bug, a voxel solved at another voxel's alpha or split, moves coefficients by 0.4), never a
number read off one machine: the summation order of float32 products, and so their last bits, changes
with the CPU's vector width (AVX2 or AVX-512), XLA's kernels and the BLAS threads.
"""

import numpy as np
import pytest
import scipy.linalg
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from jaxenc.errors import AlignmentError, ConfigError, DataWarning, NonFiniteError
from jaxenc.models import BandedRidgeCV, BootstrapChunks, RidgeCV, ridge_lfo, ridge_solvers
from jaxenc.models.ridge_splits import resolve_splits
from tests._tolerance import ridge_rtol

ALPHAS = np.logspace(-1, 4, 11)


@pytest.fixture(params=["one_decomposition", "per_split"])
def route(request, monkeypatch):
    """Force the solver route: one decomposition of all rows with held-out-fold corrections
    (``ridge_lfo``), or a decomposition per split (``ridge_solvers``); by default the cheaper
    one for the shape is taken, which at these small shapes is always the per-split one."""
    monkeypatch.setattr(ridge_lfo, "lfo_is_cheaper",
                        lambda *args, **kwargs: request.param == "one_decomposition")
    return request.param


def planted(n=120, p=16, v=9, seed=0, noise=1.0):
    """Correlated features, voxels with signal-to-noise ratios from none to strong."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) @ (np.eye(p) + 0.3 * rng.standard_normal((p, p)))
    X += 2.0  # a feature offset exercises the intercept
    W = rng.standard_normal((p, v)) * np.linspace(0.0, 0.6, v)
    Y = X @ W + noise * rng.standard_normal((n, v)) + 5.0
    return X, Y


def story_splits(groups, folds):
    """The folds RidgeCV(cv=len(folds)) must build from these story groups, written by hand."""
    return [(np.flatnonzero(~np.isin(groups, f)), np.flatnonzero(np.isin(groups, f)))
            for f in folds]


def ridge_solve(X, Y, alpha, fit_intercept):
    """Reference coefficients: scipy.linalg.solve of (Xc^T Xc + alpha I) b = Xc^T Yc."""
    x_mean = X.mean(0) if fit_intercept else np.zeros(X.shape[1])
    y_mean = Y.mean(0) if fit_intercept else np.zeros(Y.shape[1])
    Xc, Yc = X - x_mean, Y - y_mean
    coef = scipy.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc, assume_a="pos")
    return coef, y_mean - x_mean @ coef


def rel(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


# ----------------------------------------------------------------------------- fixed alpha


@pytest.mark.parametrize("n,p", [(120, 16), (40, 60)], ids=["primal", "dual"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fixed_alpha_matches_scipy_solve_and_sklearn(n, p, fit_intercept, route):
    X, Y = planted(n=n, p=p)
    alpha = 7.0
    coef, intercept = ridge_solve(X, Y, alpha, fit_intercept)
    model = RidgeCV(alphas=[alpha], cv=3, fit_intercept=fit_intercept, dtype="float64").fit(X, Y)
    assert rel(model.coef_, coef) < 1e-9
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.best_alphas_, alpha)
    sk = Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, Y)
    assert rel(model.coef_, sk.coef_.T) < 1e-9
    assert rel(model.predict(X), sk.predict(X)) < 1e-9

    f32 = RidgeCV(alphas=[alpha], cv=3, fit_intercept=fit_intercept).fit(X, Y)
    assert f32.coef_.dtype == np.float32
    tol = ridge_rtol(X, alpha, fit_intercept)
    assert rel(f32.coef_, coef) < tol
    assert rel(f32.predict(X), X @ coef + intercept) < tol


def test_score_is_per_voxel_r2():
    X, Y = planted()
    model = RidgeCV(alphas=ALPHAS, cv=3, dtype="float64").fit(X[:90], Y[:90])
    expected = r2_score(Y[90:], model.predict(X[90:]), multioutput="raw_values")
    np.testing.assert_allclose(model.score(X[90:], Y[90:]), expected, rtol=1e-12)


# ----------------------------------------------------------------------- cross-validation


def test_integer_cv_over_groups_holds_out_contiguous_runs_of_stories():
    groups = np.repeat(["s3", "s1", "s4", "s0", "s2", "s5", "s6"], 4)
    splits = resolve_splits(3, len(groups), groups)
    expected = story_splits(groups, [["s3", "s1", "s4"], ["s0", "s2"], ["s5", "s6"]])
    for (train, val), (exp_train, exp_val) in zip(splits, expected, strict=True):
        np.testing.assert_array_equal(train, exp_train)
        np.testing.assert_array_equal(val, exp_val)
    blocks = resolve_splits(4, 10)
    assert [v.tolist() for _, v in blocks] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]


@pytest.mark.parametrize("scoring", ["r2", "correlation"])
def test_cv_scores_match_sklearn_ridge_in_a_loop_over_story_folds(scoring, route):
    X, Y = planted()
    groups = np.repeat(np.arange(6), [15, 25, 20, 18, 22, 20])  # folds of 40, 38 and 42 rows
    model = RidgeCV(alphas=ALPHAS, cv=3, scoring=scoring, dtype="float64").fit(X, Y, groups)
    expected = np.zeros((len(ALPHAS), Y.shape[1]))
    for train, val in story_splits(groups, [[0, 1], [2, 3], [4, 5]]):
        for i, alpha in enumerate(ALPHAS):
            pred = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[val])
            if scoring == "r2":
                expected[i] += r2_score(Y[val], pred, multioutput="raw_values")
            else:
                expected[i] += [np.corrcoef(Y[val, j], pred[:, j])[0, 1] for j in range(Y.shape[1])]
    expected /= 3
    np.testing.assert_allclose(model.cv_scores_, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[expected.argmax(0)])
    assert model.scoring_ == scoring and model.n_splits_ == 3


def test_shared_alpha_maximises_the_voxel_mean_score(route):
    X, Y = planted()
    per_voxel = RidgeCV(alphas=ALPHAS, cv=3, dtype="float64").fit(X, Y)
    shared = RidgeCV(alphas=ALPHAS, cv=3, alpha_per_target=False, dtype="float64").fit(X, Y)
    np.testing.assert_allclose(shared.cv_scores_, per_voxel.cv_scores_, rtol=1e-12)
    best = ALPHAS[per_voxel.cv_scores_.mean(1).argmax()]
    np.testing.assert_array_equal(shared.best_alphas_, np.full(Y.shape[1], best))
    coef, _ = ridge_solve(X, Y, best, True)
    assert rel(shared.coef_, coef) < 1e-9


@pytest.mark.parametrize("alpha_per_target", [True, False])
def test_matches_himalaya_ridgecv(alpha_per_target, route):
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import r2_score as himalaya_r2

    X, Y = planted(seed=1)
    splits = resolve_splits(3, len(X))
    ref = HimalayaRidgeCV(alphas=ALPHAS, cv=splits, fit_intercept=True, solver_params=dict(
        score_func=himalaya_r2, local_alpha=alpha_per_target, warn=False)).fit(X, Y)
    model = RidgeCV(alphas=ALPHAS, cv=splits, alpha_per_target=alpha_per_target).fit(X, Y)
    np.testing.assert_allclose(model.best_alphas_, ref.best_alphas_, rtol=1e-6)
    # jaxenc in float32 against himalaya's float64 numpy backend.
    tol = ridge_rtol(X, ALPHAS.min())
    assert rel(model.predict(X), ref.predict(X)) < tol
    chosen = np.searchsorted(model.alphas_, model.best_alphas_)
    np.testing.assert_allclose(model.cv_scores_[chosen, np.arange(Y.shape[1])], ref.cv_scores_,
                               atol=2 * tol)


@pytest.mark.parametrize("voxel_batch,split_batch", [(4, None), (3, 2)])
def test_voxel_and_split_batching_do_not_change_the_result(voxel_batch, split_batch, route):
    X, Y = planted()
    whole = RidgeCV(alphas=ALPHAS, cv=3, voxel_batch=1024).fit(X, Y)
    batched = RidgeCV(alphas=ALPHAS, cv=3, voxel_batch=voxel_batch,
                      split_batch=split_batch).fit(X, Y)
    # Both are float32 solutions summed in different orders (batches of other widths take
    # other kernels); a validation R^2 = 1 - SSE / SST moves by at most twice the relative
    # error of its predictions.
    tol = ridge_rtol(X, ALPHAS.min(), computations=2)
    np.testing.assert_allclose(batched.cv_scores_, whole.cv_scores_, rtol=0, atol=2 * tol)
    np.testing.assert_array_equal(batched.best_alphas_, whole.best_alphas_)
    assert rel(batched.coef_, whole.coef_) < tol


def test_lapack_thread_limit_applies_and_leaves_results_unchanged():
    from threadpoolctl import threadpool_info

    with ridge_solvers.lapack_thread_limit(1):
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)
    X, Y = planted()
    limited = RidgeCV(alphas=ALPHAS, cv=3, lapack_threads=1).fit(X, Y)
    default = RidgeCV(alphas=ALPHAS, cv=3).fit(X, Y)
    np.testing.assert_array_equal(limited.best_alphas_, default.best_alphas_)
    assert rel(limited.coef_, default.coef_) < ridge_rtol(X, ALPHAS.min(), computations=2)


def test_voxel_kernel_compiles_once_across_batches(route):
    X, Y = planted()
    kernel = (ridge_lfo if route == "one_decomposition" else ridge_solvers)._cv_batch
    kernel.clear_cache()
    RidgeCV(alphas=ALPHAS, cv=3, voxel_batch=4).fit(X, Y)  # batches of 4, 4 and a padded 1
    assert kernel._cache_size() == 1


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_chunks_hold_out_whole_chunks_and_train_on_the_rest():
    n, chunk_len, n_chunks = 107, 10, 3
    splits = list(BootstrapChunks(n_boots=6, chunk_len=chunk_len, n_chunks=n_chunks,
                                  seed=3).split(n))
    assert len(splits) == 6
    for train, val in splits:
        assert len(val) == n_chunks * chunk_len
        starts = val.reshape(n_chunks, chunk_len)
        assert (starts[:, 0] % chunk_len == 0).all()
        np.testing.assert_array_equal(starts, starts[:, :1] + np.arange(chunk_len))
        assert starts[:, -1].max() < 100  # the 7-row remainder is never held out
        np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    again = list(BootstrapChunks(6, chunk_len, n_chunks, seed=3).split(n))
    assert all((a[1] == b[1]).all() for a, b in zip(splits, again, strict=True))
    assert len({tuple(v) for _, v in splits}) > 1


def test_bootstrap_ridgecv_picks_alpha_by_mean_correlation_over_draws(route):
    X, Y = planted(n=120)
    cv = BootstrapChunks(n_boots=4, chunk_len=10, n_chunks=3, seed=0)
    model = RidgeCV(alphas=ALPHAS, cv=cv, fit_intercept=False, dtype="float64").fit(X, Y)
    assert model.scoring_ == "correlation"
    expected = np.zeros((len(ALPHAS), Y.shape[1]))
    for train, val in cv.split(X):
        for i, alpha in enumerate(ALPHAS):
            pred = Ridge(alpha=alpha, fit_intercept=False).fit(X[train], Y[train]).predict(X[val])
            expected[i] += [np.corrcoef(Y[val, j], pred[:, j])[0, 1] for j in range(Y.shape[1])]
    np.testing.assert_allclose(model.cv_scores_, expected / 4, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[expected.argmax(0)])


# -------------------------------------------------------------------------------- banded


def two_band_data(n=120, seed=2, v=9):
    """Band 0 (10 columns) drives the voxels; band 1 (6 columns) is pure noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 16))
    W = np.zeros((16, v))
    W[:10] = rng.standard_normal((10, v)) * 0.5
    return X, X @ W + rng.standard_normal((n, v))


def test_banded_matches_himalaya_banded_ridgecv_with_the_same_candidates(route):
    from himalaya.ridge import BandedRidgeCV as HimalayaBandedRidgeCV
    from himalaya.scoring import r2_score as himalaya_r2

    X, Y = two_band_data()
    splits = resolve_splits(3, len(X))
    # himalaya divides the features by sqrt(gamma) after each candidate, so it cannot take
    # the exact corners (gamma = 0); the comparison leaves them out.
    model = BandedRidgeCV([slice(0, 10), slice(10, 16)], alphas=ALPHAS, n_iter=8, corners=False,
                          cv=splits, dtype="float64").fit(X, Y)
    labels = np.repeat([0, 1], [10, 6])
    ref = HimalayaBandedRidgeCV(groups=labels, cv=splits, fit_intercept=True, solver_params=dict(
        n_iter=model.candidates_, alphas=ALPHAS, score_func=himalaya_r2, progress_bar=False,
        warn=False)).fit(X, Y)
    np.testing.assert_allclose(model.deltas_, ref.deltas_, rtol=1e-9)
    # himalaya adds 1e-10 * log(alpha) to its scores to break ties toward large alphas.
    np.testing.assert_allclose(model.cv_scores_, ref.cv_scores_, atol=1e-8)
    assert rel(model.predict(X), ref.predict(X)) < 1e-9
    assert model.candidates_.shape == (1 + 8, 2)
    np.testing.assert_allclose(model.candidates_.sum(1), 1.0)
    assert len(np.unique(model.best_candidates_)) > 1


def test_banded_corner_switches_a_band_off_and_equals_ridge_on_the_other_band(route):
    X, Y = two_band_data()
    banded = BandedRidgeCV([slice(0, 10), slice(10, 16)], alphas=ALPHAS, candidates=[[1.0, 0.0]],
                           cv=3, dtype="float64").fit(X, Y)
    ridge = RidgeCV(alphas=ALPHAS, cv=3, dtype="float64").fit(X[:, :10], Y)
    np.testing.assert_array_equal(banded.coef_[10:], 0.0)
    assert rel(banded.coef_[:10], ridge.coef_) < 1e-9
    np.testing.assert_allclose(banded.intercept_, ridge.intercept_, rtol=1e-9)
    assert np.isneginf(banded.deltas_[1]).all() and np.isposinf(banded.band_alphas_[1]).all()
    np.testing.assert_allclose(banded.band_alphas_[0], ridge.best_alphas_)


def test_banded_with_one_candidate_is_ridge_on_rescaled_features(route):
    X, Y = two_band_data()
    gamma = np.array([0.8, 0.2])
    scale = np.sqrt(np.repeat(gamma, [10, 6]))
    banded = BandedRidgeCV([slice(0, 10), np.arange(10, 16)], alphas=ALPHAS, candidates=[gamma],
                           cv=3, dtype="float64").fit(X, Y)
    ridge = RidgeCV(alphas=ALPHAS, cv=3, dtype="float64").fit(X * scale, Y)
    np.testing.assert_array_equal(banded.best_alphas_, ridge.best_alphas_)
    assert rel(banded.coef_, scale[:, None] * ridge.coef_) < 1e-9
    np.testing.assert_allclose(banded.band_alphas_, ridge.best_alphas_[None] / gamma[:, None])
    np.testing.assert_allclose(banded.deltas_, np.log(gamma[:, None] / ridge.best_alphas_))


@pytest.mark.parametrize("scoring", ["r2", "correlation"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_routes_agree_on_banded_ridge_in_the_dual(scoring, fit_intercept, monkeypatch):
    # 60 rows and 90 features: both routes decompose kernels (X X^T) rather than X^T X.
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 90)) + 1.0
    Y = X[:, :40] @ rng.standard_normal((40, 7)) * 0.2 + rng.standard_normal((60, 7))
    fits = {}
    for one_decomposition in (True, False):
        monkeypatch.setattr(ridge_lfo, "lfo_is_cheaper", lambda *a, one=one_decomposition, **k: one)
        fits[one_decomposition] = BandedRidgeCV(
            [slice(0, 40), slice(40, 90)], alphas=ALPHAS, n_iter=6, cv=4, scoring=scoring,
            fit_intercept=fit_intercept, dtype="float64").fit(X, Y)
    lfo_fit, split_fit = fits[True], fits[False]
    np.testing.assert_allclose(lfo_fit.cv_scores_, split_fit.cv_scores_, atol=1e-10)
    np.testing.assert_array_equal(lfo_fit.best_candidates_, split_fit.best_candidates_)
    np.testing.assert_array_equal(lfo_fit.best_alphas_, split_fit.best_alphas_)
    assert rel(lfo_fit.coef_, split_fit.coef_) < 1e-9
    np.testing.assert_allclose(lfo_fit.intercept_, split_fit.intercept_, atol=1e-9)


def test_non_complementary_splits_take_the_per_split_route(monkeypatch):
    X, Y = planted()
    # The second split leaves rows 0-9 out of both sets: no model of all rows covers it.
    splits = resolve_splits(3, len(X))
    splits[1] = (splits[1][0][splits[1][0] >= 10], splits[1][1])
    assert not ridge_lfo.complementary(splits, len(X))
    monkeypatch.setattr(ridge_lfo, "lfo_is_cheaper", lambda *a, **k: True)
    ridge_lfo._cv_batch.clear_cache()
    model = RidgeCV(alphas=ALPHAS, cv=splits, dtype="float64").fit(X, Y)
    assert ridge_lfo._cv_batch._cache_size() == 0
    expected = np.zeros((len(ALPHAS), Y.shape[1]))
    for train, val in splits:
        for i, alpha in enumerate(ALPHAS):
            sk = Ridge(alpha=alpha).fit(X[train], Y[train])
            expected[i] += r2_score(Y[val], sk.predict(X[val]), multioutput="raw_values")
    np.testing.assert_allclose(model.cv_scores_, expected / 3, atol=1e-9)


def test_banded_gives_a_useless_band_a_much_lower_weight():
    X, Y = two_band_data()
    model = BandedRidgeCV([slice(0, 10), slice(10, 16)], alphas=ALPHAS, n_iter=10, cv=3).fit(X, Y)
    gap = model.deltas_[0] - model.deltas_[1]  # log(gamma_useful / gamma_useless)
    assert np.median(gap) > 3.0
    assert (gap > 1.0).mean() > 0.8


# -------------------------------------------------------------------------------- errors


def test_row_mismatch_names_both_counts():
    X, Y = planted()
    with pytest.raises(AlignmentError, match="120 rows .* Y has 119"):
        RidgeCV().fit(X, Y[:-1])


def test_non_finite_input_names_the_column():
    X, Y = planted()
    X_bad = X.copy()
    X_bad[7, 5] = np.nan
    with pytest.raises(NonFiniteError, match="NaN or infinity in X at row 7, column 5"):
        RidgeCV().fit(X_bad, Y)
    Y_bad = Y.copy()
    Y_bad[3, 2] = np.inf
    with pytest.raises(NonFiniteError, match=r"NaN or infinity in Y at row 3, column 2"):
        RidgeCV().fit(X, Y_bad)
    model = RidgeCV(alphas=ALPHAS).fit(X, Y)
    with pytest.raises(NonFiniteError, match="column 5"):
        model.predict(X_bad)


def test_constant_voxel_warns_and_is_predicted_by_its_mean(route):
    X, Y = planted()
    Y[:, 4] = 3.5
    with pytest.warns(DataWarning, match=r"1 voxel\(s\) .*constant .*columns 4"):
        model = RidgeCV(alphas=ALPHAS, cv=3).fit(X, Y)
    np.testing.assert_array_equal(model.coef_[:, 4], 0.0)
    np.testing.assert_allclose(model.predict(X[:5])[:, 4], 3.5)
    assert np.isnan(model.best_alphas_[4]) and (model.cv_scores_[:, 4] == 0).all()
    assert np.isfinite(np.delete(model.best_alphas_, 4)).all()


@pytest.mark.parametrize("alphas", [[1.0, 0.0], [-1.0], [np.nan, 1.0], []])
def test_non_positive_alphas_are_refused(alphas):
    X, Y = planted()
    with pytest.raises(ConfigError, match="alphas"):
        RidgeCV(alphas=alphas).fit(X, Y)


def test_fewer_groups_than_folds_is_refused():
    X, Y = planted()
    with pytest.raises(ConfigError, match="at least 5 distinct groups, got 3"):
        RidgeCV(cv=5).fit(X, Y, groups=np.repeat([0, 1, 2], 40))


@pytest.mark.parametrize("cv,match", [
    (1, "at least 2 folds"),
    ([(np.arange(10), np.array([200]))], r"val: row indices must lie in \[0, 120\)"),
    ([(np.arange(10), np.array([], dtype=int))], "non-empty"),
    (BootstrapChunks(3, 40, 3), "3 chunks of 40 TRs"),
])
def test_bad_cv_is_refused(cv, match):
    X, Y = planted()
    with pytest.raises(ConfigError, match=match):
        RidgeCV(cv=cv).fit(X, Y)


@pytest.mark.parametrize("bands,match", [
    ([slice(0, 10), slice(11, 16)], "1 column.* in no band, first 10"),
    ([slice(0, 11), slice(10, 16)], "column 10 is in band 0 and band 1"),
    ([slice(0, 16)], "at least 2 bands"),
    ([slice(0, 16), slice(16, 20)], "band 1 selects no column"),
])
def test_bands_that_do_not_tile_the_features_are_refused(bands, match):
    X, Y = two_band_data()
    with pytest.raises(ConfigError, match=match):
        BandedRidgeCV(bands).fit(X, Y)


def test_other_bad_options_are_refused():
    X, Y = planted()
    with pytest.raises(ConfigError, match="dtype"):
        RidgeCV(dtype="float16").fit(X, Y)
    with pytest.raises(ConfigError, match="lapack_threads must be a positive integer"):
        RidgeCV(lapack_threads=0).fit(X, Y)
    with pytest.raises(ConfigError, match="scoring"):
        RidgeCV(scoring="mse").fit(X, Y)
    with pytest.raises(ConfigError, match="not fitted"):
        RidgeCV().predict(X)
    with pytest.raises(AlignmentError, match="X has 15 features but the model was fitted on 16"):
        RidgeCV(alphas=ALPHAS).fit(X, Y).predict(X[:, :15])
    with pytest.raises(ConfigError, match="candidates"):
        BandedRidgeCV([slice(0, 8), slice(8, 16)], candidates=[[1.0, -1.0]]).fit(X, Y)
