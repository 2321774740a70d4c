"""Scores of encoding models on held-out data, per voxel.

Every function takes arrays (numpy or JAX), never paths or models: ``(n_trs, n_voxels)`` in,
``(n_voxels,)`` out, computed in JAX.

- :mod:`~jaxenc.metrics.correlation`: :func:`pearson_r`, :func:`r2_score` (the coefficient of
  determination).
- :mod:`~jaxenc.metrics.noise_ceiling`: :func:`cc_max`, :func:`cc_norm`,
  :func:`explainable_variance` from repeated test-story presentations.
- :mod:`~jaxenc.metrics.significance`: :func:`permutation_test` (block permutations of TRs),
  :func:`fdr_bh` (Benjamini-Hochberg).
- :mod:`~jaxenc.metrics.partition`: :func:`variance_partition` between two feature spaces and
  :func:`best_model` per voxel.
- :mod:`~jaxenc.metrics.scores` and :mod:`~jaxenc.metrics.scoring`: the test-story scores
  every scoring path reports, defined once: :func:`score` (a prediction and the test repeats
  in, :class:`Scores` out: r, the paper's r2 = r·|r|, r2_cod, cc_norm, permutation p and FDR
  on the rows kept after the test-story trim, with the settings of :class:`ScoreConfig`;
  voxel chunk by voxel chunk at full size) and its per-voxel building block
  :func:`voxel_scores`.

The names are loaded on first use: :class:`Scores` and :class:`ScoreConfig` need numpy only,
so run results load without JAX.
"""

import importlib

# Public name -> the submodule defining it.
_WHERE = {
    "pearson_r": "correlation",
    "r2_score": "correlation",
    "signal_power": "noise_ceiling",
    "cc_max": "noise_ceiling",
    "cc_norm": "noise_ceiling",
    "explainable_variance": "noise_ceiling",
    "block_permutation": "significance",
    "block_permutations": "significance",
    "permutation_test": "significance",
    "fdr_bh": "significance",
    "VariancePartition": "partition",
    "variance_partition": "partition",
    "best_model": "partition",
    "UNIQUE_A": "partition",
    "UNIQUE_B": "partition",
    "SHARED": "partition",
    "NOT_SIGNIFICANT": "partition",
    "ScoreConfig": "scores",
    "Scores": "scores",
    "signed_r2": "scores",
    "drop_first_rows": "scores",
    "protocol_trim": "scores",
    "VOXEL_SCORES": "scores",
    "SCORE_ARRAYS": "scores",
    "score": "scoring",
    "scored_ceiling": "scoring",
    "voxel_scores": "scoring",
}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"jaxenc.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
