"""Cross-validated ridge from one eigendecomposition of all rows: held-out-fold corrections.

When every split trains on exactly the rows it does not hold out (K folds, the Huth-lab
bootstraps), the validation residuals of the model trained without fold ``o`` follow from
the model fitted on all rows (the leave-group-out identity of penalised least squares)::

    e_o(alpha) = (I - H_oo(alpha))^-1 (y_o - yhat_o(alpha)),   H = B diag(1 / (eig + alpha)) B^T

where ``H`` is the hat matrix of all rows (plus ``1 1^T / n`` for the unpenalised
intercept) and ``B`` (n_samples, r) maps the eigenbasis to the fitted values: ``B = X V``
with ``X^T X = V diag(eig) V^T`` (primal, ``n_features <= n_samples``) or
``B = U diag(sqrt(eig))`` with ``X X^T = U diag(eig) U^T`` (dual). So one decomposition
serves every split, every alpha and the refit, where :mod:`jaxenc.models.ridge_solvers`
decomposes each split's training rows and then all rows again. Per split and alpha the
``n_val x n_val`` matrix ``(I - H_oo)^-1`` is formed in the solver dtype
(``2 n_val^2 r + 2 n_val^3`` flops); per voxel the work is ``z = B^T y``, the fitted
values of every alpha on each fold (``n_alphas * n_val * r``, one GEMM), their correction
(``n_alphas * n_val^2``) and, fused into the same pass, the coefficients at the voxel's best
alpha (``coef = L diag(1 / (eig + alpha)) z`` with ``L = V``, or ``X^T U diag(1 / sqrt(eig))``
in the dual).

Banded ridge rescales the feature columns by ``s = sqrt(gamma_band)`` per candidate: in
float64 the Gram matrix (or the per-band kernels) of all rows is computed once, and each
candidate only rescales it (``D G D``, ``sum_b gamma_b K_b``) before its one
eigendecomposition. In float32 (the solver dtype of backends without float64, see
:func:`~jaxenc.models.ridge_solvers.resolve_solver_dtype`) squaring the condition number is
not affordable: each candidate takes the thin SVD ``X D = U diag(s) V^T`` of the rescaled
features instead, so ``eig = s^2``, ``B = U diag(s)`` and ``L = D V`` in either mode.

:func:`lfo_is_cheaper` compares the flop counts of this route and the per-split route for a
given shape; callers run these functions inside
:func:`~jaxenc.models.ridge_solvers.solver_scope`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.models import ridge_solvers as solvers

__all__ = ["complementary", "lfo_is_cheaper", "Gram", "gram", "Decomposition", "decompose",
           "Folds", "fold_corrections", "cv_pass", "refit_pass"]

# Flops of a float64 symmetric eigendecomposition with vectors, per r^3 (tridiagonal reduction
# and back-transformation, with divide and conquer in between); a rough constant that only
# steers the choice of route.
_EIGH_FLOPS = 10.0


def complementary(splits, n_samples: int) -> bool:
    """True when every split's training rows are exactly the rows it does not validate on."""
    for train, val in splits:
        if len(train) + len(val) != n_samples or np.intersect1d(train, val).size:
            return False
    return True


def lfo_is_cheaper(n_samples: int, n_features: int, val_sizes, n_alphas: int,
                   n_voxels: int, split_batch: int | None = None) -> bool:
    """Whether the one-decomposition route costs fewer flops than one decomposition per split,
    without holding more memory.

    Parameters
    ----------
    n_samples, n_features : int
        Shape of ``X``.
    val_sizes : sequence of int
        Validation rows of each (complementary) split.
    n_alphas, n_voxels : int
        Penalties searched and voxels.
    split_batch : int or None
        Splits resident at once (all when None).

    Returns
    -------
    bool
        True when the route's flops are fewer and its resident fold matrices
        (``split_batch * n_alphas * n_val^2`` numbers) are no more than the per-split route's
        resident decompositions (``split_batch * r * (n_features + n_val)``), or under
        ``2**26`` numbers (256 MiB in float32).
    """
    n, p, k = n_samples, n_features, n_alphas
    m = np.asarray(val_sizes, dtype=np.float64)
    r = min(n, p)
    r_split = np.minimum(n - m, p)
    group = len(m) if split_batch is None else min(split_batch, len(m))
    lfo_numbers = group * k * m.max() ** 2
    split_numbers = group * r_split.max() * (max(p, n - m.min()) + m.max())
    if lfo_numbers > max(split_numbers, 2**26):
        return False
    # Per band candidate: decompositions and fold matrices; per voxel: the voxel GEMMs.
    lfo = (_EIGH_FLOPS * r**3 + 2 * n * p * r + k * np.sum(2 * m**2 * r + 2 * m**3)
           + n_voxels * (2 * n * r + np.sum(2 * k * m * r + 2 * k * m**2) + 2 * p * r))
    split = (np.sum(_EIGH_FLOPS * r_split**3 + 2 * (n - m) * p * r_split + 2 * m * p * r_split)
             + _EIGH_FLOPS * r**3
             + n_voxels * (4 * n * p + np.sum(2 * p * r_split + 2 * k * m * r_split) + 4 * p * r))
    return bool(lfo <= split)


