"""The linear baseline from Python: ridge on audio, semantic and audio+semantic, scored and partitioned.

The paper's linear model, per-voxel ridge on the features (the two modalities concatenated for
audio+semantic; banded ridge with a penalty per modality on request), fitted by the same runner
and scored by the same function as ``jaxenc run``, so the two give the same numbers for the same
settings (tests/experiment/test_one_path.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from jaxenc.analysis.partition import partition_rows
from jaxenc.errors import ConfigError
from jaxenc.featuresets import FEATURE_SETS, MODALITIES, FeatureSet, modalities
from jaxenc.metrics.protocol import ScoreConfig
from jaxenc.metrics.scoring import score, scored_ceiling
from jaxenc.models.registry import RidgeOptions
from jaxenc.pipeline.designs import AlignOptions, Designs
from jaxenc.pipeline.runner import TARGETS, fit_predict, response_mesh
from jaxenc.report.results import ModelResult, RunResults
from jaxenc.train import TrainConfig

__all__ = ["fit_linear_baseline"]


def fit_linear_baseline(dataset, subjects: str | Sequence[str], features: Mapping[str, FeatureSet], *,
                        feature_sets: Sequence[str] = FEATURE_SETS, target: str = "voxels",
                        align: AlignOptions = AlignOptions(), ridge: RidgeOptions = RidgeOptions(),
                        train: TrainConfig = TrainConfig(), scoring: ScoreConfig = ScoreConfig(),
                        mesh=None) -> RunResults:
    """Fit ridge on each feature set of each subject, score the test story, partition the variance.

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
    subjects : str or sequence of str
    features : mapping of str to FeatureSet
        ``{"audio": FeatureSet, "semantic": FeatureSet}`` covering the subjects' training
        stories and the test story.
    feature_sets : sequence of str
        Among :data:`~jaxenc.featuresets.FEATURE_SETS`; with all three, the results hold the
        variance partition.
    target : {"voxels", "pca"}
        Ridge predicts every voxel, or ``train.n_components`` principal components of the
        training responses, projected back to voxels for scoring.
    align : AlignOptions
        Delays, their boundary and the training stories' trim.
    ridge : RidgeOptions
        Penalties, folds, and banded ridge on audio+semantic.
    train : TrainConfig
        The seed (banded ridge's candidates, the permutations) and the PCA settings of PCA
        targets.
    scoring : ScoreConfig
        Permutations, false discovery rate, noise-ceiling floor and test trim.
    mesh : jax.sharding.Mesh, optional
        Split the ridge voxels (and the PCA) over its devices, as ``jaxenc run`` does
        (:func:`jaxenc.pipeline.fit_predict`; :func:`jaxenc.distributed.run_mesh` builds it).

    Returns
    -------
    jaxenc.report.RunResults
        One :class:`~jaxenc.report.ModelResult` per subject and feature set, the noise
        ceilings, and with the three feature sets the partition rows; ``results.table()``
        summarises it, ``results.save(folder)`` stores it as a run does.
    """
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {list(TARGETS)}, got {target!r}")
    subjects = [subjects] if isinstance(subjects, str) else list(subjects)
    missing = [m for m in {m for name in feature_sets for m in modalities(name)} if m not in features]
    if missing:
        raise ConfigError(f"no features given for {sorted(missing)}; expected a subset of {list(MODALITIES)}")
    designs = Designs(dataset, features.__getitem__, {s: dataset.stories(s) for s in subjects}, align)
    models, ceilings = [], {}
    for subject in subjects:
        repeats = dataset.test_repeats(subject)
        ceilings[subject] = scored_ceiling(repeats, scoring.test_trim)
        for name in feature_sets:
            arrays = designs.arrays(modalities(name), subject, mesh=response_mesh("ridge", target, mesh))
            job = fit_predict("ridge", {subject: arrays}, target=target, ridge=ridge, train=train, cache=designs.cache,
                              mesh=mesh)
            scores = score(job.predictions[subject], repeats, scoring, seed=train.seed, subject=subject)
            models.append(ModelResult(subject, name, "ridge", target, scores, job.info))
    config = {"target": target, "feature_sets": list(feature_sets),
              **{key: dataclasses.asdict(value) for key, value in
                 (("align", align), ("ridge", ridge), ("train", train), ("evaluate", scoring))}}
    return RunResults(name="linear-baseline", config=config, cc_max=ceilings, models=models,
                      partition=partition_rows(models))
