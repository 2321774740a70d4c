"""The paper's analyses beyond the headline table, on arrays of features and scores.

- :mod:`~jaxenc.analysis.sweep`: :func:`ridge_sweep` and :func:`encoder_sweep`, one encoder
  per LLaMA layer or per language model (the layer and model-size sweeps), scored on the
  test story.
- :mod:`~jaxenc.analysis.clustering`: voxels labelled by their best-predicting model
  (:func:`best_model_clusters`) and the coherence of those groups on a voxel graph
  (:func:`knn_graph`, :func:`modularity`) against a permutation null.
- :mod:`~jaxenc.analysis.masks`: per-model Benjamini-Hochberg masks
  (:func:`significance_masks`), their union and intersection, and the shares of voxels each
  model predicts best (:func:`best_model_shares`, :func:`joint_best_share`).

Like align, decomp, models and metrics, nothing here reads files or runs feature models;
the experiment runner passes aligned, delayed arrays in.
"""

from jaxenc.analysis.clustering import ClusterResult, best_model_clusters, knn_graph, modularity
from jaxenc.analysis.masks import (
    all_significant,
    any_significant,
    best_model_shares,
    joint_best_share,
    significance_masks,
)
from jaxenc.analysis.sweep import encoder_sweep, pseudo_subject, ridge_sweep, score_prediction

__all__ = [
    "ridge_sweep",
    "encoder_sweep",
    "pseudo_subject",
    "score_prediction",
    "modularity",
    "knn_graph",
    "ClusterResult",
    "best_model_clusters",
    "significance_masks",
    "any_significant",
    "all_significant",
    "best_model_shares",
    "joint_best_share",
]