class Gram(NamedTuple):
    """What every candidate's decomposition starts from, computed once per fit.

    Attributes
    ----------
    mode : str
        ``"primal"`` or ``"dual"`` (static).
    x : array of shape (n_samples, n_features)
        Centred features in the solver dtype.
    blocks : array of shape (n_features, n_features) or (n_bands, n_samples, n_samples), or None
        ``X^T X`` (primal), or the kernel ``X_b X_b^T`` of each band (dual); None in float32,
        where each candidate decomposes the rescaled ``x`` itself.
    owner : array of shape (n_features,)
        Band of each column (all 0 for plain ridge).
    """

    mode: str
    x: jax.Array
    blocks: jax.Array
    owner: jax.Array


def gram(X, owner=None, *, solver_dtype) -> Gram:
    """The Gram matrix (primal) or per-band kernels (dual) of the centred features (float64),
    or the features alone (float32).

    Parameters
    ----------
    X : jax.Array of shape (n_samples, n_features)
        Features in the compute dtype, centred when fitting an intercept.
    owner : ndarray of shape (n_features,), optional
        Band of each column (banded ridge); one band when None.
    solver_dtype : numpy dtype
        See :func:`~jaxenc.models.ridge_solvers.resolve_solver_dtype`.

    Returns
    -------
    Gram
    """
    n, p = X.shape
    owner = np.zeros(p, np.int32) if owner is None else np.asarray(owner, np.int32)
    mode = solvers.choose_mode(p, n)
    x = jnp.asarray(X, solver_dtype)
    if np.dtype(solver_dtype) != np.float64:
        return Gram(mode, x, None, jnp.asarray(owner))
    if mode == "primal":
        blocks = x.T @ x
    else:
        blocks = jnp.stack([x[:, owner == b] @ x[:, owner == b].T
                            for b in range(int(owner.max()) + 1)])
    return Gram(mode, x, jax.block_until_ready(blocks), jnp.asarray(owner))


class Decomposition(NamedTuple):
    """One candidate's decomposition of all rows, in the compute dtype except ``fit_solver``.

    Attributes
    ----------
    eig : array of shape (r,)
        Eigenvalues, clipped at 0.
    fit : array of shape (n_samples, r)
        ``B``: fitted values are ``B diag(1 / (eig + alpha)) B^T y``.
    left : array of shape (n_features, r)
        ``L``: coefficients on the unscaled features are ``L diag(1 / (eig + alpha)) B^T y``.
    fit_solver : array of shape (n_samples, r)
        ``B`` in the solver dtype, for the fold corrections.
    """

    eig: jax.Array
    fit: jax.Array
    left: jax.Array
    fit_solver: jax.Array


@partial(jax.jit, static_argnames=("mode", "dtype"))
def _decompose(x, blocks, owner, gamma, *, mode, dtype):
    scale = jnp.sqrt(gamma[owner])  # [p]
    if blocks is None:
        # Float32: the SVD of the rescaled features, never their Gram matrix. Directions of
        # (near) zero singular value get (near) zero fitted values by themselves.
        u, s, vt = jnp.linalg.svd(x * scale, full_matrices=False)  # [n, r], [r], [r, p]
        eig = s * s
        fit = u * s
        left = scale[:, None] * vt.T
    elif mode == "primal":
        eig, basis = jnp.linalg.eigh(scale[:, None] * blocks * scale[None, :])
        eig = jnp.maximum(eig, 0)
        fit = (x * scale) @ basis
        left = scale[:, None] * basis
    else:
        eig, basis = jnp.linalg.eigh(jnp.tensordot(gamma, blocks, axes=1))
        eig = jnp.maximum(eig, 0)
        # Directions of the kernel's null space (up to rounding) carry no fitted values.
        kept = eig > eig.max() * eig.shape[0] * jnp.finfo(eig.dtype).eps
        root = jnp.where(kept, jnp.sqrt(eig), 0.0)
        fit = basis * root
        inv_root = jnp.where(kept, 1.0 / jnp.where(kept, root, 1.0), 0.0)
        left = (scale**2)[:, None] * (x.T @ basis) * inv_root
        eig = jnp.where(kept, eig, 0.0)
    return Decomposition(eig.astype(dtype), fit.astype(dtype), left.astype(dtype), fit)


