"""Noise ceilings from repeated presentations of the test story.

The test story ``wheretheressmoke`` was heard several times (10 repeats for UTS01-03), giving
``repeats`` of shape ``(n_repeats, n_trs, n_voxels)``. Two estimates of how much of a voxel's
response is stimulus driven are provided:

- :func:`cc_max`, Schoppe et al. (2016), "Measuring the performance of neural models",
  Front. Comput. Neurosci. 10:10: the largest correlation any model could reach with the
  mean response over repeats, used to normalise correlations in :func:`cc_norm`.
- :func:`explainable_variance`, Sahani & Linden (2003), in the form used by the Gallant lab's
  voxelwise tutorials: the fraction of a voxel's variance that is repeatable.

Both are jitted, take numpy or JAX arrays and return one value per voxel.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics._checks import check_repeats
from jaxenc.metrics.correlation import pearson_r

__all__ = ["signal_power", "cc_max", "cc_norm", "explainable_variance"]


@jax.jit
def signal_power(repeats):
    """Schoppe et al.'s signal power and total power per voxel.

    With ``N`` repeats ``r_1 .. r_N`` of a voxel's time course and ``Var`` the variance over
    time, ``TP = mean_i Var(r_i)`` and ``SP = (Var(sum_i r_i) - sum_i Var(r_i)) / (N (N - 1))``.
    Both use ddof = 0; any other ddof scales both by the same factor, so the ratio ``TP / SP``
    that :func:`cc_max` uses does not depend on it.

    Parameters
    ----------
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        Responses to the repeated stimulus.

    Returns
    -------
    sp : jax.Array of shape (n_voxels,)
        Signal power; can be negative for noisy voxels (the estimate is unbiased, not clipped).
    tp : jax.Array of shape (n_voxels,)
        Total power.
    """
    repeats = check_repeats(repeats, "signal_power")
    n = repeats.shape[0]
    # Shifting each repeat by its first TR changes no variance but makes a constant voxel's
    # powers exactly 0 rather than rounding noise.
    repeats = repeats - repeats[:, :1]
    each = jnp.var(repeats, axis=1)  # [N, v]
    tp = each.mean(axis=0)
    sp = (jnp.var(repeats.sum(axis=0), axis=0) - each.sum(axis=0)) / (n * (n - 1))
    return sp, tp


@jax.jit
def cc_max(repeats):
    """Largest achievable correlation with the repeat-averaged response, per voxel.

    Schoppe et al. (2016): ``cc_max = 1 / sqrt(1 + (1 / N) * (TP / SP - 1))`` with ``N``
    repeats and ``SP``, ``TP`` from :func:`signal_power`. Equivalently
    ``sqrt(N SP / (TP + (N - 1) SP))``: the correlation between the noise-free signal and the
    mean of ``N`` noisy repeats.

    Parameters
    ----------
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        Responses to the repeated stimulus (at least 2 repeats).

    Returns
    -------
    jax.Array of shape (n_voxels,)
        In (0, 1]. NaN where ``SP <= 0`` (no detectable signal, including constant voxels): the
        ceiling is undefined there, and NaN keeps such voxels from being normalised silently.

    Raises
    ------
    AlignmentError
        ``repeats`` is not 3-D.
    ConfigError
        Fewer than 2 repeats or 2 TRs.
    """
    sp, tp = signal_power(repeats)
    n = repeats.shape[0]
    ok = sp > 0
    ratio = tp / jnp.where(ok, sp, 1)
    return jnp.where(ok, 1 / jnp.sqrt(1 + (ratio - 1) / n), jnp.nan)


@partial(jax.jit, static_argnames="floor")
def cc_norm(y_pred, repeats, floor: float | None = None):
    """Noise-ceiling-normalised correlation, per voxel.

    ``cc_norm = pearson_r(mean_i repeats_i, y_pred) / cc_max(repeats)`` (Schoppe et al. 2016).

    Parameters
    ----------
    y_pred : array of shape (n_trs, n_voxels)
        Predicted responses to the repeated stimulus.
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        Measured responses to each repeat.
    floor : float, optional
        Lower bound on ``cc_max`` (0.25 is common), so noisy voxels cannot inflate the score.
        With a floor, voxels whose ceiling is undefined (``SP <= 0``) use the floor too: they
        are the noisiest voxels the floor exists for. Without one, they give NaN.

    Returns
    -------
    jax.Array of shape (n_voxels,)

    Raises
    ------
    AlignmentError
        ``y_pred`` does not match the ``(n_trs, n_voxels)`` of ``repeats``.
    ConfigError
        Fewer than 2 repeats or 2 TRs, or a floor outside (0, 1].
    """
    repeats = check_repeats(repeats, "cc_norm")
    if np.shape(y_pred) != repeats.shape[1:]:
        raise AlignmentError(
            f"cc_norm: y_pred has shape {np.shape(y_pred)} but repeats are {repeats.shape[1:]} "
            "(n_trs, n_voxels) per repeat"
        )
    if floor is not None and not 0 < floor <= 1:
        raise ConfigError(f"cc_norm: floor must be in (0, 1], got {floor}")
    r = pearson_r(repeats.mean(axis=0), y_pred)
    ceiling = cc_max(repeats)
    if floor is not None:
        ceiling = jnp.fmax(ceiling, floor)  # fmax replaces NaN ceilings by the floor
    return r / ceiling


@partial(jax.jit, static_argnames=("bias_correction", "zscore"))
def explainable_variance(repeats, bias_correction: bool = True, zscore: bool = True):
    """Fraction of each voxel's variance that is repeatable across presentations.

    Following Sahani & Linden (2003) as implemented in the Gallant lab's voxelwise tutorials:
    each repeat is z-scored over time (ddof = 0) when ``zscore``, then
    ``ev = Var_t(mean_i r_i) / mean_i Var_t(r_i)`` with ddof = 1, and with bias correction
    ``ev - (1 - ev) / (N - 1)`` for ``N`` repeats.

    Parameters
    ----------
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        Responses to the repeated stimulus.
    bias_correction : bool
        Remove the positive bias of the estimate due to the finite number of repeats (the
        corrected value can be negative for noise-only voxels).
    zscore : bool
        z-score each repeat over time first; set False only for data already z-scored.

    Returns
    -------
    jax.Array of shape (n_voxels,)
        NaN for voxels constant over time in any repeat (z-scoring is undefined) or, without
        z-scoring, constant in every repeat.

    Raises
    ------
    AlignmentError
        ``repeats`` is not 3-D.
    ConfigError
        Fewer than 2 repeats or 2 TRs.
    """
    repeats = check_repeats(repeats, "explainable_variance")
    n = repeats.shape[0]
    repeats = repeats - repeats[:, :1]  # exact zeros for constant voxels, as in signal_power
    if zscore:
        std = jnp.std(repeats, axis=1, keepdims=True)
        centred = repeats - repeats.mean(axis=1, keepdims=True)
        repeats = jnp.where(std > 0, centred / jnp.where(std > 0, std, 1), jnp.nan)
    mean_var = jnp.var(repeats, axis=1, ddof=1).mean(axis=0)
    var_mean = jnp.var(repeats.mean(axis=0), axis=0, ddof=1)
    ev = jnp.where(mean_var > 0, var_mean / jnp.where(mean_var > 0, mean_var, 1), jnp.nan)
    if bias_correction:
        ev = ev - (1 - ev) / (n - 1)
    return ev
