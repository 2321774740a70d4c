"""ridge_sweep against himalaya's RidgeCV and numpy/scipy scores; encoder_sweep's stacked
pseudo-subjects against separate fit_encoders calls, scored with numpy and scikit-learn.

Scores are those of jaxenc.metrics.scores: r, the paper's r2 = r·|r|, the coefficient of
determination r2_cod and cc_norm, on the test rows left after dropping the first TRIM."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy.stats import false_discovery_control
from sklearn.metrics import r2_score as sklearn_r2

from jaxenc.analysis import encoder_sweep, pseudo_subject, ridge_sweep
from jaxenc.decomp import PCA
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import block_permutations
from jaxenc.models.nonlinear import MLP
from jaxenc.models.ridge_splits import resolve_splits
from jaxenc.train import SubjectData, TrainConfig, fit_encoders

ALPHAS = np.logspace(-1, 4, 6)
N_PERM = 50
# Test-story rows dropped before scoring.
TRIM = 6


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
    p = (1 + (null >= r - 1e-6).sum(0)) / (1 + N_PERM)
    return {
        "r": r,
        "r2": r * np.abs(r),
        "r2_cod": sklearn_r2(target, pred, multioutput="raw_values"),
        "cc_norm": _cc_norm(pred, repeats, floor),
        "p": p,
        "significant": false_discovery_control(p, method="bh") <= alpha,
    }


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
    groups = np.repeat(np.arange(n_stories), rows)
    return designs, Y, groups, tests, repeats


def _himalaya_prediction(X, Y, X_test, splits):
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import r2_score as himalaya_r2

    ref = HimalayaRidgeCV(alphas=ALPHAS, cv=splits, fit_intercept=True, solver_params=dict(
        score_func=himalaya_r2, warn=False)).fit(X, Y)
    return np.asarray(ref.predict(X_test)), np.asarray(ref.best_alphas_)


def _check_scores(row, pred, repeats):
    ref = _reference_scores(pred, repeats)
    for name in ("r", "r2", "r2_cod", "cc_norm"):
        np.testing.assert_allclose(row[name], ref[name], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(row["p"], ref["p"], atol=1e-12)
    np.testing.assert_array_equal(row["significant"], ref["significant"])
    assert row["mean_r"] == pytest.approx(ref["r"].mean(), abs=1e-5)
    assert row["mean_r2"] == pytest.approx(ref["r2"].mean(), abs=1e-5)
    assert row["mean_r2_cod"] == pytest.approx(ref["r2_cod"].mean(), abs=1e-5)
    assert row["mean_cc_norm"] == pytest.approx(ref["cc_norm"].mean(), abs=1e-5)
    assert row["n_significant"] == ref["significant"].sum()


def test_ridge_sweep_matches_himalaya_and_numpy_scores():
    designs, Y, groups, tests, repeats = _ridge_problem()
    rows = ridge_sweep(designs, Y, groups, tests, repeats, alphas=ALPHAS, cv=3,
                       n_permutations=N_PERM, trim=TRIM)
    assert [row["label"] for row in rows] == ["layer0", "layer1", "big"]
    splits = resolve_splits(3, len(Y), groups)  # one story held out per fold
    for row in rows:
        pred, best = _himalaya_prediction(designs[row["label"]], Y, tests[row["label"]], splits)
        np.testing.assert_allclose(row["best_alphas"], best, rtol=1e-6)
        assert rel(row["prediction"], pred) < 1e-4
        assert row["n_features"] == designs[row["label"]].shape[1]
        _check_scores(row, row["prediction"], repeats)
        assert row["n_significant"] > 0  # planted signal is found


def test_ridge_sweep_with_pca_targets():
    designs, Y, groups, tests, repeats = _ridge_problem(seed=1)
    pca = PCA(n_components=5).fit(Y)
    Z = np.asarray(pca.transform(Y))
    rows = ridge_sweep({"layer0": designs["layer0"]}, Z, groups, {"layer0": tests["layer0"]},
                       repeats, alphas=ALPHAS, cv=3, n_permutations=N_PERM, pca=pca, trim=TRIM)
    splits = resolve_splits(3, len(Y), groups)
    z_pred, _ = _himalaya_prediction(designs["layer0"], Z, tests["layer0"], splits)
    voxels = z_pred @ np.asarray(pca.components_, np.float64) + np.asarray(pca.mean_, np.float64)
    assert rows[0]["prediction"].shape == (60, 24)
    assert rel(rows[0]["prediction"], voxels) < 1e-4
    assert rows[0]["best_alphas"].shape == (5,)
    _check_scores(rows[0], rows[0]["prediction"], repeats)


def test_ridge_sweep_errors_name_the_label():
    designs, Y, groups, tests, repeats = _ridge_problem()
    with pytest.raises(ConfigError, match="differ"):
        ridge_sweep(designs, Y, groups, {"layer0": tests["layer0"]}, repeats)
    bad = dict(tests, big=tests["big"][:, :5])
    with pytest.raises(AlignmentError, match="'big'"):
        ridge_sweep(designs, Y, groups, bad, repeats, alphas=ALPHAS, cv=3)
    with pytest.raises(AlignmentError, match="pass the PCA"):
        ridge_sweep({"layer0": designs["layer0"]}, Y[:, :5], groups, {"layer0": tests["layer0"]},
                    repeats, alphas=ALPHAS, cv=3)


# -- encoder_sweep: a hidden size of its own keeps this program apart from other tests' ones,
# so the trace count below is this run's.
MAKE = functools.partial(MLP, hidden=11, dropout=0.1, batch_norm=False)
CFG = TrainConfig(n_folds=2, n_components=4, batch_size=32, val_batch_size=64, max_epochs=4,
                  patience=4, learning_rate=3e-3, loss="mse", epochs_per_call=2,
                  checkpoint_every=2)
N_TEST, N_VOXELS = 30, 15


def _sweep_data():
    rng = np.random.default_rng(0)
    widths = {0: 8, 1: 8, "large": 12}
    stories_of = {"S1": 4, "S2": 5}
    data, test_features, responses, repeats = {}, {}, {}, {}
    for subject, n_stories in stories_of.items():
        lengths = rng.integers(30, 45, n_stories)
        latent = {f"story{s}": rng.standard_normal((n, 5)) for s, n in enumerate(lengths)}
        test_latent = rng.standard_normal((N_TEST, 5))
        w = rng.standard_normal((5, N_VOXELS))
        resp = {s: np.tanh(z) @ w + rng.standard_normal((len(z), N_VOXELS))
                for s, z in latent.items()}
        noise = rng.standard_normal((3, N_TEST, N_VOXELS))
        repeats[subject] = (np.tanh(test_latent) @ w + noise).astype(np.float32)
        responses[subject] = repeats[subject].mean(0)
        for label, width in widths.items():
            mix = rng.standard_normal((5, width))
            feats = {s: (z @ mix).astype(np.float32) for s, z in latent.items()}
            data.setdefault(label, {})[subject] = SubjectData(
                feats, {s: r.astype(np.float32) for s, r in resp.items()})
            test_features.setdefault(label, {})[subject] = (test_latent @ mix).astype(np.float32)
    return data, test_features, responses, repeats


def _leaves(state):
    return [
        np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                   else x, np.float64)
        for x in jax.tree.leaves(state)
    ]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    data, test_features, responses, repeats = _sweep_data()
    checkpoints = tmp_path_factory.mktemp("sweep_checkpoints")
    fits, rows = encoder_sweep(MAKE, data, CFG, test_features_by_label=test_features,
                               test_responses=responses, test_repeats=repeats,
                               checkpoint_dir=checkpoints, trim=TRIM)
    return data, test_features, responses, repeats, fits, rows, checkpoints


def test_encoder_sweep_stacks_labels_of_one_width_into_one_program(sweep):
    data, test_features, responses, repeats, fits, rows, _ = sweep
    assert sorted(fits) == [8, 12]
    shared = fits[8]
    # 2 labels x 2 subjects x 2 folds models, one trace of the program for all of them.
    assert shared.n_traces == 1
    assert len(shared.keys) == 8
    assert {k.subject for k in shared.keys} == {"0::S1", "0::S2", "1::S1", "1::S2"}
    assert {k.subject for k in fits[12].keys} == {"large::S1", "large::S2"}

    # Reference: one fit_encoders call per label under the same pseudo-subject names (they
    # seed the initialisation), trained after the stacked run.
    for label in (0, 1):
        alone = fit_encoders(MAKE, {pseudo_subject(label, s): d for s, d in data[label].items()},
                             CFG, progress=False)
        idx = [i for i, k in enumerate(shared.keys) if k.subject.startswith(f"{label}::")]
        assert [shared.keys[i] for i in idx] == list(alone.keys)
        stacked_state = jax.tree.map(lambda a: a[np.asarray(idx)], shared.best_state)
        # float32 rounding of differently batched matmuls only (as tests/train/test_fit.py).
        diff = max(float(np.max(np.abs(a - b)))
                   for a, b in zip(_leaves(stacked_state), _leaves(alone.best_state)))
        assert diff < 1e-4
        np.testing.assert_allclose(shared.history[idx], alone.history, rtol=1e-5)

        features = {pseudo_subject(label, s): test_features[label][s] for s in ("S1", "S2")}
        predictions = alone.predict(features)
        for subject in ("S1", "S2"):
            row = next(r for r in rows if r["label"] == label and r["subject"] == subject)
            pred = predictions[pseudo_subject(label, subject)].astype(np.float64)[TRIM:]
            target = responses[subject].astype(np.float64)[TRIM:]
            r = _columns_r(target, pred)
            np.testing.assert_allclose(row["r"], r, atol=1e-3)
            np.testing.assert_allclose(row["r2"], r * np.abs(r), atol=1e-3)
            np.testing.assert_allclose(row["r2_cod"], sklearn_r2(target, pred, multioutput="raw_values"),
                                       atol=1e-3)
            reference_cc = _cc_norm(pred, repeats[subject].astype(np.float64)[:, TRIM:], 0.25)
            np.testing.assert_allclose(row["cc_norm"], reference_cc, atol=1e-3)
            assert row["mean_r"] == pytest.approx(np.mean(row["r"]), abs=1e-6)
            assert row["mean_cc_norm"] == pytest.approx(np.mean(row["cc_norm"]), abs=1e-6)


def test_encoder_sweep_rows_cover_every_label_and_subject(sweep):
    *_, fits, rows, checkpoints = sweep
    # One checkpoint folder per width group, holding the final epoch.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["width12", "width8"]
    assert all(any(p.iterdir()) for p in checkpoints.iterdir())
    assert [(r["label"], r["subject"]) for r in rows] == [
        (0, "S1"), (0, "S2"), (1, "S1"), (1, "S2"), ("large", "S1"), ("large", "S2")]
    for row in rows:
        assert row["n_features"] == (12 if row["label"] == "large" else 8)
        assert row["r"].shape == row["r2"].shape == row["r2_cod"].shape == row["cc_norm"].shape == (N_VOXELS,)
        assert np.all(np.isfinite(row["r"]))


def test_encoder_sweep_checks_widths_and_names():
    data, test_features, responses, repeats = _sweep_data()
    bad = dict(test_features, large={s: x[:, :5] for s, x in test_features["large"].items()})
    with pytest.raises(AlignmentError, match="'large'"):
        encoder_sweep(MAKE, data, CFG, test_features_by_label=bad, test_responses=responses)
    colliding = {1: data[1], "1": data[0]}
    with pytest.raises(ConfigError, match="pseudo-subject"):
        encoder_sweep(MAKE, colliding, CFG,
                      test_features_by_label={1: test_features[1], "1": test_features[0]},
                      test_responses=responses)
    story = next(iter(data[0]["S1"].features))
    mixed = dict(data[0]["S1"].features, **{story: np.zeros((40, 3), np.float32)})
    with pytest.raises(ConfigError, match="one feature width"):
        encoder_sweep(MAKE, {0: {"S1": SubjectData(mixed, data[0]["S1"].responses)}}, CFG,
                      test_features_by_label=test_features, test_responses=responses)
