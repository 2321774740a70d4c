"""The one job runner, jaxenc.pipeline.fit_predict, against outside references.

Ridge jobs against himalaya's RidgeCV (same story-grouped folds, same penalties), on voxel
and PCA targets, their scores against numpy/scipy/scikit-learn formulas on the test rows left
after dropping the first TRIM; network jobs against direct jaxenc.train.fit_encoders calls on
the same per-story arrays; banded ridge against BandedRidgeCV; the GRU's delay layout against
a hand-written reordering.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import false_discovery_control
from sklearn.metrics import r2_score as sklearn_r2

from jaxenc.decomp import PCA
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import ScoreConfig, block_permutations, score
from jaxenc.models import BandedRidgeCV, NetworkOptions, RidgeOptions, encoder
from jaxenc.models.nonlinear import MLP, MLLinear
from jaxenc.models.ridge_splits import resolve_splits
from jaxenc.pipeline import SubjectArrays, fit_predict
from jaxenc.train import SubjectData, TrainConfig, fit_encoders
from tests._tolerance import U32, assert_within, correlation_atol, ridge_atols, rounding_bound, score_tolerances

ALPHAS = np.logspace(-1, 4, 6)
RIDGE = RidgeOptions(log10_alphas=(-1.0, 4.0, 6), folds=3)
N_PERM = 50
# Test-story rows dropped before scoring.
TRIM = 6
SCORING = ScoreConfig(permutations=N_PERM, test_trim=TRIM)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def _columns_r(y, p):
    yc, pc = y - y.mean(0), p - p.mean(0)
    return (yc * pc).sum(0) / np.sqrt((yc**2).sum(0) * (pc**2).sum(0))


def _cc_norm(pred, repeats, floor):
    # Schoppe et al. (2016) from the formula, float64.
    n = repeats.shape[0]
    tp = repeats.var(axis=1).mean(0)
    sp = (repeats.sum(0).var(axis=0) - repeats.var(axis=1).sum(0)) / (n * (n - 1))
    cc_max = np.where(sp > 0, 1 / np.sqrt(1 + (tp / np.where(sp > 0, sp, 1) - 1) / n), np.nan)
    return _columns_r(repeats.mean(0), pred) / np.fmax(cc_max, floor)


def _reference_scores(pred, repeats, *, floor=0.25, block_size=10, seed=0, alpha=0.05):
    pred, repeats = np.asarray(pred, np.float64)[TRIM:], np.asarray(repeats, np.float64)[:, TRIM:]
    target = repeats.mean(0)
    r = _columns_r(target, pred)
    orders = np.asarray(block_permutations(len(target), N_PERM, block_size, seed))
    null = np.stack([_columns_r(target, pred[o]) for o in orders])
    # jaxenc's float32 correlations are within correlation_atol of these: a null r that close to
    # the observed one could count either way; none is, so the counts are machine-independent.
    margin = correlation_atol(len(target), computations=2)
    assert np.abs(null - r).min() > margin
    p = (1 + (null >= r).sum(0)) / (1 + N_PERM)
    return {
        "r": r,
        "r2": r * np.abs(r),
        "r2_cod": sklearn_r2(target, pred, multioutput="raw_values"),
        "cc_norm": _cc_norm(pred, repeats, floor),
        "p": p,
        "significant": false_discovery_control(p, method="bh") <= alpha,
    }


def _check_scores(scores, pred, repeats):
    ref = _reference_scores(pred, repeats)
    # Float32 scores against float64 formulas: score_tolerances (tests/_tolerance.py), about 1e-5;
    # a trim, floor or ddof slip moves them by 1e-2. The summaries average the per-voxel bounds.
    bounds = score_tolerances(np.asarray(pred), repeats, TRIM, SCORING.floor)
    for name in ("r", "r2", "r2_cod", "cc_norm"):
        assert_within(getattr(scores, name), ref[name], *bounds[name], err_msg=name)
    # Equal counts (above): p = (1 + count) / (1 + N_PERM), a float32 division (two roundings).
    np.testing.assert_allclose(scores.p, ref["p"], rtol=2 * U32)
    np.testing.assert_array_equal(scores.significant, ref["significant"])
    summary = scores.summary()
    for name in ("r", "r2", "r2_cod", "cc_norm"):
        rtol, atol = bounds[name]
        assert summary[f"mean_{name}"] == pytest.approx(ref[name].mean(), abs=np.mean(atol + rtol * np.abs(ref[name])))
    assert summary["n_significant"] == ref["significant"].sum()


def _ridge_problem(seed=0, n_stories=3, rows=70, n_voxels=24, n_test=60, n_repeats=4):
    rng = np.random.default_rng(seed)
    widths = {"layer0": 10, "layer1": 10, "big": 16}
    latent = rng.standard_normal((n_stories * rows + n_test, 6))
    designs, tests = {}, {}
    for name, width in widths.items():
        mix = rng.standard_normal((6, width))
        x = latent @ mix + rng.standard_normal((len(latent), width))
        designs[name], tests[name] = x[: n_stories * rows], x[n_stories * rows:]
    signal = latent @ rng.standard_normal((6, n_voxels))
    Y = signal[: n_stories * rows] + 2 * rng.standard_normal((n_stories * rows, n_voxels))
    repeats = signal[n_stories * rows:] + 2 * rng.standard_normal((n_repeats, n_test, n_voxels))
    groups = np.repeat([f"story{i}" for i in range(n_stories)], rows)
    return designs, Y, groups, tests, repeats


def _ridge_coef(X, Y, alphas):
    """Float64 ridge coefficients of centred X and Y, one alpha per column (their scale for the
    tolerances)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return np.stack([np.linalg.solve(Xc.T @ Xc + a * np.eye(X.shape[1]), Xc.T @ Yc[:, j])
                     for j, a in enumerate(alphas)], axis=1)


