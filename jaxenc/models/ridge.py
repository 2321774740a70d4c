"""Voxelwise ridge regression with the regularisation chosen per voxel by cross-validation.

:class:`RidgeCV` fits ``Y ~ X b + c`` for every voxel (column of ``Y``) with one ridge penalty
per voxel, picked from a grid by K-fold cross-validation over stories (or by the Huth lab's
chunked bootstrap, :class:`~jaxenc.models.BootstrapChunks`).
:class:`~jaxenc.models.BandedRidgeCV` (:mod:`jaxenc.models.ridge_banded`) gives each feature band
(e.g. Whisper and LLaMA columns) its own penalty, by random search on the simplex of band
weights as himalaya's ``BandedRidgeCV``.

Both take arrays (``X`` on the device in full, ``Y`` on the host, streamed in voxel batches),
share decompositions of ``X`` across all alphas and voxels (float64 eigendecompositions where
the backend has float64, float32 SVDs on TPU: ``solver_dtype``), and compute everything that
touches voxels in float32 by default. Two routes give the same model: one decomposition of all
rows serving every split through held-out-fold corrections (:mod:`jaxenc.models.ridge_lfo`),
or one decomposition per split plus one for the refit (:mod:`jaxenc.models.ridge_solvers`,
which also gives the precision argument); the one with fewer flops for the shape is taken,
the second always when the splits' training and validation rows do not partition the rows.
"""

from __future__ import annotations

import functools
import numbers
import warnings

import jax
import numpy as np

from jaxenc import precision as matmul
from jaxenc.errors import AlignmentError, ConfigError, DataWarning
from jaxenc.models import ridge_lfo as lfo
from jaxenc.models import ridge_solvers as solvers
from jaxenc.models.ridge_splits import BootstrapChunks, resolve_splits
from jaxenc.validation import check_dtype, finite_blocks

__all__ = ["RidgeCV"]

# Penalties searched by default: 0.1 to 1e5 in half decades.
DEFAULT_ALPHAS = np.logspace(-1, 5, 13)
_DTYPES = {"float32": np.float32, "float64": np.float64}


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


def _scan_columns(A: np.ndarray, name: str) -> np.ndarray:
    """Raise on the first NaN or inf, block of columns by block; return the constant columns."""
    constant = np.empty(A.shape[1], dtype=bool)
    for start, block in finite_blocks(A, name):
        constant[start:start + block.shape[1]] = (block == block[:1]).all(axis=0)
    return constant


