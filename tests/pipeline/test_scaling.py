"""Data scaling on your own arrays (jaxenc.pipeline.scaling): nested story subsets, each an entry
of one fit_predict call.

References: the subsets against a shuffle written here; ridge on a subset against RidgeCV fitted
on that subset's rows alone; a network's stacked subsets against one direct fit_encoders call on
per-story data built here; the fold predictions against their mean.
"""

from __future__ import annotations

import functools
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from jaxenc.errors import ConfigError, DataWarning
from jaxenc.models import NetworkOptions, RidgeCV, RidgeOptions
from jaxenc.models.nonlinear import MLP
from jaxenc.pipeline import SubjectArrays
from jaxenc.pipeline.scaling import (
    fit_data_scaling,
    n_subset_keys,
    nested_subsets,
    parse_subset_key,
    scaling_arrays,
    subset_arrays,
    subset_key,
)
from jaxenc.train import SubjectData, TrainConfig, fit_encoders

STORIES = [f"story{i:02d}" for i in range(12)]


def test_subsets_are_nested_prefixes_of_one_shuffle():
    subsets = nested_subsets(STORIES, [0.25, 0.5, 1.0], seed=3, min_stories=2)
    order = [sorted(STORIES)[i] for i in np.random.default_rng(3).permutation(12)]
    assert list(subsets) == [3, 6, 12]
    for k, stories in subsets.items():
        assert stories == tuple(sorted(order[:k]))
    assert set(subsets[3]) < set(subsets[6]) < set(subsets[12])
    # The order of the stories given does not matter.
    assert nested_subsets(STORIES[::-1], [0.25, 0.5, 1.0], seed=3, min_stories=2) == subsets


def test_small_fractions_are_raised_to_the_folds_with_a_warning():
    with pytest.warns(DataWarning, match="at least 3"):
        subsets = nested_subsets(STORIES, [0.125, 0.25, 1.0], min_stories=3, subject="UTS01")
    assert list(subsets) == [3, 12]  # 1/8 of 12 (2 stories) raised to 3, the same as 1/4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nested_subsets(STORIES, [0.25, 1.0], min_stories=3)


@pytest.mark.parametrize("fractions", [[0.0, 1.0], [1.5], [], [True]])
def test_fractions_outside_0_1_are_refused(fractions):
    with pytest.raises(ConfigError, match=r"UTS01: data_fractions .*\(0, 1\]"):
        nested_subsets(STORIES, fractions, subject="UTS01")


def test_too_few_stories_for_the_folds_are_refused():
    with pytest.raises(ConfigError, match="UTS02: 2 training stories, fewer than the 3 folds"):
        nested_subsets(STORIES[:2], [1.0], min_stories=3, subject="UTS02")


def test_subset_keys_round_trip():
    assert subset_key("UTS01", 3, 12) == "UTS01@3of12"
    assert parse_subset_key("UTS01@3of12") == ("UTS01", 3, 12, 0)
    assert subset_key("UTS01", 3, 12, 2) == "UTS01@3of12d2"
    assert parse_subset_key("UTS01@3of12d2") == ("UTS01", 3, 12, 2)
    assert parse_subset_key("UTS01") is None


def _arrays(seed=0, n_stories=6, rows=40, n_features=7, n_voxels=9, n_test=30):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_stories * rows + n_test, 4))
    X = latent @ rng.standard_normal((4, n_features)) + 0.5 * rng.standard_normal((len(latent), n_features))
    Y = np.tanh(latent) @ rng.standard_normal((4, n_voxels)) + rng.standard_normal((len(latent), n_voxels))
    groups = np.repeat([f"s{i}" for i in range(n_stories)], rows)
    split = n_stories * rows
    return SubjectArrays(X[:split].astype(np.float32), Y[:split].astype(np.float32), groups,
                         X[split:].astype(np.float32))


