"""The paper's analyses beyond the headline table, on scores and arrays.

- :mod:`~jaxenc.analysis.partition`: audio versus semantic per voxel for every model fitted on
  the three feature sets (:func:`partition_sets`, :func:`partition_rows`).
- :mod:`~jaxenc.analysis.sweeps`: the layer, model-size, audio-window and depth sweeps as
  curves (:func:`sweep_curves`) and where a curve peaks (:func:`curve_argmax`); each of their
  fits is a job of :func:`jaxenc.pipeline.fit_predict`.
- :mod:`~jaxenc.analysis.clustering`: voxels labelled by their best-predicting model
  (:func:`best_model_clusters`) and the coherence of those groups on a voxel graph
  (:func:`knn_graph`, :func:`modularity`) against a permutation null.
- :mod:`~jaxenc.analysis.interactions`: the share of each voxel's predicted variance that a
  multimodal network owes to audio x semantic interaction, by a functional-ANOVA decomposition
  over the test rows (:func:`interaction_shares`, :func:`fit_interaction_shares`).
- :mod:`~jaxenc.analysis.stability`: agreement of best-model labellings across folds, seeds,
  settings, block-bootstrap resamples of the test rows or halves of the test repeats, by the
  adjusted Rand index (:func:`adjusted_rand_index`, :func:`label_agreement`,
  :func:`best_model_stability`, :func:`repeat_half_stability`, :func:`fold_stability`).
- :mod:`~jaxenc.analysis.masks`: per-model Benjamini-Hochberg masks
  (:func:`significance_masks`), their union and intersection, and the shares of voxels each
  model predicts best (:func:`best_model_shares`, :func:`joint_best_share`).

Like align, decomp, models and metrics, nothing here reads files or runs feature models.
"""

from jaxenc.analysis.clustering import ClusterResult, best_model_clusters, knn_graph, modularity
from jaxenc.analysis.interactions import InteractionShares, fit_interaction_shares, interaction_shares
from jaxenc.analysis.masks import (
    all_significant,
    any_significant,
    best_model_shares,
    joint_best_share,
    significance_masks,
)
from jaxenc.analysis.partition import SetPartition, by_feature_set, partition_rows, partition_sets, preferred_model
from jaxenc.analysis.stability import (
    FoldStability,
    StabilityResult,
    adjusted_rand_index,
    best_model_stability,
    fold_stability,
    label_agreement,
    repeat_half_stability,
)
from jaxenc.analysis.sweeps import curve_argmax, sweep_curves

__all__ = [
    "SetPartition",
    "by_feature_set",
    "partition_sets",
    "partition_rows",
    "preferred_model",
    "sweep_curves",
    "curve_argmax",
    "modularity",
    "knn_graph",
    "ClusterResult",
    "best_model_clusters",
    "InteractionShares",
    "interaction_shares",
    "fit_interaction_shares",
    "adjusted_rand_index",
    "label_agreement",
    "StabilityResult",
    "best_model_stability",
    "repeat_half_stability",
    "FoldStability",
    "fold_stability",
    "significance_masks",
    "any_significant",
    "all_significant",
    "best_model_shares",
    "joint_best_share",
]
