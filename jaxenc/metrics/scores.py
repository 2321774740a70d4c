"""The test-story scores every scoring path of jaxenc reports, defined once.

"Mind the Gap" (arXiv 2502.12771) and the protocol it follows (Antonello et al. 2023) score a
prediction of the held-out test story per voxel by:

- ``r``: Pearson correlation with the mean of the test repeats;
- ``r2``: the paper's r², ``r * |r|`` (a squared correlation that keeps the sign of ``r``),
  averaged over voxels in its Table 1;
- ``cc_norm``: ``r / cc_max`` with Schoppe et al.'s noise ceiling floored at 0.25.

jaxenc adds ``r2_cod``, the coefficient of determination ``1 - SS_res / SS_tot``, which unlike
``r2`` also charges a prediction for its scale and offset. All are computed on the test story
without its first ``trim`` rows, dropped from the prediction and from every repeat alike, so
the noise ceiling is that of the rows scored. The reference protocol drops 40 of the 291 rows
of wheretheressmoke (its features are trimmed ``50:-5`` instead of ``10:-5``); by default
(``trim=None``) jaxenc drops the same share of whatever test story it scores,
:func:`protocol_trim`: 40 of ds003020's 291 rows, 10 of the demo twin's 73, 7 of the tiny
twin's 50.

:func:`voxel_scores` gives the per-voxel scores of a prediction against given responses;
:func:`score_repeats` adds the block-permutation p-value of ``r`` and Benjamini-Hochberg
significance. :mod:`jaxenc.pipeline`, :mod:`jaxenc.analysis`, :mod:`jaxenc.train`,
:mod:`jaxenc.stream` and :mod:`jaxenc.experiment` all call these two.
"""

from __future__ import annotations

import numpy as np

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics.correlation import pearson_r, r2_score
from jaxenc.metrics.noise_ceiling import cc_norm
from jaxenc.metrics.significance import fdr_bh, permutation_test

__all__ = [
    "signed_r2",
    "protocol_trim",
    "drop_first_rows",
    "voxel_scores",
    "score_repeats",
    "VOXEL_SCORES",
    "PROTOCOL_TRIM",
    "PROTOCOL_TEST_ROWS",
    "CC_MAX_FLOOR",
]

# Per-voxel scores of voxel_scores, in the order they are stored ("cc_norm" only with repeats).
VOXEL_SCORES = ("r", "r2", "r2_cod", "cc_norm")
# The reference protocol scores wheretheressmoke's 291 rows without the first 40.
PROTOCOL_TRIM = 40
PROTOCOL_TEST_ROWS = 291
# The paper's lower bound on the noise ceiling cc_max in cc_norm.
CC_MAX_FLOOR = 0.25


def signed_r2(r):
    """The paper's r² of a correlation, ``r * |r|``.

    Parameters
    ----------
    r : array_like
        Correlations, any shape.

    Returns
    -------
    ndarray of the shape of ``r``
        In [-1, 1], negative where ``r`` is (so a mean over voxels is not inflated by voxels
        predicted with the wrong sign); NaN propagates.
    """
    r = np.asarray(r)
    return r * np.abs(r)


def protocol_trim(n_rows: int) -> int:
    """Rows the reference protocol drops from the start of a test story of ``n_rows`` rows.

    ``round(40 * n_rows / 291)``: exactly 40 for ds003020's wheretheressmoke (291 rows), the
    same share of a shorter story (the synthetic twin's presets shorten every story).

    Parameters
    ----------
    n_rows : int
        Rows of the test story's responses.

    Returns
    -------
    int
    """
    return int(round(PROTOCOL_TRIM * n_rows / PROTOCOL_TEST_ROWS))


def drop_first_rows(array, trim: int | None, *, axis: int = 0, what: str = "responses"):
    """``array`` without its first ``trim`` rows along ``axis`` (the TRs of the test story).

    Parameters
    ----------
    array : array_like
        Predictions or responses ``(n_trs, n_voxels)``, or repeats
        ``(n_repeats, n_trs, n_voxels)`` with ``axis=1``.
    trim : int or None
        Rows dropped, at least 0; None: :func:`protocol_trim` of the rows along ``axis``.
    axis : int
        The TR axis.
    what : str
        Named in errors.

    Returns
    -------
    ndarray
        A view of the remaining rows.

    Raises
    ------
    ConfigError
        ``trim`` is negative or leaves fewer than 2 rows.
    """
    array = np.asarray(array)
    n_rows = array.shape[axis]
    if trim is None:
        trim = protocol_trim(n_rows)
    if isinstance(trim, bool) or not isinstance(trim, (int, np.integer)) or trim < 0:
        raise ConfigError(f"test-story trim must be a non-negative number of TRs, got {trim!r}")
    if n_rows - trim < 2:
        raise ConfigError(
            f"test-story trim of {trim} TRs leaves {n_rows - trim} of the {n_rows} rows of the "
            f"{what}; at least 2 are needed to score"
        )
    return np.take(array, np.arange(trim, n_rows), axis=axis)


