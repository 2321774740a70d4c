"""Principal component analysis of voxel responses, as reductions over chunks of the data.

The paper's nonlinear encoders predict the leading principal components of the training
responses; predictions are mapped back to voxels with :func:`pca_inverse` for evaluation.
A subject's training matrix is about 30,000 TRs by 90,000 voxels, so the fit never forms a
voxel-by-voxel matrix when voxels dominate and never stacks per-story blocks into one array.

Solvers
-------
``"gram"``
    Eigendecomposition of the ``(n_samples, n_samples)`` Gram matrix of the centred data,
    accumulated over chunks of voxels; components are then recovered chunk by chunk as
    ``U.T @ Yc / s``. Chosen by ``"auto"`` when ``n_voxels > n_samples``.
``"covariance"``
    Eigendecomposition of the ``(n_voxels, n_voxels)`` scatter matrix, accumulated over chunks
    of rows. Chosen by ``"auto"`` when ``n_voxels <= n_samples``.
``"randomized"``
    Halko, Martinsson & Tropp (2011) randomized SVD with ``n_iter`` QR-normalised power
    iterations; every product with the data is a reduction over chunks of rows. Approximate:
    never chosen by ``"auto"``.

Every pass over the data is a sum over chunks (of rows, or of voxels for the Gram matrix), so
the same reductions can later be sharded across devices and combined with a ``psum``.

Conventions
-----------
- Components are the rows of ``components`` (orthonormal), ordered by decreasing variance.
- Sign: each component is flipped so that its entry of largest absolute value is positive
  (the first such entry on ties). This is scikit-learn's ``svd_flip(u_based_decision=False)``
  rule (scikit-learn >= 1.5), so exact solvers here and there agree in sign, and the sign does
  not depend on the solver.
- ``explained_variance = singular_values**2 / (n_samples - 1)`` (ddof = 1, as scikit-learn);
  the ratio divides by the summed per-voxel variance of the training data.
- When the data have rank below ``n_components`` (centring removes one dimension, so the rank
  is at most ``n_samples - 1``), components beyond the rank carry (numerically) zero variance
  and are arbitrary unit directions, as in scikit-learn; with the Gram solver a direction whose
  variance is zero to working precision is returned as a zero vector.
- Matrix products run at the ``precision`` setting of :mod:`jaxenc.precision`, ``"highest"``
  by default: a Gram or scatter matrix computed in TF32 would lose the small eigenvalues the
  trailing components depend on.

(Over 450 lines: the three solvers share the chunked reductions, the padding of ragged blocks
and the sign convention above; split apart, each would import the others' private helpers.)
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc import precision as _precision
from jaxenc.errors import AlignmentError, ConfigError, DataError

__all__ = [
    "PCA",
    "PCAState",
    "pca_fit",
    "pca_transform",
    "pca_inverse",
    "column_mean",
    "gram_matrix",
    "scatter_matrix",
]

METHODS = ("auto", "gram", "covariance", "randomized")
# Rows of a chunk are padded to a multiple of this, so stories of different lengths share a
# handful of compiled shapes instead of one compilation per story.
_ROW_ALIGN = 64
# Default working-set budget of one chunk, in array elements (512 MiB of float32).
_CHUNK_ELEMENTS = 2**27
# Chunk results a loop over chunks may have queued before it waits for the oldest. JAX
# dispatches asynchronously, so an unpaced loop copies every chunk to the device before the
# first product finishes: a second copy of the data, 9.7 GB for a full-size subject.
_IN_FLIGHT = 2

# Products take their precision from the scope the public functions open (jaxenc.precision).
_dot = jnp.matmul
_KEY = "PCA precision"


class PCAState(NamedTuple):
    """A fitted PCA, as a pytree of arrays.

    Attributes
    ----------
    mean : jax.Array of shape (n_voxels,)
        Per-voxel mean of the training data.
    components : jax.Array of shape (n_components, n_voxels)
        Orthonormal principal axes, by decreasing explained variance.
    explained_variance : jax.Array of shape (n_components,)
        Variance of the training data along each component (ddof = 1).
    explained_variance_ratio : jax.Array of shape (n_components,)
        ``explained_variance`` over the total variance of the training data.
    singular_values : jax.Array of shape (n_components,)
        Singular values of the centred training data.
    n_samples : int
        Rows (TRs) the PCA was fitted on.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    explained_variance_ratio: jax.Array
    singular_values: jax.Array
    n_samples: int


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def _compute_dtype(dtype) -> np.dtype:
    wanted = np.dtype(dtype)
    if not np.issubdtype(wanted, np.floating):
        raise ConfigError(f"PCA dtype must be a floating type, got {wanted}")
    available = np.dtype(jax.dtypes.canonicalize_dtype(wanted))
    if available != wanted:
        raise ConfigError(
            f"PCA dtype {wanted} requested but JAX would compute in {available}; enable "
            "jax_enable_x64 (e.g. `with jax.enable_x64(True):`) or ask for float32"
        )
    return wanted


