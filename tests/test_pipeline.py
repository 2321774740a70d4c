"""The linear baseline end to end on the synthetic twin: planted voxel classes come out.

The partition tests fit banded ridge (a penalty per modality and voxel, ``ridge.banded`` as in
experiments/partition.toml); the default, per-voxel ridge on the concatenated features, is
exercised by the PCA test here and held equal to ``jaxenc run`` in
tests/experiment/test_one_path.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxenc import pipeline
from jaxenc.analysis import partition_sets
from jaxenc.data import LeBelDataset
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.featuresets import AUDIO, FEATURE_SETS, JOINT
from jaxenc.metrics import UNIQUE_A, UNIQUE_B, ScoreConfig, cc_max, protocol_trim, variance_partition
from jaxenc.models import RidgeOptions
from jaxenc.synthetic import VoxelClass

SUBJECT = "UTS01"
JOINT_INDEX = FEATURE_SETS.index(JOINT)
RIDGE = RidgeOptions(folds=3)
BANDED = RidgeOptions(folds=3, banded=True)


@pytest.fixture(scope="module")
def baseline(planted_twin):
    root, truth = planted_twin
    dataset = LeBelDataset(root)
    stories = list(dataset.stories(SUBJECT)) + [dataset.test_story]
    features = pipeline.planted_features(truth, stories)
    results = pipeline.fit_linear_baseline(dataset, SUBJECT, features, ridge=BANDED,
                                           scoring=ScoreConfig(permutations=200))
    scores = {name: results.find(features=name)[0].scores for name in FEATURE_SETS}
    return dataset, truth, results, scores, partition_sets(scores)


def _class(truth, voxel_class):
    return truth.voxel_class[SUBJECT] == int(voxel_class)


@pytest.mark.slow
def test_baseline_rows_match_the_hf5_files(baseline):
    dataset, truth, *_ = baseline
    stories = list(dataset.stories(SUBJECT))
    features = pipeline.planted_features(truth, stories)
    design = pipeline.design_matrix(features[AUDIO], dataset.respdict, stories)
    Y = pipeline.training_responses(dataset, SUBJECT, stories, design.slices)
    expected = sum(dataset.respdict[s] - 20 for s in stories)
    assert design.X.shape[0] == Y.shape[0] == expected
    assert design.X.shape[1] == 4 * features[AUDIO][stories[0]][1].shape[1]
    assert list(dict.fromkeys(design.groups)) == stories
    joint = pipeline.design_matrix([features[AUDIO], features["semantic"]], dataset.respdict, stories)
    (a0, a1), (s0, s1) = joint.bands
    np.testing.assert_array_equal(joint.X[:, a0:a1], design.X)
    assert s1 == joint.X.shape[1] and a1 == s0


def test_noise_voxels_are_not_significant(baseline):
    _, truth, _, scores, _ = baseline
    noise = _class(truth, VoxelClass.NOISE)
    # FDR at 5%: false positives among noise voxels stay near that rate (seen 0.02 and 0.05
    # with seeds 0 and 1).
    assert scores[JOINT].significant[noise].mean() <= 0.10


def test_partition_assigns_single_modality_voxels_to_their_modality(baseline):
    _, truth, _, _, partition = baseline
    best_part = np.asarray(partition.parts.best_part)
    for voxel_class, part in ((VoxelClass.AUDIO, UNIQUE_A), (VoxelClass.SEMANTIC, UNIQUE_B)):
        voxels = _class(truth, voxel_class) & (best_part >= 0)
        assert voxels.sum() >= 20, voxel_class
        share = np.mean(best_part[voxels] == part)
        # Chance is 1/3 (three parts); seen with seeds 0 and 1: audio 0.94 and 0.77,
        # semantic 0.86 and 0.91 (per-voxel ridge on the concatenation: audio 0.83 and 0.63).
        assert share >= 0.7, (voxel_class, share)


def test_joint_voxels_are_best_explained_by_the_joint_model(baseline):
    _, truth, _, _, partition = baseline
    best = partition.best
    joint = _class(truth, VoxelClass.AUDIO_SEMANTIC) & (best >= 0)
    audio = _class(truth, VoxelClass.AUDIO) & (best >= 0)
    share_joint = np.mean(best[joint] == JOINT_INDEX)
    share_audio = np.mean(best[audio] == JOINT_INDEX)
    # Chance is 1/3; seen (seeds 0 and 1) 0.92 and 0.96 for joint voxels, 0.44 and 0.30 for
    # audio-only voxels.
    assert share_joint >= 0.6
    assert share_joint - share_audio >= 0.25
    unique_b = np.asarray(partition.parts.unique_b)
    # Joint voxels keep a semantic unique part that audio-only voxels lack (median r2 units;
    # seen 0.17 and 0.19).
    assert np.median(unique_b[joint]) - np.median(unique_b[audio]) >= 0.1


def test_results_report_every_feature_set_and_the_partition(baseline):
    _, _, results, _, partition = baseline
    table = {row["features"]: row for row in results.table()}
    assert set(table) == set(FEATURE_SETS)
    assert table[JOINT]["mean_r"] > max(table[m]["mean_r"] for m in ("audio", "semantic"))
    (row,) = results.partition
    assert sum(row["best_model_share"].values()) == pytest.approx(1.0)
    assert row["n_significant"] == int(partition.significant.sum())


def test_scores_partition_and_ceiling_use_the_papers_definitions(baseline):
    """r2 is r·|r| (the partition and the best model compare it), r2_cod the coefficient of
    determination, and the noise ceiling is that of the rows scored (the protocol's trim)."""
    dataset, _, results, scores, partition = baseline
    for s in scores.values():
        np.testing.assert_allclose(s.r2, s.r * np.abs(s.r), rtol=1e-6)
        assert np.mean(s.r2_cod) != pytest.approx(np.mean(s.r2), abs=1e-3)
    part = variance_partition(*(scores[n].r2 for n in FEATURE_SETS), significant=scores[JOINT].significant)
    np.testing.assert_array_equal(np.asarray(partition.parts.best_part), np.asarray(part.best_part))
    repeats = dataset.test_repeats(SUBJECT)
    trim = protocol_trim(repeats.shape[1])
    assert 0 < trim < repeats.shape[1] // 4  # the protocol's 40 of 291 rows, scaled to this twin
    np.testing.assert_allclose(results.cc_max[SUBJECT], np.asarray(cc_max(repeats[:, trim:])), rtol=1e-6)


@pytest.mark.slow
def test_pca_target_scores_in_voxel_space(planted_twin):
    from jaxenc.train import TrainConfig

    root, truth = planted_twin
    dataset = LeBelDataset(root)
    stories = list(dataset.stories(SUBJECT)) + [dataset.test_story]
    features = pipeline.planted_features(truth, stories)
    results = pipeline.fit_linear_baseline(dataset, SUBJECT, features, feature_sets=[JOINT], target="pca",
                                           ridge=RIDGE, train=TrainConfig(n_components=32),
                                           scoring=ScoreConfig(permutations=100))
    r = results.find(features=JOINT)[0].scores.r
    assert r.shape == (dataset.n_voxels(SUBJECT),)
    signal = ~_class(truth, VoxelClass.NOISE) & ~_class(truth, VoxelClass.INTERACTION)
    noise = _class(truth, VoxelClass.NOISE)
    # Through 32 components the signal voxels are still predicted, the noise voxels not
    # (seen 0.85 and 0.88 with seeds 0 and 1).
    assert np.median(r[signal]) - np.median(r[noise]) >= 0.3


def test_bad_inputs_name_what_is_wrong(planted_twin):
    root, truth = planted_twin
    dataset = LeBelDataset(root)
    stories = list(dataset.stories(SUBJECT))
    features = pipeline.planted_features(truth, stories)
    with pytest.raises(ConfigError, match="target"):
        pipeline.fit_linear_baseline(dataset, SUBJECT, features, target="voxel")
    with pytest.raises(ConfigError, match="no features given for"):
        pipeline.fit_linear_baseline(dataset, SUBJECT, {AUDIO: features[AUDIO]})
    with pytest.raises(ConfigError, match=stories[0]):
        pipeline.design_matrix({}, dataset.respdict, stories[:1])
    times, values = features[AUDIO][stories[0]]
    short = {stories[0]: (times, values)}
    respdict = {stories[0]: dataset.respdict[stories[0]] + 3}
    design = pipeline.design_matrix(short, respdict, stories[:1])
    with pytest.raises(AlignmentError, match=stories[0]):
        pipeline.training_responses(dataset, SUBJECT, stories[:1], design.slices)
