"""Per-voxel prediction scores: Pearson correlation and coefficient of determination.

Both take ``(n_trs, n_voxels)`` arrays (or ``(n_trs,)`` for a single voxel) and score each
column separately over time. They are jitted and accept numpy or JAX arrays; computation runs in
the promoted floating dtype of the inputs (float32 unless ``jax_enable_x64`` is on). NaN in the
inputs propagates to the affected voxels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxenc.metrics._checks import check_pair

__all__ = ["pearson_r", "r2_score"]


def _centred(x):
    """Columns minus their mean over time (axis 0), exactly zero for constant columns."""
    # Shifting by the first TR first makes constant columns exactly zero (a rounded mean would
    # leave rounding noise that normalises to a spurious correlation) and reduces cancellation.
    shifted = x - x[:1]
    return shifted - shifted.mean(axis=0)


def _centred_unit(x):
    """Columns centred over time and scaled to unit norm; constant columns become zeros, NaN
    propagates."""
    xc = _centred(x)
    norm = jnp.sqrt(jnp.sum(xc * xc, axis=0))
    return jnp.where(norm == 0, 0, xc / jnp.where(norm == 0, 1, norm))


@jax.jit
def pearson_r(y_true, y_pred):
    """Pearson correlation between true and predicted time courses, per voxel.

    Parameters
    ----------
    y_true : array of shape (n_trs, n_voxels) or (n_trs,)
        Measured responses.
    y_pred : array of the same shape
        Predicted responses.

    Returns
    -------
    jax.Array of shape (n_voxels,) (or a scalar for 1-D input)
        Correlation in [-1, 1]. A column that is constant in ``y_true`` or in ``y_pred`` has no
        defined correlation and scores 0 (as himalaya's ``correlation_score``), so averages over
        voxels stay finite.

    Raises
    ------
    AlignmentError
        The shapes differ or are not 1-D/2-D.
    ConfigError
        Fewer than two TRs.
    """
    y_true, y_pred = check_pair(y_true, y_pred, "pearson_r")
    # Centring before the products keeps float32 accurate for responses far from zero mean.
    r = jnp.sum(_centred_unit(y_true) * _centred_unit(y_pred), axis=0)
    return jnp.clip(r, -1, 1)


@jax.jit
def r2_score(y_true, y_pred):
    """Coefficient of determination per voxel, ``1 - SS_res / SS_tot``.

    ``SS_res = sum_t (y_true - y_pred)**2`` and ``SS_tot = sum_t (y_true - mean_t y_true)**2``,
    the same per-output definition as ``sklearn.metrics.r2_score(multioutput="raw_values")``.
    Unbounded below; a prediction equal to the true mean scores 0.

    Parameters
    ----------
    y_true : array of shape (n_trs, n_voxels) or (n_trs,)
        Measured responses.
    y_pred : array of the same shape
        Predicted responses.

    Returns
    -------
    jax.Array of shape (n_voxels,) (or a scalar for 1-D input)
        Where ``y_true`` is constant (``SS_tot = 0``) the score is 1 for a perfect prediction
        and 0 otherwise, as scikit-learn's default ``force_finite=True``.

    Raises
    ------
    AlignmentError
        The shapes differ or are not 1-D/2-D.
    ConfigError
        Fewer than two TRs.
    """
    y_true, y_pred = check_pair(y_true, y_pred, "r2_score")
    residual = y_true - y_pred
    ss_res = jnp.sum(residual * residual, axis=0)
    centred = _centred(y_true)
    ss_tot = jnp.sum(centred * centred, axis=0)
    safe_tot = jnp.where(ss_tot > 0, ss_tot, 1)
    return jnp.where(ss_tot > 0, 1 - ss_res / safe_tot, jnp.where(ss_res == 0, 1.0, 0.0))
