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
- :mod:`~jaxenc.metrics.protocol`: what a test-story score is, defined once and numpy only:
  :class:`Scores` (r, the paper's r2 = r·|r|, r2_cod, cc_norm, permutation p and FDR per
  voxel), its settings :class:`ScoreConfig` and the test-story trim (:func:`protocol_trim`,
  :func:`drop_first_rows`).
- :mod:`~jaxenc.metrics.scoring`: the one scoring function that computes them, :func:`score`
  (a prediction and the test repeats in, :class:`Scores` out, on the rows kept after the trim;
  voxel chunk by voxel chunk at full size), and its per-voxel building block
  :func:`voxel_scores`.

The names are loaded on first use: :class:`Scores` and :class:`ScoreConfig` need numpy only,
so run results load without JAX.
"""

from jaxenc._lazy import lazy_names

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
    "ScoreConfig": "protocol",
    "Scores": "protocol",
    "signed_r2": "protocol",
    "drop_first_rows": "protocol",
    "protocol_trim": "protocol",
    "VOXEL_SCORES": "protocol",
    "SCORE_ARRAYS": "protocol",
    "score": "scoring",
    "scored_ceiling": "scoring",
    "voxel_scores": "scoring",
}

__all__ = list(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
