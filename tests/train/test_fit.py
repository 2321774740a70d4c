"""fit_encoders: the vmapped program against a Python loop over the same models, padding,
early stopping, kill-and-resume from orbax checkpoints, and the errors it raises.

The equivalence reference is the same one-model program run one model at a time
(``vectorize=False``). Batched and unbatched matmuls round differently in float32, and Adam
amplifies rounding on near-zero gradients into steps of about ``lr``, so the comparison uses
the MSE loss (smooth) and a stated tolerance; bitwise equality is only expected where the
computation is literally the same (resume, padding of the same vmapped program).
"""

import dataclasses
import functools
import re
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxenc.errors import AlignmentError, CheckpointError, ConfigError, DataWarning
from jaxenc.models.nonlinear import MLP
from jaxenc.train import EncoderFit, NonFiniteError, SubjectData, TrainConfig, fit_encoders, story_folds
from jaxenc.train.config import ModelKey
from tests._tolerance import TRAINING_LOSS_RTOL, TRAINING_STATE_ATOL

MAKE = functools.partial(MLP, hidden=16, dropout=0.1)
CFG = TrainConfig(
    n_folds=3, n_components=6, batch_size=32, val_batch_size=64, max_epochs=8, patience=8,
    learning_rate=3e-3, loss="mse", epochs_per_call=2, checkpoint_every=2,
)


def _subject(seed, n_stories, n_voxels, n_features=10, rows=(30, 50)):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_features, n_voxels))
    feats, resps = {}, {}
    for s in range(n_stories):
        n = int(rng.integers(*rows))
        x = rng.standard_normal((n, n_features)).astype(np.float32)
        feats[f"story{s}"] = x
        resps[f"story{s}"] = (np.tanh(x) @ w + 0.5 * rng.standard_normal((n, n_voxels))).astype(np.float32)
    return SubjectData(feats, resps)


# A has fewer TRs and voxels than B: padded to B's rows, sharing the PCA output size.
DATA = {"A": _subject(0, 6, 20), "B": _subject(1, 7, 30, rows=(50, 70))}


def _leaves(state):
    # Every leaf, dropout keys and counters included, as float64 for the comparison.
    return [
        np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, np.float64)
        for x in jax.tree.leaves(state)
    ]


def _max_diff(s1, s2):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(_leaves(s1), _leaves(s2), strict=True))


@pytest.fixture(scope="module")
def vmapped():
    return fit_encoders(MAKE, DATA, CFG, progress=False)


def test_vmapped_equals_python_loop_and_compiles_once(vmapped):
    looped = fit_encoders(MAKE, DATA, CFG, progress=False, vectorize=False)
    assert [k for k in looped.keys] == [k for k in vmapped.keys]
    # Float32 rounding of batched vs unbatched products only, through 8 epochs (40 Adam steps,
    # lr 3e-3): tests/_tolerance.py's measured training bounds (why none is derived there).
    assert _max_diff(vmapped.best_state, looped.best_state) < TRAINING_STATE_ATOL
    np.testing.assert_allclose(vmapped.history, looped.history, rtol=TRAINING_LOSS_RTOL)
    np.testing.assert_allclose(vmapped.best_val, looped.best_val, rtol=TRAINING_LOSS_RTOL)
    # Four calls of the chunk program (8 epochs, 2 per call) in each mode, one trace each.
    assert vmapped.n_traces == 1 and looped.n_traces == 1
    # A second run of the same structure reuses the compiled program.
    again = fit_encoders(MAKE, DATA, CFG, progress=False)
    assert again.n_traces == 1
    assert _max_diff(again.best_state, vmapped.best_state) == 0.0