def _himalaya_prediction(X, Y, X_test, splits):
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import r2_score as himalaya_r2

    ref = HimalayaRidgeCV(alphas=ALPHAS, cv=splits, fit_intercept=True, solver_params=dict(
        score_func=himalaya_r2, warn=False)).fit(X, Y)
    return np.asarray(ref.predict(X_test)), np.asarray(ref.best_alphas_)


@pytest.mark.slow
def test_ridge_jobs_match_himalaya_and_numpy_scores():
    designs, Y, groups, tests, repeats = _ridge_problem()
    splits = resolve_splits(3, len(Y), groups)  # one story held out per fold
    np.testing.assert_array_equal(RIDGE.alphas(), ALPHAS)
    for label in designs:
        job = fit_predict("ridge", {"S": SubjectArrays(designs[label], Y, groups, tests[label])}, ridge=RIDGE)
        pred, best = _himalaya_prediction(designs[label], Y, tests[label], splits)
        assert job.info["median_alpha"]["S"] == pytest.approx(float(np.median(best)), rel=1e-6)
        assert job.info["n_features"] == designs[label].shape[1]
        # Float32 ridge against himalaya's float64, per voxel at its alpha (ridge_atols: the
        # coefficients' kappa-amplified rounding on the test rows; about 2e-4 of the predictions'
        # scale here, where a voxel at a neighbouring alpha of the grid, 10 times apart, moves by far more).
        bounds = ridge_atols(designs[label], Y, _ridge_coef(designs[label], Y, best), best, X_test=tests[label])
        assert_within(job.predictions["S"], pred, atol=bounds["predict"])
        scores = score(job.predictions["S"], repeats, SCORING)
        _check_scores(scores, job.predictions["S"], repeats)
        assert scores.summary()["n_significant"] > 0  # planted signal is found


