"""Finite impulse response (FIR) delays: shifted copies of the features, side by side.

A voxel's BOLD response lags the stimulus by several seconds with an unknown shape; giving the
linear model the features at several delays lets it fit that shape per voxel.
"""

from __future__ import annotations

import operator

import jax.numpy as jnp

from jaxenc.errors import AlignmentError, ConfigError

__all__ = ["make_delayed"]


def _as_delays(delays) -> tuple[int, ...]:
    message = f"delays must be a non-empty sequence of integers (TRs), found {delays!r}"
    try:
        items = tuple(delays)
        out = tuple(operator.index(d) for d in items if not isinstance(d, bool))
    except TypeError as err:
        raise ConfigError(message) from err
    if not out or len(out) != len(items):
        raise ConfigError(message)
    return out


def _shift(x, k):
    n = x.shape[0]
    if abs(k) >= n:
        return jnp.zeros_like(x)
    if k > 0:
        return jnp.pad(x[: n - k], ((k, 0), (0, 0)))
    if k < 0:
        return jnp.pad(x[-k:], ((0, -k), (0, 0)))
    return x


def make_delayed(x, delays):
    """Stack delayed copies of the features, zero padded.

    Row ``t`` of the block for delay ``k`` holds ``x[t - k]``: a positive delay moves the
    features later in time (the response at TR ``t`` sees the stimulus ``k`` TRs earlier), a
    negative delay moves them earlier, and a delay of 0 leaves the features unchanged. Rows
    that would come from outside ``x`` are zero, so a delay with ``|k| >= n`` gives a zero
    block. No circular padding: nothing wraps around from the other end.

    Parameters
    ----------
    x : array_like of shape (n, n_features)
        Features on the TR grid, one row per TR.
    delays : sequence of int
        Delays in TRs (static Python integers), e.g. ``(1, 2, 3, 4)`` for about 2, 4, 6 and
        8 s at a TR of 2 s.

    Returns
    -------
    jax.Array of shape (n, n_features * len(delays))
        The delayed blocks side by side, in the order of ``delays``: columns
        ``[i * n_features : (i + 1) * n_features]`` hold delay ``delays[i]``.

    Raises
    ------
    AlignmentError
        If ``x`` is not 2-D.
    ConfigError
        If ``delays`` is empty or holds something other than integers.
    """
    delays = _as_delays(delays)
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise AlignmentError(f"x must be 2-D (n_trs, n_features), found shape {x.shape}")
    return jnp.concatenate([_shift(x, k) for k in delays], axis=1)