def decompose(g: Gram, gamma, *, dtype, lapack_threads: int | None = None) -> Decomposition:
    """Decompose all rows of the features rescaled by ``sqrt(gamma_band)``, in the solver dtype
    of ``g`` (eigendecomposition of the rescaled Gram or kernel in float64, SVD in float32).

    Parameters
    ----------
    g : Gram
    gamma : ndarray of shape (n_bands,)
        Band weights (ones for plain ridge).
    dtype : numpy dtype
        Compute dtype of ``eig``, ``fit`` and ``left``.
    lapack_threads : int or None
        See :func:`~jaxenc.models.ridge_solvers.lapack_thread_limit`.

    Returns
    -------
    Decomposition
    """
    with solvers.lapack_thread_limit(lapack_threads):
        return jax.block_until_ready(_decompose(
            g.x, g.blocks, g.owner, jnp.asarray(gamma, g.x.dtype), mode=g.mode,
            dtype=np.dtype(dtype)))


class Folds(NamedTuple):
    """The held-out rows of S splits and their corrections, stacked and zero-padded.

    Attributes
    ----------
    val_idx, val_mask : arrays of shape (S, n_val_max)
        Validation rows and their padding mask.
    n_val : array of shape (S,)
    correction : array of shape (S, n_alphas, n_val_max, n_val_max)
        ``(I - H_oo(alpha))^-1`` (identity on padding).
    """

    val_idx: jax.Array
    val_mask: jax.Array
    n_val: jax.Array
    correction: jax.Array


@partial(jax.jit, static_argnames=("fit_intercept", "dtype"))
def _corrections(fit_solver, eig, alphas, val_idx, val_mask, *, fit_intercept, dtype):
    eig = eig.astype(fit_solver.dtype)

    def one(idx, mask):
        fold = fit_solver[idx] * mask[:, None]  # [m, r]
        shrink = 1.0 / (eig[None, :] + alphas[:, None])  # [a, r]
        hat = jnp.einsum("ir,ar,jr->aij", fold, shrink, fold)  # [a, m, m]
        if fit_intercept:
            hat = hat + (mask[:, None] * mask[None, :]) / fit_solver.shape[0]
        eye = jnp.eye(idx.shape[0], dtype=fit_solver.dtype)
        # I - H_oo is symmetric positive definite with eigenvalues 1 - (fold leverages), so
        # its inverse loses at most a factor 1 / (1 - max leverage) of the solver's precision.
        return jnp.linalg.inv(eye - hat).astype(dtype)

    return jax.lax.map(lambda a: one(*a), (val_idx, val_mask))


def fold_corrections(dec: Decomposition, splits, alphas, *, fit_intercept: bool,
                     dtype, lapack_threads: int | None = None) -> Folds:
    """Stack the splits' validation rows and their corrections ``(I - H_oo)^-1`` (computed
    in the solver dtype of ``dec.fit_solver``).

    Parameters
    ----------
    dec : Decomposition
    splits : list of (ndarray, ndarray)
        Complementary (train, val) row indices.
    alphas : ndarray of shape (n_alphas,)
    fit_intercept : bool
    dtype : numpy dtype
    lapack_threads : int or None
        See :func:`~jaxenc.models.ridge_solvers.lapack_thread_limit`: the CPU inverses are
        LAPACK calls too (measured 40x slower with 2 threads than 1 on a loaded 2-core machine
        at 11 x 200 x 200).

    Returns
    -------
    Folds
    """
    val_rows = [v for _, v in splits]
    val_idx, val_mask = solvers._pad(val_rows, max(len(v) for v in val_rows))
    with solvers.lapack_thread_limit(lapack_threads):
        solver_dtype = dec.fit_solver.dtype
        corr = jax.block_until_ready(_corrections(
            dec.fit_solver, dec.eig, jnp.asarray(alphas, solver_dtype), jnp.asarray(val_idx),
            jnp.asarray(val_mask, solver_dtype), fit_intercept=fit_intercept,
            dtype=np.dtype(dtype)))
    return Folds(jnp.asarray(val_idx), jnp.asarray(val_mask, dtype),
                 jnp.asarray([len(v) for v in val_rows], dtype), corr)


def _centre(Y, fit_intercept):
    if not fit_intercept:
        return Y, jnp.zeros(Y.shape[1], Y.dtype)
    mean = solvers.column_mean(Y)
    return Y - mean, mean


def _coef(dec, z, shrink_v, y_mean, x_offset):
    coef = dec.left @ (z * shrink_v)  # [p, v]
    return coef, y_mean - x_offset @ coef


