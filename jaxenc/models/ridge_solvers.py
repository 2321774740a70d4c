"""Array-level ridge solvers behind :class:`~jaxenc.models.RidgeCV` and its banded variant.

The problem, for every voxel (column of ``Y``) and every candidate ``alpha``::

    b = argmin_b ||Y_train - X_train b||^2 + alpha ||b||^2 = (X_train^T X_train + alpha I)^-1 X_train^T y

is solved through one eigendecomposition per cross-validation split, shared by all alphas and
all voxels:

- *primal* (``n_features <= n_train`` in every split): ``X_train^T X_train = V diag(e) V^T``;
  the validation prediction is ``P_alpha = A diag(1 / (e + alpha)) Q`` with
  ``A = X_val V`` (n_val, n_features) and ``Q = V^T X_train^T Y_train``.
- *dual* (more features than training rows): ``X_train X_train^T = U diag(e) U^T``; the same
  formula holds with ``A = X_val X_train^T U`` and ``Q = U^T Y_train``.

Only ``Q`` and the scores depend on the voxels, so the voxels stream through in batches while
the decompositions stay resident. In the primal case ``X_train^T Y_train`` is obtained as
``X^T Y - X_out^T Y_out`` where ``out`` are the rows outside the training set: one product
with all rows per voxel batch, shared by the splits, plus one small product per split.

Cost per voxel and split: ``n_alphas * n_val * r`` multiply-adds for the validation
predictions of all alphas (the dominant term, one GEMM), ``r^2`` for ``Q`` and
``n_out * n_features`` for the correction, with ``r = min(n_features, n_train)``. himalaya's
solver multiplies a ``(n_val, n_train)`` matrix per alpha, ``n_alphas * n_val * n_train``, so
the primal route saves a factor ``n_train / n_features`` on that term.

Precision: the decompositions run in the *solver dtype* (:func:`resolve_solver_dtype`),
whatever the compute dtype of the voxels. In float64 they eigendecompose the Gram (or kernel)
matrix. Forming ``X^T X`` squares the condition number, so in float32 its eigenvalues would be
wrong by ``~6e-8 * ||X||^2``, comparable to the small alphas; the float32 route (TPUs have no
float64 eigensolver or LU) therefore takes the thin SVD ``X_train = U diag(s) V^T`` of the
centred rows instead, whose singular values are wrong by ``~6e-8 * ||X||`` only: ``eig = s^2``,
``V`` (primal) or ``U`` (dual) as the basis, and ``A = X_val V diag(s)`` in the dual, without
ever forming ``X^T X`` or ``X X^T``. Everything that touches the voxels (the bulk of the work)
runs in the compute dtype. Callers run these functions inside :func:`solver_scope`, which
enables float64 for the float64 route only, so the float32 route holds no float64 op.

(Longer than 450 lines: the per-split route's decompositions and voxel kernels, which
:mod:`jaxenc.models.ridge_sharded` reuses, and the voxel-batch streaming that
:mod:`jaxenc.models.ridge_lfo` shares, are one unit.)
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.errors import ConfigError

__all__ = [
    "SOLVER_DTYPES",
    "resolve_solver_dtype",
    "solver_scope",
    "column_mean",
    "SplitStack",
    "FullDecomposition",
    "choose_mode",
    "lapack_thread_limit",
    "decompose_splits",
    "decompose_full",
    "cv_scores",
    "refit",
    "predict",
]

SCORINGS = ("r2", "correlation")
# Dtypes the decompositions may run in; "auto" is resolved by resolve_solver_dtype.
SOLVER_DTYPES = ("auto", "float32", "float64")
# Backends (jax platform names) with float64 eigensolvers and LU; TPUs have neither.
_FLOAT64_PLATFORMS = ("cpu", "gpu", "cuda", "rocm")


def resolve_solver_dtype(solver_dtype: str, platform: str | None = None) -> np.dtype:
    """The dtype the ridge decompositions run in: the one place ``"auto"`` is decided.

    Parameters
    ----------
    solver_dtype : {"auto", "float32", "float64"} or numpy dtype
        ``"auto"`` is float64 where the backend has float64 linear algebra (CPU, GPU) and
        float32 elsewhere (TPU).
    platform : str, optional
        JAX platform the fit runs on (``"cpu"``, ``"gpu"``, ``"tpu"``); the default backend's
        when None.

    Returns
    -------
    numpy dtype
        float32 or float64.

    Raises
    ------
    ConfigError
        ``solver_dtype`` is not one of :data:`SOLVER_DTYPES`.
    """
    try:
        name = solver_dtype if isinstance(solver_dtype, str) else np.dtype(solver_dtype).name
    except TypeError:
        name = None
    if name not in SOLVER_DTYPES:
        raise ConfigError(f"solver_dtype must be one of {list(SOLVER_DTYPES)}, got {solver_dtype!r}")
    if name == "auto":
        platform = jax.default_backend() if platform is None else platform
        name = "float64" if platform in _FLOAT64_PLATFORMS else "float32"
    return np.dtype(name)


def solver_scope(solver_dtype):
    """Context the ridge functions run in: float64 enabled for the float64 route only, so
    that nothing of the float32 route (arrays, constants, index arithmetic) can widen to
    float64."""
    return jax.enable_x64(np.dtype(solver_dtype) == np.float64)


def column_mean(Y):
    """Column means of ``Y`` (n, v) in its own dtype, to about one rounding: the second pass
    over the residuals corrects the first pass's summation error without a wider dtype."""
    mean = Y.mean(0)
    return mean + (Y - mean).mean(0)