def test_stack_of_large_kernels_compiles_without_library_dots_and_equals_the_loop(vmapped, monkeypatch):
    # Every kernel counts as large: the vmapped program and the predictor are compiled with
    # XLA:CPU's own products instead of its library (YNNPACK) fusions, as at the paper's width.
    from jaxenc.train import program

    options = program.compiler_options(vmapped.best_state, len(vmapped.keys))
    assert options == ()  # these kernels are small: the default
    monkeypatch.setattr(program, "LIBRARY_DOTS_MAX_KERNEL_BYTES", 0)
    options = program.compiler_options(vmapped.best_state, len(vmapped.keys))
    assert options == program.WITHOUT_LIBRARY_DOTS
    eigen = fit_encoders(MAKE, DATA, CFG, progress=False)
    looped = fit_encoders(MAKE, DATA, CFG, progress=False, vectorize=False)
    # The tolerances of test_vmapped_equals_python_loop_and_compiles_once.
    assert _max_diff(eigen.best_state, looped.best_state) < TRAINING_STATE_ATOL
    np.testing.assert_allclose(eigen.history, looped.history, rtol=TRAINING_LOSS_RTOL)
    test = {s: d.features["story0"] for s, d in DATA.items()}
    for s, pred in eigen.predict(test).items():
        np.testing.assert_allclose(pred, looped.predict(test)[s], atol=1e-4)
    # The options reach the compiled predictor: its HLO has library (ynn) fusions by default
    # and none with them.
    from jaxenc.train.fit import _predictor

    x = np.stack([test["A"][:40], test["B"][:40]])
    subj = np.asarray([0 if k.subject == "A" else 1 for k in eigen.keys], np.int32)
    hlo = {o: _predictor(eigen.graphdef, o).lower(eigen.best_state, x, subj).compile().as_text() for o in ((), options)}
    assert "ynn" in hlo[()] and "ynn" not in hlo[options]


def test_padded_subject_trains_as_unpadded(vmapped):
    alone = fit_encoders(MAKE, {"A": DATA["A"]}, CFG, progress=False)
    idx = [i for i, k in enumerate(vmapped.keys) if k.subject == "A"]
    # Same program structure up to padding: A's rows are padded to B's in the joint run.
    together = jax.tree.map(lambda a: a[np.asarray(idx)], vmapped.best_state)
    assert _max_diff(alone.best_state, together) < 1e-5
    np.testing.assert_allclose(alone.history, vmapped.history[idx], rtol=1e-5)


def test_story_folds_are_grouped_and_complete():
    stories = [f"s{i}" for i in range(7)]
    folds = story_folds(stories, 3, seed=4)
    vals = [set(v) for _, v in folds]
    assert sorted(s for v in vals for s in v) == stories
    for train, val in folds:
        assert not set(train) & set(val) and set(train) | set(val) == set(stories)
    assert story_folds(list(reversed(stories)), 3, seed=4) == folds
    with pytest.raises(ConfigError, match="fold 3 of 4 has no validation stories"):
        story_folds(["a", "b", "c"], 4, subject="UTS01")


def test_early_stopping_keeps_best_and_freezes():
    # Pure-noise responses and a large step: the validation loss rises after a few epochs.
    rng = np.random.default_rng(3)
    noise = SubjectData(
        {f"s{i}": rng.standard_normal((40, 10)).astype(np.float32) for i in range(4)},
        {f"s{i}": rng.standard_normal((40, 12)).astype(np.float32) for i in range(4)},
    )
    cfg = TrainConfig(n_folds=2, n_components=None, batch_size=16, val_batch_size=64, max_epochs=40,
                      patience=3, learning_rate=3e-2, epochs_per_call=4, checkpoint_every=4)
    fit = fit_encoders(MAKE, {"N": noise}, cfg, progress=False)
    for i in range(len(fit.keys)):
        val = fit.history[i, :, 1]
        best, stop = fit.best_epoch[i], fit.stop_epoch[i]
        assert stop == best + cfg.patience, "stops after `patience` epochs without improvement"
        assert np.all(val[best + 1 : stop + 1] >= val[best])
        assert np.all(np.isnan(val[stop + 1 :])), "a stopped model trains no more"
        assert fit.best_val[i] == val[best] == np.nanmin(val)
        # Independent check of the kept parameters: numpy forward pass of the best model on
        # the validation stories reproduces the best validation loss.
        _, val_stories = fit.folds["N"][fit.keys[i].fold]
        x = np.concatenate([noise.features[s] for s in val_stories])
        y = np.concatenate([noise.responses[s] for s in val_stories])
        m = fit.model(i)
        h = x @ np.asarray(m.hidden.linear.kernel[...])
        bn = m.hidden.norm
        h = (h - np.asarray(bn.mean[...])) / np.sqrt(np.asarray(bn.var[...]) + bn.epsilon)
        h = np.tanh(h * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...]))
        pred = h @ np.asarray(m.readout.kernel[...]) + np.asarray(m.readout.bias[...])
        np.testing.assert_allclose(np.mean(np.abs(pred - y)), fit.best_val[i], rtol=1e-4)  # MAE
    assert np.all(fit.stop_epoch < cfg.max_epochs - 1)


