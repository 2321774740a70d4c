"""Sweep curves: test-story scores against a layer, a model size, an audio window or a depth.

The layer, model-size and audio-window sweeps of "Mind the Gap" fit the same encoder to many feature sources
of the same stories; the depth ablation fits the MLP family at several depths. Each fit is an
ordinary job of :func:`jaxenc.pipeline.fit_predict`, scored by :func:`jaxenc.metrics.score`;
:func:`sweep_curves` lays the scores out as curves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxenc.analysis.scaling import data_curves
from jaxenc.featuresets import JOINT
from jaxenc.models.registry import encoder

__all__ = ["LAYER_SWEEP", "MODEL_SWEEP", "WINDOW_SWEEP", "DEPTH_SWEEP", "sweep_curves", "curve_argmax"]

# Names of the sweeps (a model result's info["sweep"] names its sweep and x its position).
LAYER_SWEEP = "semantic layer"
MODEL_SWEEP = "semantic model"
WINDOW_SWEEP = "audio window"
DEPTH_SWEEP = f"depth ({JOINT})"
_X_LABELS = {LAYER_SWEEP: "layer", MODEL_SWEEP: "parameters", WINDOW_SWEEP: "seconds of audio context",
             DEPTH_SWEEP: "hidden layers"}


def _row(m, x: float, label: str) -> dict:
    return {"subject": m.subject, "model": m.model, "x": float(x), "label": label, **m.scores.summary()}


def sweep_curves(models: Sequence) -> list[dict]:
    """The sweeps among a run's model results.

    A result belongs to a sweep when its ``info`` names one (``info["sweep"]``, at
    ``info["x"]``, labelled ``info["x_label"]``); the depth curve gathers the joint-feature fits
    of the MLP family (:attr:`jaxenc.models.EncoderSpec.depth`) outside other sweeps, when they
    span several depths; the data-scaling curves are those of
    :func:`jaxenc.analysis.scaling.data_curves`.

    Parameters
    ----------
    models : sequence of jaxenc.report.ModelResult

    Returns
    -------
    list of dict
        ``{"name", "x_label", "rows"}``, each row ``{"subject", "model", "x", "label"}`` and the
        :meth:`jaxenc.metrics.Scores.summary` of its scores.
    """
    curves: dict[str, list] = {}
    for m in models:
        name = m.info.get("sweep")
        if name:
            curves.setdefault(name, []).append(_row(m, m.info.get("x"), m.info.get("x_label")))
    # Stored results name their encoder; each name is parsed once, here.
    depths = {name: encoder(name).depth for name in {m.model for m in models}}
    depth = [_row(m, depths[m.model], m.model) for m in models
             if m.features == JOINT and not m.info.get("sweep") and depths[m.model] is not None]
    if len({row["x"] for row in depth}) > 1:
        curves[DEPTH_SWEEP] = depth
    return ([{"name": name, "x_label": _X_LABELS.get(name, "x"), "rows": rows} for name, rows in curves.items()]
            + data_curves(models))


def curve_argmax(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Where a sweep curve peaks, and by how much it leads the next best point.

    Parameters
    ----------
    x : sequence of float, length n_points
        Positions on the sweep (layers, seconds), any order.
    y : sequence of float, length n_points
        The score at each (e.g. mean r over some voxels); NaN points are ignored.

    Returns
    -------
    x_best : float
        The position of the highest score (the first of equal ones, in ``x`` order).
    lead : float
        Its score minus the second highest (NaN with fewer than 2 finite points).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(y)
    if not keep.any():
        return float("nan"), float("nan")
    order = np.argsort(x[keep], kind="stable")
    xs, ys = x[keep][order], y[keep][order]
    best = int(np.argmax(ys))
    runner_up = np.delete(ys, best)
    return float(xs[best]), float(ys[best] - runner_up.max()) if runner_up.size else float("nan")
