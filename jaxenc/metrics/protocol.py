"""The scoring protocol: what a test-story score is, with which settings, on which rows.

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
(``test_trim=None``) jaxenc drops the same share of whatever test story it scores,
:func:`protocol_trim`: 40 of ds003020's 291 rows, 10 of the demo twin's 73, 7 of the tiny
twin's 50.

This module defines, once for every scoring path, what a score is: :class:`Scores` (the
per-voxel arrays every scoring path returns and the run results store as they are, with the one
:meth:`~Scores.summary` every table shows), :class:`ScoreConfig` (the settings) and the
test-story trim. It imports numpy only, so run results load without JAX; the one function that
computes them, :func:`jaxenc.metrics.score`, is in :mod:`~jaxenc.metrics.scoring` (JAX).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jaxenc.errors import ConfigError, DataError

__all__ = [
    "ScoreConfig",
    "Scores",
    "signed_r2",
    "protocol_trim",
    "drop_first_rows",
    "VOXEL_SCORES",
    "SCORE_ARRAYS",
    "PROTOCOL_TRIM",
    "PROTOCOL_TEST_ROWS",
    "CC_MAX_FLOOR",
]

# Per-voxel scores of voxel_scores, in the order they are stored ("cc_norm" only with repeats).
VOXEL_SCORES = ("r", "r2", "r2_cod", "cc_norm")
# The per-voxel arrays of a Scores, in the order they are stored.
SCORE_ARRAYS = VOXEL_SCORES + ("p", "significant")
# The reference protocol scores wheretheressmoke's 291 rows without the first 40.
PROTOCOL_TRIM = 40
PROTOCOL_TEST_ROWS = 291
# The paper's lower bound on the noise ceiling cc_max in cc_norm.
CC_MAX_FLOOR = 0.25


@dataclass(frozen=True)
class ScoreConfig:
    """How a prediction of the test story is scored (the experiment config's ``[evaluate]``)."""

    # Block permutations per voxel for the significance of r.
    permutations: int = 500
    # TRs per permuted block (keeps the autocorrelation of the null).
    block_size: int = 10
    # Benjamini-Hochberg false discovery rate.
    alpha: float = 0.05
    # Lower bound on the noise ceiling cc_max in cc_norm (the paper's 0.25).
    floor: float = CC_MAX_FLOOR
    # TRs dropped from the start of the test story before scoring: from the prediction and from
    # every repeat (the noise ceiling is computed on the same rows). None: the reference
    # protocol's 40 of wheretheressmoke's 291 rows (its features trimmed 50:-5, not 10:-5),
    # and on the synthetic twin, whose presets shorten every story, the same share of its
    # test story: 10 of the demo's 73 rows, 7 of the tiny preset's 50 (protocol_trim).
    # 0 scores every row.
    test_trim: int | None = None
    # Voxels scored at once (prediction columns, repeats and the permutation nulls of a chunk):
    # the demo's 2,000 voxels are scored whole, a full-size subject's ~90,000 in 11 chunks. The
    # scores do not depend on it (jaxenc.metrics.score).
    chunk_voxels: int = 8192

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot be used."""
        for name in ("permutations", "block_size", "chunk_voxels"):
            if not getattr(self, name) >= 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}", setting=name)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}", setting="alpha")
        if not 0 < self.floor <= 1:
            raise ConfigError(f"floor must be in (0, 1], got {self.floor}", setting="floor")
        if self.test_trim is not None and self.test_trim < 0:
            raise ConfigError(f"test_trim must be at least 0, got {self.test_trim}", setting="test_trim")


def _mean(values: np.ndarray) -> float:
    # nanmean warns on all-NaN input; an absent statistic is simply NaN here. The voxels left
    # out are counted by Scores.n_nonfinite.
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


@dataclass(frozen=True)
class Scores:
    """Per-voxel scores of one prediction of the test story (:func:`score`).

    All on the rows kept after the test-story trim.

    Attributes
    ----------
    r : ndarray of shape (n_voxels,)
        Pearson correlation with the mean of the test repeats.
    r2 : ndarray of shape (n_voxels,)
        The paper's r², ``r * |r|``.
    r2_cod : ndarray of shape (n_voxels,)
        Coefficient of determination against the mean of the repeats.
    cc_norm : ndarray of shape (n_voxels,)
        ``r / cc_max`` (Schoppe et al. 2016), cc_max floored at the config's ``floor``.
    p : ndarray of shape (n_voxels,)
        Block-permutation p-value of ``r``.
    significant : ndarray of shape (n_voxels,), bool
        Benjamini-Hochberg at the config's ``alpha`` over all voxels.

    Raises
    ------
    DataError
        Arrays that are not 1-D of one length, or a ``significant`` that is not boolean.
    """

    r: np.ndarray
    r2: np.ndarray
    r2_cod: np.ndarray
    cc_norm: np.ndarray
    p: np.ndarray
    significant: np.ndarray

    def __post_init__(self):
        arrays = {name: np.asarray(getattr(self, name)) for name in SCORE_ARRAYS}
        shapes = {name: a.shape for name, a in arrays.items()}
        if arrays["r"].ndim != 1 or len(set(shapes.values())) != 1:
            raise DataError(f"scores must be arrays of one shape (n_voxels,), got {shapes}")
        significant = arrays["significant"]
        if significant.dtype != np.bool_:
            if not np.isin(significant, (0, 1)).all():
                raise DataError("significant must be boolean, got values other than 0 and 1 "
                                f"(dtype {significant.dtype})")
            arrays["significant"] = significant.astype(bool)
        for name in VOXEL_SCORES + ("p",):
            if not np.issubdtype(arrays[name].dtype, np.floating):
                arrays[name] = arrays[name].astype(np.float64)
        for name, array in arrays.items():
            object.__setattr__(self, name, array)

    def __eq__(self, other) -> bool:
        return isinstance(other, Scores) and all(
            np.array_equal(getattr(self, n), getattr(other, n), equal_nan=n != "significant")
            for n in SCORE_ARRAYS)

    @property
    def n_voxels(self) -> int:
        """Number of voxels scored."""
        return int(self.r.shape[0])

    @property
    def n_nonfinite(self) -> int:
        """Voxels whose ``r`` is NaN or infinite, which every mean and median leaves out: a
        prediction holding NaN or infinity, or a prediction or target constant over the rows
        scored (``r`` undefined; then r2, r2_cod and cc_norm are not finite either)."""
        return int((~np.isfinite(self.r)).sum())

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-voxel arrays by name, in the order of :data:`SCORE_ARRAYS`."""
        return {name: getattr(self, name) for name in SCORE_ARRAYS}

    def summary(self, top_k: int = 1000) -> dict:
        """Scalar summaries over voxels, NaN and infinity left out and counted: the one summary
        every table shows.

        Parameters
        ----------
        top_k : int, default 1000
            Number of best-predicted voxels (by ``r``) averaged in ``top_k_mean_r``; all
            finite voxels when there are fewer.

        Returns
        -------
        dict
            ``mean_r``, ``median_r``, ``mean_r2``, ``median_r2`` (the paper's r·|r|),
            ``mean_r2_cod``, ``median_r2_cod`` (coefficient of determination),
            ``mean_cc_norm``, ``median_cc_norm``, ``top_k``, ``top_k_mean_r`` (floats over
            the finite values, NaN when there is none), ``n_significant``, ``n_voxels`` and
            ``n_nonfinite`` (ints: the voxels left out of the means, :attr:`n_nonfinite`). r2,
            r2_cod and cc_norm are fractions, not %.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        out = {}
        for name in VOXEL_SCORES:
            values = np.asarray(getattr(self, name))
            out[f"mean_{name}"] = _mean(values)
            out[f"median_{name}"] = _median(values)
        finite_r = np.sort(self.r[np.isfinite(self.r)])
        out["top_k"] = int(top_k)
        out["top_k_mean_r"] = _mean(finite_r[-top_k:])
        out["n_significant"] = int(self.significant.sum())
        out["n_voxels"] = self.n_voxels
        out["n_nonfinite"] = self.n_nonfinite
        return out


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
