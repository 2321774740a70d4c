"""Audio versus semantic: the variance partition and the best feature set of each voxel.

For a model fitted on the three feature sets (audio, semantic, audio+semantic), the paper's r2
(r·|r|) of each voxel is partitioned into unique audio, unique semantic and shared parts
(:func:`jaxenc.metrics.variance_partition`), and each voxel gets its best-predicting feature
set (:func:`jaxenc.metrics.best_model`), both on the voxels significant for the joint model.
:func:`partition_sets` computes them for one subject, model and target; :func:`partition_rows`
summarises every such triple of a run's results, the same for the command line and
:func:`jaxenc.pipeline.fit_linear_baseline`.

The comparison uses r·|r|, not the coefficient of determination: the paper states its variance
explained as r·|r|, and r·|r| does not depend on the scale or offset of a prediction, which
differ between ridge and the networks but say nothing about which features explain a voxel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jaxenc.featuresets import AUDIO, FEATURE_SETS, JOINT, SEMANTIC
from jaxenc.metrics import SHARED, UNIQUE_A, UNIQUE_B, VariancePartition, best_model, variance_partition

__all__ = ["SetPartition", "by_feature_set", "partition_sets", "partition_rows", "preferred_model"]


@dataclass(frozen=True)
class SetPartition:
    """The partition of one subject, model and target over the three feature sets.

    Attributes
    ----------
    significant : ndarray of shape (n_voxels,), bool
        Voxels significant for the joint model (where the rest is defined).
    parts : jaxenc.metrics.VariancePartition
        Unique audio (a), unique semantic (b) and shared parts of r·|r|.
    best : ndarray of shape (n_voxels,), int
        Index into :data:`~jaxenc.featuresets.FEATURE_SETS` of the best r·|r| per significant
        voxel, -1 elsewhere.
    """

    significant: np.ndarray
    parts: VariancePartition
    best: np.ndarray


def by_feature_set(models: Sequence, subject: str, model: str, target: str) -> dict | None:
    """The scores of ``model`` on each feature set for one subject and target.

    Parameters
    ----------
    models : sequence of jaxenc.report.ModelResult
    subject, model, target : str

    Returns
    -------
    dict of str to jaxenc.metrics.Scores, or None
        Keyed by :data:`~jaxenc.featuresets.FEATURE_SETS`; None unless all three were fitted.
    """
    found = {m.features: m.scores for m in models
             if (m.subject, m.model, m.target) == (subject, model, target) and m.features in FEATURE_SETS}
    return found if len(found) == len(FEATURE_SETS) else None


def partition_sets(scores: Mapping) -> SetPartition:
    """Partition one model's audio, semantic and joint scores, on the joint model's significant voxels.

    Parameters
    ----------
    scores : mapping of str to jaxenc.metrics.Scores
        Keyed by :data:`~jaxenc.featuresets.FEATURE_SETS`.

    Returns
    -------
    SetPartition
    """
    significant = np.asarray(scores[JOINT].significant)
    parts = variance_partition(scores[AUDIO].r2, scores[SEMANTIC].r2, scores[JOINT].r2, significant=significant)
    best = np.asarray(best_model([scores[name].r2 for name in FEATURE_SETS], significant=significant))
    return SetPartition(significant, parts, best)


def _share(values: np.ndarray, code: int, mask: np.ndarray) -> float:
    return float(np.mean(values[mask] == code)) if mask.any() else float("nan")


def partition_rows(models: Sequence) -> list[dict]:
    """A partition row for every subject, model and target fitted on all three feature sets.

    Parameters
    ----------
    models : sequence of jaxenc.report.ModelResult

    Returns
    -------
    list of dict
        The rows of :attr:`jaxenc.report.RunResults.partition`.
    """
    rows = []
    triples = dict.fromkeys((m.subject, m.model, m.target) for m in models if m.features in FEATURE_SETS)
    for subject, model, target in triples:
        sets = by_feature_set(models, subject, model, target)
        if sets is None:
            continue
        p = partition_sets(sets)
        best_part = np.asarray(p.parts.best_part)
        classified = best_part >= 0

        def mean(values, significant=p.significant):
            return float(np.nanmean(np.asarray(values)[significant])) if significant.any() else float("nan")

        rows.append({
            "subject": subject, "target": target, "model": model,
            "features_a": AUDIO, "features_b": SEMANTIC,
            "n_significant": int(p.significant.sum()),
            "unique_a": mean(p.parts.unique_a), "unique_b": mean(p.parts.unique_b), "shared": mean(p.parts.shared),
            "share_best_unique_a": _share(best_part, UNIQUE_A, classified),
            "share_best_unique_b": _share(best_part, UNIQUE_B, classified),
            "share_best_shared": _share(best_part, SHARED, classified),
            "best_model_share": {name: _share(p.best, i, p.best >= 0) for i, name in enumerate(FEATURE_SETS)},
        })
    return rows


def preferred_model(models: Sequence, subject: str, target: str) -> str | None:
    """The model fitted on all three sets whose joint fit has the highest mean r, or None."""
    best, best_r = None, -np.inf
    for model in dict.fromkeys(m.model for m in models if m.subject == subject):
        sets = by_feature_set(models, subject, model, target)
        if sets is not None and np.nanmean(sets[JOINT].r) > best_r:
            best, best_r = model, float(np.nanmean(sets[JOINT].r))
    return best