@pytest.mark.slow
def test_ridge_job_on_pca_targets():
    designs, Y, groups, tests, repeats = _ridge_problem(seed=1)
    cache = {}
    job = fit_predict("ridge", {"S": SubjectArrays(designs["layer0"], Y, groups, tests["layer0"])}, target="pca",
                      ridge=RIDGE, train=TrainConfig(n_components=5), cache=cache)
    pca = PCA(n_components=5).fit(Y)
    Z = np.asarray(pca.transform(Y))
    splits = resolve_splits(3, len(Y), groups)
    z_pred, best = _himalaya_prediction(designs["layer0"], Z, tests["layer0"], splits)
    voxels = z_pred @ np.asarray(pca.components_, np.float64) + np.asarray(pca.mean_, np.float64)
    assert job.predictions["S"].shape == (60, 24)
    # The scores' ridge errors (ridge_atols) reach each voxel through orthonormal components:
    # at most their 2-norm; then the 5-term projection and the mean's addition round.
    z_atol = ridge_atols(designs["layer0"], Z, _ridge_coef(designs["layer0"], Z, best), best,
                         X_test=tests["layer0"])["predict"]
    atol = np.linalg.norm(z_atol) + rounding_bound([5, 1], scale=float(np.abs(voxels).max()))
    assert rel(job.predictions["S"], voxels) * np.max(np.abs(voxels)) < atol
    _check_scores(score(job.predictions["S"], repeats, SCORING), job.predictions["S"], repeats)
    # The subject's PCA is fitted once for every job sharing the cache.
    fit_predict("ridge", {"S": SubjectArrays(designs["big"], Y, groups, tests["big"])}, target="pca",
                ridge=RIDGE, train=TrainConfig(n_components=5), cache=cache)
    assert len(cache["ridge_pca"]) == 1


def test_banded_ridge_is_banded_ridge_cv_over_the_bands():
    designs, Y, groups, tests, _ = _ridge_problem(seed=2)
    X = np.hstack([designs["layer0"], designs["big"]])
    X_test = np.hstack([tests["layer0"], tests["big"]])
    bands = ((0, 10), (10, 26))
    options = RidgeOptions(log10_alphas=(-1.0, 4.0, 6), folds=3, banded=True, band_candidates=3)
    job = fit_predict("ridge", {"S": SubjectArrays(X, Y, groups, X_test, bands)}, ridge=options,
                      train=TrainConfig(seed=4))
    direct = BandedRidgeCV(bands=[slice(0, 10), slice(10, 26)], alphas=ALPHAS, cv=3, n_iter=3,
                           random_state=4).fit(X, Y, groups=groups)
    # The same solver on the same inputs: equal up to how XLA compiles the two calls (a few u of
    # each prediction, 1e-6 being 16 u); another band split or seed moves predictions by 1e-2.
    np.testing.assert_allclose(job.predictions["S"], np.asarray(direct.predict(X_test), np.float32), rtol=1e-6)


# -- networks: a hidden size of their own keeps these programs apart from other tests' ones.
CFG = TrainConfig(n_folds=2, n_components=4, batch_size=32, val_batch_size=64, max_epochs=4,
                  patience=4, learning_rate=3e-3, loss="mse", epochs_per_call=2, checkpoint_every=2)
NETWORKS = NetworkOptions(hidden=11, dropout=0.1, batch_norm=False)
N_TEST, N_VOXELS = 30, 15


def _network_data(n_voxels=(N_VOXELS, N_VOXELS)):
    rng = np.random.default_rng(0)
    arrays, per_story, repeats = {}, {}, {}
    for (subject, n_stories), voxels in zip({"S1": 4, "S2": 5}.items(), n_voxels, strict=True):
        lengths = rng.integers(30, 45, n_stories)
        latent = {f"story{s}": rng.standard_normal((n, 5)) for s, n in enumerate(lengths)}
        test_latent = rng.standard_normal((N_TEST, 5))
        w, mix = rng.standard_normal((5, voxels)), rng.standard_normal((5, 8))
        feats = {s: (z @ mix).astype(np.float32) for s, z in latent.items()}
        resp = {s: (np.tanh(z) @ w + rng.standard_normal((len(z), voxels))).astype(np.float32)
                for s, z in latent.items()}
        repeats[subject] = (np.tanh(test_latent) @ w + rng.standard_normal((3, N_TEST, voxels))).astype(np.float32)
        groups = np.concatenate([[s] * len(x) for s, x in feats.items()])
        arrays[subject] = SubjectArrays(np.concatenate(list(feats.values())), np.concatenate(list(resp.values())),
                                        groups, (test_latent @ mix).astype(np.float32))
        per_story[subject] = SubjectData(feats, resp)
    return arrays, per_story, repeats