def _as_blocks(Y) -> list:
    """A 2-D array, or a list/tuple of 2-D blocks stacked along rows, as a list of blocks."""
    blocks = list(Y) if isinstance(Y, (list, tuple)) else [Y]
    if not blocks:
        raise ConfigError("PCA needs at least one block of responses, got an empty sequence")
    n_voxels = None
    for i, block in enumerate(blocks):
        ndim = np.ndim(block)
        if ndim != 2:
            raise AlignmentError(
                f"block {i} of {len(blocks)} has {ndim} dimensions; expected (n_trs, n_voxels)"
            )
        if n_voxels is None:
            n_voxels = block.shape[1]
        elif block.shape[1] != n_voxels:
            raise AlignmentError(
                f"block {i} of {len(blocks)} has {block.shape[1]} voxels, block 0 has {n_voxels}; "
                "every block must hold the same voxels"
            )
    return blocks


def _check_finite(blocks) -> None:
    for i, block in enumerate(blocks):
        if isinstance(block, jax.Array):
            bad = not bool(jnp.isfinite(block).all())
        else:
            bad = not np.isfinite(np.asarray(block)).all()
        if bad:
            raise DataError(
                f"block {i} of {len(blocks)} holds NaN or inf values; mask or drop those voxels "
                "(or rows) before PCA"
            )


def _to_device(x, dtype) -> jax.Array:
    return jnp.asarray(x, dtype=dtype)


def _pad_rows(x, rows: int):
    if x.shape[0] == rows:
        return x
    if isinstance(x, jax.Array):
        return jnp.pad(x, ((0, rows - x.shape[0]), (0, 0)))
    return np.pad(x, ((0, rows - x.shape[0]), (0, 0)))


