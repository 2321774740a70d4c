"""PCA with the responses split across the devices of a mesh.

The single-device :func:`~jaxenc.decomp.pca_fit` already writes every pass over the data as
a sum over chunks; here the chunks are the shards of a mesh axis and the sums are ``psum``
collectives inside :func:`jax.shard_map`:

``shard="voxels"`` (Gram solver, for ``n_trs < n_voxels``, the usual case)
    Device ``d`` holds the voxel columns ``Y_d``. The Gram matrix is
    ``psum_d (Y_d - m_d)(Y_d - m_d)^T`` (n_trs x n_trs, replicated); every device
    eigendecomposes it and recovers its own voxels' slice of the components,
    ``U^T (Y_d - m_d) / s``. Nothing of size n_voxels ever sits on one device.
``shard="rows"`` (covariance solver, for ``n_voxels <= n_trs``)
    Device ``d`` holds a block of TRs. The mean and the scatter matrix
    ``psum_d Yc_d^T Yc_d`` (n_voxels x n_voxels, replicated) are sums over rows; each device
    keeps its voxel slice of the eigenvectors.
``method="randomized"`` (voxel shards; :func:`~jaxenc.decomp.pca_fit`'s randomized solver)
    The sketches ``Yc Q = psum_d Yc_d Q_d`` (n_trs x l, replicated) are sums over voxel
    shards; the products ``Yc^T Q`` stay on their shards (``Yc_d^T Q``), and their QR
    factorisations, like the final SVD of ``Q^T Yc``, are tall-skinny QRs (each shard's
    ``R`` gathered, l x l per device, and factorised again), so nothing of size n_voxels or
    n_trs^2 sits on one device. The Gaussian test matrix is the single-device solver's,
    seed for seed, so both give the same components up to rounding.

Either way the fitted state is voxel-sharded (:class:`ShardedPCAState`), so
:func:`pca_transform_sharded` is a ``psum`` over voxel shards of ``(Y_d - m_d) C_d^T`` and
:func:`pca_inverse_sharded` returns voxel-sharded reconstructions ``Z C_d + m_d`` without any
all-gather. Conventions (sign rule, ddof, zero vectors for zero-variance directions) are those
of :mod:`jaxenc.decomp.pca`; a voxel count that does not divide by the number of shards is
padded with zero columns, whose components, mean and reconstructions are zero.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxenc import precision as _precision
from jaxenc.decomp.pca import (
    _KEY,
    METHODS,
    PCAState,
    _as_blocks,
    _check_finite,
    _check_randomized,
    _compute_dtype,
    _dot,
    _flip_signs,
    _test_matrix,
    _top_eigh,
)
from jaxenc.distributed import (
    axis_size,
    padded_size,
    replicate,
    shard_columns,
    shard_program,
    shard_rows,
    to_host,
)
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.stream import stack_story_rows

__all__ = ["ShardedPCAState", "ShardedPCA", "pca_fit_sharded", "pca_transform_sharded", "pca_inverse_sharded"]

SHARDINGS = ("voxels", "rows")
# Solvers of pca_fit_sharded: "exact" (Gram or covariance, by the sharding) and "randomized".
SHARDED_METHODS = ("exact", "randomized")


class ShardedPCAState(NamedTuple):
    """A fitted PCA whose voxel-sized arrays are split along a mesh axis.

    Attributes
    ----------
    mean : jax.Array of shape (n_voxels_padded,)
        Per-voxel training mean, sharded ``P(axis)``; zero on padding.
    components : jax.Array of shape (n_components, n_voxels_padded)
        Orthonormal principal axes, sharded ``P(None, axis)``; zero on padding.
    explained_variance, explained_variance_ratio, singular_values : jax.Array
        Each of shape (n_components,), as :class:`~jaxenc.decomp.PCAState`; replicated.
    n_samples : int
        Rows (TRs) the PCA was fitted on.
    n_voxels : int
        Voxels of the data; columns ``n_voxels:`` of ``mean`` and ``components`` are padding.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    explained_variance_ratio: jax.Array
    singular_values: jax.Array
    n_samples: int
    n_voxels: int

    @property
    def mesh(self) -> Mesh:
        """The mesh the state lives on."""
        return self.components.sharding.mesh

    @property
    def axis(self) -> str:
        """The mesh axis the voxels are split along."""
        return self.components.sharding.spec[1]

    def gather(self) -> PCAState:
        """The same PCA as a single-device :class:`~jaxenc.decomp.PCAState`, padding dropped.

        The arrays are gathered with :func:`jaxenc.distributed.to_host`: across processes this
        is a collective, so every process of a ``jax.distributed`` job must call it.

        Returns
        -------
        PCAState
            On this process's default device.
        """
        p = self.n_voxels
        return PCAState(
            mean=jnp.asarray(to_host(self.mean)[:p]),
            components=jnp.asarray(to_host(self.components)[:, :p]),
            explained_variance=jnp.asarray(to_host(self.explained_variance)),
            explained_variance_ratio=jnp.asarray(to_host(self.explained_variance_ratio)),
            singular_values=jnp.asarray(to_host(self.singular_values)),
            n_samples=self.n_samples,
        )


