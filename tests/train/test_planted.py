"""Planted truth on the synthetic twin: oracle stimulus properties as features, delayed.

The twin plants voxels driven only by audio x semantic interaction latents (products of an
audio and a semantic projection, with every instantaneous linear part regressed out; see
:mod:`jaxenc.data.synthetic`). On those voxels the MLP must beat the reduced-rank linear
MLLinear and ridge, and the modality-separate DIMLP must stay clearly below the MLP: it can
model nonlinear functions of each modality but no cross-modal product. How much of the product
such functions track depends on the draw (both modalities share the speech-versus-silence
envelope): DIMLP gains 0.26-0.46 over the linear models on three seeds and nothing on a fourth,
so "DIMLP sits between" is asserted with a tolerance below the linear models. On the linear
voxels (audio, semantic, audio+semantic) the MLP must lose nothing against ridge.

Why this size: with 6 tiny stories (about 350 rows, 12 semantic dimensions) every model sits
near r = 0.1 on the interaction voxels, although ridge on the products of the true
projections (an oracle that knows the planted projections) reaches r = 0.5-0.9 from the same
TR-level features: the interaction survives Lanczos downsampling, but an MLP needs more rows
per input dimension to find it. 24 stories of 110 rows (2640 rows) with 4 semantic dimensions
and 2 interaction latents are enough. Every story has the same length (``min_respdict``
clamps them), so the Lanczos downsampling compiles once.

Gaps seen (mean test correlation over the interaction voxels, 3 folds, seeds 0-3; seed 0 runs
in the default suite, 1-3 are marked slow): MLP 0.64-0.80, DIMLP -0.03-0.59, MLLinear
-0.05-0.14, ridge 0.08-0.12; MLP minus the better linear model 0.56-0.69, MLP minus DIMLP
0.17-0.66, DIMLP minus the better linear model -0.10-0.46; on the linear voxels the MLP at most
0.007 below ridge. The asserted margins are about half the smallest gaps seen.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from jaxenc.align import make_delayed, story_features
from jaxenc.conventions import DELAYS, TEST_STORY
from jaxenc.data import LeBelDataset
from jaxenc.data.synth_response import VoxelClass
from jaxenc.data.synthetic import SyntheticConfig, load_truth, write_synthetic
from jaxenc.metrics import pearson_r
from jaxenc.models import RidgeCV
from jaxenc.models.nonlinear import DIMLP, MLP, MLLinear, delayed_columns
from jaxenc.train import SubjectData, TrainConfig, fit_encoders

SUBJECT = "UTS01"
N_FOLDS = 3
# Stated margins on mean test correlations (see the module docstring for the gaps seen).
MLP_OVER_LINEAR = 0.3  # MLP above MLLinear and above ridge, interaction voxels
MLP_OVER_DIMLP = 0.08  # MLP above DIMLP, interaction voxels
DIMLP_BELOW_LINEAR = 0.2  # DIMLP at most this far below MLLinear or ridge, interaction voxels
LINEAR_VOXEL_LOSS = 0.02  # largest loss of the MLP against ridge on linear voxels


def planted_scores(root, seed: int) -> dict:
    """Write a twin with planted interactions, fit the four encoders, score the test story.

    Parameters
    ----------
    root : Path
        Empty folder for the twin.
    seed : int
        Seed of the twin (stimuli, voxels, noise) and of the training.

    Returns
    -------
    dict of str to dict of str to float
        Per model ("mlp", "mllinear", "dimlp", "ridge"), the mean test correlation over the
        "interaction" voxels and over the "linear" (audio, semantic, audio+semantic) voxels.
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
    data = SubjectData(
        {s: features(s) for s in stories},
        {s: np.asarray(ds.responses(SUBJECT, s), np.float32) for s in stories},
    )
    x_test = features(TEST_STORY)
    y_test = np.asarray(ds.test_repeats(SUBJECT), np.float32).mean(axis=0)
    modalities = [delayed_columns(0, n_audio, n_block, len(DELAYS)),
                  delayed_columns(n_audio, n_block, n_block, len(DELAYS))]

    cfg = TrainConfig(n_folds=N_FOLDS, seed=seed, n_components=None, batch_size=64, max_epochs=150,
                      patience=15, learning_rate=3e-3, weight_decay=1e-4, epochs_per_call=10,
                      checkpoint_every=10)
    makers = {
        "mlp": functools.partial(MLP, hidden=64, dropout=0.1),
        "mllinear": functools.partial(MLLinear, hidden=64),
        "dimlp": lambda n_in, n_out, rngs: DIMLP(modalities, n_out, hidden=32, dropout=0.1, rngs=rngs),
    }
    r = {}
    for name, make in makers.items():
        fit = fit_encoders(make, {SUBJECT: data}, cfg, progress=False)
        r[name] = np.asarray(pearson_r(y_test, fit.predict({SUBJECT: x_test})[SUBJECT]))
    x_train = np.concatenate([data.features[s] for s in stories])
    y_train = np.concatenate([data.responses[s] for s in stories])
    groups = np.concatenate([np.full(len(data.features[s]), i) for i, s in enumerate(stories)])
    r["ridge"] = np.asarray(pearson_r(y_test, RidgeCV(cv=N_FOLDS).fit(x_train, y_train, groups=groups).predict(x_test)))

    inter = truth.voxels_of(SUBJECT, VoxelClass.INTERACTION)
    linear = np.concatenate([truth.voxels_of(SUBJECT, c)
                             for c in (VoxelClass.AUDIO, VoxelClass.SEMANTIC, VoxelClass.AUDIO_SEMANTIC)])
    return {k: {"interaction": float(v[inter].mean()), "linear": float(v[linear].mean())} for k, v in r.items()}


def check_ordering(mean: dict) -> None:
    """Assert the planted ordering MLP > DIMLP >~ MLLinear, ridge with the stated margins."""
    inter = {k: v["interaction"] for k, v in mean.items()}
    for linear_model in ("mllinear", "ridge"):
        assert inter["mlp"] > inter[linear_model] + MLP_OVER_LINEAR, mean
        assert inter["dimlp"] > inter[linear_model] - DIMLP_BELOW_LINEAR, mean
    assert inter["mlp"] > inter["dimlp"] + MLP_OVER_DIMLP, mean
    assert mean["mlp"]["linear"] > mean["ridge"]["linear"] - LINEAR_VOXEL_LOSS, mean


def test_mlp_wins_on_interaction_voxels(tmp_path):
    check_ordering(planted_scores(tmp_path, seed=0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mlp_wins_on_interaction_voxels_other_seeds(tmp_path, seed):
    check_ordering(planted_scores(tmp_path, seed=seed))