class SplitStack(NamedTuple):
    """Decompositions of the training rows of S splits, stacked and zero-padded.

    Padding rows carry index 0 and mask 0; padded rows of ``test_proj`` are zero, so they add
    nothing to any score. ``r`` is ``n_features`` (primal) or the largest training set (dual).

    Attributes
    ----------
    eig : array of shape (S, r)
        Eigenvalues of the training Gram (primal) or kernel (dual) matrix, clipped at 0.
    basis : array of shape (S, n_features, r) or (S, n_train_max, r)
        Eigenvectors ``V`` (primal) or ``U`` (dual).
    test_proj : array of shape (S, n_val_max, r)
        ``A``: validation rows, centred by the training mean, mapped onto the eigenbasis.
    val_idx, val_mask : arrays of shape (S, n_val_max)
        Validation rows and their padding mask.
    n_val : array of shape (S,)
        Validation rows per split.
    fit_idx, fit_mask : arrays of shape (S, n_fit_max)
        Rows the voxel kernel gathers to form ``Q``: the rows outside the training set (primal)
        or the training rows (dual).
    n_train : array of shape (S,)
        Training rows per split.
    x_mean : array of shape (S, n_features)
        Training mean of ``X`` (zeros without intercept).
    """

    eig: jax.Array
    basis: jax.Array
    test_proj: jax.Array
    val_idx: jax.Array
    val_mask: jax.Array
    n_val: jax.Array
    fit_idx: jax.Array
    fit_mask: jax.Array
    n_train: jax.Array
    x_mean: jax.Array


class FullDecomposition(NamedTuple):
    """Decomposition of all rows, used to refit with the chosen alphas.

    ``coef = left @ diag(1 / (eig + alpha)) @ basis^T @ Z`` with ``Z = X^T Y`` (primal, where
    ``left = basis = V``) or ``Z = Y`` (dual, ``basis = U``, ``left = X^T U``).

    Attributes
    ----------
    eig : array of shape (r,)
        Eigenvalues of ``X^T X`` or ``X X^T``, clipped at 0.
    basis : array of shape (n_features, r) or (n_samples, r)
        Eigenvectors.
    left : array of shape (n_features, r)
        Map from the eigenbasis to coefficients.
    """

    eig: jax.Array
    basis: jax.Array
    left: jax.Array


