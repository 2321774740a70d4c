"""Variance partitioning between two feature spaces, and the best model per voxel.

With ``r2_a`` (audio features alone), ``r2_b`` (semantic features alone) and ``r2_ab`` (both
together) on held-out data, set theory (de Heer et al. 2017, J. Neurosci. 37:6539) splits the
joint model's explained variance into three parts::

    unique_a = r2_ab - r2_b          explained only by a
    unique_b = r2_ab - r2_a          explained only by b
    shared   = r2_a + r2_b - r2_ab   explained by either (the intersection)

Estimates are not clipped: a negative ``shared`` means the joint model explains more than the
two alone add up to (an interaction a nonlinear joint encoder can capture); a negative unique
part means adding a feature space hurt on held-out data.

Which part "best explains" a voxel
----------------------------------
"Mind the Gap" (Han et al. 2025, arXiv 2502.12771) reports that 68.5% of significantly
predicted voxels are best explained by joint audio-language processing. The stored copies of
the paper we could search showed only its abstract, so its exact rule could not be checked.
jaxenc's definition, :func:`variance_partition`: among significant voxels, a voxel is best
explained by the part (``unique_a``, ``unique_b``, ``shared``) with the largest value, and
``joint_fraction`` is the share of significant voxels whose largest part is ``shared``. The
other reading, "the joint model ``ab`` scores higher than either single model", is
:func:`best_model` on ``(r2_a, r2_b, r2_ab)``, the per-voxel map of the paper's figures.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.errors import AlignmentError
from jaxenc.metrics._checks import as_float

__all__ = [
    "VariancePartition",
    "variance_partition",
    "best_model",
    "UNIQUE_A",
    "UNIQUE_B",
    "SHARED",
    "NOT_SIGNIFICANT",
]

# Codes of VariancePartition.best_part.
UNIQUE_A = 0
UNIQUE_B = 1
SHARED = 2
# Code of voxels left out by the significance mask (in best_part and best_model).
NOT_SIGNIFICANT = -1


class VariancePartition(NamedTuple):
    """Set-theoretic variance partition of two feature spaces, per voxel.

    Attributes
    ----------
    unique_a : jax.Array of shape (n_voxels,)
        ``r2_ab - r2_b``.
    unique_b : jax.Array of shape (n_voxels,)
        ``r2_ab - r2_a``.
    shared : jax.Array of shape (n_voxels,)
        ``r2_a + r2_b - r2_ab``.
    best_part : jax.Array of shape (n_voxels,), int32
        The largest of the three parts: ``UNIQUE_A`` (0), ``UNIQUE_B`` (1) or ``SHARED`` (2);
        ``NOT_SIGNIFICANT`` (-1) outside the significance mask or where a part is NaN. Ties go
        to the lower code.
    joint_fraction : jax.Array, scalar
        Share of significant voxels (with a defined ``best_part``) whose best part is
        ``SHARED``; NaN when there are none.
    """

    unique_a: jax.Array
    unique_b: jax.Array
    shared: jax.Array
    best_part: jax.Array
    joint_fraction: jax.Array


def _check_same_shape(arrays, names, what):
    shapes = [np.shape(a) for a in arrays]
    if any(s != shapes[0] for s in shapes) or len(shapes[0]) != 1:
        listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        raise AlignmentError(f"{what}: expected arrays of one shape (n_voxels,), got {listed}")


@jax.jit
def _partition(r2_a, r2_b, r2_ab, significant):
    unique_a = r2_ab - r2_b
    unique_b = r2_ab - r2_a
    shared = r2_a + r2_b - r2_ab
    parts = jnp.stack([unique_a, unique_b, shared])  # [3, n_voxels]
    defined = ~jnp.isnan(parts).any(axis=0)
    counted = significant & defined
    best = jnp.where(counted, jnp.argmax(jnp.where(defined, parts, 0), axis=0), NOT_SIGNIFICANT)
    n_counted = jnp.sum(counted)
    joint = jnp.sum(best == SHARED) / jnp.where(n_counted > 0, n_counted, 1)
    joint = jnp.where(n_counted > 0, joint, jnp.nan)
    return VariancePartition(unique_a, unique_b, shared, best.astype(jnp.int32), joint)


def variance_partition(r2_a, r2_b, r2_ab, significant=None) -> VariancePartition:
    """Split the joint model's explained variance into unique and shared parts.

    Any per-voxel measure of explained variance works; jaxenc's analyses pass the paper's r2,
    ``r * |r|`` (:func:`jaxenc.metrics.signed_r2`), which does not depend on a prediction's
    scale, rather than the coefficient of determination.

    Parameters
    ----------
    r2_a : array of shape (n_voxels,)
        Held-out r2 of the model on feature space a alone (e.g. audio).
    r2_b : array of shape (n_voxels,)
        Held-out r2 of the model on feature space b alone (e.g. semantic).
    r2_ab : array of shape (n_voxels,)
        Held-out r2 of the model on both feature spaces.
    significant : array of bool, shape (n_voxels,), optional
        Voxels to classify (e.g. ``fdr_bh(permutation_test(...))[0]`` for the joint model);
        all voxels when omitted.

    Returns
    -------
    VariancePartition
        See the module docstring for the definition of ``best_part`` and ``joint_fraction``.

    Raises
    ------
    AlignmentError
        The inputs are not 1-D arrays of one length.
    """
    arrays = [as_float(r2_a), as_float(r2_b), as_float(r2_ab)]
    names = ["r2_a", "r2_b", "r2_ab"]
    if significant is None:
        significant = jnp.ones(np.shape(r2_a), bool)
    significant = jnp.asarray(significant).astype(bool)
    _check_same_shape(arrays + [significant], names + ["significant"], "variance_partition")
    dtype = jnp.result_type(*arrays)
    r2_a, r2_b, r2_ab = (a.astype(dtype) for a in arrays)
    return _partition(r2_a, r2_b, r2_ab, significant)


@jax.jit
def _best_model(scores, significant):
    defined = ~jnp.isnan(scores)
    counted = significant & defined.any(axis=0)
    best = jnp.argmax(jnp.where(defined, scores, -jnp.inf), axis=0)
    return jnp.where(counted, best, NOT_SIGNIFICANT).astype(jnp.int32)


def best_model(scores, significant=None):
    """Index of the best-scoring model per voxel.

    Parameters
    ----------
    scores : array of shape (n_models, n_voxels), or a sequence of (n_voxels,) arrays
        One score per model and voxel (correlation, r2 or cc_norm), e.g.
        ``(r2_a, r2_b, r2_ab)`` for the paper's audio / semantic / joint maps.
    significant : array of bool, shape (n_voxels,), optional
        Voxels to classify; all when omitted.

    Returns
    -------
    jax.Array of shape (n_voxels,), int32
        Row index of the highest score (NaN scores are ignored; ties go to the lower index);
        ``NOT_SIGNIFICANT`` (-1) outside the mask or where every score is NaN.

    Raises
    ------
    AlignmentError
        Scores not of shape (n_models, n_voxels), or a mask of another length.
    """
    if isinstance(scores, (list, tuple)):
        shapes = {np.shape(s) for s in scores}
        if len(shapes) != 1:
            raise AlignmentError(f"best_model: scores of different shapes {sorted(shapes)}")
        scores = jnp.stack([jnp.asarray(s) for s in scores])
    scores = as_float(scores)
    if scores.ndim != 2:
        raise AlignmentError(
            f"best_model: scores have shape {scores.shape}; expected (n_models, n_voxels)"
        )
    if significant is None:
        significant = jnp.ones(scores.shape[1], bool)
    significant = jnp.asarray(significant).astype(bool)
    if significant.shape != scores.shape[1:]:
        raise AlignmentError(
            f"best_model: significant has shape {significant.shape}, scores cover "
            f"{scores.shape[1]} voxels"
        )
    return _best_model(scores, significant)
