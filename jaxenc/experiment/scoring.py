"""The evaluate stage: stored predictions -> :class:`~jaxenc.metrics.Scores` -> analyses -> RunResults.

Every prediction is scored against the test story's repeats by :func:`jaxenc.metrics.score`
with the config's ``[evaluate]`` settings, the one scoring function of every path. On top of
the scores: the variance partition audio / semantic / joint for every model and target fitted
on all three feature sets (:func:`jaxenc.analysis.partition_rows`), the clustering of voxels
by best-predicting feature set, the networks' interaction shares (stored by the fit stage), the
sweep curves (:func:`jaxenc.analysis.sweep_curves`), and
on the synthetic twin the planted checks (:func:`jaxenc.experiment.planted.planted_checks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxenc.analysis import (
    adjusted_rand_index,
    best_model_clusters,
    best_model_stability,
    by_feature_set,
    fold_stability,
    label_agreement,
    partition_rows,
    preferred_model,
    repeat_half_stability,
    sweep_curves,
)
from jaxenc.errors import ConfigError
from jaxenc.experiment import scaling
from jaxenc.experiment.fitting import clusters_folds, interactions_file, job_name, record_name, table_jobs
from jaxenc.experiment.planted import planted_checks
from jaxenc.featuresets import FEATURE_SETS, JOINT
from jaxenc.metrics import ScoreConfig, best_model, drop_first_rows, score, scored_ceiling
from jaxenc.models.registry import encoder
from jaxenc.report.results import ModelResult, RunResults
from jaxenc.store import RunStore

__all__ = ["score_run"]

# Keys of a prediction record that label its model rather than describe its fit.
_LABELS = ("features", "model", "target")
# The [evaluate] section's keys: the settings score()'s errors can name.
_SETTINGS = {f.name for f in dataclasses.fields(ScoreConfig)}


def score_run(config, data, store: RunStore, *, bar: Callable = lambda items, **kwargs: items) -> RunResults:
    """Score every stored prediction of the config's jobs and run the analyses.

    Parameters
    ----------
    config : ExperimentConfig
    data : RunData
        The test repeats of each subject, and the twin's truth for the planted checks.
    store : RunStore
        Holds the predictions the fit stage stored.
    bar : callable
        Wraps the list of predictions in a progress bar.

    Returns
    -------
    RunResults
        Not yet saved.

    Raises
    ------
    ConfigError
        A job of the config without stored predictions.
    """
    ev = config.evaluate
    repeats = {s: np.asarray(data.dataset.test_repeats(s), np.float32) for s in data.subjects}
    names = [job_name(job) for job in table_jobs(config)]
    missing = [n for n in names if store.load_prediction(n) is None]
    if missing:
        raise ConfigError(f"no stored predictions for {missing}: run `jaxenc fit` first", path=store.root)
    models = []
    for name in bar(names, desc="scoring", unit="model"):
        predictions, meta = store.load_prediction(name)
        info = {k: v for k, v in meta.items() if k not in _LABELS}
        for subject in data.subjects:
            try:
                scores = score(predictions[subject], repeats[subject], ev, seed=config.seed, subject=subject)
            except ConfigError as err:
                # Settings that only the test story's length rules out (e.g. block_size): name the key.
                if err.setting in _SETTINGS:
                    raise err.in_section("evaluate") from None
                raise
            models.append(ModelResult(subject, meta["features"], meta["model"], meta["target"], scores, info))
        if config.analyses.data_fractions:
            models.extend(scaling.scored_subsets(config, store, name, predictions, meta, repeats,
                                                 models[-len(data.subjects):]))
    results = RunResults(name=config.name, config=config.to_dict(),
                         cc_max={s: scored_ceiling(r, ev.test_trim) for s, r in repeats.items()}, models=models)
    if config.analyses.partition:
        results.partition = partition_rows(results.models)
    if config.analyses.clustering:
        results.clustering = _clustering(config, results, repeats, store)
    if config.analyses.interactions:
        results.interactions = _interactions(config, store)
    results.sweeps = sweep_curves(results.models)
    if data.truth is not None:
        results.planted = planted_checks(config.planted, data.truth, results, config.table.targets[0])
    return results


def _interactions(config, store: RunStore) -> dict:
    """Subject -> ``"<model>/<target>"`` -> interaction share per voxel, as the fit stage stored them."""
    out = {}
    for job in table_jobs(config):
        rel = interactions_file(job_name(job))
        if store.path(rel).is_file():
            for subject, share in store.read_arrays(rel).items():
                out.setdefault(subject, {})[f"{job.model}/{job.target}"] = np.asarray(share)
    return out


def _clustering(config, results: RunResults, repeats: dict, store: RunStore) -> dict:
    """Voxels clustered by best-predicting feature set, with the preferred joint model, and the
    stability of the labels: under a block bootstrap of the scored test rows, between the odd
    and even test repeats, ranked by r2_cod, across the table's encoders, and across the
    preferred network's cross-validation fold models (:func:`_fold_agreement`)."""
    target = config.table.targets[0]
    out = {}
    for subject in results.subjects:
        model = preferred_model(results.models, subject, target)
        if model is None:
            continue
        sets = by_feature_set(results.models, subject, model, target)
        significant = np.asarray(sets[JOINT].significant)
        if significant.sum() < 2 * config.analyses.cluster_k:
            continue
        # [repeat, test TR, voxel] on the rows scored.
        scored = drop_first_rows(repeats[subject], config.evaluate.test_trim, axis=1, what="test repeats")
        measured = scored.mean(axis=0)
        result = best_model_clusters({n: sets[n].r2 for n in FEATURE_SETS}, significant, measured.T,
                                     k=config.analyses.cluster_k, seed=config.seed)
        # Another setting of the clustering: the models ranked by the coefficient of determination
        # (which counts a prediction's scale and offset) instead of the paper's r2 = r·|r|.
        by_r2_cod = best_model(np.stack([np.asarray(sets[n].r2_cod) for n in FEATURE_SETS]), significant)
        out[subject] = {
            "labels": np.asarray(result.labels), "label_names": list(result.label_names),
            "modularity": float(result.modularity), "null_mean": float(result.null_mean),
            "null_std": float(result.null_std), "model": model, "target": target,
            "ari_r2_cod": adjusted_rand_index(np.asarray(result.labels), np.asarray(by_r2_cod)),
        }
        # The same labels from every encoder of the table fitted on the three feature sets.
        encoders = {m: best_model(np.stack([np.asarray(sets_m[n].r2) for n in FEATURE_SETS]), significant)
                    for m in dict.fromkeys(r.model for r in results.find(subject=subject, target=target))
                    if (sets_m := by_feature_set(results.models, subject, m, target)) is not None}
        if len(encoders) > 1:
            names, ari = label_agreement(encoders)
            out[subject].update(ari_encoders=float(ari[np.triu_indices(len(names), 1)].mean()),
                                encoders=list(names))
        predictions = {n: drop_first_rows(store.load_prediction(_name(n, model, target))[0][subject],
                                          config.evaluate.test_trim, what="test predictions")
                       for n in FEATURE_SETS}
        if scored.shape[0] >= 2:
            halves = repeat_half_stability(predictions, scored, significant)
            out[subject].update(ari_halves=halves["ari_halves"], agreement_halves=halves["agreement_halves"])
        if config.analyses.cluster_resamples:
            stability = best_model_stability(predictions, measured, significant,
                                             n_resamples=config.analyses.cluster_resamples,
                                             block_size=config.evaluate.block_size, seed=config.seed)
            out[subject].update(stability.summary())
        out[subject].update(_fold_agreement(config, store, subject, model, target, measured, significant))
    return out