def choose_mode(n_features: int, n_train: int) -> str:
    """``"primal"`` (decompose ``X^T X``) when ``n_features <= n_train``, else ``"dual"``."""
    return "primal" if n_features <= n_train else "dual"


def _pad(rows: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.zeros((len(rows), width), dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=bool)
    for k, r in enumerate(rows):
        idx[k, : len(r)] = r
        mask[k, : len(r)] = True
    return idx, mask


@partial(jax.jit, static_argnames=("mode", "fit_intercept", "solver_dtype"))
def _decompose_one(X, train_idx, train_mask, val_idx, val_mask, *, mode, fit_intercept,
                   solver_dtype):
    tmask = train_mask[:, None].astype(solver_dtype)
    vmask = val_mask[:, None].astype(solver_dtype)
    x_train = X[train_idx].astype(solver_dtype)  # [t, p]
    if fit_intercept:
        mean = (x_train * tmask).sum(0) / tmask.sum()
    else:
        mean = jnp.zeros(X.shape[1], solver_dtype)
    x_train = (x_train - mean) * tmask
    x_val = (X[val_idx].astype(solver_dtype) - mean) * vmask  # [m, p]
    if solver_dtype != np.float64:
        # Padding rows are zero, so they add nothing to the singular values; r = min(t, p).
        u, s, vt = jnp.linalg.svd(x_train, full_matrices=False)  # [t, r], [r], [r, p]
        if mode == "primal":
            basis = vt.T  # [p, p]
            test_proj = x_val @ basis
        else:
            basis = u  # [t, r]; X_train^T U = V diag(s)
            test_proj = (x_val @ vt.T) * s
        return s * s, basis, test_proj, mean
    if mode == "primal":
        eig, basis = jnp.linalg.eigh(x_train.T @ x_train)  # [p], [p, p]
        test_proj = x_val @ basis
    else:
        eig, basis = jnp.linalg.eigh(x_train @ x_train.T)  # [t], [t, t]
        test_proj = x_val @ (x_train.T @ basis)
    return jnp.maximum(eig, 0), basis, test_proj, mean


def lapack_thread_limit(n_threads: int | None):
    """Context limiting the BLAS/LAPACK library's threads (None: leave its default).

    JAX's CPU eigendecomposition calls LAPACK from the OpenBLAS that scipy ships, whose
    multi-threaded tridiagonal reduction synchronises threads thousands of times; on a machine
    shared with other jobs each synchronisation can wait for a descheduled thread, and a
    2000 x 2000 ``eigh`` was measured 4-5x slower with 2 threads than with 1 on a loaded
    2-core machine. Needs ``threadpoolctl`` (a scikit-learn dependency) when ``n_threads`` is
    set. Results computed inside must be blocked on before leaving the context.
    """
    if n_threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n_threads, user_api="blas")