class _Killed(Exception):
    pass


def test_kill_and_resume_equals_uninterrupted(vmapped, tmp_path):
    def kill_after_4(epoch, info):
        assert info["val_loss"].shape == (len(vmapped.keys),)
        if epoch == 4:
            raise _Killed

    with pytest.raises(_Killed):
        fit_encoders(MAKE, DATA, CFG, progress=False, checkpoint_dir=tmp_path, callback=kill_after_4)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "4"]
    seen = []
    resumed = fit_encoders(MAKE, DATA, CFG, progress=False, checkpoint_dir=tmp_path,
                           callback=lambda e, info: seen.append(e))
    assert seen == [6, 8], "resumed after epoch 4"
    assert _max_diff(resumed.best_state, vmapped.best_state) == 0.0
    assert _max_diff(resumed.final_state, vmapped.final_state) == 0.0
    np.testing.assert_array_equal(resumed.history, vmapped.history)
    # A checkpoint of another run is refused, not silently resumed.
    with pytest.raises(CheckpointError, match="different run"):
        fit_encoders(MAKE, DATA, TrainConfig(**{**CFG.__dict__, "learning_rate": 1e-2}),
                     progress=False, checkpoint_dir=tmp_path)


def test_a_damaged_latest_checkpoint_is_dropped_and_the_fit_resumes_from_the_previous(vmapped, tmp_path):
    def kill_after_4(epoch, info):
        if epoch == 4:
            raise _Killed

    with pytest.raises(_Killed):
        fit_encoders(MAKE, DATA, CFG, progress=False, checkpoint_dir=tmp_path, callback=kill_after_4)
    # As if killed while writing epoch 4: its largest array file is cut short.
    latest = tmp_path / "4"
    largest = max((p for p in latest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 3])
    seen = []
    with pytest.warns(DataWarning, match=f"unreadable checkpoint {re.escape(str(latest))}"):
        resumed = fit_encoders(MAKE, DATA, CFG, progress=False, checkpoint_dir=tmp_path,
                               callback=lambda e, info: seen.append(e))
    assert seen == [4, 6, 8], "resumed after epoch 2"
    assert _max_diff(resumed.best_state, vmapped.best_state) == 0.0
    np.testing.assert_array_equal(resumed.history, vmapped.history)


def test_row_count_mismatch_names_subject_story_and_counts():
    bad = SubjectData(dict(DATA["A"].features), dict(DATA["A"].responses))
    bad.responses["story2"] = bad.responses["story2"][:-3]
    n = DATA["A"].features["story2"].shape[0]
    expected = rf"subject A, story 'story2': features have {n} rows .* responses have {n - 3}"
    with pytest.raises(AlignmentError, match=expected):
        fit_encoders(MAKE, {"A": bad}, CFG, progress=False)


def test_fold_without_validation_stories():
    with pytest.raises(ConfigError, match="subject A.*has no validation stories"):
        fit_encoders(MAKE, DATA, TrainConfig(**{**CFG.__dict__, "n_folds": 7}), progress=False)


def test_nan_in_data_names_subject_story_row_and_column():
    # Checked once before training, where the story is still known.
    bad = SubjectData(dict(DATA["B"].features), dict(DATA["B"].responses))
    x = bad.features["story5"].copy()
    x[7, 3] = np.nan
    bad.features["story5"] = x
    with pytest.raises(NonFiniteError,
                       match=r"subject B, story 'story5': NaN or infinity in features at row 7, column 3"):
        fit_encoders(MAKE, {"A": DATA["A"], "B": bad}, CFG, progress=False)


def test_diverging_loss_names_subject_fold_epoch():
    # A step of 1e12 sends the MSE to infinity within the first epoch.
    cfg = TrainConfig(**{**CFG.__dict__, "learning_rate": 1e12})
    expected = r"subject A: NaN or infinity in the training or validation loss at fold 0, epoch 0"
    with pytest.raises(NonFiniteError, match=expected):
        fit_encoders(MAKE, {"A": DATA["A"]}, cfg, progress=False)


