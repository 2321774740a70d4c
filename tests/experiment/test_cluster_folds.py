"""The clustering's stability across cross-validation fold models on the tiny twin: the fit
stage stores the MLP's fold predictions of the three feature sets (and nothing else), the
evaluate stage reports the fold models' label agreement, and the job digests change only where
the stored files do."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from jaxenc.experiment import Experiment, load_config
from jaxenc.experiment.fitting import _digest, job_name, table_jobs
from jaxenc.experiment.scaling import folds_file
from jaxenc.experiment.scoring import _fold_agreement
from jaxenc.featuresets import FEATURE_SETS, JOINT
from jaxenc.metrics import drop_first_rows
from jaxenc.report import RunResults
from jaxenc.store import RunStore
from tests._tolerance import rounding_bound
from tests.experiment._runs import TINY

N_FOLDS = 3
# The planted sources (no feature model to run) and the MLP alone, so that it is the preferred
# model; three folds give three pairs; the PCA target as in experiments/clustering.toml. At the
# tiny twin's 2 epochs the MLP finds no significant voxel; at 20 epochs, learning rate 0.01 and
# 32 hidden units, its joint model has 76 of 320 (about 50 s on 2 loaded cores).
CLUSTER = TINY + [
    'table.feature_sets=["audio", "semantic", "audio+semantic"]', 'table.models=["mlp"]', 'table.targets=["pca"]',
    "audio.source=planted", "semantic.source=planted", f"train.n_folds={N_FOLDS}", "train.max_epochs=20",
    "train.epochs_per_call=10", "train.checkpoint_every=20", "train.learning_rate=0.01", "networks.hidden=32",
    "analyses.partition=false", "analyses.cluster_resamples=0",
]
QUIET = dict(progress=False, log=lambda line: None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster_folds")
    config = load_config(None, CLUSTER)
    paths = Experiment(config, out, **QUIET).run()
    return config, RunResults.load(out), paths, out


def _labels(predictions, target, significant):
    """Independent formulation: np.corrcoef per voxel and feature set, argmax, -1 outside the mask."""
    labels = np.full(target.shape[1], -1)
    for v in np.flatnonzero(significant):
        labels[v] = np.argmax([np.corrcoef(p[:, v], target[:, v])[0, 1] for p in predictions])
    return labels


def test_the_fit_stage_stores_the_clustered_networks_fold_predictions_only(run):
    config, _, _, out = run
    store = RunStore(out)
    stored = {job.features: job for job in table_jobs(config) if store.path(folds_file(job_name(job))).is_file()}
    assert sorted(stored) == sorted(FEATURE_SETS)
    for job in stored.values():
        folds = store.read_arrays(folds_file(job_name(job)))["UTS01"]
        predictions = store.load_prediction(job_name(job))[0]["UTS01"]
        assert folds.dtype == np.float32 and folds.shape == (N_FOLDS, *predictions.shape)
        # The job's prediction is the fold models' mean: float32 sums of N_FOLDS terms
        # (rounding_bound, relative to the largest value; both sides computed once each).
        scale = float(np.abs(folds).max())
        np.testing.assert_allclose(folds.mean(axis=0), predictions, rtol=0,
                                   atol=rounding_bound([N_FOLDS, N_FOLDS], scale=scale))


def test_the_clustering_reports_the_fold_models_agreement(run):
    config, results, paths, out = run
    entry = results.clustering["UTS01"]
    assert entry["model"] == "mlp" and entry["n_folds"] == N_FOLDS
    # Recomputed from the stored fold predictions: the scored rows (the trim dropped), the mean
    # of the test repeats, the joint model's significant voxels; labels by np.corrcoef, ARI by
    # scikit-learn (float64 pair counts: equal to rounding).
    store = RunStore(out)
    trim = config.evaluate.test_trim  # None: the protocol's trim, the rule drop_first_rows holds
    folds = [drop_first_rows(store.read_arrays(folds_file(f"{n}__mlp__pca"))["UTS01"], trim, axis=1)
             for n in FEATURE_SETS]
    repeats = np.asarray(Experiment(config, out, **QUIET).data.dataset.test_repeats("UTS01"), np.float64)
    target = drop_first_rows(repeats, trim, axis=1).mean(axis=0)
    significant = np.asarray(results.find(subject="UTS01", features=JOINT, model="mlp", target="pca")[0]
                             .scores.significant)
    labels = [_labels([f[k] for f in folds], target, significant) for k in range(N_FOLDS)]
    expected = np.array([[adjusted_rand_score(a[significant], b[significant]) for b in labels] for a in labels])
    np.testing.assert_allclose(entry["ari_folds"], expected, rtol=0, atol=1e-12)
    pairs = expected[np.triu_indices(N_FOLDS, 1)]
    assert entry["ari_folds_mean"] == pytest.approx(pairs.mean(), abs=1e-12)
    assert entry["ari_folds_min"] == pytest.approx(pairs.min(), abs=1e-12)
    # Measured (seed 0): ARI 0.221, 0.134, 0.139 between the folds' labels of the 76 significant
    # voxels (mean 0.164): above chance (0), far from agreement; margin 0.05 above chance.
    assert 0.05 < entry["ari_folds_min"] <= entry["ari_folds_mean"] < 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clustering"]["UTS01"]["values"]["ari_folds_mean"] == entry["ari_folds_mean"]
    assert "label ARI across fold models" in paths["md"].read_text()
    assert f"(min {entry['ari_folds_min']:.3f}, {N_FOLDS} folds)" in paths["md"].read_text()


def test_only_the_clustered_networks_digests_change(run):
    config, _, _, out = run
    index = json.loads((out / "features" / "index.json").read_text())
    both = ['table.models=["ridge", "mlp"]', 'table.targets=["pca", "voxels"]']
    off = load_config(None, CLUSTER + both + ["analyses.clustering=false"])
    with_ridge = load_config(None, CLUSTER + both)
    changed = {}
    for job in table_jobs(with_ridge):
        changed[job_name(job)] = _digest(with_ridge, index, job, "r") != _digest(off, index, job, "r")
    # The MLP on the clustered (first) target stores its folds: its digest changes; the ridge
    # jobs and the second target's do not.
    assert changed == {job_name(job): job.model == "mlp" and job.target == "pca" for job in table_jobs(with_ridge)}


def test_a_run_fitted_without_the_fold_predictions_says_so(run, tmp_path):
    config, _, _, _ = run
    # A run folder fitted before the fit stage stored them: no number, the reason and the file.
    note = _fold_agreement(config, RunStore(tmp_path), "UTS01", "mlp", "pca", np.zeros((5, 4)), np.ones(4, bool))
    assert note == {"folds_note": "no fold predictions of mlp on audio stored (predictions/audio__mlp__pca.folds.npz): "
                                  "rerun `jaxenc fit`"}