def decompose_splits(X, splits, *, mode: str, fit_intercept: bool, dtype, solver_dtype,
                     lapack_threads: int | None = None) -> SplitStack:
    """Decompose the training rows of each split (in the solver dtype) and stack them.

    Parameters
    ----------
    X : jax.Array of shape (n_samples, n_features)
        Features in the compute dtype (centred over all rows when fitting an intercept).
    splits : list of (ndarray, ndarray)
        Sorted (train, val) row indices.
    mode : {"primal", "dual"}
        Which matrix to decompose, see :func:`choose_mode`.
    fit_intercept : bool
        Centre the training and validation rows by the training mean.
    dtype : numpy dtype
        Compute dtype of the returned arrays.
    solver_dtype : numpy dtype
        float64 (eigendecompositions of the Gram or kernel matrices) or float32 (SVDs of the
        centred training rows), see :func:`resolve_solver_dtype`.
    lapack_threads : int or None
        See :func:`lapack_thread_limit`.

    Returns
    -------
    SplitStack
    """
    n_samples = X.shape[0]
    train_rows = [t for t, _ in splits]
    val_rows = [v for _, v in splits]
    train_idx, train_mask = _pad(train_rows, max(len(t) for t in train_rows))
    val_idx, val_mask = _pad(val_rows, max(len(v) for v in val_rows))
    parts = []
    for k in range(len(splits)):
        with lapack_thread_limit(lapack_threads):
            out = jax.block_until_ready(_decompose_one(
                X, train_idx[k], train_mask[k], val_idx[k], val_mask[k], mode=mode,
                fit_intercept=fit_intercept, solver_dtype=np.dtype(solver_dtype)))
        # Cast each split as it comes so the solver-dtype copies never pile up.
        parts.append([a.astype(dtype) for a in out])
    if mode == "primal":
        fit_rows = [np.setdiff1d(np.arange(n_samples), t) for t in train_rows]
        # A split that trains on every row has no "out" rows; one masked row keeps shapes valid.
        fit_idx, fit_mask = _pad(fit_rows, max(1, max(len(f) for f in fit_rows)))
    else:
        fit_idx, fit_mask = train_idx, train_mask

    def stack(i):
        return jnp.stack([p[i] for p in parts])

    return SplitStack(
        eig=stack(0), basis=stack(1), test_proj=stack(2),
        val_idx=jnp.asarray(val_idx), val_mask=jnp.asarray(val_mask, dtype),
        n_val=jnp.asarray([len(v) for v in val_rows], dtype),
        fit_idx=jnp.asarray(fit_idx), fit_mask=jnp.asarray(fit_mask, dtype),
        n_train=jnp.asarray([len(t) for t in train_rows], dtype),
        x_mean=stack(3),
    )


@partial(jax.jit, static_argnames=("mode", "dtype", "solver_dtype"))
def _decompose_full(X, *, mode, dtype, solver_dtype):
    x = X.astype(solver_dtype)
    if solver_dtype != np.float64:
        u, s, vt = jnp.linalg.svd(x, full_matrices=False)  # [n, r], [r], [r, p]
        eig = s * s
        # Primal: V and V; dual: U and X^T U = V diag(s).
        basis, left = (vt.T, vt.T) if mode == "primal" else (u, vt.T * s)
    elif mode == "primal":
        eig, basis = jnp.linalg.eigh(x.T @ x)
        left = basis
    else:
        eig, basis = jnp.linalg.eigh(x @ x.T)
        left = x.T @ basis
    return FullDecomposition(jnp.maximum(eig, 0).astype(dtype), basis.astype(dtype),
                             left.astype(dtype))


def decompose_full(X, *, mode: str, dtype, solver_dtype,
                   lapack_threads: int | None = None) -> FullDecomposition:
    """Decompose all rows: ``X^T X`` (primal) or ``X X^T`` (dual) in float64, or the thin SVD
    of ``X`` in float32.

    Parameters
    ----------
    X : jax.Array of shape (n_samples, n_features)
        Features in the compute dtype, centred when fitting an intercept.
    mode : {"primal", "dual"}
    dtype : numpy dtype
        Compute dtype of the returned arrays.
    solver_dtype : numpy dtype
        See :func:`resolve_solver_dtype`.
    lapack_threads : int or None
        See :func:`lapack_thread_limit`.

    Returns
    -------
    FullDecomposition
    """
    with lapack_thread_limit(lapack_threads):
        return jax.block_until_ready(_decompose_full(X, mode=mode, dtype=np.dtype(dtype),
                                                     solver_dtype=np.dtype(solver_dtype)))


def _validation_scores(test_proj, eig, alphas, q, y_val, val_mask, n_val, scoring):
    """Score of every alpha on one split's validation rows: array of shape (n_alphas, v)."""
    n_alphas, (r, v) = alphas.shape[0], q.shape
    shrink = 1.0 / (eig[None, :] + alphas[:, None])  # [a, r]
    # One GEMM for all alphas: the alpha axis is folded into the voxel axis.
    scaled = (shrink.T[:, :, None] * q[:, None, :]).reshape(r, n_alphas * v)  # [r, a*v]
    pred = (test_proj @ scaled).reshape(-1, n_alphas, v)  # [m, a, v]
    return _prediction_scores(pred, y_val, val_mask, n_val, scoring)