def _check_X(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise AlignmentError(f"X must be 2-D (n_trs, n_features), got shape {X.shape}")
    check_dtype(X, "X")
    if 0 in X.shape:
        raise AlignmentError(f"X has shape {X.shape}: at least one row (TR) and one feature are needed")
    _scan_columns(X, "X")
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
    check_dtype(Y, "Y")
    if Y.shape[1] == 0:
        raise AlignmentError(f"Y has shape {Y.shape}: at least one voxel (column) is needed")
    return Y, _scan_columns(Y, "Y")


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


def at_precision(method):
    """Run an estimator method's compiled programs at the estimator's ``precision``
    (:mod:`jaxenc.precision`), checked against the backend first."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        matmul.check(self.precision, "ridge.precision", on=matmul.platform(), stage="ridge")
        with matmul.scope(self.precision, key="ridge.precision"):
            return method(self, *args, **kwargs)

    return wrapped


class _RidgeBase:
    """Input checks, prediction and scoring shared by the ridge estimators."""

    # Matrix-product precision of every compiled program (jaxenc.precision); "highest" gives
    # the float32 products the tests compare with himalaya and scikit-learn on every backend.
    precision: str = matmul.DEFAULTS["ridge"]

    def _platform(self) -> str:
        """JAX platform the fit runs on, which decides ``solver_dtype="auto"``."""
        return jax.default_backend()

    def _check_solver_dtype(self) -> np.dtype:
        solver_dtype = solvers.resolve_solver_dtype(self.solver_dtype, self._platform())
        if self._dtype == np.float64 and solver_dtype != np.float64:
            raise ConfigError(f"dtype float64 needs float64 decompositions, but solver_dtype="
                              f"{self.solver_dtype!r} is float32 on {self._platform()}")
        return solver_dtype

    def _check_common(self, X, Y, groups, check_Y=_check_Y):
        # check_Y(Y, n_rows) -> (Y, constant columns): the sharded ridge's scans its shards.
        X = _check_X(X)
        Y, constant = check_Y(Y, X.shape[0])
        self._dtype = _check_dtype(self.dtype)
        self._solver_dtype = self._check_solver_dtype()
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

    def _one_decomposition(self, X, Y, splits) -> bool:
        """Whether to solve every split from one decomposition of all rows (``ridge_lfo``):
        complementary splits, and fewer flops than a decomposition per split."""
        return lfo.complementary(splits, X.shape[0]) and lfo.lfo_is_cheaper(
            X.shape[0], X.shape[1], [len(v) for _, v in splits], len(self.alphas_), Y.shape[1],
            self._split_batch)

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
                    dtype=self._dtype, solver_dtype=self._solver_dtype,
                    lapack_threads=self._lapack_threads)

    @at_precision
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
        with solvers.solver_scope(self._dtype):
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

    The rows are decomposed in the solver dtype (``solver_dtype``: in float64 the
    eigendecomposition of ``X^T X`` when there are at least as many rows as features, else
    of ``X X^T``; in float32 the thin SVD of ``X``, which does not square its condition
    number): once in all, every split's validation residuals following
    from the fit on all rows by the held-out-fold identity (:mod:`jaxenc.models.ridge_lfo`),
    or once per split's training rows and once more for the refit, whichever costs fewer
    flops (the second whenever a split's training rows are not the complement of its
    validation rows). All alphas and all voxels reuse them. The validation score of every
    alpha is averaged over the splits (``cv_scores_``), the best alpha is kept per voxel
    (``best_alphas_``; ties go to the larger alpha) or, with ``alpha_per_target=False``, the
    one with the best score averaged over voxels, and the model is refitted on all rows with
    that alpha.

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
        Compute dtype of everything that touches voxels. With float64 decompositions, float32
        results agree with a float64 solve to about 1e-5 relative on problems of a few
        thousand features. float64 needs float64 decompositions.
    solver_dtype : {"auto", "float32", "float64"}
        Dtype of the decompositions of ``X`` and of the held-out-fold corrections. float64
        eigendecomposes ``X^T X`` or ``X X^T``; float32 takes thin SVDs of ``X`` instead
        (a few times the flops of forming and eigendecomposing the Gram matrix, paid once per
        split and band candidate, not per voxel), whose error grows with the condition
        number of ``X`` rather than its square, and holds no float64 operation, for backends
        without float64 (TPU). ``"auto"``: float64 on CPU and GPU,
        float32 on TPU (:func:`~jaxenc.models.ridge_solvers.resolve_solver_dtype`).
    lapack_threads : int or None
        Threads of the CPU LAPACK (OpenBLAS) during the eigendecompositions; None leaves the
        library's default. Set 1 on a CPU shared with other jobs (or running several fits in
        parallel): OpenBLAS's threaded eigensolver then stalls, measured 4-5x slower than one
        thread on a loaded 2-core machine. Needs ``threadpoolctl``. No effect on GPU.
    precision : str
        Matrix-product precision of the compiled programs of :meth:`fit` and :meth:`predict`
        (:mod:`jaxenc.precision`); ``"highest"`` (full float32 on every backend) is what the
        penalties chosen from small eigenvalues need and what himalaya computes.

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

    def __init__(self, alphas=DEFAULT_ALPHAS, cv=5, alpha_per_target: bool = True,
                 fit_intercept: bool = True, scoring: str | None = None,
                 voxel_batch: int = 1024, split_batch: int | None = None,
                 dtype: str = "float32", lapack_threads: int | None = None,
                 solver_dtype: str = "auto", precision: str = matmul.DEFAULTS["ridge"]):
        self.alphas = alphas
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

    @at_precision
    def fit(self, X, Y, groups=None) -> RidgeCV:
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
            Non-positive alphas, fewer groups than folds, an unknown ``solver_dtype``, or
            another unusable option.
        NonFiniteError
            NaN or inf in ``X`` or ``Y``, naming the row and column.
        """
        X, Y, constant, splits = self._check_common(X, Y, groups)
        alphas = self.alphas_
        with solvers.solver_scope(self._solver_dtype):
            xc, x_offset = self._center(X)
            if self._one_decomposition(X, Y, splits):
                dec = lfo.decompose(lfo.gram(xc, solver_dtype=self._solver_dtype), np.ones(1),
                                    dtype=self._dtype, lapack_threads=self._lapack_threads)
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
