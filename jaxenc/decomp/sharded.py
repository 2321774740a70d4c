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
    PCAState,
    _as_blocks,
    _check_finite,
    _compute_dtype,
    _dot,
    _flip_signs,
    _top_eigh,
)
from jaxenc.distributed import axis_size, padded_size, replicate, shard_columns, shard_rows, to_host
from jaxenc.errors import AlignmentError, ConfigError

__all__ = ["ShardedPCAState", "pca_fit_sharded", "pca_transform_sharded", "pca_inverse_sharded"]

SHARDINGS = ("voxels", "rows")


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


def _check_k(n_components, n: int, p: int) -> int:
    if n < 2:
        raise ConfigError(f"PCA needs at least 2 rows (TRs) to estimate variance, got {n}")
    if not isinstance(n_components, (int, np.integer)) or not 1 <= n_components <= min(n, p):
        raise ConfigError(
            f"n_components={n_components!r} must be an integer in [1, min(n_samples, n_voxels)]"
            f" = [1, {min(n, p)}] for data of shape ({n}, {p})")
    return int(n_components)


def pca_fit_sharded(Y, n_components: int, mesh: Mesh, *, axis: str = "data",
                    shard: str = "voxels", dtype=jnp.float32,
                    check_finite: bool = True, precision: str = _precision.DEFAULTS["pca"]) -> ShardedPCAState:
    """Fit a PCA with the training responses split over a mesh axis.

    Parameters
    ----------
    Y : array of shape (n_samples, n_voxels), or list/tuple of arrays (n_i, n_voxels)
        Training responses on the host (numpy or memmap); blocks are stacked along rows.
        Each process reads only the slices its devices hold.
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
        :func:`~jaxenc.decomp.pca_fit` with ``method="gram"`` (``shard="voxels"``) or
        ``method="covariance"`` (``shard="rows"``) up to float rounding.

    Raises
    ------
    ConfigError
        Unknown ``shard``, bad ``n_components``, fewer than two rows, unavailable dtype.
    AlignmentError
        Blocks that are not 2-D or disagree in their number of voxels.
    DataError
        NaN or inf in the data.
    """
    if shard not in SHARDINGS:
        raise ConfigError(f"unknown PCA sharding {shard!r}; expected one of {SHARDINGS}")
    blocks = _as_blocks(Y)
    dtype = _compute_dtype(dtype)
    if check_finite:
        _check_finite(blocks)
    Y = blocks[0] if len(blocks) == 1 else np.concatenate([np.asarray(b) for b in blocks])
    n, p = Y.shape
    k = _check_k(n_components, n, p)
    width = padded_size(p, mesh, axis) // axis_size(mesh, axis)
    if shard == "voxels":
        kernel = partial(_gram_kernel, k=k, axis=axis)
        data, in_spec = shard_columns(Y, mesh, axis, dtype=dtype), P(None, axis)
    else:
        kernel = partial(_covariance_kernel, k=k, axis=axis, n_samples=n, width=width)
        data, in_spec = shard_rows(Y, mesh, axis, dtype=dtype), P(axis, None)
    fit = jax.jit(jax.shard_map(kernel, mesh=mesh, in_specs=in_spec,
                                out_specs=(P(axis), P(None, axis), P(), P())))
    _precision.check(precision, _KEY, on=_precision.platform())
    with _precision.scope(precision, key=_KEY):
        mean, components, s, total_ss = fit(data)
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
    project = jax.jit(jax.shard_map(partial(_project_kernel, axis=axis), mesh=mesh,
                                    in_specs=(P(None, axis), P(axis), P(None, axis), P()),
                                    out_specs=P()))
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
    inverse = jax.jit(jax.shard_map(_inverse_kernel, mesh=mesh,
                                    in_specs=(P(), P(axis), P(None, axis), P()),
                                    out_specs=P(None, axis)))
    with _precision.scope(precision, key=_KEY):
        return inverse(Z, state.mean, state.components, scale)
