"""Finite impulse response (FIR) delays: shifted copies of the features, side by side.

A voxel's BOLD response lags the stimulus by several seconds with an unknown shape; giving the
linear model the features at several delays lets it fit that shape per voxel.
"""

from __future__ import annotations

import operator
from functools import partial

import jax
import jax.numpy as jnp

from jaxenc.align._arrays import on_device
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


def _shift(x, k, fill=0):
    """Rows of ``x`` moved ``k`` later (earlier if negative), ``fill`` where nothing arrives."""
    n = x.shape[0]
    if abs(k) >= n:
        return jnp.full_like(x, fill)
    pad = [(0, 0)] * x.ndim
    if k > 0:
        pad[0] = (k, 0)
        return jnp.pad(x[: n - k], pad, constant_values=fill)
    if k < 0:
        pad[0] = (0, -k)
        return jnp.pad(x[-k:], pad, constant_values=fill)
    return x


@partial(jax.jit, static_argnames="delays")
def _delayed(x, groups, delays):
    blocks = []
    for k in delays:
        block = _shift(x, k)
        if groups is not None:
            # -1 is no group: rows that arrive from outside x are zero already.
            same = _shift(groups, k, fill=-1) == groups
            block = jnp.where(same[:, None], block, jnp.zeros_like(block))
        blocks.append(block)
    return jnp.concatenate(blocks, axis=1)


def make_delayed(x, delays, groups=None):
    """Stack delayed copies of the features, zero padded.

    Row ``t`` of the block for delay ``k`` holds ``x[t - k]``: a positive delay moves the
    features later in time (the response at TR ``t`` sees the stimulus ``k`` TRs earlier), a
    negative delay moves them earlier, and a delay of 0 leaves the features unchanged. Rows
    that would come from outside ``x`` are zero, so a delay with ``|k| >= n`` gives a zero
    block. No circular padding: nothing wraps around from the other end. With ``groups``
    (e.g. stories stacked one after another), rows that would come from another group are
    zero too, so each group is delayed as if it stood alone.

    Parameters
    ----------
    x : array_like of shape (n, n_features)
        Features on the TR grid, one row per TR.
    delays : sequence of int
        Delays in TRs (static Python integers), e.g. ``(1, 2, 3, 4)`` for about 2, 4, 6 and
        8 s at a TR of 2 s.
    groups : array_like of shape (n,), optional
        Non-negative integer group of each row; rows of a group must be contiguous for the
        result to equal delaying each group on its own.

    Returns
    -------
    jax.Array of shape (n, n_features * len(delays))
        The delayed blocks side by side, in the order of ``delays``: columns
        ``[i * n_features : (i + 1) * n_features]`` hold delay ``delays[i]``.

    Raises
    ------
    AlignmentError
        If ``x`` is not 2-D or ``groups`` is not one label per row.
    ConfigError
        If ``delays`` is empty or holds something other than integers.
    """
    delays = _as_delays(delays)
    x = on_device(x)
    if x.ndim != 2:
        raise AlignmentError(f"x must be 2-D (n_trs, n_features), found shape {x.shape}")
    if groups is not None:
        groups = on_device(groups, jnp.int32)
        if groups.shape != x.shape[:1]:
            raise AlignmentError(
                f"groups must hold one label per row of x, shape ({x.shape[0]},), found "
                f"shape {groups.shape}"
            )
    return _delayed(x, groups, delays)