def _prediction_scores(pred, y_val, val_mask, n_val, scoring):
    """Score of predictions ``pred`` (m, n_alphas, v) of ``y_val`` (m, v), both zero on the
    padding rows, per alpha and voxel: array of shape (n_alphas, v)."""
    mask = val_mask[:, None]
    y_mean = y_val.sum(0) / n_val
    y_c = (y_val - y_mean) * mask  # [m, v]
    ss_y = (y_c * y_c).sum(0)
    # A voxel constant over the validation rows has no defined score; rounding leaves a tiny
    # positive variance, so compare with the raw second moment rather than with zero.
    eps = jnp.finfo(y_val.dtype).eps
    y_ok = ss_y > 100 * eps * (y_val * y_val).sum(0)
    if scoring == "r2":
        resid = y_val[:, None, :] - pred
        sse = (resid * resid).sum(0)
        return jnp.where(y_ok, 1.0 - sse / jnp.where(y_ok, ss_y, 1.0), 0.0)
    p_mean = pred.sum(0) / n_val
    p_c = (pred - p_mean) * mask[:, :, None]
    cov = (p_c * y_c[:, None, :]).sum(0)
    ss_p = (p_c * p_c).sum(0)
    ok = y_ok & (ss_p > 0)
    return jnp.where(ok, cov / jnp.sqrt(jnp.where(ok, ss_p * ss_y, 1.0)), 0.0)


@partial(jax.jit, static_argnames=("mode", "fit_intercept", "scoring"))
def _cv_batch(X, Y, stack, alphas, *, mode, fit_intercept, scoring):
    """Validation scores of one voxel batch, summed over the splits: shape (n_alphas, v)."""
    if fit_intercept:
        Y = Y - column_mean(Y)
    total = Y.sum(0)
    xty = X.T @ Y if mode == "primal" else None  # [p, v]

    def step(acc, s):
        fmask = s.fit_mask[:, None]
        y_fit = Y[s.fit_idx] * fmask  # [o, v]
        if fit_intercept:
            fit_sum = y_fit.sum(0)
            y_mean = (total - fit_sum) / s.n_train if mode == "primal" else fit_sum / s.n_train
        else:
            y_mean = jnp.zeros_like(total)
        if mode == "primal":
            x_fit = X[s.fit_idx] * fmask  # [o, p]
            xty_train = xty - x_fit.T @ y_fit
            if fit_intercept:
                xty_train = xty_train - s.n_train * s.x_mean[:, None] * y_mean[None, :]
            q = s.basis.T @ xty_train  # [p, v]
        else:
            q = s.basis.T @ ((y_fit - y_mean) * fmask)  # [t, v]
        y_val = (Y[s.val_idx] - y_mean) * s.val_mask[:, None]  # [m, v]
        scores = _validation_scores(s.test_proj, s.eig, alphas, q, y_val, s.val_mask, s.n_val,
                                    scoring)
        return acc + scores, None

    init = jnp.zeros((alphas.shape[0], Y.shape[1]), Y.dtype)
    acc, _ = jax.lax.scan(step, init, stack)
    return acc


def _batches(Y, columns, voxel_batch: int, dtype):
    """Yield (start, stop, device batch) over the selected columns, zero-padding the last."""
    n_cols = Y.shape[1] if columns is None else len(columns)
    width = min(voxel_batch, n_cols)
    for start in range(0, n_cols, width):
        stop = min(start + width, n_cols)
        block = Y[:, start:stop] if columns is None else Y[:, columns[start:stop]]
        block = np.asarray(block, dtype=dtype)
        if stop - start < width:
            block = np.pad(block, ((0, 0), (0, width - (stop - start))))
        yield start, stop, jax.device_put(block)


def _stream(results, fetch):
    """Fetch each batch result one step late so the host slices the next batch meanwhile."""
    pending = None
    for item in results:
        if pending is not None:
            fetch(*pending)
        pending = item
    if pending is not None:
        fetch(*pending)


