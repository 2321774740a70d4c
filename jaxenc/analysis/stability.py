"""How stable the best-model clusters are: adjusted Rand index between labellings.

The best-model map (:func:`jaxenc.analysis.best_model_clusters`) labels each significant voxel
by the model or feature set that predicts it best. Its modularity says whether the labels form
coherent groups; it does not say whether another draw of the data, another fold's models, a
training seed or a clustering setting would give the same labels. The adjusted Rand index
(Hubert & Arabie 1985) measures that agreement between two labellings of the same voxels: 1
for identical partitions (up to renaming the labels), 0 in expectation for labellings
independent of each other, negative below chance.

- :func:`adjusted_rand_index`: two labellings;
- :func:`label_agreement`: every pair of several labellings (seeds, folds, settings);
- :func:`best_model_stability`: the labels recomputed on block-bootstrap resamples of the
  scored rows (the test story's 10-TR blocks, drawn with replacement) against the labels of all
  the rows, i.e. how much of the map the test data pins down;
- :func:`repeat_half_stability`: the labels against the mean of the odd test repeats and
  against that of the even ones (independent noise, the same stimulus): how much of the map
  the measurement noise decides;
- :func:`fold_stability`: the labels of each cross-validation fold's models (a network job
  trains one model per fold on a different share of the training stories, and its test
  prediction averages them) against each other's: how much of the map the training data and
  the fit decide.

The labels do not depend on a clustering seed (the seed draws only the modularity's null) nor
on the neighbour count k (which shapes only the graph the modularity is measured on); across
settings, the run compares the models ranked by r2 = r·|r| with those ranked by r2_cod, and
the labels of each joint encoder of the table with the others' (:func:`label_agreement`).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

import numpy as np

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import NOT_SIGNIFICANT, best_model

__all__ = ["adjusted_rand_index", "label_agreement", "StabilityResult", "best_model_stability",
           "repeat_half_stability", "FoldStability", "fold_stability"]


def _pairs(counts: np.ndarray) -> float:
    # Number of unordered pairs within each group, summed: sum_g C(n_g, 2).
    counts = counts.astype(np.float64)
    return float(np.sum(counts * (counts - 1) / 2))


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labellings of the same items.

    ``ARI = (sum_ij C(n_ij, 2) - E) / ((sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 - E)`` with
    ``n_ij`` the contingency table of the two labellings, ``a_i`` and ``b_j`` its margins and
    ``E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2)`` the index expected under independent
    labellings of the same group sizes. Items labelled -1 (not significant) in either
    labelling are left out. Two labellings that the index cannot tell apart from identical
    (every item alone in both, or all items in one group in both) score 1, as scikit-learn's
    ``adjusted_rand_score``.

    Parameters
    ----------
    labels_a, labels_b : array of int, shape (n_items,)
        Group of each item (any integers; -1 leaves the item out).

    Returns
    -------
    float
        In [-1, 1]; NaN when fewer than 2 items are labelled in both.

    Raises
    ------
    AlignmentError
        Labellings of different shapes, or not 1-D.
    ConfigError
        Labels that are not integers.
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise AlignmentError(f"labellings have shapes {a.shape} and {b.shape}; expected the same (n_items,)")
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise ConfigError(f"labels must be integers, got dtypes {a.dtype} and {b.dtype}")
    keep = (a != NOT_SIGNIFICANT) & (b != NOT_SIGNIFICANT)
    n = int(keep.sum())
    if n < 2:
        return float("nan")
    _, a_codes = np.unique(a[keep], return_inverse=True)
    _, b_codes = np.unique(b[keep], return_inverse=True)
    contingency = np.bincount(a_codes * (b_codes.max() + 1) + b_codes)
    both = _pairs(contingency)
    rows, cols = _pairs(np.bincount(a_codes)), _pairs(np.bincount(b_codes))
    expected = rows * cols / (n * (n - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((both - expected) / (maximum - expected))


def label_agreement(labellings: Mapping[str, np.ndarray]) -> tuple[tuple[str, ...], np.ndarray]:
    """Adjusted Rand index between every pair of labellings of the same voxels.

    Parameters
    ----------
    labellings : mapping of str to array of int, shape (n_voxels,)
        E.g. the best-model labels of each fold's models, training seed or clustering setting
        (-1 for voxels left out).

    Returns
    -------
    names : tuple of str
        The labellings, in the mapping's order.
    ari : ndarray of shape (n_labellings, n_labellings)
        Symmetric, ones on the diagonal.

    Raises
    ------
    ConfigError
        Fewer than 2 labellings.
    AlignmentError
        Labellings of different lengths.
    """
    names = tuple(str(k) for k in labellings)
    if len(names) < 2:
        raise ConfigError(f"label_agreement needs at least 2 labellings, got {len(names)}")
    values = [np.asarray(v) for v in labellings.values()]
    ari = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ari[i, j] = ari[j, i] = adjusted_rand_index(values[i], values[j])
    return names, ari


@dataclasses.dataclass(frozen=True)
class StabilityResult:
    """Best-model labels on resampled rows against the labels of all the rows.

    Attributes
    ----------
    labels : ndarray of int, shape (n_voxels,)
        Best model per voxel on all the rows (-1 outside the mask).
    ari : ndarray of shape (n_resamples,)
        Adjusted Rand index of each resample's labels against ``labels``.
    agreement : ndarray of shape (n_resamples,)
        Share of the labelled voxels whose label the resample keeps.
    """

    labels: np.ndarray
    ari: np.ndarray
    agreement: np.ndarray

    def summary(self) -> dict:
        """JSON-ready numbers: mean, standard deviation (ddof 1) and 5th percentile of the ARI."""
        spread = float(self.ari.std(ddof=1)) if self.ari.size > 1 else float("nan")
        return {"ari_mean": float(self.ari.mean()), "ari_std": spread,
                "ari_p05": float(np.percentile(self.ari, 5)), "agreement_mean": float(self.agreement.mean()),
                "n_resamples": int(self.ari.size)}


def _correlations(y: np.ndarray, predictions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Pearson r per model and voxel on ``rows`` (repeats allowed), 0 where a side is constant.

    y: [n_rows, n_voxels]; predictions: [n_models, n_rows, n_voxels]; returns [n_models, n_voxels].
    """
    yr = y[rows] - y[rows].mean(axis=0)
    pr = predictions[:, rows] - predictions[:, rows].mean(axis=1, keepdims=True)
    num = np.einsum("tv,mtv->mv", yr, pr)
    den = np.sqrt(np.einsum("tv,tv->v", yr, yr) * np.einsum("mtv,mtv->mv", pr, pr))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def best_model_stability(predictions: Mapping[str, np.ndarray], target, significant, *, n_resamples: int = 100,
                         block_size: int = 10, seed: int = 0) -> StabilityResult:
    """Stability of the best-model labels under a block bootstrap of the scored rows.

    The labels are :func:`jaxenc.metrics.best_model` of the models' test correlations on the
    voxels of ``significant``, first on all the rows, then on each resample: the rows cut into
    consecutive blocks of ``block_size`` (a last shorter block kept), blocks drawn with
    replacement up to the same count, so the autocorrelation within a block is kept (as in
    the block-permutation test). A high ARI says the test story pins the map down; a low one
    that another story of the same length would draw another map.

    Parameters
    ----------
    predictions : mapping of str to array of shape (n_rows, n_voxels)
        Per model or feature set, its prediction of the scored rows.
    target : array of shape (n_rows, n_voxels)
        The measured responses of the same rows (e.g. the mean of the test repeats).
    significant : array of bool, shape (n_voxels,)
        Voxels to label.
    n_resamples : int
        Bootstrap resamples.
    block_size : int
        Rows per block (TRs; 10 as in the significance test).
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    StabilityResult

    Raises
    ------
    AlignmentError
        Predictions, target or mask of different shapes.
    ConfigError
        Fewer than 2 models, fewer than 2 blocks, fewer than 2 labelled voxels, or a bad
        ``n_resamples`` / ``block_size``.
    """
    if len(predictions) < 2:
        raise ConfigError(f"best_model_stability needs at least 2 models, got {len(predictions)}")
    y = np.asarray(target, np.float64)
    if y.ndim != 2 or any(np.shape(p) != y.shape for p in predictions.values()):
        shapes = {k: np.shape(v) for k, v in predictions.items()}
        raise AlignmentError(f"predictions {shapes} and target {y.shape} must share one shape (n_rows, n_voxels)")
    stacked = np.stack([np.asarray(p, np.float64) for p in predictions.values()])  # [model, row, voxel]
    significant = np.asarray(significant, bool)
    if significant.shape != (y.shape[1],):
        raise AlignmentError(f"significant has shape {significant.shape}; the target has {y.shape[1]} voxels")
    for name, value in (("n_resamples", n_resamples), ("block_size", block_size)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    starts = np.arange(0, y.shape[0], block_size)
    if starts.size < 2:
        raise ConfigError(f"{y.shape[0]} rows make {starts.size} block of {block_size}; at least 2 are needed")
    if not np.all(np.isfinite(stacked)) or not np.all(np.isfinite(y)):
        raise ConfigError("predictions or target hold NaN or inf")
    labels = np.asarray(best_model(_correlations(y, stacked, np.arange(y.shape[0])), significant))
    if int((labels != NOT_SIGNIFICANT).sum()) < 2:
        raise ConfigError("best_model_stability: fewer than 2 labelled voxels")
    blocks = [np.arange(s, min(s + block_size, y.shape[0])) for s in starts]
    rng = np.random.default_rng(seed)
    ari, agreement = np.empty(n_resamples), np.empty(n_resamples)
    labelled = labels != NOT_SIGNIFICANT
    for i in range(n_resamples):
        rows = np.concatenate([blocks[b] for b in rng.integers(0, len(blocks), len(blocks))])
        resampled = np.asarray(best_model(_correlations(y, stacked, rows), significant))
        ari[i] = adjusted_rand_index(labels, resampled)
        agreement[i] = float(np.mean(resampled[labelled] == labels[labelled]))
    return StabilityResult(labels=labels, ari=ari, agreement=agreement)


def repeat_half_stability(predictions: Mapping[str, np.ndarray], repeats, significant) -> dict:
    """Best-model labels on the mean of the odd test repeats against those on the even ones.

    Each half's labels are :func:`jaxenc.metrics.best_model` of the models' Pearson r with the
    mean of its repeats (1st, 3rd, ... and 2nd, 4th, ...) on the voxels of ``significant``;
    the halves share the stimulus and differ in noise only, so their agreement says how much
    of the map survives a fresh measurement of the same story.

    Parameters
    ----------
    predictions : mapping of str to array of shape (n_rows, n_voxels)
        Per model or feature set, its prediction of the scored rows.
    repeats : array of shape (n_repeats, n_rows, n_voxels)
        The measured test repeats of the same rows (at least 2).
    significant : array of bool, shape (n_voxels,)
        Voxels to label.

    Returns
    -------
    dict
        ``ari_halves`` (adjusted Rand index of the two halves' labels), ``agreement_halves``
        (share of the voxels labelled in both halves that keep their label) and
        ``labels_odd``, ``labels_even`` (arrays of int, shape (n_voxels,), -1 outside the mask).

    Raises
    ------
    AlignmentError
        Predictions, repeats or mask of different shapes.
    ConfigError
        Fewer than 2 models or 2 repeats, or values that are not finite.
    """
    if len(predictions) < 2:
        raise ConfigError(f"repeat_half_stability needs at least 2 models, got {len(predictions)}")
    reps = np.asarray(repeats, np.float64)
    if reps.ndim != 3 or reps.shape[0] < 2:
        raise ConfigError(f"repeats must have shape (n_repeats >= 2, n_rows, n_voxels), got {reps.shape}")
    if any(np.shape(p) != reps.shape[1:] for p in predictions.values()):
        shapes = {k: np.shape(v) for k, v in predictions.items()}
        raise AlignmentError(f"predictions {shapes} and repeats {reps.shape} must share (n_rows, n_voxels)")
    significant = np.asarray(significant, bool)
    if significant.shape != (reps.shape[2],):
        raise AlignmentError(f"significant has shape {significant.shape}; the repeats have {reps.shape[2]} voxels")
    stacked = np.stack([np.asarray(p, np.float64) for p in predictions.values()])  # [model, row, voxel]
    if not np.all(np.isfinite(stacked)) or not np.all(np.isfinite(reps)):
        raise ConfigError("predictions or repeats hold NaN or inf")
    rows = np.arange(reps.shape[1])
    odd, even = (np.asarray(best_model(_correlations(reps[half].mean(axis=0), stacked, rows), significant))
                 for half in (slice(0, None, 2), slice(1, None, 2)))
    both = (odd != NOT_SIGNIFICANT) & (even != NOT_SIGNIFICANT)
    return {"ari_halves": adjusted_rand_index(odd, even),
            "agreement_halves": float(np.mean(odd[both] == even[both])) if both.any() else float("nan"),
            "labels_odd": odd, "labels_even": even}


@dataclasses.dataclass(frozen=True)
class FoldStability:
    """Best-model labels of each fold's models and their pairwise agreement.

    Attributes
    ----------
    labels : ndarray of int, shape (n_folds, n_voxels)
        Per fold, the best feature set (or model) per voxel by its fold model's test r (-1
        outside the mask).
    ari : ndarray of shape (n_folds, n_folds)
        Adjusted Rand index of every pair of folds' labels; symmetric, ones on the diagonal.
    """

    labels: np.ndarray
    ari: np.ndarray

    @property
    def pairs(self) -> np.ndarray:
        """The ARI of each unordered pair of folds, shape (n_folds * (n_folds - 1) / 2,)."""
        return self.ari[np.triu_indices(self.ari.shape[0], 1)]

    def summary(self) -> dict:
        """JSON-ready numbers: mean and minimum of the pairwise ARI, and the fold count."""
        return {"ari_folds_mean": float(np.mean(self.pairs)), "ari_folds_min": float(np.min(self.pairs)),
                "n_folds": int(self.ari.shape[0])}


def fold_stability(fold_predictions: Mapping[str, np.ndarray], target, significant) -> FoldStability:
    """Agreement of the best-model labels of the cross-validation fold models.

    For each fold ``k``, every voxel of ``significant`` is labelled by the model (feature set)
    whose fold-``k`` model's test prediction correlates best with ``target``
    (:func:`jaxenc.metrics.best_model` of Pearson r, the order the paper's r2 = r·|r| gives);
    the labels of every pair of folds are then compared by :func:`adjusted_rand_index`. Fold
    ``k`` of each model must be the same split of the training stories (as the fit stage's
    folds are: one split per subject for every job).

    Parameters
    ----------
    fold_predictions : mapping of str to array of shape (n_folds, n_rows, n_voxels)
        Per model or feature set, each fold model's prediction of the scored rows.
    target : array of shape (n_rows, n_voxels)
        The measured responses of the same rows (e.g. the mean of the test repeats).
    significant : array of bool, shape (n_voxels,)
        Voxels to label.

    Returns
    -------
    FoldStability

    Raises
    ------
    AlignmentError
        Predictions, target or mask of different shapes, or models with different fold counts.
    ConfigError
        Fewer than 2 models or 2 folds, or values that are not finite.
    """
    if len(fold_predictions) < 2:
        raise ConfigError(f"fold_stability needs at least 2 models, got {len(fold_predictions)}")
    y = np.asarray(target, np.float64)
    shapes = {k: np.shape(v) for k, v in fold_predictions.items()}
    if y.ndim != 2 or len(set(shapes.values())) != 1 or next(iter(shapes.values()))[1:] != y.shape:
        raise AlignmentError(f"fold predictions {shapes} must share one shape (n_folds, n_rows, n_voxels) "
                             f"with (n_rows, n_voxels) = the target's {y.shape}")
    n_folds = next(iter(shapes.values()))[0]
    if n_folds < 2:
        raise ConfigError(f"fold_stability needs at least 2 fold models, got {n_folds}")
    significant = np.asarray(significant, bool)
    if significant.shape != (y.shape[1],):
        raise AlignmentError(f"significant has shape {significant.shape}; the target has {y.shape[1]} voxels")
    stacked = np.stack([np.asarray(p, np.float64) for p in fold_predictions.values()])  # [model, fold, row, voxel]
    if not np.all(np.isfinite(stacked)) or not np.all(np.isfinite(y)):
        raise ConfigError("fold predictions or target hold NaN or inf")
    rows = np.arange(y.shape[0])
    labels = np.stack([np.asarray(best_model(_correlations(y, stacked[:, k], rows), significant))
                       for k in range(n_folds)])
    _, ari = label_agreement({str(k): labels[k] for k in range(n_folds)})
    return FoldStability(labels=labels, ari=ari)