def _flip_signs_sharded(components, axis: str):
    """:func:`~jaxenc.decomp.pca._flip_signs` on voxel shards: the largest entry of each row,
    over all shards (the first on ties), is made positive."""
    k = components.shape[0]
    rows = jnp.arange(k)
    idx = jnp.argmax(jnp.abs(components), axis=1)
    local_val = components[rows, idx]  # [k]
    maxes = jax.lax.all_gather(jnp.abs(local_val), axis)  # [shards, k]
    vals = jax.lax.all_gather(local_val, axis)
    # argmax returns the first shard on ties, i.e. the first voxel globally.
    signs = jnp.sign(vals[jnp.argmax(maxes, axis=0), rows])
    return components * jnp.where(signs == 0, 1, signs)[:, None]


def _gram_kernel(y, *, k: int, axis: str):
    # y: [n, w] the local voxels
    mean = y.sum(axis=0) / y.shape[0]
    yc = y - mean
    gram = jax.lax.psum(_dot(yc, yc.T), axis)  # [n, n], same on every device
    total_ss = jnp.trace(gram)
    w, u = _top_eigh(gram, k)
    s = jnp.sqrt(w)
    # As pca._fit_gram: only guards the division; zero-variance directions become zero rows.
    keep = s > s[0] * jnp.finfo(y.dtype).eps
    weights = (u * jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)).T  # [k, n]
    components = _dot(weights, yc)  # [k, w]
    # Rounding in the Gram matrix leaves trailing rows slightly off unit norm.
    norms = jnp.sqrt(jax.lax.psum(jnp.sum(components * components, axis=1), axis))[:, None]
    components = jnp.where(norms > 0, components / jnp.where(norms > 0, norms, 1), 0)
    return mean, _flip_signs_sharded(components, axis), jnp.where(keep, s, 0), total_ss


def _covariance_kernel(y, *, k: int, axis: str, n_samples: int, width: int):
    # y: [r, p] the local rows; rows at or past n_samples are padding
    shard = jax.lax.axis_index(axis)
    valid = (shard * y.shape[0] + jnp.arange(y.shape[0]) < n_samples)[:, None]
    mean = jax.lax.psum(jnp.where(valid, y, 0).sum(axis=0), axis) / n_samples
    yc = jnp.where(valid, y - mean, 0)
    scatter = jax.lax.psum(_dot(yc.T, yc), axis)  # [p, p], same on every device
    total_ss = jnp.trace(scatter)
    w, v = _top_eigh(scatter, k)
    components = _flip_signs(v.T)  # [k, p]
    # Each device keeps its own slice of voxels, as the Gram path leaves them.
    pad = width * jax.lax.axis_size(axis) - y.shape[1]
    components = jnp.pad(components, ((0, 0), (0, pad)))
    mean = jnp.pad(mean, (0, pad))
    local = partial(jax.lax.dynamic_slice_in_dim, start_index=shard * width, slice_size=width)
    return local(mean, axis=0), local(components, axis=1), jnp.sqrt(w), total_ss


