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
- :mod:`~jaxenc.metrics.scores`: the test-story scores every scoring path reports, defined
  once: :func:`voxel_scores` (r, the paper's r2 = r·|r|, r2_cod, cc_norm on the rows kept after
  the test-story trim) and :func:`score_repeats` (plus permutation p and FDR).
"""

from jaxenc.metrics.correlation import pearson_r, r2_score
from jaxenc.metrics.noise_ceiling import cc_max, cc_norm, explainable_variance, signal_power
from jaxenc.metrics.partition import (
    NOT_SIGNIFICANT,
    SHARED,
    UNIQUE_A,
    UNIQUE_B,
    VariancePartition,
    best_model,
    variance_partition,
)
from jaxenc.metrics.scores import (
    VOXEL_SCORES,
    drop_first_rows,
    protocol_trim,
    score_repeats,
    signed_r2,
    voxel_scores,
)
from jaxenc.metrics.significance import (
    block_permutation,
    block_permutations,
    fdr_bh,
    permutation_test,
)

__all__ = [
    "pearson_r",
    "r2_score",
    "signed_r2",
    "drop_first_rows",
    "protocol_trim",
    "voxel_scores",
    "score_repeats",
    "VOXEL_SCORES",
    "signal_power",
    "cc_max",
    "cc_norm",
    "explainable_variance",
    "block_permutation",
    "block_permutations",
    "permutation_test",
    "fdr_bh",
    "VariancePartition",
    "variance_partition",
    "best_model",
    "UNIQUE_A",
    "UNIQUE_B",
    "SHARED",
    "NOT_SIGNIFICANT",
]
