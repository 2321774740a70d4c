"""Stacking the subjects' data alone (rows of each model, fold PCA targets against
scikit-learn), and the array entry point against the per-story one."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.models.nonlinear import MLP
from jaxenc.train import SubjectData, TrainConfig, fit_encoders, fit_encoders_arrays
from jaxenc.train.config import resolve_grid
from jaxenc.train.stack import stack_subjects

CFG = TrainConfig(n_folds=3, n_components=4, batch_size=16, val_batch_size=40, max_epochs=2, patience=2,
                  epochs_per_call=1, checkpoint_every=1, loss="mse")


def _raw(leaf) -> np.ndarray:
    """A state leaf as numbers: the bits of a PRNG key, other leaves as they are."""
    is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    return np.asarray(jax.random.key_data(leaf) if is_key else leaf)


def _subject(seed, lengths, n_features=5, n_voxels=9):
    rng = np.random.default_rng(seed)
    f = {f"s{i}": rng.standard_normal((n, n_features)).astype(np.float32) for i, n in enumerate(lengths)}
    r = {k: rng.standard_normal((len(x), n_voxels)).astype(np.float32) for k, x in f.items()}
    return SubjectData(f, r)


DATA = {"A": _subject(0, [20, 31, 25, 18, 22]), "B": _subject(1, [40, 35, 28, 33], n_voxels=7)}


def test_each_model_reads_its_fold_rows_and_pca_scores():
    grid = resolve_grid([{}, {"learning_rate": 1e-2}], CFG)
    stack = stack_subjects(DATA, CFG, grid)
    assert len(stack.keys) == 2 * 3 * 2 and stack.n_features == 5 and stack.n_outputs == 4
    # Validation chunks as equal as possible: 3 chunks for B's longest fold (up to 75 rows).
    assert stack.n_val_max % stack.val_chunk == 0 and stack.val_chunk <= CFG.val_batch_size
    for m, key in enumerate(stack.keys):
        data = DATA[key.subject]
        stories = sorted(data.features)
        train, val = stack.folds[key.subject][key.fold]
        pm = stack.per_model
        X = stack.shared["X"][pm["subj"][m]]
        Y = stack.shared["Y"][pm["tgt"][m]]
        rows = pm["train_idx"][m, : pm["n_train"][m]]
        np.testing.assert_array_equal(X[rows], np.concatenate([data.features[s] for s in train]))
        vrows = pm["val_idx"][m, : pm["n_val"][m]]
        np.testing.assert_array_equal(X[vrows], np.concatenate([data.features[s] for s in val]))
        # Targets: every story's scores under a PCA of the fold's training responses only,
        # against scikit-learn (components up to sign).
        sk = SkPCA(4, svd_solver="full").fit(np.concatenate([data.responses[s] for s in train]))
        want = sk.transform(np.concatenate([data.responses[s] for s in stories]))
        got = Y[: len(want)]
        signs = np.sign(np.sum(got * want, axis=0))
        np.testing.assert_allclose(got * signs, want, atol=1e-4)
        assert np.all(Y[len(want):] == 0), "rows past the subject's end are padding"
        assert stack.learning_rate[m] == grid[key.grid]["learning_rate"]
    # Grid points of one (subject, fold) share their data and keys; folds differ.
    np.testing.assert_array_equal(stack.init_keys[0], stack.init_keys[1])
    assert not np.array_equal(stack.init_keys[0], stack.init_keys[2])


def test_a_restart_index_draws_new_keys_and_restart_0_keeps_the_runs_own():
    plain = stack_subjects(DATA, CFG, resolve_grid(None, CFG))
    restarts = stack_subjects(DATA, CFG, resolve_grid([{"init": 0}, {"init": 1}, {"init": 2}], CFG))
    assert [k.grid for k in restarts.keys[:3]] == [0, 1, 2]
    # Restart 0 of each model is the model of the grid without restarts, bit for bit.
    np.testing.assert_array_equal(restarts.init_keys[::3], plain.init_keys)
    np.testing.assert_array_equal(restarts.per_model["key"][::3], plain.per_model["key"])
    # Every (subject, fold, restart) draws its own initialisation and shuffle keys.
    for keys in (restarts.init_keys, restarts.per_model["key"]):
        assert len({bytes(np.asarray(k)) for k in keys}) == len(restarts.keys)
    with pytest.raises(ConfigError, match="grid init must be a non-negative integer"):
        resolve_grid([{"init": -1}], CFG)
    with pytest.raises(ConfigError, match="grid init must be a non-negative integer"):
        resolve_grid([{"init": 1.5}], CFG)


def test_voxel_targets_are_one_target_per_subject_shared_by_its_folds():
    """Without PCA every fold of a subject learns the same responses: the stack holds them once
    per subject (not once per fold), in sorted story order, and every model indexes its own."""
    data = {"A": _subject(0, [20, 31, 25, 18, 22]), "B": _subject(1, [40, 35, 28], n_voxels=9)}
    stack = stack_subjects(data, dataclasses.replace(CFG, n_components=None), resolve_grid(None, CFG))
    assert stack.shared["Y"].shape == (2, 116, 9) and stack.n_outputs == 9  # A's 116 rows the longest
    for m, key in enumerate(stack.keys):
        responses = data[key.subject].responses
        want = np.concatenate([responses[s] for s in sorted(responses)])
        Y = stack.shared["Y"][stack.per_model["tgt"][m]]
        np.testing.assert_array_equal(Y[: len(want)], want)
        assert np.all(Y[len(want):] == 0)
        assert stack.pcas[m] is None


def test_from_arrays_takes_views_and_names_stories():
    X = np.arange(60, dtype=np.float32).reshape(12, 5)
    Y = np.arange(36, dtype=np.float32).reshape(12, 3)
    groups = np.array([7, 7, 7, 2, 2, 2, 2, 9, 9, 7, 9, 9])
    sd = SubjectData.from_arrays(X, Y, groups, subject="S")
    assert list(sd.features) == ["7", "2", "9"]  # order of first appearance
    np.testing.assert_array_equal(sd.features["2"], X[3:7])
    assert np.shares_memory(sd.features["2"], X), "contiguous rows are a view"
    np.testing.assert_array_equal(sd.responses["7"], Y[[0, 1, 2, 9]])
    np.testing.assert_array_equal(sd.features["9"], X[[7, 8, 10, 11]])
    with pytest.raises(AlignmentError, match="subject S: X has 12 rows .* Y 11 and groups 12"):
        SubjectData.from_arrays(X, Y[:11], groups, subject="S")


def test_array_entry_point_equals_the_per_story_one():
    make = functools.partial(MLP, hidden=6, dropout=0.1)
    arrays = {}
    for subject, data in DATA.items():
        stories = sorted(data.features)
        arrays[subject] = (np.concatenate([data.features[s] for s in stories]),
                           np.concatenate([data.responses[s] for s in stories]),
                           np.repeat(stories, [len(data.features[s]) for s in stories]))
    a = fit_encoders_arrays(make, arrays, CFG, progress=False)
    b = fit_encoders(make, DATA, CFG, progress=False)
    assert a.keys == b.keys and a.folds == b.folds
    for x, y in zip(jax.tree.leaves(a.best_state), jax.tree.leaves(b.best_state), strict=True):
        np.testing.assert_array_equal(_raw(x), _raw(y))
    np.testing.assert_array_equal(a.history, b.history)


def test_array_entry_point_refuses_non_finite_responses_naming_the_group():
    from jaxenc.train import NonFiniteError

    X, Y = np.ones((12, 5), np.float32), np.ones((12, 3), np.float32)
    groups = np.array(["a"] * 6 + ["b"] * 6)
    Y[8, 2] = np.inf  # row 2 of group 'b'
    with pytest.raises(NonFiniteError, match=r"subject S, story 'b': NaN or infinity in responses at row 2, column 2"):
        fit_encoders_arrays(functools.partial(MLP, hidden=4), {"S": (X, Y, groups)}, CFG, progress=False)
