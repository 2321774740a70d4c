"""Banded ridge: one penalty per feature band and voxel, found by random search on the simplex.

:class:`BandedRidgeCV` shares :class:`~jaxenc.models.ridge.RidgeCV`'s input checks, solvers and
prediction; each band-weight candidate is a rescaling of the feature columns. On the
one-decomposition route (:mod:`jaxenc.models.ridge_lfo`) the Gram matrix or per-band kernels
are computed once for all candidates, each candidate costs one eigendecomposition, and the
refit of the voxels a candidate wins is fused into that candidate's pass over ``Y``.
"""

from __future__ import annotations

import numbers
from functools import partial

import numpy as np

from jaxenc import precision as matmul
from jaxenc.errors import ConfigError
from jaxenc.models import ridge_lfo as lfo
from jaxenc.models import ridge_solvers as solvers
from jaxenc.models.ridge import DEFAULT_ALPHAS, _best_index, _RidgeBase, at_precision

__all__ = ["BandedRidgeCV"]


class BandedRidgeCV(_RidgeBase):
    """Banded ridge: one penalty per feature band and voxel, found by random search.

    With band weights ``gamma`` on the simplex (``gamma_b >= 0``, ``sum_b gamma_b = 1``) and a
    shared ``alpha``, the model for each voxel is::

        b = argmin ||y - X b - c||^2 + sum_b (alpha / gamma_b) ||b_b||^2

    which is a ridge with penalty ``alpha`` on the rescaled features ``sqrt(gamma_b) X_b``.
    Each candidate ``gamma`` is therefore one feature rescaling whose ridge problem (every
    alpha, every voxel) is solved as in :class:`~jaxenc.models.RidgeCV`; each voxel keeps the
    (gamma, alpha) with the best mean validation score, and is refitted on all rows with it.

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
        Shared penalties, as :class:`~jaxenc.models.RidgeCV`.
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
    cv, alpha_per_target, fit_intercept, scoring, voxel_batch, split_batch, dtype, lapack_threads,
    solver_dtype, precision
        As :class:`~jaxenc.models.RidgeCV`. ``alpha_per_target=False`` picks one (gamma,
        alpha) for all voxels.

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
        As :class:`~jaxenc.models.RidgeCV`.

    Notes
    -----
    On the one-decomposition route each candidate costs one eigendecomposition of the
    rescaled Gram matrix (or kernel), computed once for all candidates, in float64 (one SVD
    of the rescaled features in float32), and one pass over
    ``Y`` that also refits the voxels it wins; on the per-split route, that of one
    :class:`~jaxenc.models.RidgeCV` per candidate plus one refit decomposition per candidate
    chosen by some voxel. Constant voxels are handled as in
    :class:`~jaxenc.models.RidgeCV` (NaN alphas and deltas).
    """

    def __init__(self, bands, alphas=DEFAULT_ALPHAS, n_iter: int = 20,
                 concentration=(0.1, 1.0), corners: bool = True, candidates=None,
                 random_state: int | None = 0, cv=5, alpha_per_target: bool = True,
                 fit_intercept: bool = True, scoring: str | None = None,
                 voxel_batch: int = 1024, split_batch: int | None = None,
                 dtype: str = "float32", lapack_threads: int | None = None,
                 solver_dtype: str = "auto", precision: str = matmul.DEFAULTS["ridge"]):
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
        self.solver_dtype = solver_dtype
        self.precision = precision

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

    @at_precision
    def fit(self, X, Y, groups=None) -> BandedRidgeCV:
        """Search the band weights and penalties by cross-validation, refit on all rows.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
        Y : array of shape (n_trs, n_voxels) or (n_trs,)
        groups : array-like of shape (n_trs,), optional
            Story label of each row, see :class:`~jaxenc.models.RidgeCV`.

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
        with solvers.solver_scope(self._solver_dtype):
            xc, x_offset = self._center(X)
            if self._one_decomposition(X, Y, splits):
                gram = lfo.gram(xc, owner, solver_dtype=self._solver_dtype)

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