@partial(jax.jit, static_argnames=("fit_intercept", "scoring"))
def _cv_batch(dec, folds, alphas, Y, x_offset, *, fit_intercept, scoring):
    """Validation scores of one voxel batch summed over the splits, and the coefficients at
    each voxel's best alpha (ties to the larger): (n_alphas, v), (p, v), (v,)."""
    y, y_mean = _centre(Y, fit_intercept)
    z = dec.fit.T @ y  # [r, v]
    shrink = 1.0 / (dec.eig[:, None] + alphas[None, :])  # [r, a]
    n_alphas, (r, v) = alphas.shape[0], z.shape
    scaled = (shrink[:, :, None] * z[:, None, :]).reshape(r, n_alphas * v)  # [r, a*v]

    def step(acc, s):
        idx, mask, n_val, corr = s
        y_val = y[idx] * mask[:, None]  # [m, v]
        # Fitted values of all rows' model on the fold, every alpha in one GEMM.
        fitted = ((dec.fit[idx] * mask[:, None]) @ scaled).reshape(-1, n_alphas, v)
        resid = jnp.moveaxis(y_val[:, None, :] - fitted, 1, 0)  # [a, m, v]
        pred = y_val[:, None, :] - jnp.moveaxis(corr @ resid, 0, 1)  # [m, a, v]
        return acc + solvers._prediction_scores(pred, y_val, mask, n_val, scoring), None

    scores, _ = jax.lax.scan(step, jnp.zeros((n_alphas, v), Y.dtype), tuple(folds))
    best = n_alphas - 1 - jnp.argmax(scores[::-1], axis=0)  # [v]
    return (scores,) + _coef(dec, z, shrink[:, best], y_mean, x_offset)


@partial(jax.jit, static_argnames=("fit_intercept",))
def _refit_batch(dec, alphas_v, Y, x_offset, *, fit_intercept):
    y, y_mean = _centre(Y, fit_intercept)
    return _coef(dec, dec.fit.T @ y, 1.0 / (dec.eig[:, None] + alphas_v[None, :]), y_mean,
                 x_offset)


def cv_pass(dec: Decomposition, folds: Folds, Y, alphas, x_offset, *, fit_intercept: bool,
            scoring: str, voxel_batch: int, dtype, coef_out=None):
    """Summed validation scores of every alpha and voxel; optionally the fused refit.

    Parameters
    ----------
    dec : Decomposition
    folds : Folds
    Y : ndarray of shape (n_samples, n_voxels)
        Host responses, streamed ``voxel_batch`` columns at a time.
    alphas : ndarray of shape (n_alphas,)
    x_offset : ndarray of shape (n_features,)
        Column means removed from ``X`` (zeros without intercept).
    fit_intercept : bool
    scoring : {"r2", "correlation"}
    voxel_batch : int
    dtype : numpy dtype
    coef_out : callable, optional
        Called as ``coef_out(start, stop, scores, coef, intercept)`` with host arrays of
        shapes (n_alphas, w), (n_features, w) and (w,), ``w = stop - start``: the batch's
        summed scores and the coefficients refitted on all rows at each voxel's best alpha
        over these splits (the best over all splits when ``folds`` holds every split).

    Returns
    -------
    ndarray of shape (n_alphas, n_voxels), float64
        Validation scores summed over the splits.
    """
    total = np.zeros((len(alphas), Y.shape[1]))
    alphas_dev = jnp.asarray(alphas, dtype)
    offset = jnp.asarray(x_offset, dtype)

    def fetch(start, stop, res):
        total[:, start:stop] = np.asarray(res[0])[:, : stop - start]
        if coef_out is not None:
            coef_out(start, stop, total[:, start:stop], np.asarray(res[1])[:, : stop - start],
                     np.asarray(res[2])[: stop - start])

    solvers._stream(((start, stop, _cv_batch(dec, folds, alphas_dev, yb, offset,
                                             fit_intercept=fit_intercept, scoring=scoring))
                     for start, stop, yb in solvers._batches(Y, None, voxel_batch, dtype)),
                    fetch)
    return total


def refit_pass(dec: Decomposition, Y, alphas_v, x_offset, *, fit_intercept: bool,
               voxel_batch: int, dtype, columns=None):
    """Coefficients on all rows with each selected voxel's alpha, from ``dec`` (no new
    decomposition).

    Parameters
    ----------
    dec : Decomposition
    Y : ndarray of shape (n_samples, n_voxels)
    alphas_v : ndarray of shape (n_selected_voxels,)
    x_offset : ndarray of shape (n_features,)
    fit_intercept : bool
    voxel_batch : int
    dtype : numpy dtype
    columns : ndarray of int, optional
        Columns of ``Y`` to refit (all when None).

    Returns
    -------
    coef : ndarray of shape (n_features, n_selected_voxels)
    intercept : ndarray of shape (n_selected_voxels,)
    """
    offset = jnp.asarray(x_offset, dtype)
    return solvers.refit_columns(
        lambda yb, alphas_b: _refit_batch(dec, alphas_b, yb, offset, fit_intercept=fit_intercept),
        Y, alphas_v, dec.left.shape[0], voxel_batch=voxel_batch, dtype=dtype, columns=columns)
