"""Voxelwise ridge regression with the regularisation chosen per voxel by cross-validation.

:class:`RidgeCV` fits ``Y ~ X b + c`` for every voxel (column of ``Y``) with one ridge penalty
per voxel, picked from a grid by K-fold cross-validation over stories (or by the Huth lab's
chunked bootstrap, :class:`~jaxenc.models.BootstrapChunks`). :class:`BandedRidgeCV` gives each
feature band (e.g. Whisper and LLaMA columns) its own penalty, by random search on the simplex
of band weights as himalaya's ``BandedRidgeCV``.

Both take arrays (``X`` on the device in full, ``Y`` on the host, streamed in voxel batches),
share one float64 eigendecomposition per split across all alphas and voxels, and compute
everything that touches voxels in float32 by default; see :mod:`jaxenc.models.ridge_solvers`
for the algebra and the precision argument.
"""

from __future__ import annotations

import numbers
import warnings
from functools import partial

import jax
import numpy as np

from jaxenc.errors import AlignmentError, ConfigError, DataWarning
from jaxenc.models import ridge_lfo as lfo
from jaxenc.models import ridge_solvers as solvers
from jaxenc.models.ridge_splits import BootstrapChunks, resolve_splits

__all__ = ["RidgeCV", "BandedRidgeCV"]

_DTYPES = {"float32": np.float32, "float64": np.float64}
# Columns checked at a time for NaN, inf and constants, so the check needs no full-size mask.
_CHECK_COLUMNS = 4096


def _check_dtype(dtype) -> np.dtype:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in _DTYPES:
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
    return np.dtype(_DTYPES[name])


def _check_positive_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_alphas(alphas) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0:
        raise ConfigError(f"alphas must be a non-empty 1-D array, got shape {alphas.shape}")
    bad = ~np.isfinite(alphas) | (alphas <= 0)
    if bad.any():
        raise ConfigError(f"alphas must be finite and positive; got {alphas[bad].tolist()} "
                          f"at positions {np.flatnonzero(bad).tolist()}")
    return np.unique(alphas)


def _scan_columns(A: np.ndarray, name: str, column: str) -> np.ndarray:
    """Raise on the first NaN or inf, block of columns by block; return the constant columns."""
    constant = np.empty(A.shape[1], dtype=bool)
    for start in range(0, A.shape[1], _CHECK_COLUMNS):
        block = A[:, start:start + _CHECK_COLUMNS]
        finite = np.isfinite(block)
        if not finite.all():
            col = int(np.argmin(finite.all(axis=0)))
            row = int(np.argmin(finite[:, col]))
            raise ConfigError(f"{name} has NaN or inf in {column} {start + col} (first at row {row})")
        constant[start:start + block.shape[1]] = (block == block[:1]).all(axis=0)
    return constant


