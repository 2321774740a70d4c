"""Significance masks shared by the analyses, and shares of voxels best explained by a model.

Per-voxel p-values of several models (e.g. from :func:`jaxenc.metrics.permutation_test`) are
corrected per model with Benjamini-Hochberg (:func:`jaxenc.metrics.fdr_bh`); the analyses then
work on the union (:func:`any_significant`, "predicted by at least one model") or the
intersection (:func:`all_significant`). :func:`best_model_shares` counts, among significant
voxels, where each model wins (:func:`jaxenc.metrics.best_model`); :func:`joint_best_share` is
its audio / semantic / joint reading from "Mind the Gap". The set-theoretic partition (which
part, unique or shared, is largest) is :func:`jaxenc.metrics.variance_partition`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import NOT_SIGNIFICANT, best_model, fdr_bh

__all__ = [
    "significance_masks",
    "any_significant",
    "all_significant",
    "best_model_shares",
    "joint_best_share",
]


def _one_shape(arrays: Mapping, what: str) -> tuple:
    if not arrays:
        raise ConfigError(f"{what}: nothing given")
    shapes = {str(name): np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise AlignmentError(f"{what}: expected arrays of one shape (n_voxels,), got {shapes}")
    return next(iter(shapes.values()))


def significance_masks(p_by_model: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Benjamini-Hochberg significance mask of each model's voxels.

    Parameters
    ----------
    p_by_model : mapping of str to array of shape (n_voxels,)
        Per model, the per-voxel p-values (NaN for voxels left out of the test).
    alpha : float
        False discovery rate, controlled separately for each model.

    Returns
    -------
    dict of str to ndarray of bool, shape (n_voxels,)
        Same keys and order as ``p_by_model``.

    Raises
    ------
    AlignmentError
        p-value arrays of different shapes or not 1-D.
    ConfigError
        Nothing given, ``alpha`` outside (0, 1) or p-values outside [0, 1].
    """
    _one_shape(p_by_model, "significance_masks")
    return {name: np.asarray(fdr_bh(p, alpha=alpha)[0]) for name, p in p_by_model.items()}


def _masks(masks, what: str) -> np.ndarray:
    if not isinstance(masks, Mapping):
        masks = dict(enumerate(masks))
    _one_shape(masks, what)
    return np.stack([np.asarray(m, bool) for m in masks.values()])  # [model, voxel]


def any_significant(masks) -> np.ndarray:
    """Voxels significant for at least one model.

    Parameters
    ----------
    masks : mapping of str to array of bool, shape (n_voxels,), or a sequence of such arrays

    Returns
    -------
    ndarray of bool, shape (n_voxels,)
    """
    return _masks(masks, "any_significant").any(axis=0)


def all_significant(masks) -> np.ndarray:
    """Voxels significant for every model.

    Parameters
    ----------
    masks : mapping of str to array of bool, shape (n_voxels,), or a sequence of such arrays

    Returns
    -------
    ndarray of bool, shape (n_voxels,)
    """
    return _masks(masks, "all_significant").all(axis=0)


def best_model_shares(scores: Mapping[str, np.ndarray], significant=None) -> dict[str, float]:
    """Share of significant voxels on which each model scores best.

    Parameters
    ----------
    scores : mapping of str to array of shape (n_voxels,)
        Per model, a per-voxel held-out score (r2, r or cc_norm); higher is better.
    significant : array of bool, shape (n_voxels,), optional
        Voxels counted (all when omitted). Voxels whose scores are all NaN are not counted.

    Returns
    -------
    dict of str to float
        Per model, the fraction of counted voxels where it is best (ties to the earlier
        model, as :func:`jaxenc.metrics.best_model`); the shares sum to 1. NaN when no voxel
        is counted.
    """
    _one_shape(scores, "best_model_shares")
    best = np.asarray(best_model([np.asarray(s) for s in scores.values()], significant))
    counted = best != NOT_SIGNIFICANT
    n = int(counted.sum())
    return {
        name: float(np.sum(best == i) / n) if n else float("nan")
        for i, name in enumerate(scores)
    }


def joint_best_share(r2_a, r2_b, r2_joint, significant=None) -> float:
    """Share of significant voxels that the joint model predicts better than either alone.

    The paper's "voxels best explained by joint audio-language processing" read as
    :func:`best_model` on ``(r2_a, r2_b, r2_joint)``; the other reading (the shared part is
    the largest of the variance partition) is ``variance_partition(...).joint_fraction``.

    Parameters
    ----------
    r2_a, r2_b, r2_joint : array of shape (n_voxels,)
        Held-out r2 of the models on feature space a alone, b alone, and both.
    significant : array of bool, shape (n_voxels,), optional
        Voxels counted, e.g. the joint model's mask; all when omitted.

    Returns
    -------
    float
        NaN when no voxel is counted.
    """
    shares = best_model_shares({"a": r2_a, "b": r2_b, "joint": r2_joint}, significant)
    return shares["joint"]
