"""Lanczos downsampling of time-stamped features onto a coarser time grid (the TR grid).

This follows the Huth lab's ``lanczosinterp2D``: every new sample is a weighted sum of the old
samples, with weights given by a Lanczos kernel whose cutoff is set by the spacing of the new
grid. The weights are *not* renormalised to sum to one, exactly as in the reference code, so
the output scales with the local density of old samples (a feature sampled at word times sums
the words that fall near each TR rather than averaging them). Downstream z-scoring per story
removes that scale.

Shapes: a concrete (not traced) call pads the old samples and the new times to a bucket
length (:func:`bucket_length`: the next ``2**k`` or ``1.5 * 2**k``) and runs one compiled
program per pair of buckets, so stories of many lengths share a few programs instead of
compiling one each; padded old samples carry zero data (their weights multiply zeros) and
padded new rows are dropped on the host. A traced call (under ``jit``, ``grad``, ``vmap``)
has static shapes already and runs the same rows unpadded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.align._arrays import is_concrete, on_device
from jaxenc.conventions import LANCZOS_WINDOW
from jaxenc.errors import AlignmentError, ConfigError

__all__ = ["lanczos_kernel", "lanczos_interp", "bucket_length"]

# Below this |t| the kernel is evaluated by its Taylor expansion: the closed form divides two
# vanishing numbers there (0/0 at t == 0, NaN gradients, denormal underflow in float32), while
# the neglected t**4 term is about 1.1 * t**4 < 2e-16, below float64 resolution.
_TAYLOR_BELOW = 1e-4

# The dense path builds an (n_new, n_old) weight matrix; above this many entries (64 MiB in
# float32) the rows are computed in chunks of new times so memory stays bounded.
_MAX_DENSE_WEIGHTS = 2**24

# Shortest padded length: below it a bucket would save nothing worth a compilation.
_MIN_BUCKET = 16


def bucket_length(n: int) -> int:
    """Padded length of an axis of ``n`` samples: the smallest ``2**k`` or ``3 * 2**(k-1)``
    that holds them, at least 16.

    Consecutive buckets differ by a factor 4/3 or 3/2, so padding adds at most half of ``n``
    (a quarter on average over lengths) while any range of lengths spanning a factor of two
    meets at most three buckets.

    Parameters
    ----------
    n : int
        Samples along the axis (>= 0).

    Returns
    -------
    int
        The bucket length, ``>= max(n, 16)``.
    """
    size = _MIN_BUCKET
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size // 3 * 4
    return size


def lanczos_kernel(t, window=LANCZOS_WINDOW):
    """Evaluate the Lanczos kernel.

    ``L(t) = window * sin(pi t) * sin(pi t / window) / (pi**2 t**2)``, with ``L(0) = 1`` and
    ``L(t) = 0`` for ``|t| > window``. Values and gradients are finite everywhere, including
    at and near ``t = 0``.

    Parameters
    ----------
    t : array_like of any shape
        Arguments in units of the cutoff period (seconds times the cutoff in Hz).
    window : int or float, optional
        Number of lobes on each side of the centre (static).

    Returns
    -------
    jax.Array of the shape of ``t``
        Kernel values, in the floating dtype of ``t`` (the default float for integer ``t``).
    """
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.inexact):
        t = t.astype(jnp.result_type(float))
    near_zero = jnp.abs(t) < _TAYLOR_BELOW
    safe_t = jnp.where(near_zero, jnp.ones_like(t), t)
    closed = (
        window * jnp.sin(jnp.pi * safe_t) * jnp.sin(jnp.pi * safe_t / window)
        / (jnp.pi**2 * safe_t**2)
    )
    # sinc(t) * sinc(t / window) = 1 - (pi t)**2 (1 + 1 / window**2) / 6 + O(t**4)
    taylor = 1 - (jnp.pi * t) ** 2 * (1 + 1 / window**2) / 6
    value = jnp.where(near_zero, taylor, closed)
    return jnp.where(jnp.abs(t) > window, jnp.zeros_like(value), value)


def _check_times(times, name, story):
    times_np = np.asarray(times)
    if times_np.ndim != 1:
        raise AlignmentError(
            f"{name} must be 1-D (n_samples,), found shape {times_np.shape}", story=story
        )
    bad = np.flatnonzero(~np.isfinite(times_np))
    if bad.size:
        i = int(bad[0])
        raise AlignmentError(
            f"{name} must be finite, found {name}[{i}] = {times_np[i]}", story=story
        )
    decreasing = np.flatnonzero(np.diff(times_np) < 0)
    if decreasing.size:
        i = int(decreasing[0]) + 1
        raise AlignmentError(
            f"{name} must be non-decreasing, found {name}[{i}] = {times_np[i]} "
            f"< {name}[{i - 1}] = {times_np[i - 1]}",
            story=story,
        )
    return times_np


def validate(data, old_times, new_times, story=None):
    """Raise :class:`AlignmentError` on inputs :func:`lanczos_interp` cannot align.

    Parameters
    ----------
    data : ndarray of shape (n_old,) or (n_old, n_features)
    old_times : ndarray of shape (n_old,)
    new_times : ndarray of shape (n_new,)
    story : str, optional
        Story named in error messages.
    """
    _check_times(old_times, "old_times", story)
    new_np = _check_times(new_times, "new_times", story)
    if new_np.size < 2 or new_np[-1] == new_np[0]:
        raise AlignmentError(
            "new_times needs at least two distinct times to set the cutoff, "
            f"found {new_np.size} time(s) spanning {np.ptp(new_np) if new_np.size else 0} s",
            story=story,
        )
    shape = np.shape(data)
    if len(shape) not in (1, 2):
        raise AlignmentError(
            f"data must be (n_old,) or (n_old, n_features), found shape {shape}", story=story
        )
    if shape[0] != np.shape(old_times)[0]:
        raise AlignmentError(
            f"data has {shape[0]} rows but old_times has {np.shape(old_times)[0]} times; "
            "expected one row per time",
            story=story,
        )
    if not np.isfinite(data).all():
        rows = np.asarray(data).reshape(shape[0], -1)
        i = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise AlignmentError(
            f"data must be finite, found a non-finite value in row {i}", story=story
        )


def lanczos_interp(
    data,
    old_times,
    new_times,
    window=LANCZOS_WINDOW,
    cutoff_mult=1.0,
    *,
    chunk_size=None,
    story=None,
):
    """Lanczos-downsample time-stamped samples onto new times (the Huth-lab convention).

    The cutoff frequency is ``cutoff = cutoff_mult / mean(diff(new_times))`` in Hz. The old
    sample ``j`` enters new sample ``i`` with weight ``L(cutoff * (new_times[i] -
    old_times[j]))`` (see :func:`lanczos_kernel`), so only old samples within
    ``window / cutoff`` seconds of a new time contribute. The output is ``weights @ data``
    with no renormalisation of the weights, as in the reference code: a new time surrounded
    by many old samples receives their weighted sum, one with none receives zeros.

    Two paths give the same numbers. The dense path builds the whole ``(n_new, n_old)``
    weight matrix (in bucket-padded lengths, see the module notes, when called eagerly); it
    is used when that matrix has at most ``2**24`` entries (64 MiB in float32, e.g. 8,192
    audio frames by 2,048 TRs) and ``chunk_size`` is None. Otherwise the rows are computed
    ``chunk_size`` new times at a time (by default as many as keep a chunk's weights within
    ``2**24`` entries), so memory is bounded by ``chunk_size * n_old`` weights plus the
    output. The choice depends only on static shapes, so both paths jit. Eager calls on
    inputs whose lengths fall in the same buckets reuse one compiled program.

    Parameters
    ----------
    data : array_like of shape (n_old,) or (n_old, n_features)
        Samples at ``old_times``, one row per time.
    old_times : array_like of shape (n_old,)
        Times of the samples, in seconds, non-decreasing (repeats allowed).
    new_times : array_like of shape (n_new,)
        Target times, in seconds, non-decreasing, with at least two distinct values.
    window : int or float, optional
        Lobes of the Lanczos kernel on each side (static), by default 3.
    cutoff_mult : float, optional
        Multiplier of the cutoff frequency (static), by default 1.0.
    chunk_size : int, optional
        Number of new times per chunk (static). None picks the dense path when it fits the
        bound above and an automatic chunk size otherwise.
    story : str, optional
        Story named in error messages.

    Returns
    -------
    jax.Array of shape (n_new,) or (n_new, n_features)
        Downsampled data, in the promoted floating dtype of ``data`` and the times (float32
        unless float64 inputs are used with ``jax_enable_x64``). With float32 times of a long
        story (about 1,000 s) the time differences carry errors near 1e-4 s; pass float64
        times under ``jax_enable_x64`` where that matters.

    Raises
    ------
    AlignmentError
        When the inputs are concrete (not traced) and the times are not 1-D, not finite or
        decreasing somewhere (the first offending index is named), when ``new_times`` has
        fewer than two distinct values, when ``data`` has another number of rows than
        ``old_times`` or holds non-finite values. Under ``jit`` these checks are skipped.
    ConfigError
        When ``window``, ``cutoff_mult`` or ``chunk_size`` is not positive.
    """
    if not window > 0 or not cutoff_mult > 0:
        raise ConfigError(
            f"window and cutoff_mult must be positive, found {window} and {cutoff_mult}",
            story=story,
        )
    valid_chunk = chunk_size is None or (
        isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1
    )
    if not valid_chunk:
        raise ConfigError(f"chunk_size must be a positive integer, found {chunk_size}", story=story)
    dtype = jnp.result_type(data, old_times, new_times)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    if not is_concrete(data, old_times, new_times):
        data, old_times, new_times = (jnp.asarray(a, dtype) for a in (data, old_times, new_times))
        n_new, n_old = new_times.shape[0], old_times.shape[0]
        return rows(
            data,
            old_times,
            new_times,
            _cutoff(cutoff_mult, new_times, n_new, jnp),
            window=window,
            chunk_size=_chunk(chunk_size, n_new, n_old),
        )
    data, old_times, new_times = (np.asarray(a, dtype) for a in (data, old_times, new_times))
    validate(data, old_times, new_times, story)
    args, static = padded_inputs(data, old_times, new_times, window, cutoff_mult, chunk_size)
    return on_device(np.asarray(_interp(*args, **static))[: new_times.shape[0]])


def _cutoff(cutoff_mult, new_times, n_new, xp):
    # (last - first) / (n - 1) is the mean spacing, without summing n rounding errors; the
    # host (numpy) and traced (jax) paths round the same float operations alike.
    dtype = new_times.dtype
    return xp.asarray(cutoff_mult * (n_new - 1), dtype) / (new_times[-1] - new_times[0])


def _chunk(chunk_size, n_new, n_old):
    """The static chunking of ``n_new`` rows over ``n_old`` samples: None for dense."""
    if chunk_size is None and n_new * n_old > _MAX_DENSE_WEIGHTS:
        chunk_size = max(1, _MAX_DENSE_WEIGHTS // max(n_old, 1))
    if chunk_size is not None and chunk_size >= n_new:
        return None
    return chunk_size


def _pad_rows(a, n, fill):
    """``a`` with rows appended up to ``n``, each equal to ``fill`` (a row or a scalar)."""
    extra = np.broadcast_to(np.asarray(fill, a.dtype), (n - a.shape[0],) + a.shape[1:])
    return np.concatenate([a, extra])


def padded_inputs(data, old_times, new_times, window=LANCZOS_WINDOW, cutoff_mult=1.0,
                  chunk_size=None):
    """The arguments of the bucket-padded program behind :func:`lanczos_interp`.

    Parameters
    ----------
    data : ndarray of shape (n_old,) or (n_old, n_features)
    old_times : ndarray of shape (n_old,)
    new_times : ndarray of shape (n_new,)
        All three in the floating dtype of the result, already checked (:func:`validate`).
    window, cutoff_mult, chunk_size
        As :func:`lanczos_interp`.

    Returns
    -------
    args : tuple
        ``(data, old_times, new_times, cutoff)``: the inputs padded to
        ``bucket_length(n_old)`` and ``bucket_length(n_new)`` rows (zero data, repeated last
        times) and the cutoff in Hz, a 0-d array.
    static : dict
        ``window`` and ``chunk_size`` (chosen on the padded shapes), the static arguments of
        :func:`rows`. ``rows(*args, **static)[:n_new]`` is the downsampled data.
    """
    n_new, n_old = new_times.shape[0], old_times.shape[0]
    size_new, size_old = bucket_length(n_new), bucket_length(n_old)
    last_old = old_times[-1] if n_old else 0
    args = (
        _pad_rows(data, size_old, 0),
        _pad_rows(old_times, size_old, last_old),
        _pad_rows(new_times, size_new, new_times[-1]),
        _cutoff(cutoff_mult, new_times, n_new, np),
    )
    return args, {"window": window, "chunk_size": _chunk(chunk_size, size_new, size_old)}


def rows(data, old_times, new_times, cutoff, *, window, chunk_size):
    """``weights @ data`` for every new time (traceable; see :func:`padded_inputs`).

    Parameters
    ----------
    data : jax.Array of shape (n_old,) or (n_old, n_features)
    old_times : jax.Array of shape (n_old,)
    new_times : jax.Array of shape (n_new,)
    cutoff : scalar
        Cutoff frequency in Hz.
    window : int or float
        Lobes of the kernel (static).
    chunk_size : int or None
        New times per chunk (static); None builds the whole weight matrix.

    Returns
    -------
    jax.Array of shape (n_new,) or (n_new, n_features)
    """

    def block(times):
        # [chunk] new times -> [chunk, n_old] weights -> [chunk, ...features]
        weights = lanczos_kernel(cutoff * (times[:, None] - old_times[None, :]), window)
        # Full float32 on every backend: accelerators would otherwise round the operands (TF32, bf16).
        return jnp.tensordot(weights, data, axes=1, precision=jax.lax.Precision.HIGHEST)

    if chunk_size is None:
        return block(new_times)
    return jax.lax.map(lambda time: block(time[None])[0], new_times, batch_size=chunk_size)


# One program per bucket pair and dtype; the cutoff is an argument, not a constant.
_interp = jax.jit(rows, static_argnames=("window", "chunk_size"))