def cv_scores(X, Y, splits, alphas, *, fit_intercept: bool, scoring: str, voxel_batch: int,
              split_batch: int | None, dtype, solver_dtype, columns=None,
              lapack_threads: int | None = None) -> np.ndarray:
    """Mean validation score of every alpha and voxel over the splits.

    Parameters
    ----------
    X : jax.Array of shape (n_samples, n_features)
        Features in the compute dtype, centred over all rows when fitting an intercept.
    Y : ndarray of shape (n_samples, n_voxels)
        Responses on the host; streamed to the device ``voxel_batch`` columns at a time.
    splits : list of (ndarray, ndarray)
        Sorted (train, val) row indices.
    alphas : ndarray of shape (n_alphas,)
        Positive regularisation strengths.
    fit_intercept : bool
        Centre training rows by their mean (the intercept is not penalised).
    scoring : {"r2", "correlation"}
        Per-voxel validation score.
    voxel_batch : int
        Voxels per device batch.
    split_batch : int or None
        Splits whose decompositions are resident at once (all when None).
    dtype : numpy dtype
        Compute dtype.
    solver_dtype : numpy dtype
        Dtype of the decompositions, see :func:`resolve_solver_dtype`.
    columns : ndarray of int, optional
        Columns of ``Y`` to use (all when None).
    lapack_threads : int or None
        See :func:`lapack_thread_limit`.

    Returns
    -------
    ndarray of shape (n_alphas, n_selected_voxels), float64
        Validation scores averaged over the splits.
    """
    n_train_min = min(len(t) for t, _ in splits)
    mode = choose_mode(X.shape[1], n_train_min)
    n_cols = Y.shape[1] if columns is None else len(columns)
    total = np.zeros((len(alphas), n_cols))
    alphas_dev = jnp.asarray(alphas, dtype)
    group = len(splits) if split_batch is None else split_batch
    for g in range(0, len(splits), group):
        stack = decompose_splits(X, splits[g:g + group], mode=mode,
                                 fit_intercept=fit_intercept, dtype=dtype,
                                 solver_dtype=solver_dtype, lapack_threads=lapack_threads)

        def fetch(start, stop, res):
            total[:, start:stop] += np.asarray(res)[:, : stop - start]

        _stream(((start, stop, _cv_batch(X, yb, stack, alphas_dev, mode=mode,
                                         fit_intercept=fit_intercept, scoring=scoring))
                 for start, stop, yb in _batches(Y, columns, voxel_batch, dtype)), fetch)
        del stack
    return total / len(splits)


@partial(jax.jit, static_argnames=("mode", "fit_intercept"))
def _refit_batch(X, Y, dec, alphas_v, x_offset, *, mode, fit_intercept):
    if fit_intercept:
        y_mean = column_mean(Y)
        Y = Y - y_mean
    else:
        y_mean = jnp.zeros(Y.shape[1], Y.dtype)
    z = X.T @ Y if mode == "primal" else Y
    q = dec.basis.T @ z  # [r, v]
    coef = dec.left @ (q / (dec.eig[:, None] + alphas_v[None, :]))  # [p, v]
    return coef, y_mean - x_offset @ coef