def voxel_scores(target, prediction, repeats=None, *, trim: int | None = None,
                 floor: float | None = CC_MAX_FLOOR) -> dict[str, np.ndarray]:
    """Per-voxel ``r``, ``r2`` (r·|r|), ``r2_cod`` and, with repeats, ``cc_norm``.

    Parameters
    ----------
    target : array_like of shape (n_trs, n_voxels)
        Measured responses to the test story (the mean of its repeats, in the protocol).
    prediction : array_like of shape (n_trs, n_voxels)
        Predicted responses, row ``t`` the same TR as row ``t`` of ``target``.
    repeats : array_like of shape (n_repeats, n_trs, n_voxels), optional
        Every presentation of the test story; adds ``cc_norm``.
    trim : int, optional
        Rows dropped from the start of ``target``, ``prediction`` and every repeat before
        scoring; None: :func:`protocol_trim` of the rows (40 of 291); 0 scores every row.
    floor : float, optional
        Lower bound on ``cc_max`` in ``cc_norm`` (the paper's 0.25); None: no floor.

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,), float32
        ``r`` (:func:`~jaxenc.metrics.pearson_r`), ``r2`` (:func:`signed_r2` of ``r``),
        ``r2_cod`` (:func:`~jaxenc.metrics.r2_score`) and ``cc_norm``
        (:func:`~jaxenc.metrics.cc_norm`), in the order of :data:`VOXEL_SCORES`.

    Raises
    ------
    AlignmentError
        ``target`` and ``prediction`` differ in shape, or ``repeats`` do not match them.
    ConfigError
        A trim that is negative or leaves fewer than 2 rows.
    """
    target = np.asarray(target, np.float32)
    prediction = np.asarray(prediction, np.float32)
    if target.ndim != 2 or target.shape != prediction.shape:
        raise AlignmentError(
            f"test responses have shape {target.shape} and predictions {prediction.shape}; both "
            "must be (n_trs, n_voxels) with the same TRs and voxels"
        )
    if repeats is not None:
        repeats = np.asarray(repeats, np.float32)
        if repeats.ndim != 3 or repeats.shape[1:] != prediction.shape:
            raise AlignmentError(
                f"test repeats have shape {repeats.shape}; expected (n_repeats, "
                f"{prediction.shape[0]}, {prediction.shape[1]}) to match the predictions"
            )
        repeats = drop_first_rows(repeats, trim, axis=1, what="test repeats")
    target = drop_first_rows(target, trim, what="test responses")
    prediction = drop_first_rows(prediction, trim, what="predictions")
    r = np.asarray(pearson_r(target, prediction))
    out = {"r": r, "r2": signed_r2(r), "r2_cod": np.asarray(r2_score(target, prediction))}
    if repeats is not None:
        out["cc_norm"] = np.asarray(cc_norm(prediction, repeats, floor=floor))
    return out


def score_repeats(prediction, repeats, *, trim: int | None = None, floor: float | None = CC_MAX_FLOOR,
                      n_permutations: int = 500, block_size: int = 10, alpha: float = 0.05,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Score a prediction of the test story against its repeated presentations.

    The target is the mean of the repeats. Scores are those of :func:`voxel_scores`, plus the
    block-permutation p-value of ``r`` (blocks of ``block_size`` TRs keep the autocorrelation
    of the null, :func:`~jaxenc.metrics.permutation_test`) and Benjamini-Hochberg
    significance over all voxels (:func:`~jaxenc.metrics.fdr_bh`), on the same rows.

    Parameters
    ----------
    prediction : array_like of shape (n_trs, n_voxels)
    repeats : array_like of shape (n_repeats, n_trs, n_voxels)
        Responses to each presentation (z-scored per repeat in ds003020).
    trim : int, optional
        Rows dropped from the start of the prediction and of every repeat; None:
        :func:`protocol_trim` of the rows (40 of 291); 0 scores every row.
    floor : float, optional
        Lower bound on ``cc_max`` in ``cc_norm``.
    n_permutations, block_size, seed
        The block permutation test.
    alpha : float
        False discovery rate.

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``r``, ``r2``, ``r2_cod``, ``cc_norm``, ``p`` (float32) and ``significant`` (bool).
    """
    repeats = np.asarray(repeats, np.float32)
    if repeats.ndim != 3:
        raise AlignmentError(f"test repeats have shape {repeats.shape}; expected (n_repeats, n_trs, n_voxels)")
    repeats = drop_first_rows(repeats, trim, axis=1, what="test repeats")
    prediction = drop_first_rows(np.asarray(prediction, np.float32), trim, what="predictions")
    target = repeats.mean(axis=0)
    out = voxel_scores(target, prediction, repeats, trim=0, floor=floor)
    p = permutation_test(target, prediction, n_permutations=n_permutations, block_size=block_size, seed=seed)
    out["p"] = np.asarray(p)
    out["significant"] = np.asarray(fdr_bh(p, alpha=alpha)[0])
    return out
