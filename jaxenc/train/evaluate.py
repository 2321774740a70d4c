"""Test-story scores of a trained stack: fold-averaged voxel predictions, scored per voxel."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxenc.errors import ConfigError
from jaxenc.metrics import voxel_scores
from jaxenc.metrics.scores import CC_MAX_FLOOR

__all__ = ["evaluate", "summarize"]


def summarize(scores, top_k: int = 1000) -> dict:
    """Mean, median and mean of the ``top_k`` best of per-voxel scores, NaN ignored.

    Parameters
    ----------
    scores : array_like of shape (n_voxels,)
        A per-voxel score (correlation, R^2, normalised correlation).
    top_k : int
        Voxels in the top-k mean (all finite voxels if fewer).

    Returns
    -------
    dict
        ``mean``, ``median``, ``top_k_mean`` (floats) and ``top_k`` (the k used).
    """
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "top_k_mean": float("nan"), "top_k": 0}
    k = min(top_k, s.size)
    return {
        "mean": float(s.mean()),
        "median": float(np.median(s)),
        "top_k_mean": float(np.sort(s)[-k:].mean()),
        "top_k": k,
    }


def evaluate(fit, features: Mapping, responses: Mapping, *, repeats: Mapping | None = None,
             trim: int | None = None, floor: float | None = CC_MAX_FLOOR, top_k: int = 1000,
             grid: int | None = None) -> dict:
    """Score a fit's fold-averaged predictions on held-out stories, per voxel and summarised.

    The scores are :func:`jaxenc.metrics.voxel_scores`: r, the paper's r2 (r·|r|), the
    coefficient of determination r2_cod and, with repeats, cc_norm, on the rows kept after
    the test-story trim.

    Parameters
    ----------
    fit : EncoderFit
        The trained stack (:func:`jaxenc.train.fit_encoders`).
    features : mapping of str to array of shape (n_trs, n_features)
        Per subject, the delayed features of the test story.
    responses : mapping of str to array of shape (n_trs, n_voxels)
        Per subject, the measured test responses (e.g. the mean over repeats).
    repeats : mapping of str to array of shape (n_repeats, n_trs, n_voxels), optional
        Per subject, every repeat of the test story; adds the noise-ceiling-normalised
        correlation ``cc_norm``.
    trim : int, optional
        Rows dropped from the start of the predictions, responses and repeats; None: the
        protocol's share (:func:`jaxenc.metrics.protocol_trim`, 40 of 291 rows); 0: none.
    floor : float, optional
        Lower bound on the noise ceiling in ``cc_norm`` (the paper's 0.25); None: no floor.
    top_k : int
        Voxels in the top-k summaries.
    grid : int, optional
        Grid index to evaluate; each subject's best on validation by default.

    Returns
    -------
    dict of str to dict
        Per subject: ``prediction`` (n_trs, n_voxels, every row), ``r``, ``r2``, ``r2_cod``
        and optionally ``cc_norm`` (each (n_voxels,) ndarray), and ``summary`` with
        :func:`summarize` of each.
    """
    preds = fit.predict(features, grid=grid)
    out = {}
    for subject, pred in preds.items():
        if subject not in responses:
            raise ConfigError("no test responses given", subject=subject)
        subject_repeats = None if repeats is None or subject not in repeats else repeats[subject]
        scores = voxel_scores(responses[subject], pred, subject_repeats, trim=trim, floor=floor)
        out[subject] = {
            "prediction": pred,
            **scores,
            "summary": {name: summarize(v, top_k) for name, v in scores.items()},
        }
    return out