def _check_X(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise AlignmentError(f"X must be 2-D (n_trs, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise ConfigError(f"X must hold real numbers, got dtype {X.dtype}")
    _scan_columns(X, "X", "column")
    return X


def _check_Y(Y, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Return Y as 2-D and its mask of constant columns, after checking rows and values."""
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise AlignmentError(f"Y must be 1-D or 2-D (n_trs, n_voxels), got shape {Y.shape}")
    if Y.shape[0] != n_samples:
        raise AlignmentError(
            f"X has {n_samples} rows (TRs) but Y has {Y.shape[0]}; they must be aligned row "
            f"for row")
    if not np.issubdtype(Y.dtype, np.number) or np.iscomplexobj(Y):
        raise ConfigError(f"Y must hold real numbers, got dtype {Y.dtype}")
    return Y, _scan_columns(Y, "Y", "voxel (column)")


def _warn_constant(constant: np.ndarray) -> None:
    if constant.any():
        idx = np.flatnonzero(constant)
        shown = ", ".join(map(str, idx[:10])) + (", ..." if idx.size > 10 else "")
        warnings.warn(
            f"{idx.size} voxel(s) of Y are constant over all rows (columns {shown}); they get "
            f"zero coefficients, an intercept equal to their value, best alpha NaN and "
            f"cross-validation score 0", DataWarning, stacklevel=3)


def _resolve_scoring(scoring, cv) -> str:
    if scoring is None:
        return "correlation" if isinstance(cv, BootstrapChunks) else "r2"
    if scoring not in solvers.SCORINGS:
        raise ConfigError(f"scoring must be one of {solvers.SCORINGS} or None, got {scoring!r}")
    return scoring


def _best_index(scores: np.ndarray, alpha_per_target: bool, valid: np.ndarray) -> np.ndarray:
    """Index of the best alpha per voxel; ties go to the larger alpha (alphas ascending)."""
    n_alphas = scores.shape[0]
    if alpha_per_target:
        return n_alphas - 1 - np.argmax(scores[::-1], axis=0)
    mean = scores[:, valid].mean(axis=1) if valid.any() else np.zeros(n_alphas)
    return np.full(scores.shape[1], n_alphas - 1 - np.argmax(mean[::-1]))


class _RidgeBase:
    """Input checks, prediction and scoring shared by the ridge estimators."""

    def _check_common(self, X, Y, groups):
        X = _check_X(X)
        Y, constant = _check_Y(Y, X.shape[0])
        self._dtype = _check_dtype(self.dtype)
        self._voxel_batch = _check_positive_int(self.voxel_batch, "voxel_batch")
        self._split_batch = (None if self.split_batch is None
                             else _check_positive_int(self.split_batch, "split_batch"))
        self._lapack_threads = (None if self.lapack_threads is None
                                else _check_positive_int(self.lapack_threads, "lapack_threads"))
        self.alphas_ = _check_alphas(self.alphas)
        self.scoring_ = _resolve_scoring(self.scoring, self.cv)
        splits = resolve_splits(self.cv, X.shape[0], groups, X)
        _warn_constant(constant)
        self.n_splits_ = len(splits)
        self.n_features_in_ = X.shape[1]
        return X, Y, constant, splits

    def _center(self, X):
        x_offset = X.mean(axis=0, dtype=np.float64) if self.fit_intercept else np.zeros(X.shape[1])
        xc = np.asarray(X, self._dtype) - x_offset.astype(self._dtype)
        return jax.device_put(xc), x_offset

    def _one_decomposition(self, X, Y, splits, n_candidates: int = 1) -> bool:
        """Whether to solve every split from one decomposition of all rows (``ridge_lfo``):
        complementary splits, and fewer flops than a decomposition per split."""
        return lfo.complementary(splits, X.shape[0]) and lfo.lfo_is_cheaper(
            X.shape[0], X.shape[1], [len(v) for _, v in splits], len(self.alphas_), Y.shape[1],
            n_candidates)

    def _lfo_kwargs(self) -> dict:
        return dict(fit_intercept=self.fit_intercept, voxel_batch=self._voxel_batch,
                    dtype=self._dtype)

    def _lfo_pass(self, dec, Y, splits, x_offset, on_batch=None):
        """Mean validation scores over the splits from one decomposition, whether the refit
        was fused into the pass (every split in one group and per-voxel alphas), and then the
        coefficients and intercepts at each voxel's best alpha (else None, None).

        ``on_batch(start, stop, scores, coef, intercept)``, if given, replaces the collection
        of the coefficients: it sees each voxel batch's mean scores (n_alphas, w) and
        coefficients as they arrive."""
        group = len(splits) if self._split_batch is None else self._split_batch
        fused = self.alpha_per_target and group >= len(splits)
        total = 0.0
        collect = fused and on_batch is None
        coef = np.empty((dec.left.shape[0], Y.shape[1]), self._dtype) if collect else None
        intercept = np.empty(Y.shape[1], self._dtype) if collect else None

        def keep(start, stop, scores, coef_b, intercept_b):
            if on_batch is not None:
                on_batch(start, stop, scores / len(splits), coef_b, intercept_b)
            else:
                coef[:, start:stop], intercept[start:stop] = coef_b, intercept_b

        for g in range(0, len(splits), group):
            folds = lfo.fold_corrections(dec, splits[g:g + group], self.alphas_,
                                         fit_intercept=self.fit_intercept, dtype=self._dtype,
                                         lapack_threads=self._lapack_threads)
            total = total + lfo.cv_pass(dec, folds, Y, self.alphas_, x_offset,
                                        scoring=self.scoring_, coef_out=keep if fused else None,
                                        **self._lfo_kwargs())
        return total / len(splits), fused, (coef, intercept)

    def _solver_kwargs(self) -> dict:
        return dict(fit_intercept=self.fit_intercept, voxel_batch=self._voxel_batch,
                    dtype=self._dtype, lapack_threads=self._lapack_threads)

    def predict(self, X) -> np.ndarray:
        """Predicted responses, ``X @ coef_ + intercept_``.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)

        Returns
        -------
        ndarray of shape (n_trs, n_voxels), in the compute dtype
        """
        if not hasattr(self, "coef_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call fit first")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise AlignmentError(f"X has {X.shape[1]} features but the model was fitted on "
                                 f"{self.n_features_in_}")
        with jax.enable_x64(True):
            return solvers.predict(X, self.coef_, self.intercept_,
                                   voxel_batch=self._voxel_batch, dtype=self._dtype)

    def score(self, X, Y) -> np.ndarray:
        """Coefficient of determination R^2 of the predictions, per voxel.

        ``1 - sum((y - y_hat)^2) / sum((y - mean(y))^2)`` over the rows of ``X``, computed in
        float64; a voxel constant over these rows scores 0. (scikit-learn's convention, voxel
        by voxel; for correlations use :mod:`jaxenc.metrics`.)

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
        Y : array of shape (n_trs, n_voxels) or (n_trs,)

        Returns
        -------
        ndarray of shape (n_voxels,)
        """
        pred = self.predict(X).astype(np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if Y.shape != pred.shape:
            raise AlignmentError(f"Y has shape {Y.shape}, predictions have {pred.shape}")
        ss_res = ((Y - pred) ** 2).sum(axis=0)
        ss_tot = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
        ok = ss_tot > 0
        return np.where(ok, 1.0 - ss_res / np.where(ok, ss_tot, 1.0), 0.0)


class RidgeCV(_RidgeBase):
    """Ridge regression for many voxels, the penalty chosen per voxel by cross-validation.

    For each voxel ``y`` (column of ``Y``) and penalty ``alpha`` the model is::

        b, c = argmin ||y - X b - c||^2 + alpha ||b||^2      (c = 0 without intercept)

    Every split's training rows are eigendecomposed once (``X^T X`` when there are at least as
    many training rows as features, else ``X X^T``), in float64; all alphas and all voxels
    reuse it. The validation score of every alpha is averaged over the splits
    (``cv_scores_``), the best alpha is kept per voxel (``best_alphas_``; ties go to the larger
    alpha) or, with ``alpha_per_target=False``, the one with the best score averaged over
    voxels, and the model is refitted on all rows with that alpha.

    Parameters
    ----------
    alphas : array-like of shape (n_alphas,)
        Positive penalties to try; sorted ascending (``alphas_``). The default spans 0.1 to
        1e5 in half decades; widen it if ``best_alphas_`` pile up at an end.
    cv : int, splitter or iterable
        ``int`` K: K folds. With ``groups`` (story labels) given to :meth:`fit`, the distinct
        stories, in order of first appearance, are cut into K contiguous runs of near-equal
        count and each fold holds out one run, so no story is split; without ``groups``, K
        contiguous blocks of rows. :class:`~jaxenc.models.BootstrapChunks` reproduces the Huth
        lab's ``bootstrap_ridge``. Any scikit-learn splitter or iterable of (train, val) index
        pairs is accepted; see :func:`~jaxenc.models.ridge_splits.resolve_splits`.
    alpha_per_target : bool
        One alpha per voxel (True) or one shared by all voxels (False).
    fit_intercept : bool
        Fit an unpenalised intercept per voxel (the training rows of each split are centred
        by their own mean). Without it, ``X`` and ``Y`` are used as given.
    scoring : {"r2", "correlation"} or None
        Validation score per voxel and split: R^2 (``1 - SSE / SST`` over the validation rows,
        SST about their own mean; himalaya's ``r2_score``) or Pearson correlation. A voxel
        constant over the validation rows scores 0. ``None`` means ``"correlation"`` with
        :class:`~jaxenc.models.BootstrapChunks` (as ``bootstrap_ridge``) and ``"r2"``
        otherwise.
    voxel_batch : int
        Voxels sent to the device at once. Device memory is about
        ``4 * voxel_batch * (n_trs + (n_alphas + 2) * n_features + n_alphas * n_val)`` bytes
        (float32) on top of ``X`` and the decompositions, whatever the number of voxels.
    split_batch : int or None
        Splits whose decompositions stay resident at once (all when None): lower it when many
        splits of many features do not fit, at the cost of one more pass over ``Y`` per group.
    dtype : {"float32", "float64"}
        Compute dtype of everything that touches voxels. The decompositions are always
        float64; float32 results then agree with a float64 solve to about 1e-5 relative on
        problems of a few thousand features.
    lapack_threads : int or None
        Threads of the CPU LAPACK (OpenBLAS) during the eigendecompositions; None leaves the
        library's default. Set 1 on a CPU shared with other jobs (or running several fits in
        parallel): OpenBLAS's threaded eigensolver then stalls, measured 4-5x slower than one
        thread on a loaded 2-core machine. Needs ``threadpoolctl``. No effect on GPU.

    Attributes
    ----------
    alphas_ : ndarray of shape (n_alphas,)
        The candidate penalties, ascending.
    cv_scores_ : ndarray of shape (n_alphas, n_voxels)
        Validation score of each alpha, averaged over the splits.
    best_alphas_ : ndarray of shape (n_voxels,)
        Chosen penalty per voxel (NaN for constant voxels).
    coef_ : ndarray of shape (n_features, n_voxels)
        Coefficients refitted on all rows.
    intercept_ : ndarray of shape (n_voxels,)
        Intercepts (zeros without ``fit_intercept``, except constant voxels).
    scoring_ : str
        The validation score used.
    n_splits_ : int
        Number of cross-validation splits.
    n_features_in_ : int

    Notes
    -----
    A voxel constant over all rows has no defined score: :meth:`fit` warns
    (:class:`~jaxenc.errors.DataWarning`) and gives it zero coefficients and an intercept equal
    to its value, so it is predicted by its mean.

    Relation to himalaya: ``himalaya.ridge.RidgeCV(alphas, fit_intercept=True, cv=splits,
    solver_params={"score_func": himalaya.scoring.r2_score})`` solves the same problem with
    the same splits and selection rule; its ``cv_scores_`` holds only the best alpha's score.
    """

    def __init__(self, alphas=np.logspace(-1, 5, 13), cv=5, alpha_per_target: bool = True,
                 fit_intercept: bool = True, scoring: str | None = None,
                 voxel_batch: int = 1024, split_batch: int | None = None,
                 dtype: str = "float32", lapack_threads: int | None = None):
        self.alphas = alphas
        self.cv = cv
        self.alpha_per_target = alpha_per_target
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.voxel_batch = voxel_batch
        self.split_batch = split_batch
        self.dtype = dtype
        self.lapack_threads = lapack_threads

    def fit(self, X, Y, groups=None) -> "RidgeCV":
        """Choose the penalties by cross-validation and refit on all rows.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
            Delayed features, one row per TR.
        Y : array of shape (n_trs, n_voxels) or (n_trs,)
            Responses; a numpy array stays on the host and is streamed in voxel batches.
        groups : array-like of shape (n_trs,), optional
            Story label of each row, used when ``cv`` is an int (or a group-aware splitter).

        Returns
        -------
        self

        Raises
        ------
        AlignmentError
            ``X`` and ``Y`` have different numbers of rows, or wrong dimensions.
        ConfigError
            NaN or inf in ``X`` or ``Y``, non-positive alphas, fewer groups than folds, or
            another unusable option.
        """
        X, Y, constant, splits = self._check_common(X, Y, groups)
        alphas = self.alphas_
        with jax.enable_x64(True):
            xc, x_offset = self._center(X)
            if self._one_decomposition(X, Y, splits):
                dec = lfo.decompose(lfo.gram(xc), np.ones(1), dtype=self._dtype,
                                    lapack_threads=self._lapack_threads)
                scores, fused, (coef, intercept) = self._lfo_pass(dec, Y, splits, x_offset)
                scores[:, constant] = 0.0
                best = _best_index(scores, self.alpha_per_target, ~constant)
                if not fused:
                    coef, intercept = lfo.refit_pass(dec, Y, alphas[best], x_offset,
                                                     **self._lfo_kwargs())
            else:
                scores = solvers.cv_scores(xc, Y, splits, alphas, scoring=self.scoring_,
                                           split_batch=self._split_batch, **self._solver_kwargs())
                scores[:, constant] = 0.0
                best = _best_index(scores, self.alpha_per_target, ~constant)
                coef, intercept = solvers.refit(xc, Y, alphas[best], x_offset=x_offset,
                                                **self._solver_kwargs())
        coef[:, constant] = 0.0
        intercept[constant] = Y[0, constant]
        self.cv_scores_ = scores
        self.best_alphas_ = np.where(constant, np.nan, alphas[best])
        self.coef_ = coef
        self.intercept_ = intercept
        return self


class BandedRidgeCV(_RidgeBase):
    """Banded ridge: one penalty per feature band and voxel, found by random search.

    With band weights ``gamma`` on the simplex (``gamma_b >= 0``, ``sum_b gamma_b = 1``) and a
    shared ``alpha``, the model for each voxel is::

        b = argmin ||y - X b - c||^2 + sum_b (alpha / gamma_b) ||b_b||^2

    which is a ridge with penalty ``alpha`` on the rescaled features ``sqrt(gamma_b) X_b``.
    Each candidate ``gamma`` is therefore one feature rescaling whose ridge problem (one
    decomposition per split, every alpha, every voxel) is solved as in :class:`RidgeCV`; each
    voxel keeps the (gamma, alpha) with the best mean validation score, and is refitted on all
    rows with it.

    Candidates (``candidates_``) are, in order: equal weights ``1 / n_bands``; the simplex
    corners (one band alone, the others switched off: weight 0) when ``corners`` is True;
    then ``n_iter`` Dirichlet samples whose concentration cycles through ``concentration``
    (small values favour near-corner mixes), as himalaya's ``random_search`` solver.

    Relation to himalaya: this is ``himalaya.ridge.BandedRidgeCV`` (alias ``GroupRidgeCV``)
    with ``solver_params={"n_iter": candidates_, "alphas": alphas_}``. Its ``deltas_`` are
    ``log(gamma_b / alpha)``, the log weights in ``Z_b = exp(deltas_b / 2) X_b`` with a unit
    penalty; the same numbers are in :attr:`deltas_`, and :attr:`band_alphas_` is
    ``exp(-deltas_) = alpha / gamma_b``, the effective penalty of each band. A candidate wins
    only if it beats the previous best by more than the compute dtype's epsilon, as in
    himalaya.

    Parameters
    ----------
    bands : sequence of band specifications
        Two or more bands that tile the feature columns (every column in exactly one band).
        Each band is a slice, a 1-D array of column indices, or a sequence of slices (e.g. one
        per delay block of :func:`jaxenc.align.make_delayed`).
    alphas : array-like of shape (n_alphas,)
        Shared penalties, as :class:`RidgeCV`.
    n_iter : int
        Dirichlet samples after the equal-weight and corner candidates.
    concentration : float or sequence of float
        Dirichlet concentrations, cycled through.
    corners : bool
        Include the simplex corners (one band alone).
    candidates : array-like of shape (n_candidates, n_bands), optional
        Explicit non-negative band weights to try instead of the generated ones.
    random_state : int or None
        Seed of the Dirichlet samples.
    cv, alpha_per_target, fit_intercept, scoring, voxel_batch, split_batch, dtype, lapack_threads
        As :class:`RidgeCV`. ``alpha_per_target=False`` picks one (gamma, alpha) for all voxels.

    Attributes
    ----------
    candidates_ : ndarray of shape (n_candidates, n_bands)
        Band weights tried.
    cv_scores_ : ndarray of shape (n_candidates, n_voxels)
        For each candidate, the mean validation score at its best alpha (himalaya's layout).
    best_candidates_ : ndarray of shape (n_voxels,)
        Index of the chosen candidate per voxel (-1 for constant voxels).
    best_alphas_ : ndarray of shape (n_voxels,)
        Chosen shared alpha per voxel.
    deltas_ : ndarray of shape (n_bands, n_voxels)
        ``log(gamma_b / alpha)``; ``-inf`` for a band switched off.
    band_alphas_ : ndarray of shape (n_bands, n_voxels)
        ``alpha / gamma_b``; ``inf`` for a band switched off.
    coef_ : ndarray of shape (n_features, n_voxels)
        Coefficients on the original (unscaled) features.
    intercept_ : ndarray of shape (n_voxels,)
    alphas_, scoring_, n_splits_, n_features_in_
        As :class:`RidgeCV`.

    Notes
    -----
    The cost is that of one :class:`RidgeCV` per candidate (a decomposition per split and a
    pass over ``Y``), plus one refit decomposition per candidate chosen by some voxel.
    Constant voxels are handled as in :class:`RidgeCV` (NaN alphas and deltas).
    """

    def __init__(self, bands, alphas=np.logspace(-1, 5, 13), n_iter: int = 20,
                 concentration=(0.1, 1.0), corners: bool = True, candidates=None,
                 random_state: int | None = 0, cv=5, alpha_per_target: bool = True,
                 fit_intercept: bool = True, scoring: str | None = None,
                 voxel_batch: int = 1024, split_batch: int | None = None,
                 dtype: str = "float32", lapack_threads: int | None = None):
        self.bands = bands
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.corners = corners
        self.candidates = candidates
        self.random_state = random_state
        self.cv = cv
        self.alpha_per_target = alpha_per_target
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.voxel_batch = voxel_batch
        self.split_batch = split_batch
        self.dtype = dtype
        self.lapack_threads = lapack_threads

    def _band_of_column(self, n_features: int) -> np.ndarray:
        if isinstance(self.bands, (str, bytes)) or not hasattr(self.bands, "__len__"):
            raise ConfigError(f"bands must be a sequence of bands, got {type(self.bands).__name__}")
        if len(self.bands) < 2:
            raise ConfigError(f"BandedRidgeCV needs at least 2 bands, got {len(self.bands)}")
        owner = np.full(n_features, -1)
        for b, band in enumerate(self.bands):
            cols = _band_columns(band, n_features, b)
            taken = owner[cols] >= 0
            if taken.any():
                raise ConfigError(f"bands must tile the {n_features} features: column "
                                  f"{cols[taken][0]} is in band {owner[cols[taken][0]]} and band {b}")
            owner[cols] = b
        if (owner < 0).any():
            missing = np.flatnonzero(owner < 0)
            raise ConfigError(f"bands must tile the {n_features} features: {missing.size} "
                              f"column(s) in no band, first {missing[0]}")
        return owner

    def _make_candidates(self, n_bands: int) -> np.ndarray:
        if self.candidates is not None:
            cand = np.asarray(self.candidates, dtype=np.float64)
            if cand.ndim != 2 or cand.shape[1] != n_bands or cand.shape[0] == 0:
                raise ConfigError(f"candidates must have shape (n_candidates, {n_bands}), got "
                                  f"{cand.shape}")
            if not np.isfinite(cand).all() or (cand < 0).any() or (cand.sum(1) <= 0).any():
                raise ConfigError("candidates must be finite, non-negative, with a positive "
                                  "weight in every row")
            return cand
        n_iter = self.n_iter
        if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool) or n_iter < 0:
            raise ConfigError(f"n_iter must be an integer >= 0, got {n_iter!r}")
        conc = np.atleast_1d(np.asarray(self.concentration, dtype=np.float64))
        if conc.size == 0 or (conc <= 0).any():
            raise ConfigError(f"concentration must be positive, got {self.concentration!r}")
        rows = [np.full((1, n_bands), 1.0 / n_bands)]
        if self.corners:
            rows.append(np.eye(n_bands))
        rng = np.random.default_rng(self.random_state)
        rows += [rng.dirichlet(np.full(n_bands, conc[i % conc.size]))[None]
                 for i in range(n_iter)]
        return np.concatenate(rows)

    def fit(self, X, Y, groups=None) -> "BandedRidgeCV":
        """Search the band weights and penalties by cross-validation, refit on all rows.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
        Y : array of shape (n_trs, n_voxels) or (n_trs,)
        groups : array-like of shape (n_trs,), optional
            Story label of each row, see :class:`RidgeCV`.

        Returns
        -------
        self

        Raises
        ------
        AlignmentError, ConfigError
            As :meth:`RidgeCV.fit`; also bands that do not tile the features and malformed
            candidates.
        """
        X, Y, constant, splits = self._check_common(X, Y, groups)
        owner = self._band_of_column(X.shape[1])
        cand = self._make_candidates(len(self.bands))
        self.candidates_ = cand
        alphas = self.alphas_
        n_voxels = Y.shape[1]
        eps = np.finfo(self._dtype).eps
        best_score = np.full(n_voxels, -np.inf)
        best_cand = np.full(n_voxels, -1)
        best_alpha = np.zeros(n_voxels, dtype=np.int64)
        cv_scores = np.empty((len(cand), n_voxels))
        valid = ~constant
        coef = np.zeros((X.shape[1], n_voxels), self._dtype)
        intercept = np.zeros(n_voxels, self._dtype)

        def select(c, scores, cols):
            """Keep candidate c where it beats the best so far; the mask of those columns."""
            nonlocal best_score
            scores[:, constant[cols]] = 0.0
            idx = _best_index(scores, self.alpha_per_target, valid[cols])
            cv_scores[c, cols] = scores[idx, np.arange(len(idx))]
            if self.alpha_per_target:
                current = cv_scores[c, cols]
            else:
                current = np.full(len(idx), cv_scores[c, valid].mean() if valid.any() else 0.0)
            better = current > best_score[cols] + eps
            best_score[cols[better]] = current[better]
            best_cand[cols[better]] = c
            best_alpha[cols[better]] = idx[better]
            return better

        everything = np.arange(n_voxels)
        with jax.enable_x64(True):
            xc, x_offset = self._center(X)
            if self._one_decomposition(X, Y, splits, len(cand)):
                gram = lfo.gram(xc, owner)

                def on_batch(c, start, stop, scores, coef_b, intercept_b):
                    better = select(c, scores, everything[start:stop])
                    coef[:, start:stop][:, better] = coef_b[:, better]
                    intercept[start:stop][better] = intercept_b[better]

                for c, gamma in enumerate(cand):
                    dec = lfo.decompose(gram, gamma, dtype=self._dtype,
                                        lapack_threads=self._lapack_threads)
                    scores, fused, _ = self._lfo_pass(dec, Y, splits, x_offset,
                                                      on_batch=partial(on_batch, c))
                    if not fused:
                        select(c, scores, everything)
                if not fused:
                    for c in np.unique(best_cand[valid]):
                        cols = np.flatnonzero((best_cand == c) & valid)
                        dec = lfo.decompose(gram, cand[c], dtype=self._dtype,
                                            lapack_threads=self._lapack_threads)
                        coef[:, cols], intercept[cols] = lfo.refit_pass(
                            dec, Y, alphas[best_alpha[cols]], x_offset, columns=cols,
                            **self._lfo_kwargs())
            else:
                for c, gamma in enumerate(cand):
                    xs = xc * np.sqrt(gamma[owner]).astype(self._dtype)
                    select(c, solvers.cv_scores(xs, Y, splits, alphas, scoring=self.scoring_,
                                                split_batch=self._split_batch,
                                                **self._solver_kwargs()), everything)
                for c in np.unique(best_cand[valid]):
                    cols = np.flatnonzero((best_cand == c) & valid)
                    scale = np.sqrt(cand[c][owner]).astype(self._dtype)
                    coef_c, intercept[cols] = solvers.refit(
                        xc * scale, Y, alphas[best_alpha[cols]], x_offset=x_offset * scale,
                        columns=cols, **self._solver_kwargs())
                    # The ridge ran on sqrt(gamma) X; this folds the scaling back into b.
                    coef[:, cols] = scale[:, None] * coef_c
        coef[:, constant] = 0.0
        intercept[constant] = Y[0, constant]
        best_cand[constant] = -1
        alpha_v = np.where(constant, np.nan, alphas[best_alpha])
        gammas = np.where(constant[None, :], np.nan, cand[best_cand].T)
        with np.errstate(divide="ignore"):
            self.deltas_ = np.log(gammas) - np.log(alpha_v)[None, :]
            self.band_alphas_ = alpha_v[None, :] / gammas
        self.cv_scores_ = cv_scores
        self.best_candidates_ = best_cand
        self.best_alphas_ = alpha_v
        self.coef_ = coef
        self.intercept_ = intercept
        return self


def _band_columns(band, n_features: int, b: int) -> np.ndarray:
    """Column indices of one band specification."""
    if isinstance(band, slice) or (isinstance(band, (list, tuple)) and band
                                   and all(isinstance(s, slice) for s in band)):
        slices = [band] if isinstance(band, slice) else band
        cols = np.concatenate([np.arange(n_features)[s] for s in slices])
        if cols.size == 0:
            raise ConfigError(f"band {b} selects no column of the {n_features} features")
        return cols
    cols = np.asarray(band)
    if cols.ndim != 1 or cols.size == 0 or not np.issubdtype(cols.dtype, np.integer):
        raise ConfigError(f"band {b} must be a slice, a sequence of slices or a non-empty 1-D "
                          f"integer array, got {band!r}")
    if cols.min() < -n_features or cols.max() >= n_features:
        raise ConfigError(f"band {b} has column indices outside [0, {n_features})")
    cols = cols % n_features
    if np.unique(cols).size != cols.size:
        raise ConfigError(f"band {b} lists a column more than once")
    return cols
