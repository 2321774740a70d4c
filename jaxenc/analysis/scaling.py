"""Data-scaling curves: test-story scores of each encoder against the share of training stories.

The fits are those of :func:`jaxenc.pipeline.scaling.fit_data_scaling` (or the fit stage with
``analyses.data_fractions``): every subject on nested subsets of its training stories. Here the
scores are laid out as curves with their spread over the fold models (:func:`data_curves`,
:func:`fold_mean_r`), and :func:`curve_gaps` finds where one encoder overtakes another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxenc.metrics.scoring import voxel_scores

__all__ = ["DATA_SWEEP", "SUBSET_INFO", "DRAW_INFO", "fold_mean_r", "data_curves", "curve_points", "curve_means",
           "curve_gaps"]

# Name of the data-scaling curves (one per feature set and target: "training data (<features>, <target>)").
DATA_SWEEP = "training data"
# The info key of a model result fitted on a subset: [stories used, training stories of the subject].
SUBSET_INFO = "data_stories"
# The info key of its draw of the nested subsets (0, the first, when absent).
DRAW_INFO = "data_draw"


def fold_mean_r(fold_predictions: np.ndarray, target: np.ndarray, *, trim: int | None = None) -> np.ndarray:
    """Mean r over voxels of each fold model's test-story prediction.

    Parameters
    ----------
    fold_predictions : ndarray of shape (n_folds, n_test, n_voxels)
    target : ndarray of shape (n_test, n_voxels)
        The measured test responses (the mean of the repeats).
    trim : int, optional
        Rows dropped from the start before scoring (:func:`jaxenc.metrics.voxel_scores`).

    Returns
    -------
    ndarray of shape (n_folds,), float64
        Mean of the finite per-voxel Pearson r of each fold model.
    """
    return np.asarray([np.nanmean(voxel_scores(target, p, trim=trim)["r"]) for p in fold_predictions], np.float64)


def data_curves(models: Sequence) -> list[dict]:
    """The data-scaling curves among a run's model results.

    A result fitted on a subset carries ``info["data_stories"] = [k, n]`` and the features
    label ``"<features>@<k>of<n>"`` (``"...d<draw>"`` and ``info["data_draw"]`` for the later
    draws of ``analyses.data_draws``); the result of the same features, model and target on all
    the subject's stories closes its curve at ``x = 1``. ``info["fold_mean_r"]``, where
    present, holds the mean r of each fold model (networks). A subject's draws at one size are
    one row: their mean.

    Parameters
    ----------
    models : sequence of jaxenc.report.ModelResult

    Returns
    -------
    list of dict
        ``{"name", "x_label", "rows"}`` per (features, target), each row ``{"subject", "model",
        "x" (share of the training stories), "label" ("k/n"), "fold_mean_r", "fold_std_r",
        "n_folds" (over the fold models of every draw), "n_draws", "draw_std_r" (standard
        deviation of ``mean_r`` over the draws, 0 for one)}`` and the
        :meth:`jaxenc.metrics.Scores.summary` of the averaged model's scores, averaged over the
        draws; the fold entries are NaN and 0 for ridge (one model per subject).
    """
    draws: dict[tuple, list] = {}
    for m, features, k, n in curve_points(models):
        draws.setdefault((features, m.target, m.subject, m.model, k, n), []).append(m)
    curves: dict[tuple, list] = {}
    for (features, target, subject, model, k, n), ms in draws.items():
        folds = np.concatenate([np.asarray(m.info.get("fold_mean_r", []), np.float64) for m in ms])
        summaries = [m.scores.summary() for m in ms]
        summary = summaries[0] if len(ms) == 1 else {
            key: float(np.mean([s[key] for s in summaries])) for key in summaries[0]}
        curves.setdefault((features, target), []).append({
            "subject": subject, "model": model, "x": k / n, "label": f"{k}/{n}",
            "fold_mean_r": float(folds.mean()) if folds.size else float("nan"),
            "fold_std_r": float(folds.std()) if folds.size else float("nan"), "n_folds": int(folds.size),
            "n_draws": len(ms), "draw_std_r": float(np.std([s["mean_r"] for s in summaries])), **summary})
    return [{"name": f"{DATA_SWEEP} ({features}, {target})", "x_label": "share of the training stories",
             "rows": sorted(rows, key=lambda r: (r["model"], r["subject"], r["x"]))}
            for (features, target), rows in curves.items()]


def curve_points(models: Sequence) -> list[tuple]:
    """The model results on a data-scaling curve, each with its place on it.

    Parameters
    ----------
    models : sequence of jaxenc.report.ModelResult

    Returns
    -------
    list of (ModelResult, str, int, int)
        ``(result, features, k, n)``: fitted on ``k`` of the subject's ``n`` training stories
        (``k = n`` for the table's result on all of them), ``features`` the feature set
        without the subset suffix.
    """
    # (subject, features, model, target) of the curves -> the subject's training stories.
    totals = {(m.subject, m.features.rsplit("@", 1)[0], m.model, m.target): int(m.info[SUBSET_INFO][1])
              for m in models if SUBSET_INFO in m.info}
    out = []
    for m in models:
        if SUBSET_INFO in m.info:
            k, n = m.info[SUBSET_INFO]
            out.append((m, m.features.rsplit("@", 1)[0], int(k), int(n)))
        elif (m.subject, m.features, m.model, m.target) in totals:
            n = totals[m.subject, m.features, m.model, m.target]
            out.append((m, m.features, n, n))
    return out


def curve_means(rows: Sequence[Mapping], value: str = "mean_r") -> dict[str, dict[float, float]]:
    """Per model, ``value`` at each x averaged over subjects.

    Parameters
    ----------
    rows : sequence of mapping
        Curve rows (:func:`data_curves`) with ``model``, ``x`` and ``value``.
    value : str
        The row entry averaged.

    Returns
    -------
    dict of str to dict of float to float
        Model -> x -> mean over the subjects' rows at that x.
    """
    out: dict[str, dict[float, list]] = {}
    for r in rows:
        out.setdefault(r["model"], {}).setdefault(float(r["x"]), []).append(float(r[value]))
    return {model: {x: float(np.mean(v)) for x, v in sorted(xs.items())} for model, xs in out.items()}


def curve_gaps(means: Mapping[str, Mapping[float, float]], above: str, below: str,
               margin: float = 0.0) -> dict:
    """Where encoder ``above`` overtakes encoder ``below`` along a curve.

    Parameters
    ----------
    means : mapping of str to mapping of float to float
        Model -> x -> score (:func:`curve_means`).
    above, below : str
        The two models compared (``above - below``).
    margin : float
        How far above counts as overtaking.

    Returns
    -------
    dict
        ``xs`` (sorted, the x both curves have), ``gaps`` (``above - below`` at each),
        ``crossing``: the smallest x from which every gap is at least ``margin`` while the gap
        at the smallest x is below it (None when ``above`` never overtakes, or leads from the
        start).
    """
    xs = sorted(set(means.get(above, {})) & set(means.get(below, {})))
    gaps = [means[above][x] - means[below][x] for x in xs]
    crossing = None
    if gaps and gaps[0] < margin:
        for i in range(1, len(xs)):
            if all(g >= margin for g in gaps[i:]):
                crossing = xs[i]
                break
    return {"xs": xs, "gaps": gaps, "crossing": crossing}
