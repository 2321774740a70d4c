"""Adjusted Rand index against scikit-learn, and cluster stability on planted labellings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from jaxenc.analysis import (
    adjusted_rand_index,
    best_model_stability,
    fold_stability,
    label_agreement,
    repeat_half_stability,
)
from jaxenc.errors import AlignmentError, ConfigError


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ari_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 200)
    b = np.where(rng.random(200) < 0.6, a, rng.integers(0, 5, 200))
    # Both are float64 sums of pair counts below 2e4: equal to rounding.
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    # Items labelled -1 in either are left out.
    a_out, b_out = a.copy(), b.copy()
    a_out[:20], b_out[30:45] = -1, -1
    kept = np.r_[np.arange(20, 30), np.arange(45, 200)]
    assert adjusted_rand_index(a_out, b_out) == pytest.approx(adjusted_rand_score(a[kept], b[kept]), abs=1e-12)


@pytest.mark.parametrize(("a", "b"), [
    ([0, 0, 1, 1], [5, 5, 7, 7]),  # renamed labels
    ([0, 0, 0, 0], [1, 1, 1, 1]),  # one group in both
    ([0, 1, 2, 3], [3, 2, 1, 0]),  # every item alone in both
    ([0, 0, 0, 0], [0, 1, 2, 3]),  # one group against singletons
    ([0, 0, 1, 1], [0, 1, 0, 1]),  # crossed: below chance
])
def test_ari_edge_cases_match_scikit_learn(a, b):
    assert adjusted_rand_index(np.array(a), np.array(b)) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)


def test_stable_labellings_agree_and_shuffled_ones_do_not():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 400)
    # Five "folds" that each relabel 3% of the voxels at random, and five shuffles.
    stable = {f"fold{i}": np.where(rng.random(truth.size) < 0.03, rng.integers(0, 3, truth.size), truth)
              for i in range(5)}
    names, ari = label_agreement(stable)
    assert names == tuple(stable) and np.allclose(ari, ari.T) and np.all(np.diag(ari) == 1)
    # Each pair differs in about 4% of voxels: ARI about 0.9 (0.89-0.92 seen); margin 0.85.
    assert ari[np.triu_indices(5, 1)].min() > 0.85
    _, shuffled = label_agreement({f"seed{i}": rng.permutation(truth) for i in range(5)})
    # Independent labellings of 1200 items in 3 equal groups: ARI 0 in expectation, |ARI| at
    # most 0.0034 seen over the 10 pairs; margin 0.01.
    assert np.abs(shuffled[np.triu_indices(5, 1)]).max() < 0.01


def _planted_predictions(rng, clear: bool):
    """Three models on 90 rows x 300 voxels; voxel group g is best fitted by model g when clear."""
    n_rows, n_voxels = 90, 300
    y = rng.normal(size=(n_rows, n_voxels))
    group = np.repeat(np.arange(3), n_voxels // 3)
    predictions = {}
    for m in range(3):
        # Clear: the model of a voxel's group predicts it with noise 0.3, the others with 3.
        noise = np.where(group == m, 0.3, 3.0) if clear else np.full(n_voxels, 1.0)
        predictions[f"model{m}"] = y + noise * rng.normal(size=(n_rows, n_voxels))
    return predictions, y, group


def test_best_model_stability_separates_clear_from_tied_models():
    rng = np.random.default_rng(0)
    predictions, y, group = _planted_predictions(rng, clear=True)
    significant = np.ones(y.shape[1], bool)
    stable = best_model_stability(predictions, y, significant, n_resamples=30)
    assert np.array_equal(stable.labels, group)
    # r 0.96 against r 0.32 on 90 rows: no resample swaps a label (ARI 1.0 seen); margin 0.95.
    assert stable.ari.min() > 0.95 and stable.agreement.min() > 0.98
    tied, y, _ = _planted_predictions(rng, clear=False)
    unstable = best_model_stability(tied, y, significant, n_resamples=30)
    # Equally good models: the labels follow the noise; a resample shares about 63% of the
    # blocks with all the rows, so its labels keep some of the full labels (ARI 0.09-0.47, mean 0.25 seen);
    # margin 0.5.
    assert unstable.ari.mean() < 0.5
    summary = stable.summary()
    assert summary["n_resamples"] == 30 and summary["ari_mean"] == pytest.approx(stable.ari.mean())


def test_bad_input_is_refused():
    with pytest.raises(AlignmentError):
        adjusted_rand_index(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ConfigError, match="integers"):
        adjusted_rand_index(np.zeros(3), np.zeros(3))
    with pytest.raises(ConfigError, match="at least 2 labellings"):
        label_agreement({"a": np.zeros(3, int)})
    y = np.zeros((30, 4))
    with pytest.raises(AlignmentError):
        best_model_stability({"a": y, "b": y[:20]}, y, np.ones(4, bool))
    with pytest.raises(ConfigError, match="block"):
        best_model_stability({"a": y, "b": y}, y, np.ones(4, bool), block_size=30)


def _half_labels(predictions, repeats, significant):
    """Independent formulation: np.corrcoef per voxel and model, argmax, -1 outside the mask."""
    labels = np.full(repeats.shape[1], -1)
    for v in np.flatnonzero(significant):
        labels[v] = np.argmax([np.corrcoef(p[:, v], repeats[:, v])[0, 1] for p in predictions])
    return labels


def test_repeat_half_stability_matches_an_independent_computation():
    rng = np.random.default_rng(3)
    n_rows, n_voxels, n_repeats = 60, 90, 6
    signal = rng.standard_normal((3, n_rows, n_voxels))
    truth = rng.integers(0, 3, n_voxels)
    # Each voxel follows one model's prediction; noise differs between repeats.
    clean = signal[truth, :, np.arange(n_voxels)].T
    repeats = clean + 1.5 * rng.standard_normal((n_repeats, n_rows, n_voxels))
    predictions = {f"m{k}": signal[k] for k in range(3)}
    significant = rng.random(n_voxels) < 0.8
    out = repeat_half_stability(predictions, repeats, significant)
    odd = _half_labels(list(predictions.values()), repeats[0::2].mean(axis=0), significant)
    even = _half_labels(list(predictions.values()), repeats[1::2].mean(axis=0), significant)
    np.testing.assert_array_equal(out["labels_odd"], odd)
    np.testing.assert_array_equal(out["labels_even"], even)
    kept = significant
    assert out["ari_halves"] == pytest.approx(adjusted_rand_score(odd[kept], even[kept]), abs=1e-12)
    assert out["agreement_halves"] == pytest.approx(np.mean(odd[kept] == even[kept]), abs=1e-12)
    # Planted: at noise std 1.5 over 3 repeats per half, each half finds the planted model.
    assert out["ari_halves"] > 0.8


def test_repeat_half_stability_refuses_bad_shapes():
    predictions = {"a": np.zeros((10, 4)), "b": np.ones((10, 4))}
    with pytest.raises(ConfigError, match="n_repeats >= 2"):
        repeat_half_stability(predictions, np.zeros((1, 10, 4)), np.ones(4, bool))
    with pytest.raises(AlignmentError, match="must share"):
        repeat_half_stability(predictions, np.zeros((4, 9, 4)), np.ones(4, bool))
    with pytest.raises(AlignmentError, match="significant"):
        repeat_half_stability(predictions, np.zeros((4, 10, 4)), np.ones(5, bool))


def _fold_case(rng, n_folds, n_rows, n_voxels, fold_noise):
    """Three models' fold predictions: each voxel follows one model's signal; every fold model
    adds its own noise of std ``fold_noise`` to the signal."""
    signal = rng.standard_normal((3, n_rows, n_voxels))
    truth = rng.integers(0, 3, n_voxels)
    target = signal[truth, :, np.arange(n_voxels)].T + rng.standard_normal((n_rows, n_voxels))
    folds = {f"m{k}": signal[k] + fold_noise * rng.standard_normal((n_folds, n_rows, n_voxels)) for k in range(3)}
    return folds, target


def test_fold_stability_matches_scikit_learn_on_independently_computed_labels():
    rng = np.random.default_rng(4)
    folds, target = _fold_case(rng, 4, 50, 120, fold_noise=2.0)
    significant = rng.random(120) < 0.8
    out = fold_stability(folds, target, significant)
    labels = [_half_labels([p[k] for p in folds.values()], target, significant) for k in range(4)]
    np.testing.assert_array_equal(out.labels, np.stack(labels))
    for i in range(4):
        for j in range(4):
            # float64 pair counts below 1e4: equal to rounding.
            expected = adjusted_rand_score(labels[i][significant], labels[j][significant])
            assert out.ari[i, j] == pytest.approx(expected, abs=1e-12)
    pairs = out.ari[np.triu_indices(4, 1)]
    assert out.summary() == {"ari_folds_mean": pytest.approx(pairs.mean(), abs=1e-15),
                             "ari_folds_min": pairs.min(), "n_folds": 4}
    # The fold noise leaves the folds partly in agreement (ARI 0.43-0.56 seen): neither 0 nor 1.
    assert 0.2 < pairs.min() and pairs.max() < 0.8


def test_fold_stability_on_planted_folds():
    rng = np.random.default_rng(5)
    folds, target = _fold_case(rng, 5, 40, 1500, fold_noise=0.0)
    # Identical fold models: identical labels, ARI exactly 1.
    same = fold_stability(folds, target, np.ones(1500, bool))
    assert np.all(same.ari == 1.0) and np.all(same.labels == same.labels[0])
    # Fold models unrelated to each other and to the target: each fold's labels are an
    # independent uniform draw over 3 groups; ARI 0 in expectation, |ARI| at most 0.0024 seen
    # over the 10 pairs of 1500 voxels (chance spread about 1e-3); margin 0.01.
    noise = {name: rng.standard_normal(p.shape) for name, p in folds.items()}
    independent = fold_stability(noise, target, np.ones(1500, bool))
    assert np.abs(independent.ari[np.triu_indices(5, 1)]).max() < 0.01
    assert independent.summary()["n_folds"] == 5


def test_fold_stability_refuses_bad_input():
    p = np.zeros((3, 10, 4))
    with pytest.raises(ConfigError, match="at least 2 models"):
        fold_stability({"a": p}, p[0], np.ones(4, bool))
    with pytest.raises(ConfigError, match="at least 2 fold models"):
        fold_stability({"a": p[:1], "b": p[:1]}, p[0], np.ones(4, bool))
    with pytest.raises(AlignmentError, match="fold predictions"):
        fold_stability({"a": p, "b": p[:2]}, p[0], np.ones(4, bool))
    with pytest.raises(AlignmentError, match="fold predictions"):
        fold_stability({"a": p, "b": p}, p[0, :5], np.ones(4, bool))
    with pytest.raises(AlignmentError, match="significant"):
        fold_stability({"a": p, "b": p}, p[0], np.ones(5, bool))
    with pytest.raises(ConfigError, match="NaN"):
        fold_stability({"a": p, "b": np.full_like(p, np.nan)}, p[0], np.ones(4, bool))