def _tall_qr(z, axis: str):
    """Thin QR of a tall matrix whose rows are split over ``axis``: ``Q_d`` and ``R``.

    Each shard factorises its rows ``z_d = Q1_d R1_d``; the stacked ``R1_d`` (shards * m x l,
    m = min(rows, l), gathered on every device) factorise as ``Q2 R``, and ``Q_d = Q1_d Q2_d``
    with ``Q2_d`` the shard's block of rows of ``Q2``. ``R`` (l x l) is the same everywhere.
    """
    q1, r1 = jnp.linalg.qr(z)  # [w, m], [m, l]
    m, start = r1.shape[0], jax.lax.axis_index(axis) * r1.shape[0]
    # Gathered as a psum of each shard's block in place (exact: the other terms are zeros), so
    # that shard_map knows the stack, and R with it, to be the same on every device.
    stacked = jnp.zeros((jax.lax.axis_size(axis) * m, r1.shape[1]), r1.dtype)
    stacked = jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(stacked, r1, start, axis=0), axis)
    q2, r = jnp.linalg.qr(stacked)  # [shards * m, l], [l, l]
    return _dot(q1, jax.lax.dynamic_slice_in_dim(q2, start, m, axis=0)), r


def _randomized_kernel(y, omega, *, k: int, n_iter: int, axis: str):
    # y: [n, w] the local voxels; omega: [w, l] the same voxels' rows of the test matrix
    mean = y.sum(axis=0) / y.shape[0]
    yc = y - mean
    total_ss = jax.lax.psum(jnp.sum(yc * yc), axis)

    def sketch(basis):  # Yc @ basis, [n, l], replicated
        return jax.lax.psum(_dot(yc, basis), axis)

    a = sketch(omega)
    for _ in range(n_iter):
        q, _ = jnp.linalg.qr(a)
        a = sketch(_tall_qr(_dot(yc.T, q), axis)[0])
    q, _ = jnp.linalg.qr(a)
    # B = Q^T Yc (l x n_voxels): B^T = Qb R and R = U S V^T give B = V S (Qb U)^T, so the
    # right singular vectors of B, pca._fit_randomized's vt, are the columns of Qb U.
    qb, r = _tall_qr(_dot(yc.T, q), axis)
    u, s, _ = jnp.linalg.svd(r)
    components = _dot(qb, u).T[:k]  # [k, w]
    return mean, _flip_signs_sharded(components, axis), s[:k], total_ss


def _check_k(n_components, n: int, p: int) -> int:
    if n < 2:
        raise ConfigError(f"PCA needs at least 2 rows (TRs) to estimate variance, got {n}")
    if not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= min(n, p):
        raise ConfigError(
            f"n_components={n_components!r} must be an integer in [1, min(n_samples, n_voxels)]"
            f" = [1, {min(n, p)}] for data of shape ({n}, {p})")
    return int(n_components)


