"""Significance of per-voxel prediction correlations: block permutation test and FDR control.

fMRI time courses are autocorrelated over several TRs, so shuffling single TRs would make the
null distribution too narrow. :func:`permutation_test` shuffles contiguous blocks of TRs of the
prediction instead (blocks of 10 TRs = 20 s by default), which keeps the autocorrelation within
blocks while breaking the alignment with the measured response. The p-values of many voxels are
then corrected with Benjamini-Hochberg in :func:`fdr_bh`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.errors import ConfigError
from jaxenc.metrics._checks import as_float, check_pair
from jaxenc.metrics.correlation import _centred_unit

__all__ = ["block_permutation", "block_permutations", "permutation_test", "fdr_bh"]

ALTERNATIVES = ("greater", "two-sided")
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_blocks(n_trs: int, block_size: int) -> None:
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ConfigError(f"block_size must be a positive integer of TRs, got {block_size!r}", setting="block_size")
    if -(-n_trs // block_size) < 2:
        raise ConfigError(
            f"block_size={block_size} leaves fewer than 2 blocks in {n_trs} TRs; nothing to permute",
            setting="block_size")


@partial(jax.jit, static_argnames=("n_trs", "block_size"))
def block_permutation(key, n_trs: int, block_size: int):
    """A random reordering of TRs that moves whole blocks of consecutive TRs.

    TRs are cut into consecutive blocks of ``block_size`` (the last one shorter when
    ``block_size`` does not divide ``n_trs``); the blocks are shuffled and the TRs inside each
    block keep their order.

    Parameters
    ----------
    key : jax.Array
        A JAX PRNG key.
    n_trs : int
        Rows to reorder.
    block_size : int
        TRs per block.

    Returns
    -------
    jax.Array of shape (n_trs,), int32
        Row indices: ``y[order]`` is the block-shuffled time course.
    """
    n_blocks = -(-n_trs // block_size)
    shuffled = jax.random.permutation(key, n_blocks)  # shuffled[j]: block placed j-th
    slots = jnp.arange(n_blocks, dtype=jnp.int32)
    position = jnp.zeros(n_blocks, jnp.int32).at[shuffled].set(slots)  # block -> its new slot
    rows = jnp.arange(n_trs, dtype=jnp.int32)
    # Sorting by (new position of the row's block, offset in block) concatenates the blocks in
    # their new order; it also handles a shorter last block.
    sort_key = position[rows // block_size] * block_size + rows % block_size
    return jnp.argsort(sort_key).astype(jnp.int32)


def _permutation_keys(seed, n_permutations: int):
    return jax.random.split(jax.random.key(seed), n_permutations)


def block_permutations(n_trs: int, n_permutations: int, block_size: int = 10, seed: int = 0):
    """The reorderings :func:`permutation_test` uses for a given seed.

    Parameters
    ----------
    n_trs : int
        Rows (TRs) of the time courses.
    n_permutations : int
        Reorderings to draw.
    block_size : int
        TRs per block.
    seed : int
        Seed of the PRNG.

    Returns
    -------
    jax.Array of shape (n_permutations, n_trs), int32
        Row ``i`` is the ``i``-th permutation's row order (see :func:`block_permutation`).
    """
    _check_blocks(n_trs, block_size)
    keys = _permutation_keys(seed, n_permutations)
    return jax.vmap(lambda k: block_permutation(k, n_trs, block_size))(keys)


@partial(jax.jit, static_argnames=("n_permutations", "block_size", "batch_size"))
def _permutation_counts(y_true, y_pred, seed, two_sided, n_permutations, block_size, batch_size):
    n_trs = y_true.shape[0]
    zt, zp = _centred_unit(y_true), _centred_unit(y_pred)
    if zt.ndim == 1:
        zt, zp = zt[:, None], zp[:, None]
    # Observed and null correlations go through the same full-precision contraction, so the
    # identity permutation reproduces the observed value exactly.
    observed = jnp.einsum("tv,tv->v", zt, zp, precision=_HIGHEST)
    n_batches = -(-n_permutations // batch_size)
    keys = _permutation_keys(seed, n_permutations)
    # Pad to whole batches with repeated keys whose results are masked out.
    keys = jnp.concatenate([keys, keys[: n_batches * batch_size - n_permutations]])
    keys = keys.reshape(n_batches, batch_size)
    valid = (jnp.arange(n_batches * batch_size) < n_permutations).reshape(n_batches, batch_size)

    def step(count, batch):
        batch_keys, batch_valid = batch
        orders = jax.vmap(lambda k: block_permutation(k, n_trs, block_size))(batch_keys)
        # An explicit gather then contraction; a vmapped `zp[order]` compiled to a far slower
        # gather on CPU.
        shuffled = jnp.take(zp, orders, axis=0)  # [batch, n_trs, n_voxels]
        null = jnp.einsum("tv,btv->bv", zt, shuffled, precision=_HIGHEST)  # [batch, n_voxels]
        # A traced flag rather than a static one: both alternatives share one compilation.
        exceed = jnp.where(two_sided, jnp.abs(null) >= jnp.abs(observed), null >= observed)
        return count + jnp.sum(exceed & batch_valid[:, None], axis=0, dtype=jnp.int32), None

    count, _ = jax.lax.scan(step, jnp.zeros(observed.shape, jnp.int32), (keys, valid))
    if y_true.ndim == 1:
        return observed[0], count[0]
    return observed, count


def permutation_test(
    y_true,
    y_pred,
    n_permutations: int = 1000,
    block_size: int = 10,
    seed: int = 0,
    *,
    alternative: str = "greater",
    batch_size: int = 32,
):
    """Block-permutation p-values of the per-voxel correlation between prediction and data.

    The null distribution is the correlation after reordering the prediction's TRs with
    :func:`block_permutation`; all voxels share each permutation (which keeps the spatial
    correlation of the data in the null). ``p = (1 + #{null >= observed}) / (1 + n_permutations)``
    (Phipson & Smyth 2010), so p is never 0 and its smallest value is ``1 / (n_permutations + 1)``.

    Parameters
    ----------
    y_true : array of shape (n_trs, n_voxels) or (n_trs,)
        Measured responses.
    y_pred : array of the same shape
        Predicted responses.
    n_permutations : int
        Permutations drawn.
    block_size : int
        TRs per shuffled block (10 TRs = 20 s).
    seed : int
        PRNG seed; the permutations are those of ``block_permutations(n_trs, n_permutations,
        block_size, seed)``.
    alternative : {"greater", "two-sided"}
        ``"greater"`` tests for a positive correlation (the usual question for an encoding
        model); ``"two-sided"`` compares absolute correlations.
    batch_size : int
        Permutations evaluated together (vmapped); memory grows as
        ``batch_size * n_trs * n_voxels``.

    Returns
    -------
    jax.Array of shape (n_voxels,) (or a scalar for 1-D input)
        p-values in ``(0, 1]``. Voxels constant in either input correlate 0 under every
        permutation and get p = 1; voxels holding NaN get NaN.

    Raises
    ------
    AlignmentError
        The shapes differ or are not 1-D/2-D.
    ConfigError
        Bad ``n_permutations``, ``block_size``, ``batch_size`` or ``alternative``.
    """
    y_true, y_pred = check_pair(y_true, y_pred, "permutation_test")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ConfigError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    _check_blocks(y_true.shape[0], block_size)
    batch_size = min(int(batch_size), int(n_permutations))
    observed, count = _permutation_counts(
        y_true,
        y_pred,
        seed,
        alternative == "two-sided",
        int(n_permutations),
        int(block_size),
        batch_size,
    )
    p = (1 + count) / (1 + n_permutations)
    return jnp.where(jnp.isnan(observed), jnp.nan, p).astype(observed.dtype)


@jax.jit
def _fdr_bh(p, alpha):
    flat = p.ravel()
    finite = ~jnp.isnan(flat)
    m = jnp.sum(finite)
    order = jnp.argsort(jnp.where(finite, flat, jnp.inf))
    sorted_p = flat[order]
    ranks = jnp.arange(1, flat.size + 1, dtype=flat.dtype)
    # Step-up: adjusted p_(i) = min_{j >= i} p_(j) m / j; NaNs sort last and never lower it.
    scaled = jnp.where(jnp.isnan(sorted_p), jnp.inf, sorted_p * m / ranks)
    adjusted_sorted = jnp.minimum(jax.lax.cummin(scaled, reverse=True), 1)
    adjusted = jnp.zeros_like(flat).at[order].set(adjusted_sorted)
    adjusted = jnp.where(finite, adjusted, jnp.nan)
    rejected = finite & (adjusted <= alpha)
    return rejected.reshape(p.shape), adjusted.reshape(p.shape)


def fdr_bh(p_values, alpha: float = 0.05):
    """Benjamini-Hochberg false discovery rate control.

    Parameters
    ----------
    p_values : array of any shape, e.g. (n_voxels,)
        p-values in [0, 1]. NaN entries are left out: they are not counted among the tests,
        are never rejected and get a NaN adjusted p-value.
    alpha : float
        FDR level.

    Returns
    -------
    rejected : jax.Array of bool, same shape
        Tests declared significant (``adjusted <= alpha``).
    adjusted : jax.Array, same shape
        BH-adjusted p-values, ``min_{j >= i} p_(j) m / j`` capped at 1 (as
        ``scipy.stats.false_discovery_control(method="bh")``).

    Raises
    ------
    ConfigError
        ``alpha`` outside (0, 1), or p-values outside [0, 1] (checked when the values are
        concrete, i.e. not under an outer ``jax.jit``).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"fdr_bh: alpha must be in (0, 1), got {alpha}")
    p = as_float(p_values)
    if not isinstance(p, jax.core.Tracer):
        finite = p[~jnp.isnan(p)]
        if finite.size and (bool(finite.min() < 0) or bool(finite.max() > 1)):
            raise ConfigError(
                f"fdr_bh: p-values must lie in [0, 1]; got values in "
                f"[{float(finite.min())}, {float(finite.max())}]"
            )
    return _fdr_bh(p, alpha)