def _row_chunks(blocks, dtype, chunk_elements: int):
    """Yield ``(x, n_valid, start)``: row chunks of the stacked blocks, zero padded.

    ``x`` has ``n_rows`` rows, a multiple of ``_ROW_ALIGN``; only its first ``n_valid`` rows
    are data, and they are rows ``start : start + n_valid`` of the stacked matrix.
    """
    n_voxels = blocks[0].shape[1]
    max_rows = max(_ROW_ALIGN, (chunk_elements // max(n_voxels, 1)) // _ROW_ALIGN * _ROW_ALIGN)
    start = 0
    for block in blocks:
        for r0 in range(0, block.shape[0], max_rows):
            piece = block[r0 : r0 + max_rows]
            n_valid = piece.shape[0]
            n_rows = -(-n_valid // _ROW_ALIGN) * _ROW_ALIGN
            yield _to_device(_pad_rows(piece, n_rows), dtype), n_valid, start
            start += n_valid


def _row_budget(blocks, chunk_elements: int) -> int:
    """Largest padded row count :func:`_row_chunks` can yield for these blocks."""
    n_voxels = blocks[0].shape[1]
    max_rows = max(_ROW_ALIGN, (chunk_elements // max(n_voxels, 1)) // _ROW_ALIGN * _ROW_ALIGN)
    longest = max(min(b.shape[0], max_rows) for b in blocks)
    return -(-longest // _ROW_ALIGN) * _ROW_ALIGN


def _voxel_chunks(blocks, dtype, chunk_elements: int):
    """Yield ``(x, c0, c1)``: the stacked blocks' voxels ``c0:c1``, zero padded to a fixed width."""
    n_samples = sum(b.shape[0] for b in blocks)
    n_voxels = blocks[0].shape[1]
    width = max(1, min(n_voxels, chunk_elements // max(n_samples, 1)))
    on_host = not any(isinstance(b, jax.Array) for b in blocks)
    for c0 in range(0, n_voxels, width):
        c1 = min(c0 + width, n_voxels)
        pad = ((0, 0), (0, width - (c1 - c0)))
        if on_host:
            x = np.concatenate([np.asarray(b[:, c0:c1]) for b in blocks], axis=0)
            x = _to_device(np.pad(x, pad) if c1 - c0 < width else x, dtype)
        else:
            x = jnp.concatenate([_to_device(b[:, c0:c1], dtype) for b in blocks], axis=0)
            x = jnp.pad(x, pad) if c1 - c0 < width else x
        yield x, c0, c1


def _chunk_mean(mean, c0: int, c1: int, width: int):
    return jnp.pad(mean[c0:c1], (0, width - (c1 - c0)))


def _pace(pending: deque, result) -> None:
    """Queue one chunk's result; wait for the oldest once ``_IN_FLIGHT`` are queued.

    Called after each chunk is dispatched, so the next chunk is prepared on the host while this
    one computes, but at most ``_IN_FLIGHT`` chunks (and the buffers they hold) are alive.
    """
    pending.append(result)
    if len(pending) >= _IN_FLIGHT:
        jax.block_until_ready(pending.popleft())


# ---------------------------------------------------------------------------------------------
# Chunk kernels: each is one term of a sum over chunks
# ---------------------------------------------------------------------------------------------


def _masked_centre(x, mean, n_valid):
    valid = jnp.arange(x.shape[0])[:, None] < n_valid
    return jnp.where(valid, x - mean, 0)


@jax.jit
def _sum_rows(acc, x):
    return acc + x.sum(axis=0)


@jax.jit
def _scatter_term(acc, x, mean, n_valid):
    xc = _masked_centre(x, mean, n_valid)
    return acc + _dot(xc.T, xc)


@jax.jit
def _gram_term(acc, x, mean):
    xc = x - mean
    return acc + _dot(xc, xc.T)


@jax.jit
def _project_voxel_chunk(weights, x, mean):
    # [k, n] @ [n, width] -> [k, width]
    return _dot(weights, x - mean)


@jax.jit
def _sketch_rows(x, mean, n_valid, basis):
    # [rows, p] @ [p, l] -> [rows, l]; also the chunk's centred sum of squares
    xc = _masked_centre(x, mean, n_valid)
    return _dot(xc, basis), jnp.sum(xc * xc)


@jax.jit
def _adjoint_term(acc, x, mean, n_valid, q_padded, start):
    # acc [p, l] += Yc_chunk.T [p, rows] @ Q_chunk [rows, l]
    xc = _masked_centre(x, mean, n_valid)
    q = jax.lax.dynamic_slice(q_padded, (start, 0), (x.shape[0], q_padded.shape[1]))
    return acc + _dot(xc.T, q)


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------


def column_mean(Y, *, dtype=jnp.float32, chunk_elements: int = _CHUNK_ELEMENTS):
    """Per-voxel mean over all rows of a matrix or of a sequence of row blocks.

    Parameters
    ----------
    Y : array of shape (n_samples, n_voxels), or sequence of arrays (n_i, n_voxels)
        Responses; blocks are stacked along rows (TRs).
    dtype : dtype
        Computation dtype.
    chunk_elements : int
        Elements per chunk sent to the device at once.

    Returns
    -------
    mean : jax.Array of shape (n_voxels,)
    n_samples : int
        Rows summed over.
    """
    blocks = _as_blocks(Y)
    dtype = _compute_dtype(dtype)
    total = jnp.zeros(blocks[0].shape[1], dtype)
    n_samples, pending = 0, deque()
    for x, n_valid, _ in _row_chunks(blocks, dtype, chunk_elements):
        total = _sum_rows(total, x)  # zero padding adds nothing
        _pace(pending, total)
        n_samples += n_valid
    return total / n_samples, n_samples


def scatter_matrix(Y, mean, *, dtype=jnp.float32, chunk_elements: int = _CHUNK_ELEMENTS,
                   precision: str = _precision.DEFAULTS["pca"]):
    """Voxel-by-voxel scatter matrix ``Yc.T @ Yc`` of the centred data, summed over row chunks.

    Parameters
    ----------
    Y : array of shape (n_samples, n_voxels), or sequence of arrays (n_i, n_voxels)
        Responses; blocks are stacked along rows.
    mean : array of shape (n_voxels,)
        Mean subtracted from every row.
    dtype : dtype
        Computation dtype.
    chunk_elements : int
        Elements per row chunk.
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Returns
    -------
    jax.Array of shape (n_voxels, n_voxels)
        ``(n_samples - 1)`` times the sample covariance.
    """
    blocks = _as_blocks(Y)
    dtype = _compute_dtype(dtype)
    mean = jnp.asarray(mean, dtype)
    p = blocks[0].shape[1]
    acc, pending = jnp.zeros((p, p), dtype), deque()
    with _precision.scope(precision, key=_KEY):
        for x, n_valid, _ in _row_chunks(blocks, dtype, chunk_elements):
            acc = _scatter_term(acc, x, mean, n_valid)
            _pace(pending, acc)
    return acc


def gram_matrix(Y, mean, *, dtype=jnp.float32, chunk_elements: int = _CHUNK_ELEMENTS,
                precision: str = _precision.DEFAULTS["pca"]):
    """Row-by-row Gram matrix ``Yc @ Yc.T`` of the centred data, summed over voxel chunks.

    Parameters
    ----------
    Y : array of shape (n_samples, n_voxels), or sequence of arrays (n_i, n_voxels)
        Responses; blocks are stacked along rows (only one voxel chunk of the stack exists at
        a time).
    mean : array of shape (n_voxels,)
        Mean subtracted from every row.
    dtype : dtype
        Computation dtype.
    chunk_elements : int
        Elements per voxel chunk (``n_samples * chunk_width``).
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Returns
    -------
    jax.Array of shape (n_samples, n_samples)
    """
    blocks = _as_blocks(Y)
    dtype = _compute_dtype(dtype)
    mean = jnp.asarray(mean, dtype)
    n = sum(b.shape[0] for b in blocks)
    acc, pending = jnp.zeros((n, n), dtype), deque()
    with _precision.scope(precision, key=_KEY):
        for x, c0, c1 in _voxel_chunks(blocks, dtype, chunk_elements):
            acc = _gram_term(acc, x, _chunk_mean(mean, c0, c1, x.shape[1]))
            _pace(pending, acc)
    return acc


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------


def _top_eigh(matrix, k: int):
    """Top-``k`` eigenpairs of a symmetric PSD matrix, decreasing, eigenvalues clipped at 0."""
    w, v = jnp.linalg.eigh(matrix)
    w = jnp.clip(w[::-1][:k], 0, None)
    return w, v[:, ::-1][:, :k]


def _flip_signs(components):
    """Make the largest-magnitude entry of every row positive (scikit-learn's svd_flip rule)."""
    k = components.shape[0]
    idx = jnp.argmax(jnp.abs(components), axis=1)
    signs = jnp.sign(components[jnp.arange(k), idx])
    return components * jnp.where(signs == 0, 1, signs)[:, None]


def _fit_gram(blocks, mean, k, dtype, chunk_elements, precision):
    gram = gram_matrix(blocks, mean, dtype=dtype, chunk_elements=chunk_elements, precision=precision)
    total_ss = jnp.trace(gram)
    w, u = _top_eigh(gram, k)
    s = jnp.sqrt(w)
    # Only guards the division: eigenvalues at rounding level still give unit vectors below.
    keep = s > s[0] * jnp.finfo(dtype).eps
    # [n, k] -> [k, n]: rows U_j / s_j, zero for directions of zero variance
    weights = (u * jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)).T
    pieces, pending = [], deque()
    for x, c0, c1 in _voxel_chunks(blocks, dtype, chunk_elements):
        chunk = _project_voxel_chunk(weights, x, _chunk_mean(mean, c0, c1, x.shape[1]))
        _pace(pending, chunk)
        pieces.append(chunk[:, : c1 - c0])
    components = jnp.concatenate(pieces, axis=1)
    # Rounding in the Gram matrix leaves rows of trailing components slightly off unit norm.
    norms = jnp.linalg.norm(components, axis=1, keepdims=True)
    components = jnp.where(norms > 0, components / jnp.where(norms > 0, norms, 1), 0)
    return components, jnp.where(keep, s, 0), total_ss


def _fit_covariance(blocks, mean, k, dtype, chunk_elements, precision):
    scatter = scatter_matrix(blocks, mean, dtype=dtype, chunk_elements=chunk_elements, precision=precision)
    total_ss = jnp.trace(scatter)
    w, v = _top_eigh(scatter, k)
    return v.T, jnp.sqrt(w), total_ss


def _check_randomized(n_oversamples: int, n_iter: int) -> None:
    if n_oversamples < 0 or n_iter < 0:
        raise ConfigError(f"n_oversamples ({n_oversamples}) and n_iter ({n_iter}) must be >= 0")


def _test_matrix(seed: int, n: int, p: int, k: int, n_oversamples: int, dtype) -> jax.Array:
    """The randomized solver's Gaussian test matrix, (p, l) with ``l = min(k + n_oversamples,
    n, p)``: the one draw both the single-device and the sharded solver start from."""
    return jax.random.normal(jax.random.key(seed), (p, min(k + n_oversamples, n, p)), dtype)


def _fit_randomized(blocks, mean, k, dtype, chunk_elements, n_oversamples, n_iter, seed):
    n = sum(b.shape[0] for b in blocks)
    p = blocks[0].shape[1]
    pad = _row_budget(blocks, chunk_elements)

    def sketch(basis):
        # Yc @ basis, [n, l], gathered over row chunks; also the total sum of squares
        rows, total, pending = [], 0.0, deque()
        for x, n_valid, _ in _row_chunks(blocks, dtype, chunk_elements):
            out, ss = _sketch_rows(x, mean, n_valid, basis)
            _pace(pending, out)
            rows.append(out[:n_valid])
            total = total + ss
        return jnp.concatenate(rows, axis=0), total

    def adjoint(q):
        # Yc.T @ q, [p, l], summed over row chunks
        q_padded = jnp.pad(q, ((0, pad), (0, 0)))
        acc, pending = jnp.zeros((p, q.shape[1]), dtype), deque()
        for x, n_valid, start in _row_chunks(blocks, dtype, chunk_elements):
            acc = _adjoint_term(acc, x, mean, n_valid, q_padded, start)
            _pace(pending, acc)
        return acc

    a, total_ss = sketch(_test_matrix(seed, n, p, k, n_oversamples, dtype))
    for _ in range(n_iter):
        q, _ = jnp.linalg.qr(a)
        q, _ = jnp.linalg.qr(adjoint(q))
        a, _ = sketch(q)
    q, _ = jnp.linalg.qr(a)
    b = adjoint(q).T  # [l, p] = Q.T @ Yc
    _, s, vt = jnp.linalg.svd(b, full_matrices=False)
    return vt[:k], s[:k], total_ss


def pca_fit(
    Y,
    n_components: int,
    *,
    method: str = "auto",
    n_oversamples: int = 10,
    n_iter: int = 7,
    seed: int = 0,
    dtype=jnp.float32,
    chunk_elements: int = _CHUNK_ELEMENTS,
    check_finite: bool = True,
    precision: str = _precision.DEFAULTS["pca"],
) -> PCAState:
    """Fit a PCA to training responses.

    Parameters
    ----------
    Y : array of shape (n_samples, n_voxels), or list/tuple of arrays (n_i, n_voxels)
        Training responses only; blocks (e.g. one per story) are treated as stacked along rows
        but are never concatenated whole. numpy or JAX arrays.
    n_components : int
        Components to keep, ``1 <= n_components <= min(n_samples, n_voxels)``.
    method : {"auto", "gram", "covariance", "randomized"}
        Solver (see the module docstring). ``"auto"`` picks the exact solver whose matrix is
        smaller: ``"gram"`` when ``n_voxels > n_samples``, else ``"covariance"``.
    n_oversamples : int
        Extra sketch columns of the randomized solver.
    n_iter : int
        Power iterations of the randomized solver; 7 is what scikit-learn's ``"auto"`` uses
        when ``n_components < 0.1 * min(n_samples, n_voxels)``, as for 512 of ~30,000 TRs.
    seed : int
        Seed of the randomized solver's Gaussian test matrix.
    dtype : dtype
        Computation dtype; float64 needs ``jax_enable_x64``.
    chunk_elements : int
        Elements of the data on the device at once, per chunk.
    check_finite : bool
        Refuse data holding NaN or inf (one extra pass over the data).
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`); ``"highest"`` matches scikit-learn
        to float32 rounding on every backend.

    Returns
    -------
    PCAState

    Raises
    ------
    ConfigError
        Unknown method, bad ``n_components``, fewer than two rows, or an unavailable dtype.
    AlignmentError
        Blocks that are not 2-D or disagree in their number of voxels.
    DataError
        NaN or inf in the data.
    """
    blocks = _as_blocks(Y)
    dtype = _compute_dtype(dtype)
    if method not in METHODS:
        raise ConfigError(f"unknown PCA method {method!r}; expected one of {METHODS}")
    _precision.check(precision, _KEY, on=_precision.platform())
    n = sum(b.shape[0] for b in blocks)
    p = blocks[0].shape[1]
    if n < 2:
        raise ConfigError(f"PCA needs at least 2 rows (TRs) to estimate variance, got {n}")
    if not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= min(n, p):
        raise ConfigError(
            f"n_components={n_components!r} must be an integer in [1, min(n_samples, n_voxels)]"
            f" = [1, {min(n, p)}] for data of shape ({n}, {p})"
        )
    _check_randomized(n_oversamples, n_iter)
    if check_finite:
        _check_finite(blocks)
    k = int(n_components)
    if method == "auto":
        method = "gram" if p > n else "covariance"

    mean, _ = column_mean(blocks, dtype=dtype, chunk_elements=chunk_elements)
    with _precision.scope(precision, key=_KEY):
        if method == "gram":
            components, s, total_ss = _fit_gram(blocks, mean, k, dtype, chunk_elements, precision)
        elif method == "covariance":
            components, s, total_ss = _fit_covariance(blocks, mean, k, dtype, chunk_elements, precision)
        else:
            components, s, total_ss = _fit_randomized(
                blocks, mean, k, dtype, chunk_elements, n_oversamples, n_iter, seed
            )
    explained = s**2 / (n - 1)
    total = total_ss / (n - 1)
    ratio = jnp.where(total > 0, explained / jnp.where(total > 0, total, 1), 0)
    return PCAState(
        mean=mean,
        components=_flip_signs(components),
        explained_variance=explained,
        explained_variance_ratio=ratio,
        singular_values=s,
        n_samples=n,
    )


@partial(jax.jit, static_argnames="whiten")
def _transform(mean, components, explained_variance, Y, whiten):
    z = _dot(Y - mean, components.T)  # [n, p] @ [p, k] -> [n, k]
    if whiten:
        scale = jnp.sqrt(explained_variance)
        z = jnp.where(scale > 0, z / jnp.where(scale > 0, scale, 1), 0)
    return z


@partial(jax.jit, static_argnames="whiten")
def _inverse(mean, components, explained_variance, Z, whiten):
    if whiten:
        Z = Z * jnp.sqrt(explained_variance)
    return _dot(Z, components) + mean  # [n, k] @ [k, p] -> [n, p]


def pca_transform(state: PCAState, Y, *, whiten: bool = False,
                  precision: str = _precision.DEFAULTS["pca"]) -> jax.Array:
    """Project responses onto the fitted components.

    Parameters
    ----------
    state : PCAState
        A fitted PCA.
    Y : array of shape (n, n_voxels)
        Responses with the training voxels, in the training order.
    whiten : bool
        Divide each score by the square root of its explained variance (zero-variance
        components give 0).
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Returns
    -------
    jax.Array of shape (n, n_components)

    Raises
    ------
    AlignmentError
        ``Y`` is not 2-D or its voxel count differs from the fit's.
    """
    p = state.mean.shape[0]
    if np.ndim(Y) != 2 or Y.shape[1] != p:
        raise AlignmentError(
            f"PCA was fitted on {p} voxels; transform got an array of shape {np.shape(Y)}, "
            f"expected (n_trs, {p})"
        )
    Y = jnp.asarray(Y, state.components.dtype)
    with _precision.scope(precision, key=_KEY):
        return _transform(state.mean, state.components, state.explained_variance, Y, whiten)


def pca_inverse(state: PCAState, Z, *, whiten: bool = False,
                precision: str = _precision.DEFAULTS["pca"]) -> jax.Array:
    """Map component scores (e.g. an encoder's predictions) back to voxels.

    Parameters
    ----------
    state : PCAState
        A fitted PCA.
    Z : array of shape (n, n_components)
        Scores, as returned by :func:`pca_transform` with the same ``whiten``.
    whiten : bool
        Whether ``Z`` is whitened.
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Returns
    -------
    jax.Array of shape (n, n_voxels)
        ``Z @ components + mean``.

    Raises
    ------
    AlignmentError
        ``Z`` is not 2-D or has the wrong number of components.
    """
    k = state.components.shape[0]
    if np.ndim(Z) != 2 or Z.shape[1] != k:
        raise AlignmentError(
            f"PCA has {k} components; inverse got an array of shape {np.shape(Z)}, "
            f"expected (n_trs, {k})"
        )
    Z = jnp.asarray(Z, state.components.dtype)
    with _precision.scope(precision, key=_KEY):
        return _inverse(state.mean, state.components, state.explained_variance, Z, whiten)


class PCA:
    """Principal component analysis of voxel responses, scikit-learn style.

    A thin stateful wrapper over :func:`pca_fit`, :func:`pca_transform` and
    :func:`pca_inverse`; the fitted pytree is :attr:`state_`.

    Parameters
    ----------
    n_components : int
        Components to keep (the paper uses 512).
    whiten : bool
        Scale scores to unit variance in :meth:`transform` (and undo it in
        :meth:`inverse_transform`).
    method : {"auto", "gram", "covariance", "randomized"}
        Solver; see :func:`pca_fit`.
    dtype : dtype
        Computation dtype.
    n_oversamples, n_iter, seed : int
        Settings of the randomized solver.
    chunk_elements : int
        Elements of the data on the device at once, per chunk.
    precision : str
        Matrix-product precision of fit, transform and inverse (:mod:`jaxenc.precision`).

    Attributes
    ----------
    components_ : jax.Array of shape (n_components, n_voxels)
    mean_ : jax.Array of shape (n_voxels,)
    explained_variance_ : jax.Array of shape (n_components,)
    explained_variance_ratio_ : jax.Array of shape (n_components,)
    singular_values_ : jax.Array of shape (n_components,)
    n_samples_ : int
    state_ : PCAState

    Examples
    --------
    >>> pca = PCA(n_components=512).fit(train_blocks)        # doctest: +SKIP
    >>> z_train = pca.transform(Y_train)                      # doctest: +SKIP
    >>> y_pred = pca.inverse_transform(model(X_test))          # doctest: +SKIP
    """

    def __init__(
        self,
        n_components: int = 512,
        whiten: bool = False,
        method: str = "auto",
        dtype=jnp.float32,
        *,
        n_oversamples: int = 10,
        n_iter: int = 7,
        seed: int = 0,
        chunk_elements: int = _CHUNK_ELEMENTS,
        precision: str = _precision.DEFAULTS["pca"],
    ):
        if method not in METHODS:
            raise ConfigError(f"unknown PCA method {method!r}; expected one of {METHODS}")
        self.n_components = n_components
        self.whiten = whiten
        self.method = method
        self.dtype = dtype
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.seed = seed
        self.chunk_elements = chunk_elements
        self.precision = _precision.check(precision, _KEY)
        self.state_: PCAState | None = None

    def fit(self, Y) -> PCA:
        """Fit on training responses.

        Parameters
        ----------
        Y : array of shape (n_samples, n_voxels), or list/tuple of arrays (n_i, n_voxels)
            Training responses only; blocks are stacked along rows without being concatenated.

        Returns
        -------
        PCA
            ``self``.
        """
        self.state_ = pca_fit(
            Y,
            self.n_components,
            method=self.method,
            n_oversamples=self.n_oversamples,
            n_iter=self.n_iter,
            seed=self.seed,
            dtype=self.dtype,
            chunk_elements=self.chunk_elements,
            precision=self.precision,
        )
        return self

    def _fitted(self) -> PCAState:
        if self.state_ is None:
            raise ConfigError("this PCA is not fitted yet; call fit(Y_train) first")
        return self.state_

    def transform(self, Y) -> jax.Array:
        """Scores of responses on the components.

        Parameters
        ----------
        Y : array of shape (n, n_voxels), or list/tuple of such blocks
            Responses; blocks are transformed one by one and their scores stacked.

        Returns
        -------
        jax.Array of shape (n, n_components)
        """
        state = self._fitted()
        if isinstance(Y, (list, tuple)):
            return jnp.concatenate([pca_transform(state, y, whiten=self.whiten, precision=self.precision) for y in Y])
        return pca_transform(state, Y, whiten=self.whiten, precision=self.precision)

    def fit_transform(self, Y) -> jax.Array:
        """Fit on ``Y`` and return its scores; see :meth:`fit` and :meth:`transform`."""
        return self.fit(Y).transform(Y)

    def inverse_transform(self, Z) -> jax.Array:
        """Map scores back to voxels.

        Parameters
        ----------
        Z : array of shape (n, n_components)

        Returns
        -------
        jax.Array of shape (n, n_voxels)
        """
        return pca_inverse(self._fitted(), Z, whiten=self.whiten, precision=self.precision)

    @property
    def components_(self) -> jax.Array:
        return self._fitted().components

    @property
    def mean_(self) -> jax.Array:
        return self._fitted().mean

    @property
    def explained_variance_(self) -> jax.Array:
        return self._fitted().explained_variance

    @property
    def explained_variance_ratio_(self) -> jax.Array:
        return self._fitted().explained_variance_ratio

    @property
    def singular_values_(self) -> jax.Array:
        return self._fitted().singular_values

    @property
    def n_samples_(self) -> int:
        return self._fitted().n_samples