def pca_fit_sharded(Y, n_components: int, mesh: Mesh, *, axis: str = "data",
                    shard: str = "voxels", method: str = "exact", n_oversamples: int = 10, n_iter: int = 7,
                    seed: int = 0, dtype=jnp.float32, check_finite: bool = True,
                    precision: str = _precision.DEFAULTS["pca"]) -> ShardedPCAState:
    """Fit a PCA with the training responses split over a mesh axis.

    Parameters
    ----------
    Y : array of shape (n_samples, n_voxels), or list/tuple of arrays (n_i, n_voxels)
        Training responses on the host (numpy, memmap, one block per story); blocks are
        stacked along rows, each read straight into the shards (never concatenated). Each
        process reads only the slices its devices hold.
    n_components : int
        Components to keep, ``1 <= n_components <= min(n_samples, n_voxels)``.
    mesh : jax.sharding.Mesh
        See :func:`jaxenc.distributed.make_mesh`.
    axis : str
        Mesh axis the data are split along.
    shard : {"voxels", "rows"}
        ``"voxels"``: Gram solver over voxel shards (memory per device ``n_samples^2`` plus
        ``n_samples * n_voxels / shards``). ``"rows"``: covariance solver over row shards
        (memory per device ``n_voxels^2`` plus ``n_samples * n_voxels / shards``).
    method : {"exact", "randomized"}
        ``"exact"``: the solver ``shard`` names. ``"randomized"``: the randomized solver over
        voxel shards (``shard="voxels"`` only; memory per device ``n_samples * (l +
        n_voxels / shards)``, ``l = n_components + n_oversamples``).
    n_oversamples, n_iter, seed : int
        The randomized solver's settings, as :func:`~jaxenc.decomp.pca_fit`'s.
    dtype : dtype
        Computation dtype; float64 needs ``jax_enable_x64``.
    check_finite : bool
        Refuse data holding NaN or inf.
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`), as :func:`~jaxenc.decomp.pca_fit`.

    Returns
    -------
    ShardedPCAState
        Voxel-sharded along ``axis`` whichever ``shard`` was used. Equal to
        :func:`~jaxenc.decomp.pca_fit` with ``method="gram"`` (``shard="voxels"``),
        ``method="covariance"`` (``shard="rows"``) or ``method="randomized"`` and the same
        settings, up to float rounding.

    Raises
    ------
    ConfigError
        Unknown ``shard`` or ``method``, a randomized fit over row shards, bad
        ``n_components``, ``n_oversamples`` or ``n_iter``, fewer than two rows, unavailable
        dtype.
    AlignmentError
        Blocks that are not 2-D or disagree in their number of voxels.
    DataError
        NaN or inf in the data.
    """
    if shard not in SHARDINGS:
        raise ConfigError(f"unknown PCA sharding {shard!r}; expected one of {SHARDINGS}")
    if method not in SHARDED_METHODS:
        raise ConfigError(f"unknown sharded PCA method {method!r}; expected one of {SHARDED_METHODS}")
    if method == "randomized" and shard != "voxels":
        raise ConfigError("the randomized PCA is sharded over voxels only: shard='voxels'")
    _check_randomized(n_oversamples, n_iter)
    blocks = [b for b in _as_blocks(Y) if b.shape[0]]
    dtype = _compute_dtype(dtype)
    if check_finite:
        _check_finite(blocks)
    n, p = sum(b.shape[0] for b in blocks), blocks[0].shape[1]
    k = _check_k(n_components, n, p)
    width = padded_size(p, mesh, axis) // axis_size(mesh, axis)
    # Each device's shard is read block by block from the blocks' own rows: the blocks are
    # never concatenated on the host (voxel shards hold every row; row shards are zero padded).
    names = [str(i) for i in range(len(blocks))]
    data, _ = stack_story_rows(lambda name: blocks[int(name)], names, [b.shape[0] for b in blocks], p,
                               mesh=mesh, axis=axis, shard=shard, dtype=dtype)
    inputs = (data,)
    if method == "randomized":
        kernel, params = _randomized_kernel, (("k", k), ("n_iter", n_iter), ("axis", axis))
        in_spec = (P(None, axis), P(axis, None))
        # The single-device solver's test matrix, its padding rows zero (as the padded voxels).
        omega = _test_matrix(seed, n, p, k, n_oversamples, dtype)
        inputs += (shard_rows(np.asarray(omega), mesh, axis, dtype=dtype),)
    elif shard == "voxels":
        kernel, params = _gram_kernel, (("k", k), ("axis", axis))
        in_spec = P(None, axis)
    else:
        kernel, params = _covariance_kernel, (("k", k), ("axis", axis), ("n_samples", n), ("width", width))
        in_spec = P(axis, None)
    fit = shard_program(kernel, params, mesh, in_spec, (P(axis), P(None, axis), P(), P()))
    _precision.check(precision, _KEY, on=_precision.platform())
    with _precision.scope(precision, key=_KEY):
        mean, components, s, total_ss = fit(*inputs)
    explained = s**2 / (n - 1)
    total = total_ss / (n - 1)
    ratio = jnp.where(total > 0, explained / jnp.where(total > 0, total, 1), 0)
    return ShardedPCAState(mean, components, explained, ratio, s, n, p)


