"""The one scoring function: a prediction of the test story and its repeats in, :class:`Scores` out.

:func:`score` is what the command line, the Python API and the analyses all call; at full size
it takes the prediction voxel chunk by voxel chunk. :func:`voxel_scores` is its per-voxel
building block without permutations, and :func:`scored_ceiling` the noise ceiling on the rows
scored. The definitions (r, the paper's r2
= r·|r|, r2_cod, cc_norm, the test-story trim) are those of :mod:`jaxenc.metrics.protocol`.
"""

from __future__ import annotations

import numpy as np

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics.correlation import pearson_r, r2_score
from jaxenc.metrics.noise_ceiling import cc_max, cc_norm
from jaxenc.metrics.protocol import CC_MAX_FLOOR, VOXEL_SCORES, ScoreConfig, Scores, drop_first_rows, signed_r2
from jaxenc.metrics.significance import fdr_bh, permutation_test

__all__ = ["score", "voxel_scores", "scored_ceiling"]


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


def _repeats(repeats, subject) -> tuple[int, int, int]:
    shape = tuple(getattr(repeats, "shape", np.shape(repeats)))
    if len(shape) != 3:
        raise AlignmentError(f"test repeats have shape {shape}; expected (n_repeats, n_trs, n_voxels)",
                             subject=subject)
    if shape[2] == 0:
        raise AlignmentError(f"test repeats have shape {shape}: no voxel to score", subject=subject)
    return shape


def score(prediction, repeats, config: ScoreConfig = ScoreConfig(), *, seed: int = 0,
          chunk: int | None = None, subject: str | None = None) -> Scores:
    """Score a prediction of the test story against its repeated presentations.

    The target is the mean of the repeats. Scores are those of :func:`voxel_scores` (r, the
    paper's r2 = r·|r|, r2_cod, cc_norm), plus the block-permutation p-value of ``r`` (blocks
    of ``block_size`` TRs keep the autocorrelation of the null,
    :func:`~jaxenc.metrics.permutation_test`) and Benjamini-Hochberg significance over all
    voxels (:func:`~jaxenc.metrics.fdr_bh`), all on the rows kept after the test-story trim.

    Every score but the significance is a per-voxel statistic (the permutations are drawn
    from ``seed`` and shared by all voxels), so scoring voxel chunk by voxel chunk changes
    nothing but memory; the false discovery rate is controlled over all voxels at the end.

    Parameters
    ----------
    prediction : array_like of shape (n_trs, n_voxels), or callable
        The predicted test story, or ``prediction(c0, c1)`` returning the predictions of
        voxels ``c0:c1``, shape (n_trs, c1 - c0) (e.g. :func:`jaxenc.stream.pca_chunk_predictor`
        for a full-size subject).
    repeats : array_like of shape (n_repeats, n_trs, n_voxels)
        Responses to each presentation (z-scored per repeat in ds003020); sliced by voxel
        columns, so an ``h5py.Dataset`` is read one chunk at a time.
    config : ScoreConfig
        Permutations, block size, false discovery rate, noise-ceiling floor and test trim.
    seed : int
        Seed of the permutations.
    chunk : int, optional
        Voxels scored at once; None: ``config.chunk_voxels`` (the ``[evaluate]`` setting).
    subject : str, optional
        Named in errors.

    Returns
    -------
    Scores

    Raises
    ------
    AlignmentError
        Repeats that are not 3-D or have no voxel, or predictions that do not match them.
    ConfigError
        Settings :meth:`ScoreConfig.validate` refuses, or a trim leaving fewer than 2 rows.
    """
    config.validate()
    n_repeats, n_trs, n_voxels = _repeats(repeats, subject)
    if callable(prediction):
        predict = prediction
    else:
        prediction = np.asarray(prediction, np.float32)
        if prediction.shape != (n_trs, n_voxels):
            raise AlignmentError(f"predictions have shape {prediction.shape}; the test repeats "
                                 f"{(n_repeats, n_trs, n_voxels)} need ({n_trs}, {n_voxels})",
                                 subject=subject)

        def predict(c0, c1):
            return prediction[:, c0:c1]
    chunk = config.chunk_voxels if chunk is None else chunk
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of voxels, got {chunk}")
    parts: dict[str, list] = {name: [] for name in VOXEL_SCORES + ("p",)}
    for c0 in range(0, n_voxels, chunk):
        c1 = min(c0 + chunk, n_voxels)
        pred = np.asarray(predict(c0, c1), np.float32)
        if pred.shape != (n_trs, c1 - c0):
            raise AlignmentError(f"predictions of voxels {c0}:{c1} have shape {pred.shape}; the test "
                                 f"repeats need ({n_trs}, {c1 - c0})", subject=subject)
        rep = drop_first_rows(np.asarray(repeats[:, :, c0:c1], np.float32), config.test_trim,
                              axis=1, what="test repeats")
        pred = drop_first_rows(pred, config.test_trim, what="predictions")
        target = rep.mean(axis=0)
        for name, values in voxel_scores(target, pred, rep, trim=0, floor=config.floor).items():
            parts[name].append(values)
        parts["p"].append(np.asarray(permutation_test(
            target, pred, n_permutations=config.permutations, block_size=config.block_size, seed=seed)))
    arrays = {name: np.concatenate(values) for name, values in parts.items()}
    arrays["significant"] = np.asarray(fdr_bh(arrays["p"], alpha=config.alpha)[0])
    return Scores(**arrays)


def scored_ceiling(repeats, trim: int | None = None) -> np.ndarray:
    """The noise ceiling ``cc_max`` of each voxel on the rows :func:`score` keeps.

    Parameters
    ----------
    repeats : array_like of shape (n_repeats, n_trs, n_voxels)
    trim : int, optional
        The test trim (:attr:`ScoreConfig.test_trim`).

    Returns
    -------
    ndarray of shape (n_voxels,)
        :func:`~jaxenc.metrics.cc_max` of the trimmed repeats (NaN where undefined).
    """
    return np.asarray(cc_max(drop_first_rows(repeats, trim, axis=1, what="test repeats")))