def test_subset_arrays_keep_the_rows_of_their_stories():
    arrays = _arrays()
    sub = subset_arrays(arrays, ["s4", "s1"])
    rows = np.isin(arrays.groups, ["s1", "s4"])
    np.testing.assert_array_equal(sub.X, arrays.X[rows])
    np.testing.assert_array_equal(sub.Y, arrays.Y[rows])
    np.testing.assert_array_equal(sub.X_test, arrays.X_test)
    with pytest.raises(ConfigError, match=r"\['s9'\] have no training rows"):
        subset_arrays(arrays, ["s9"])


def test_scaling_arrays_key_every_subset_after_the_subjects():
    data = {"A": _arrays(0), "B": _arrays(1, n_stories=4)}
    out = scaling_arrays(data, [0.5, 1.0], min_stories=2)
    assert list(out) == ["A", "B", "A@3of6", "B@2of4"]
    assert out["A"] is data["A"]


@pytest.mark.parametrize(("fractions", "min_stories", "draws"), [
    ([0.5, 1.0], 2, 1), ([0.25, 0.5, 1.0], 2, 3), ([0.1, 0.2, 0.5], 3, 2), ([1.0], 2, 4), ([0.4, 0.6], 1, 2),
])
def test_the_counted_entries_are_those_scaling_arrays_makes(fractions, min_stories, draws):
    # What the memory check counts before any array exists (raised and shared sizes included).
    data = {"A": _arrays(0), "B": _arrays(1, n_stories=4)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        out = scaling_arrays(data, fractions, min_stories=min_stories, draws=draws)
    for subject, n in (("A", 6), ("B", 4)):
        made = [k for k in out if k == subject or k.startswith(f"{subject}@")]
        assert n_subset_keys(n, fractions, min_stories=min_stories, draws=draws) == len(made)


def test_each_draw_is_its_own_shuffle_and_the_first_is_the_single_draws():
    data = {"A": _arrays(0), "B": _arrays(1, n_stories=4)}
    one = scaling_arrays(data, [0.5, 1.0], seed=3, min_stories=2)
    two = scaling_arrays(data, [0.5, 1.0], seed=3, min_stories=2, draws=2)
    assert list(two) == ["A", "B", "A@3of6", "A@3of6d1", "B@2of4", "B@2of4d1"]
    for key in one:
        np.testing.assert_array_equal(two[key].groups, one[key].groups)
    for subject, n in (("A", 6), ("B", 4)):
        # The second draw: the shuffle of seed [3, 1], as nested_subsets makes it.
        want = nested_subsets(sorted(set(data[subject].groups)), [0.5], seed=[3, 1], min_stories=2)
        assert sorted(set(two[f"{subject}@{n // 2}of{n}d1"].groups)) == list(want[n // 2])
    assert sorted(set(two["A@3of6d1"].groups)) != sorted(set(two["A@3of6"].groups))
    with pytest.raises(ConfigError, match="draws must be a positive integer, got 0"):
        scaling_arrays(data, [0.5], draws=0)


def test_ridge_on_each_subset_is_ridge_on_that_subset_alone():
    data = {"A": _arrays(0), "B": _arrays(1, n_stories=4)}
    options = RidgeOptions(log10_alphas=(-1.0, 3.0, 5), folds=2)
    with pytest.warns(DataWarning, match="subject B"):  # 1/4 of B's 4 stories is raised to 2, like 1/2
        fit = fit_data_scaling("ridge", data, [0.25, 0.5, 1.0], seed=1, ridge=options)
    assert sorted(fit.predictions) == [("A", 2, 0), ("A", 3, 0), ("A", 6, 0), ("B", 2, 0), ("B", 4, 0)]
    assert fit.fold_predictions == {}  # one ridge per subject and subset
    for (subject, k, _), stories in fit.subsets.items():
        assert len(stories) == k
        sub = subset_arrays(data[subject], stories)
        alone = RidgeCV(alphas=options.alphas(), cv=2).fit(sub.X, sub.Y, groups=sub.groups)
        # The same solver on the same rows: equal up to a few float32 units of the O(1)
        # predictions; a row of another story moves them by 1e-2 or more.
        np.testing.assert_allclose(fit.predictions[subject, k, 0], np.asarray(alone.predict(sub.X_test)),
                                   rtol=1e-5, atol=1e-5)


def test_a_networks_subsets_folds_and_subjects_train_in_one_program(tmp_path):
    data = {"A": _arrays(0), "B": _arrays(1, n_stories=4)}
    train = TrainConfig(n_folds=2, n_components=None, batch_size=32, val_batch_size=64, max_epochs=3, patience=3,
                        learning_rate=3e-3, loss="mse", epochs_per_call=3, checkpoint_every=3)
    networks = NetworkOptions(hidden=13, dropout=0.1, batch_norm=False)
    fit = fit_data_scaling("mlp", data, [0.5, 1.0], seed=2, train=train, networks=networks,
                           checkpoint_dir=tmp_path)
    # One fit_encoders call, one stacked program, for the 4 entries x 2 folds (equal voxel counts).
    assert [p.name for p in fit.job.checkpoints] == ["A-B-A@3of6-B@2of4"]
    assert {k: len(v) for k, v in fit.job.info["best_epoch"].items()} == {
        "A": 2, "B": 2, "A@3of6": 2, "B@2of4": 2}
    # The reference: the same stack built by hand, each subset's stories chosen here.
    per_story, tests = {}, {}
    for subject, arrays in data.items():
        names = sorted(set(arrays.groups))
        order = [names[i] for i in np.random.default_rng(2).permutation(len(names))]
        half = int(np.floor(0.5 * len(names) + 0.5))  # the fraction 0.5, rounded half up
        for key, stories in ((subject, names), (subset_key(subject, half, len(names)), order[:half])):
            per_story[key] = SubjectData({s: arrays.X[arrays.groups == s] for s in stories},
                                         {s: arrays.Y[arrays.groups == s] for s in stories})
            tests[key] = arrays.X_test
    per_story = {key: per_story[key] for key in ["A", "B", "A@3of6", "B@2of4"]}
    make = functools.partial(MLP, hidden=13, dropout=0.1, batch_norm=False, activation=jnp.tanh)
    direct = fit_encoders(make, per_story, train, progress=False)
    expected = direct.predict_folds(tests)
    for key, folds in expected.items():
        subject, k = (key, len(set(data[key].groups))) if "@" not in key else parse_subset_key(key)[:2]
        # The same compiled training on the same data and seed: equal up to a few float32 units
        # (how XLA fuses the two call sites); another story, fold or seed moves them by 1e-2 or more.
        np.testing.assert_allclose(fit.fold_predictions[subject, k, 0], folds, rtol=1e-5, atol=1e-5)
        # The prediction is the fold models' mean.
        np.testing.assert_allclose(fit.predictions[subject, k, 0], folds.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_a_program_of_many_entries_names_its_checkpoint_folder_within_file_name_limits():
    from jaxenc.pipeline.runner import group_folder

    # 8 subjects x 2 subset sizes x 4 draws.
    keys = [subset_key(f"UTS0{s}", k, 12, d) for s in range(1, 9) for k in (3, 6) for d in range(4)]
    name = group_folder(keys)
    assert len("-".join(keys)) > 255 and len(name.encode()) <= 120
    assert name.startswith("UTS01@3of12-and-63-more-") and name == group_folder(list(keys))
    assert group_folder(keys[:-1]) != name
    assert group_folder(["A", "B", "A@3of6"]) == "A-B-A@3of6"  # short: the keys themselves


def test_subject_names_that_look_like_subset_keys_are_refused():
    with pytest.raises(ConfigError, match="must not look like subset keys"):
        fit_data_scaling("ridge", {"A@1of2": _arrays()}, [1.0])