def _check_voxels(state: ShardedPCAState, Y, what: str):
    p, width = state.n_voxels, state.mean.shape[0]
    if np.ndim(Y) != 2 or Y.shape[1] not in (p, width):
        raise AlignmentError(f"sharded PCA was fitted on {p} voxels; {what} got an array of "
                             f"shape {np.shape(Y)}, expected (n_trs, {p})")


def _project_kernel(y, mean, components, scale, *, axis: str):
    # [n, w] @ [w, k] summed over voxel shards -> [n, k]
    z = jax.lax.psum(_dot(y - mean, components.T), axis)
    return jnp.where(scale > 0, z / jnp.where(scale > 0, scale, 1), 0)


def pca_transform_sharded(state: ShardedPCAState, Y, *, whiten: bool = False,
                          precision: str = _precision.DEFAULTS["pca"]) -> jax.Array:
    """Scores of responses on voxel-sharded components.

    Parameters
    ----------
    state : ShardedPCAState
    Y : array of shape (n, n_voxels)
        Host responses with the training voxels, or a ``jax.Array`` of shape
        (n, n_voxels_padded) already sharded ``P(None, axis)`` on the state's mesh.
    whiten : bool
        Divide each score by the square root of its explained variance (zero-variance
        components give 0).
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Returns
    -------
    jax.Array of shape (n, n_components), replicated

    Raises
    ------
    AlignmentError
        ``Y`` is not 2-D or its voxel count differs from the fit's.
    """
    _check_voxels(state, Y, "transform")
    mesh, axis, dtype = state.mesh, state.axis, state.components.dtype
    if not isinstance(Y, jax.Array) or Y.shape[1] != state.mean.shape[0]:
        Y = shard_columns(np.asarray(Y), mesh, axis, width=state.mean.shape[0], dtype=dtype)
    scale = (jnp.sqrt(state.explained_variance) if whiten
             else jnp.ones_like(state.explained_variance))
    project = shard_program(_project_kernel, (("axis", axis),), mesh, (P(None, axis), P(axis), P(None, axis), P()), P())
    with _precision.scope(precision, key=_KEY):
        return project(Y, state.mean, state.components, scale)


def _inverse_kernel(z, mean, components, scale):
    return _dot(z * scale, components) + mean  # [n, k] @ [k, w] -> [n, w]


def pca_inverse_sharded(state: ShardedPCAState, Z, *, whiten: bool = False,
                        precision: str = _precision.DEFAULTS["pca"]) -> jax.Array:
    """Map component scores back to voxels, the output split over voxels.

    Parameters
    ----------
    state : ShardedPCAState
    Z : array of shape (n, n_components)
        Scores, as returned by :func:`pca_transform_sharded` with the same ``whiten``.
    whiten : bool
        Whether ``Z`` is whitened.
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Returns
    -------
    jax.Array of shape (n, n_voxels_padded)
        ``Z @ components + mean``, sharded ``P(None, axis)``; columns ``state.n_voxels:``
        are padding (zeros).

    Raises
    ------
    AlignmentError
        ``Z`` is not 2-D or has the wrong number of components.
    """
    k = state.components.shape[0]
    if np.ndim(Z) != 2 or Z.shape[1] != k:
        raise AlignmentError(f"PCA has {k} components; inverse got an array of shape "
                             f"{np.shape(Z)}, expected (n_trs, {k})")
    mesh, axis, dtype = state.mesh, state.axis, state.components.dtype
    Z = replicate(np.asarray(Z), mesh, dtype=dtype)
    scale = (jnp.sqrt(state.explained_variance) if whiten
             else jnp.ones_like(state.explained_variance))
    inverse = shard_program(_inverse_kernel, (), mesh, (P(), P(axis), P(None, axis), P()), P(None, axis))
    with _precision.scope(precision, key=_KEY):
        return inverse(Z, state.mean, state.components, scale)