def test_a_shared_pca_cache_gives_the_same_fit_and_fits_each_pca_once(vmapped):
    cache = {}
    cached = fit_encoders(MAKE, DATA, CFG, progress=False, pca_cache=cache)
    assert len(cache) == CFG.n_folds * len(DATA)
    kept = dict(cache)
    again = fit_encoders(MAKE, DATA, CFG, progress=False, pca_cache=cache)
    assert cache.keys() == kept.keys() and all(cache[k] is kept[k] for k in cache)
    assert all(a is b for a, b in zip(again.pcas, cached.pcas, strict=True))
    assert _max_diff(cached.best_state, vmapped.best_state) == 0.0
    assert _max_diff(again.best_state, vmapped.best_state) == 0.0


def check_bfloat16_compute(make, data, cfg, float32_fit, rtol: float) -> None:
    """Train ``make`` with ``compute_dtype="bfloat16"`` and check it against ``float32_fit``.

    Mixed precision: products and activations in bfloat16, parameters (and the AdamW moments
    made from them), losses and predictions in float32; each model's best validation loss
    within ``rtol`` of float32's (bfloat16 rounds each operand by up to its unit roundoff,
    2^-8 = 0.4%, and the rounding of many products averages out in a loss).
    """
    fit = fit_encoders(make, data, dataclasses.replace(cfg, compute_dtype="bfloat16"), progress=False)
    floats = {leaf.dtype for leaf in jax.tree.leaves(fit.best_state) if jax.dtypes.issubdtype(leaf.dtype, np.floating)}
    assert floats == {np.dtype(np.float32)}
    np.testing.assert_allclose(fit.best_val, float32_fit.best_val, rtol=rtol)
    predictions = fit.predict({s: data[s].features["story0"] for s in data})
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in predictions.values())


def test_bfloat16_compute_trains_float32_master_weights_and_tracks_float32(vmapped):
    """Over these 8 epochs the MLP's best validation losses stay within 1% of float32's
    (measured 0.03%)."""
    check_bfloat16_compute(MAKE, DATA, CFG, vmapped, rtol=0.01)


def test_compute_dtype_needs_a_factory_taking_dtype():
    with pytest.raises(ConfigError, match="train.compute_dtype = 'bfloat16' needs a make_model that takes dtype="):
        fit_encoders(lambda n_in, n_out, rngs: MLP(n_in, n_out, hidden=4, rngs=rngs), DATA,
                     dataclasses.replace(CFG, compute_dtype="bfloat16"), progress=False)


def test_each_fold_takes_its_best_restart_within_the_best_hyperparameters():
    """The choice of :meth:`EncoderFit.chosen_models` on made-up validation losses: two learning
    rates x two restarts, two folds; written out by hand."""
    grid = tuple({"learning_rate": lr, "weight_decay": 0.0, "init": init} for lr in (1e-3, 1e-2) for init in (0, 1))
    keys = tuple(ModelKey("A", fold, g) for fold in range(2) for g in range(4))
    # Fold 0: lr 1e-3 restarts 0.5, 0.3; lr 1e-2 restarts 0.2, 0.9. Fold 1: 0.4, 0.6; 0.8, 0.7.
    # lr 1e-3: best per fold 0.3, 0.4 (mean 0.35); lr 1e-2: 0.2, 0.7 (mean 0.45) -> lr 1e-3,
    # restart 1 on fold 0 (model 1) and restart 0 on fold 1 (model 4).
    losses = np.asarray([0.5, 0.3, 0.2, 0.9, 0.4, 0.6, 0.8, 0.7])
    fit = SimpleNamespace(keys=keys, grid=grid, best_val=losses)
    assert EncoderFit.chosen_models(fit, "A") == [1, 4]
    assert EncoderFit.chosen_models(fit, "A", grid=3) == [3, 7]
    # Without restarts the choice is the point of lowest mean loss over the folds, as before.
    plain = SimpleNamespace(keys=keys, grid=tuple({"learning_rate": 1e-3 * (g + 1), "weight_decay": 0.0}
                                                  for g in range(4)), best_val=losses)
    means = [losses[[g, 4 + g]].mean() for g in range(4)]
    assert EncoderFit.chosen_models(plain, "A") == [int(np.argmin(means)), 4 + int(np.argmin(means))]
    with pytest.raises(ConfigError, match="no model of subject B"):
        EncoderFit.chosen_models(fit, "B")
    with pytest.raises(ConfigError, match="no model with grid index 4"):
        EncoderFit.chosen_models(fit, "A", grid=4)
