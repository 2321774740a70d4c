"""Planted truth on the synthetic twin: oracle stimulus properties as features, delayed.

The twin plants voxels driven only by audio x semantic interaction latents (products of an
audio and a semantic projection, with every instantaneous linear part regressed out; see
:mod:`jaxenc.synthetic`). On those voxels the MLP must beat the reduced-rank linear
MLLinear and ridge, and the modality-separate DIMLP must sit between: clearly below the MLP (it
can model nonlinear functions of each modality but no cross-modal product) and not below the
linear models beyond a stated tolerance. On the linear voxels (audio, semantic,
audio+semantic) the MLP must lose nothing against ridge. As a user would, every network
chooses its learning rate and weight decay on the validation folds (:data:`GRID`, trained side
by side; the point of lowest mean validation loss predicts) and ridge its per-voxel penalty by
cross-validation on the same number of story-grouped folds.

Why this size: with 6 tiny stories (about 350 rows, 12 semantic dimensions) every model sits
near r = 0.1 on the interaction voxels, although ridge on the products of the true
projections (an oracle that knows the planted projections) reaches r = 0.5-0.9 from the same
TR-level features: the interaction survives Lanczos downsampling, but an MLP needs more rows
per input dimension to find it. 24 stories of 110 rows (2640 rows) with 4 semantic dimensions
and 2 interaction latents are enough. Every story has the same length (``min_respdict``
clamps them), so the Lanczos downsampling compiles once.

Gaps seen (mean test correlation over the interaction voxels, 3 folds, validation-selected
:data:`GRID` point; seed 0 runs in the default suite, 1-3 are marked slow):

    seed  MLP    DIMLP   MLLinear  ridge   MLP-best linear  MLP-DIMLP  DIMLP-MLLinear  DIMLP-ridge
    0     0.738  0.587   0.131     0.113   0.61             0.15       0.46            0.47
    1     0.798  0.431   0.125     0.123   0.67             0.37       0.31            0.31
    2     0.670  -0.052  -0.037    0.077   0.59             0.72       -0.02           -0.13
    3     0.805  0.378   0.061     0.104   0.70             0.43       0.32            0.27

On the linear voxels the MLP is 0.001-0.003 below ridge. The asserted margins are about half
the smallest positive gaps. DIMLP gains over the linear models only as much of the product as
nonlinear functions of each modality track, which depends on the draw (both modalities share
the speech-versus-silence envelope): 0.27-0.47 on seeds 0, 1, 3 and nothing on seed 2. There
DIMLP ties MLLinear (-0.02) while both network models miss the weak linear part of these voxels
that ridge finds (0.08; ridge has a penalty per voxel and refits on all stories); no point of a
12-point grid (learning rate 1e-3 to 1e-2, weight decay 1e-4 to 1) and no dropout from 0 to
0.5 brings DIMLP above 0.0 on seed 2. Hence two tolerances: a tight one against MLLinear, the
like-for-like network control, and a wider one against ridge.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from jaxenc.align import make_delayed, story_features
from jaxenc.conventions import DELAYS, TEST_STORY
from jaxenc.data import LeBelDataset
from jaxenc.metrics import pearson_r
from jaxenc.models import RidgeCV
from jaxenc.models.nonlinear import DIMLP, MLP, MLLinear, delayed_columns
from jaxenc.synthetic import SyntheticConfig, VoxelClass, load_truth, write_synthetic
from jaxenc.train import SubjectData, TrainConfig, fit_encoders

SUBJECT = "UTS01"
N_FOLDS = 3
# Stated margins on mean test correlations (see the module docstring for the gaps seen).
MLP_OVER_LINEAR = 0.3  # MLP above MLLinear and above ridge, interaction voxels
MLP_OVER_DIMLP = 0.08  # MLP above DIMLP, interaction voxels
DIMLP_BELOW_MLLINEAR = 0.05  # DIMLP at most this far below MLLinear, interaction voxels
DIMLP_BELOW_RIDGE = 0.2  # DIMLP at most this far below ridge, interaction voxels (seed 2)
LINEAR_VOXEL_LOSS = 0.01  # largest loss of the MLP against ridge on linear voxels
# Learning rate and weight decay points each network selects from on validation: the default,
# stronger decay, a larger step. On seeds 0-3 a 12-point grid (learning rates 1e-3, 3e-3,
# 1e-2 x weight decays 1e-4, 0.1, 0.3, 1) selects the same MLP and DIMLP points and MLLinear
# points within 0.012 of these scores; its learning rate 1e-3 runs last all max_epochs.
GRID = (
    {"learning_rate": 3e-3, "weight_decay": 1e-4},
    {"learning_rate": 3e-3, "weight_decay": 0.1},
    {"learning_rate": 1e-2, "weight_decay": 1e-4},
)


def planted_twin(root, seed: int) -> dict:
    """Write a twin with planted interactions and build its delayed oracle features.

    Parameters
    ----------
    root : Path
        Empty folder for the twin.
    seed : int
        Seed of the twin (stimuli, voxels, noise).

    Returns
    -------
    dict
        ``data`` (SubjectData of the training stories), ``x_test`` (n_test_trs, n_features),
        ``y_test`` (n_test_trs, n_voxels, the mean of the test repeats), ``modalities`` (the
        audio and semantic column ranges for DIMLP), ``interaction`` and ``linear`` (voxel
        indices of the interaction class and of the audio, semantic and audio+semantic classes).
    """
    config = SyntheticConfig.tiny(
        subjects=(SUBJECT,), n_voxels=(60,), n_repeats=(10,), n_train_stories=24, fewer_stories=(),
        length_scale=0.1, min_respdict=130, audio_rate=1000, n_semantic=4, n_interaction=2,
        class_fractions=(0.1, 0.1, 0.1, 0.3, 0.4), snr_range=(2.0, 4.0), seed=seed,
    )
    write_synthetic(root, config, progress=False)
    truth, ds = load_truth(root), LeBelDataset(root)

    def features(story):
        # Audio properties and semantic events share the 0.1 s frame grid: one aligned block.
        stim = truth.stimulus(story)
        values = np.concatenate([stim.audio, stim.semantic], axis=1)
        aligned = story_features(values, stim.audio_times, truth.respdict[story], story=story)
        return np.asarray(make_delayed(aligned, DELAYS), np.float32)

    n_audio = truth.stimulus(TEST_STORY).audio.shape[1]
    n_block = n_audio + config.n_semantic
    stories = truth.stories(SUBJECT)
    return {
        "data": SubjectData(
            {s: features(s) for s in stories},
            {s: np.asarray(ds.responses(SUBJECT, s), np.float32) for s in stories},
        ),
        "x_test": features(TEST_STORY),
        "y_test": np.asarray(ds.test_repeats(SUBJECT), np.float32).mean(axis=0),
        "modalities": [delayed_columns(0, n_audio, n_block, len(DELAYS)),
                       delayed_columns(n_audio, n_block, n_block, len(DELAYS))],
        "interaction": truth.voxels_of(SUBJECT, VoxelClass.INTERACTION),
        "linear": np.concatenate([truth.voxels_of(SUBJECT, c)
                                  for c in (VoxelClass.AUDIO, VoxelClass.SEMANTIC, VoxelClass.AUDIO_SEMANTIC)]),
    }


def encoder_makers(modalities) -> dict:
    """The three networks of the comparison, sized for the planted twin."""
    return {
        "mlp": functools.partial(MLP, hidden=64, dropout=0.1),
        "mllinear": functools.partial(MLLinear, hidden=64),
        "dimlp": lambda n_in, n_out, rngs: DIMLP(modalities, n_out, hidden=32, dropout=0.1, rngs=rngs),
    }


def planted_scores(root, seed: int, grid=GRID) -> dict:
    """Fit the four encoders on a planted twin and score the test story.

    The networks train every point of ``grid`` side by side and predict with the point of
    lowest mean validation loss (:meth:`EncoderFit.chosen_models`); ridge picks its penalty by
    story-grouped cross-validation on the same number of folds.

    Parameters
    ----------
    root : Path
        Empty folder for the twin.
    seed : int
        Seed of the twin (stimuli, voxels, noise) and of the training.
    grid : sequence of dict
        Learning rate and weight decay points of the networks.

    Returns
    -------
    dict of str to dict of str to float
        Per model ("mlp", "mllinear", "dimlp", "ridge"), the mean test correlation over the
        "interaction" voxels and over the "linear" (audio, semantic, audio+semantic) voxels.
    """
    twin = planted_twin(root, seed)
    data, x_test, y_test = twin["data"], twin["x_test"], twin["y_test"]
    r = {}
    for name, make in encoder_makers(twin["modalities"]).items():
        fit = fit_encoders(make, {SUBJECT: data}, train_config(seed), grid=grid, progress=False)
        r[name] = np.asarray(pearson_r(y_test, fit.predict({SUBJECT: x_test})[SUBJECT]))
    stories = list(data.features)
    x_train = np.concatenate([data.features[s] for s in stories])
    y_train = np.concatenate([data.responses[s] for s in stories])
    groups = np.concatenate([np.full(len(data.features[s]), i) for i, s in enumerate(stories)])
    r["ridge"] = np.asarray(pearson_r(y_test, RidgeCV(cv=N_FOLDS).fit(x_train, y_train, groups=groups).predict(x_test)))
    return {k: {"interaction": float(v[twin["interaction"]].mean()), "linear": float(v[twin["linear"]].mean())}
            for k, v in r.items()}


def train_config(seed: int) -> TrainConfig:
    """Training settings of the networks; the grid overrides learning rate and weight decay."""
    return TrainConfig(n_folds=N_FOLDS, seed=seed, n_components=None, batch_size=64, max_epochs=150,
                       patience=15, learning_rate=3e-3, weight_decay=1e-4, epochs_per_call=10,
                       checkpoint_every=10)


def check_ordering(mean: dict) -> None:
    """Assert the planted ordering MLP > DIMLP >~ MLLinear, ridge with the stated margins."""
    inter = {k: v["interaction"] for k, v in mean.items()}
    for linear_model in ("mllinear", "ridge"):
        assert inter["mlp"] > inter[linear_model] + MLP_OVER_LINEAR, mean
    assert inter["mlp"] > inter["dimlp"] + MLP_OVER_DIMLP, mean
    assert inter["dimlp"] > inter["mllinear"] - DIMLP_BELOW_MLLINEAR, mean
    assert inter["dimlp"] > inter["ridge"] - DIMLP_BELOW_RIDGE, mean
    assert mean["mlp"]["linear"] > mean["ridge"]["linear"] - LINEAR_VOXEL_LOSS, mean


@pytest.mark.slow
def test_mlp_wins_on_interaction_voxels(tmp_path):
    check_ordering(planted_scores(tmp_path, seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mlp_wins_on_interaction_voxels_other_seeds(tmp_path, seed):
    check_ordering(planted_scores(tmp_path, seed=seed))


# Mixed precision (TrainConfig.compute_dtype="bfloat16") against float32 on seed 0, mean test r
# of the validation-selected MLP. Measured (benchmarks/results/precision_training.json):
# interaction voxels 0.732 against 0.747, linear voxels 0.963 against 0.959; a change of
# initialisation seed alone moves them by 0.023 and 0.004. Margins: twice the seed's effect.
BF16_INTERACTION_MARGIN = 0.05
BF16_LINEAR_MARGIN = 0.01


@pytest.mark.slow  # two MLP fits over the 3-point grid: about 4 minutes on the loaded 2-core machine
def test_bfloat16_compute_keeps_the_planted_scores(tmp_path):
    twin = planted_twin(tmp_path, 0)
    make = encoder_makers(twin["modalities"])["mlp"]
    r = {}
    for dtype in ("float32", "bfloat16"):
        cfg = dataclasses.replace(train_config(0), compute_dtype=dtype)
        fit = fit_encoders(make, {SUBJECT: twin["data"]}, cfg, grid=GRID, progress=False)
        assert fit.best_state["hidden"]["linear"]["kernel"].dtype == np.float32  # master weights
        prediction = fit.predict({SUBJECT: twin["x_test"]})[SUBJECT]
        assert prediction.dtype == np.float32
        per_voxel = np.asarray(pearson_r(twin["y_test"], prediction))
        r[dtype] = {c: float(per_voxel[twin[c]].mean()) for c in ("interaction", "linear")}
    assert abs(r["bfloat16"]["interaction"] - r["float32"]["interaction"]) < BF16_INTERACTION_MARGIN, r
    assert abs(r["bfloat16"]["linear"] - r["float32"]["linear"]) < BF16_LINEAR_MARGIN, r