class ShardedPCA:
    """A PCA fitted and applied voxel-sharded on a mesh, used as :class:`~jaxenc.decomp.PCA` is.

    :meth:`fit` is :func:`pca_fit_sharded` (``"gram"`` over voxel shards, ``"covariance"`` over
    row shards, ``"auto"`` the smaller matrix as :class:`PCA` chooses, ``"randomized"`` over
    voxel shards);
    :meth:`transform` and :meth:`inverse_transform` take and return host arrays of the real
    voxels, computing voxel-sharded (:func:`pca_transform_sharded`, :func:`pca_inverse_sharded`)
    and gathering with :func:`jaxenc.distributed.to_host` (a collective: every process calls
    them alike).

    Parameters
    ----------
    n_components : int
    mesh : jax.sharding.Mesh
    axis : str
        Mesh axis the voxels (or rows) are split along.
    method : {"auto", "gram", "covariance", "randomized"}
    n_oversamples, n_iter, seed : int
        The randomized solver's settings (:func:`~jaxenc.decomp.pca_fit`).
    precision : str
        Matrix-product precision (:mod:`jaxenc.precision`).

    Attributes
    ----------
    sharded_ : ShardedPCAState
        The fitted state, voxel-sharded.
    whiten : bool
        False: scores are not whitened.
    """

    whiten = False

    def __init__(self, n_components: int, mesh: Mesh, axis: str = "data", *, method: str = "auto",
                 n_oversamples: int = 10, n_iter: int = 7, seed: int = 0,
                 precision: str = _precision.DEFAULTS["pca"]):
        if method not in METHODS:
            raise ConfigError(f"unknown PCA method {method!r}; expected one of {METHODS}")
        self.n_components, self.mesh, self.axis = n_components, mesh, axis
        self.method, self.precision = method, precision
        self.n_oversamples, self.n_iter, self.seed = n_oversamples, n_iter, seed
        self.sharded_: ShardedPCAState | None = None

    def fit(self, Y) -> ShardedPCA:
        """Fit on training responses.

        Parameters
        ----------
        Y : array of shape (n_samples, n_voxels), or list/tuple of arrays (n_i, n_voxels)
            Training responses, e.g. one block per story (read into the shards block by block).

        Returns
        -------
        ShardedPCA
            ``self``.
        """
        blocks = _as_blocks(Y)
        n, p = sum(b.shape[0] for b in blocks), blocks[0].shape[1]
        randomized = self.method == "randomized"
        voxels = randomized or self.method == "gram" or (self.method == "auto" and p > n)
        self.sharded_ = pca_fit_sharded(blocks, self.n_components, self.mesh, axis=self.axis,
                                        shard="voxels" if voxels else "rows",
                                        method="randomized" if randomized else "exact",
                                        n_oversamples=self.n_oversamples, n_iter=self.n_iter, seed=self.seed,
                                        precision=self.precision)
        return self

    def _fitted(self) -> ShardedPCAState:
        if self.sharded_ is None:
            raise ConfigError("this PCA is not fitted yet; call fit(Y_train) first")
        return self.sharded_

    def transform(self, Y) -> np.ndarray:
        """Scores of host responses (n, n_voxels): ndarray of shape (n, n_components)."""
        return to_host(pca_transform_sharded(self._fitted(), Y, precision=self.precision))

    def inverse_transform(self, Z) -> np.ndarray:
        """Voxels of scores (n, n_components): ndarray of shape (n, n_voxels), the padding dropped."""
        state = self._fitted()
        return to_host(pca_inverse_sharded(state, to_host(Z), precision=self.precision))[:, :state.n_voxels]

    @property
    def state_(self) -> PCAState:
        """The fitted state gathered as a single-device :class:`~jaxenc.decomp.PCAState` (for code
        that reads the components, e.g. :func:`jaxenc.stream.pca_chunk_predictor`)."""
        return self._fitted().gather()