def _fold_agreement(config, store: RunStore, subject: str, model: str, target: str, measured: np.ndarray,
                    significant: np.ndarray) -> dict:
    """The ARI of the best-feature-set labels between the fold models of ``model`` (the fit
    stage's stored fold predictions, scored on the same rows as the table): ``ari_folds_mean``,
    ``ari_folds_min``, ``n_folds`` and the per-pair matrix ``ari_folds`` (n_folds, n_folds);
    or ``folds_note``, why there is none."""
    spec = encoder(model)
    if not clusters_folds(config, spec, JOINT, target):
        # Ridge: the alphas are chosen by cross-validation, then one model is refitted on all
        # the training stories.
        return {"folds_note": "ridge: one model refitted on all the training stories" if spec.is_ridge
                else f"{model}: no fold models stored for the clustering"}
    folds = {}
    for features in FEATURE_SETS:
        rel = scaling.folds_file(_name(features, model, target))
        # Missing in a run folder fitted before the fit stage stored them: say so, score the rest.
        stored = store.read_arrays(rel) if store.path(rel).is_file() else {}
        if subject not in stored:
            return {"folds_note": f"no fold predictions of {model} on {features} stored ({rel}): rerun `jaxenc fit`"}
        folds[features] = drop_first_rows(stored[subject], config.evaluate.test_trim, axis=1,
                                          what="fold models' test predictions")
    if next(iter(folds.values())).shape[0] < 2:
        return {"folds_note": f"{model}: one fold model (train.n_folds = 1)"}
    result = fold_stability(folds, measured, significant)
    return {**result.summary(), "ari_folds": result.ari}


def _name(features: str, model: str, target: str) -> str:
    """The stored predictions of an encoder on a feature set of the table."""
    return record_name(features, model, target)
