"""Shape checks and dtype promotion shared by the metrics (shapes are static, so these run
unchanged inside ``jax.jit``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxenc.errors import AlignmentError, ConfigError


def as_float(x):
    """``x`` as a JAX floating array (integers and booleans promoted to the default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def check_pair(y_true, y_pred, what: str):
    """Validate two ``(n_trs,)`` or ``(n_trs, n_voxels)`` arrays of one shape; return floats."""
    true_shape, pred_shape = np.shape(y_true), np.shape(y_pred)
    if len(true_shape) not in (1, 2):
        raise AlignmentError(
            f"{what}: y_true has shape {true_shape}; expected (n_trs,) or (n_trs, n_voxels)"
        )
    if true_shape != pred_shape:
        raise AlignmentError(
            f"{what}: y_true has shape {true_shape} but y_pred has shape {pred_shape}; rows must "
            "be the same TRs and columns the same voxels"
        )
    if true_shape[0] < 2:
        raise ConfigError(f"{what}: needs at least 2 TRs, got {true_shape[0]}")
    y_true, y_pred = as_float(y_true), as_float(y_pred)
    dtype = jnp.result_type(y_true, y_pred)
    return y_true.astype(dtype), y_pred.astype(dtype)


def check_repeats(repeats, what: str):
    """Validate ``(n_repeats, n_trs, n_voxels)`` repeats with at least two repeats and TRs."""
    shape = np.shape(repeats)
    if len(shape) != 3:
        raise AlignmentError(
            f"{what}: repeats has shape {shape}; expected (n_repeats, n_trs, n_voxels)"
        )
    if shape[0] < 2:
        raise ConfigError(f"{what}: needs at least 2 repeats, got {shape[0]}")
    if shape[1] < 2:
        raise ConfigError(f"{what}: needs at least 2 TRs per repeat, got {shape[1]}")
    return as_float(repeats)