def refit(X, Y, alphas_v, *, x_offset, fit_intercept: bool, voxel_batch: int, dtype,
          solver_dtype, columns=None, lapack_threads: int | None = None):
    """Ridge coefficients on all rows, each voxel with its own alpha.

    Parameters
    ----------
    X : jax.Array of shape (n_samples, n_features)
        Features in the compute dtype, centred over all rows when fitting an intercept.
    Y : ndarray of shape (n_samples, n_voxels)
        Responses on the host.
    alphas_v : ndarray of shape (n_selected_voxels,)
        Positive alpha of each selected voxel.
    x_offset : ndarray of shape (n_features,)
        Column means removed from ``X`` (zeros without intercept); the intercept is expressed
        for the uncentred features.
    fit_intercept : bool
    voxel_batch : int
    dtype : numpy dtype
    solver_dtype : numpy dtype
        Dtype of the decomposition, see :func:`resolve_solver_dtype`.
    columns : ndarray of int, optional
        Columns of ``Y`` to refit (all when None).
    lapack_threads : int or None
        See :func:`lapack_thread_limit`.

    Returns
    -------
    coef : ndarray of shape (n_features, n_selected_voxels)
    intercept : ndarray of shape (n_selected_voxels,)
    """
    n_samples, n_features = X.shape
    mode = choose_mode(n_features, n_samples)
    dec = decompose_full(X, mode=mode, dtype=dtype, solver_dtype=solver_dtype,
                         lapack_threads=lapack_threads)
    offset = jnp.asarray(x_offset, dtype)
    return refit_columns(
        lambda yb, alphas_b: _refit_batch(X, yb, dec, alphas_b, offset, mode=mode,
                                          fit_intercept=fit_intercept),
        Y, alphas_v, n_features, voxel_batch=voxel_batch, dtype=dtype, columns=columns)


def refit_columns(kernel, Y, alphas_v, n_features: int, *, voxel_batch: int, dtype,
                  columns=None):
    """Stream the selected columns of ``Y`` through a refit kernel, batch by batch.

    Parameters
    ----------
    kernel : callable
        ``kernel(y_batch, alphas_batch)`` -> ``(coef (n_features, w), intercept (w,))`` on the
        device, for a batch of ``w`` columns (the last one zero-padded) and their alphas.
    Y : ndarray of shape (n_samples, n_voxels)
    alphas_v : ndarray of shape (n_selected_voxels,)
    n_features : int
    voxel_batch : int
    dtype : numpy dtype
    columns : ndarray of int, optional
        Columns of ``Y`` to refit (all when None).

    Returns
    -------
    coef : ndarray of shape (n_features, n_selected_voxels)
    intercept : ndarray of shape (n_selected_voxels,)
    """
    n_cols = len(alphas_v)
    coef = np.empty((n_features, n_cols), dtype)
    intercept = np.empty(n_cols, dtype)
    width = min(voxel_batch, n_cols)
    alphas_pad = np.concatenate([alphas_v, np.ones(-n_cols % width)]).astype(dtype)

    def fetch(start, stop, res):
        coef[:, start:stop] = np.asarray(res[0])[:, : stop - start]
        intercept[start:stop] = np.asarray(res[1])[: stop - start]

    _stream(((start, stop, kernel(yb, jnp.asarray(alphas_pad[start:start + width])))
             for start, stop, yb in _batches(Y, columns, voxel_batch, dtype)), fetch)
    return coef, intercept


@jax.jit
def _predict_batch(X, coef, intercept):
    return X @ coef + intercept


def predict(X, coef, intercept, *, voxel_batch: int, dtype) -> np.ndarray:
    """``X @ coef + intercept`` computed on the device in voxel batches.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    coef : ndarray of shape (n_features, n_voxels)
    intercept : ndarray of shape (n_voxels,)
    voxel_batch : int
    dtype : numpy dtype

    Returns
    -------
    ndarray of shape (n_samples, n_voxels)
    """
    x = jax.device_put(np.asarray(X, dtype))
    n_voxels = coef.shape[1]
    out = np.empty((X.shape[0], n_voxels), dtype)
    width = min(voxel_batch, n_voxels)
    coef_pad = np.pad(np.asarray(coef, dtype), ((0, 0), (0, -n_voxels % width)))
    icpt_pad = np.pad(np.asarray(intercept, dtype), (0, -n_voxels % width))

    def fetch(start, stop, res):
        out[:, start:stop] = np.asarray(res)[:, : stop - start]

    _stream(((s, min(s + width, n_voxels),
              _predict_batch(x, coef_pad[:, s:s + width], icpt_pad[s:s + width]))
             for s in range(0, n_voxels, width)), fetch)
    return out