@pytest.mark.slow
def test_network_jobs_equal_direct_fit_encoders_calls(tmp_path):
    arrays, per_story, repeats = _network_data()
    job = fit_predict("mlp", arrays, target="pca", networks=NETWORKS, train=CFG, checkpoint_dir=tmp_path)
    make = functools.partial(MLP, hidden=11, dropout=0.1, batch_norm=False, activation=jnp.tanh)
    direct = fit_encoders(make, per_story, CFG, progress=False)
    expected = direct.predict({s: a.X_test for s, a in arrays.items()})
    assert job.info["n_components"] == 4 and job.info["n_features"] == 8
    assert [p.name for p in job.checkpoints] == ["S1-S2"]
    for subject in arrays:
        # The same compiled training on the same data and seed: equal up to a few u of the O(1)
        # predictions (how XLA fuses the two call sites); any other batch order, seed or fold
        # changes the trained network, and the predictions by 1e-2 or more.
        np.testing.assert_allclose(job.predictions[subject], expected[subject], rtol=1e-6, atol=1e-6)
        assert len(job.info["best_epoch"][subject]) == 2  # one per fold
        pred = job.predictions[subject].astype(np.float64)[TRIM:]
        target = repeats[subject].astype(np.float64).mean(0)[TRIM:]
        scores = score(job.predictions[subject], repeats[subject], ScoreConfig(permutations=20, test_trim=TRIM,
                                                                                block_size=5))
        bounds = score_tolerances(job.predictions[subject], repeats[subject], TRIM, 0.25)
        assert_within(scores.r, _columns_r(target, pred), *bounds["r"])
        assert_within(scores.r2_cod, sklearn_r2(target, pred, multioutput="raw_values"), *bounds["r2_cod"])


@pytest.mark.slow
def test_subjects_of_other_voxel_counts_train_apart_on_voxel_targets():
    arrays, per_story, _ = _network_data(n_voxels=(N_VOXELS, N_VOXELS + 3))
    job = fit_predict("mllinear", arrays, networks=NETWORKS, train=CFG)
    assert job.info["n_components"] is None
    for subject, data in per_story.items():
        alone = fit_encoders(functools.partial(MLLinear, hidden=11), {subject: data},
                             dataclasses.replace(CFG, n_components=None), progress=False)
        expected = alone.predict({subject: arrays[subject].X_test})[subject]
        # The same training program (see above): a few u; training with the other subject moves
        # the predictions by 1e-2 or more.
        np.testing.assert_allclose(job.predictions[subject], expected, rtol=1e-6, atol=1e-6)


def test_the_gru_reads_one_delay_block_per_step():
    X = np.arange(2 * 20).reshape(2, 20).astype(np.float32)
    # audio: 2 delays of 3 columns, semantic: 2 delays of 7 columns.
    bands = ((0, 6), (6, 20))
    got = encoder("gru").prepare(X, bands, 2)
    expected = np.hstack([X[:, 0:3], X[:, 6:13], X[:, 3:6], X[:, 13:20]])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(encoder("mlp").prepare(X, bands, 2), X)


def test_bad_jobs_name_what_is_wrong():
    designs, Y, groups, tests, _ = _ridge_problem()
    arrays = SubjectArrays(designs["layer0"], Y, groups, tests["layer0"])
    with pytest.raises(ConfigError, match="unknown model 'lstm'"):
        fit_predict("lstm", {"S": arrays})
    with pytest.raises(ConfigError, match="target must be one of"):
        fit_predict("ridge", {"S": arrays}, target="voxel")
    with pytest.raises(ConfigError, match="dimlp needs 2 modalities"):
        fit_predict("dimlp", {"S": arrays})
    with pytest.raises(AlignmentError, match="X_test has shape"):
        SubjectArrays(designs["layer0"], Y, groups, tests["big"])
    with pytest.raises(AlignmentError, match="one row per training TR"):
        SubjectArrays(designs["layer0"], Y[:-1], groups, tests["layer0"])
