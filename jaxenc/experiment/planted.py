"""The planted checks: what a run on the synthetic twin must recover, within the config's margins.

:func:`planted_checks` compares a run's scores with the planted voxel classes of
:class:`jaxenc.synthetic.SyntheticTruth`, within the margins of
:class:`~jaxenc.experiment.sections.PlantedConfig`; :func:`class_means` tabulates every model's
scores per planted class. The twin itself (config, writer, truth) is :mod:`jaxenc.synthetic`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from jaxenc.analysis.partition import by_feature_set, partition_sets
from jaxenc.analysis.scaling import curve_gaps, curve_means, curve_points
from jaxenc.analysis.sweeps import LAYER_SWEEP, WINDOW_SWEEP, curve_argmax
from jaxenc.featuresets import AUDIO, JOINT, SEMANTIC
from jaxenc.models.registry import encoder
from jaxenc.synthetic import CLASS_NAMES, VoxelClass
from jaxenc.synthetic.properties import PLANTED_LAYER_BASE

__all__ = ["CHECK_NAMES", "planted_checks", "class_means"]

# Every planted check, by the name the report gives it.
CHECK_NAMES = (
    "audio_unique", "semantic_unique", "joint_best", "noise_significant", "audio_selectivity",
    "semantic_selectivity", "interaction_gain", "interaction_nonlinearity", "interaction_share_auc",
    "interaction_share_linear", "best_window", "best_layer", "depth_gain_full_data", "depth_gain_small_data",
    "small_data_ridge_over_mlp", "small_data_mlp_over_deeper",
)


def _check(value: float, margin: float, at_least: bool, what: str) -> dict:
    passed = bool(np.isfinite(value) and (value >= margin if at_least else value <= margin))
    return {"value": value, "margin": float(margin), "passed": passed,
            "what": f"{what} ({'>=' if at_least else '<='} margin)"}


def _mean_r(results, subject, features, model, target, voxels):
    """Mean r of a model over some voxels, in the scores' dtype (None if absent)."""
    found = results.find(subject=subject, features=features, model=model, target=target)
    return np.nanmean(found[0].scores.r[voxels]) if found and voxels.any() else None


def planted_checks(margins, truth, results, target: str) -> dict:
    """The planted checks of the synthetic twin, per subject.

    Parameters
    ----------
    margins : jaxenc.experiment.sections.PlantedConfig
    truth : jaxenc.synthetic.SyntheticTruth
    results : jaxenc.report.RunResults
    target : str
        The target whose models are checked (the table's first).

    Returns
    -------
    dict
        Subject -> check -> ``{"value", "margin", "passed", "what"}``, and ``"skipped": True``
        for the checks ``margins.skip`` names (computed, not counted).
    """
    out = {}
    for subject in results.subjects:
        classes = np.asarray(truth.voxel_class[subject])
        noise = classes == int(VoxelClass.NOISE)
        checks = {}
        sets = by_feature_set(results.models, subject, "ridge", target)
        if sets is not None:
            p = partition_sets(sets)
            audio_over_semantic = np.asarray(p.parts.unique_a) > np.asarray(p.parts.unique_b)

            def share(cls, values, code, mask=None, classes=classes):
                mask = (classes == int(cls)) & (values >= 0 if mask is None else mask)
                return float(np.mean(values[mask] == code)) if mask.any() else float("nan")

            # Unique parts, not the largest part: features extracted from speech carry its
            # envelope in both modalities, so the shared part can legitimately be the largest
            # even where one modality alone adds what the other lacks.
            checks["audio_unique"] = _check(
                share(VoxelClass.AUDIO, audio_over_semantic, True, p.significant), margins.audio_unique, True,
                "planted audio voxels (significant) where unique audio exceeds unique semantic")
            checks["semantic_unique"] = _check(
                share(VoxelClass.SEMANTIC, audio_over_semantic, False, p.significant), margins.semantic_unique,
                True, "planted semantic voxels (significant) where unique semantic exceeds unique audio")
            checks["joint_best"] = _check(
                share(VoxelClass.AUDIO_SEMANTIC, p.best, 2), margins.joint_best, True,
                "planted audio+semantic voxels (significant) best fitted by the joint ridge")
            checks["noise_significant"] = _check(
                float(np.mean(p.significant[noise])) if noise.any() else float("nan"), margins.noise_significant,
                False, "planted noise voxels significant for the joint ridge (at most)")
        for modality, cls in ((AUDIO, VoxelClass.AUDIO), (SEMANTIC, VoxelClass.SEMANTIC)):
            own = _mean_r(results, subject, modality, "ridge", target, classes == int(cls))
            rest = _mean_r(results, subject, modality, "ridge", target, noise)
            if own is not None and rest is not None:
                checks[f"{modality}_selectivity"] = _check(
                    float(own - rest), margins.selectivity, True,
                    f"mean r of the {modality} ridge on planted {modality} voxels minus on noise voxels")
        inter = classes == int(VoxelClass.INTERACTION)
        mlp = _mean_r(results, subject, JOINT, "mlp", target, inter)
        ridge = _mean_r(results, subject, JOINT, "ridge", target, inter)
        if mlp is not None and ridge is not None:
            checks["interaction_gain"] = _check(
                float(mlp - ridge), margins.interaction_gain, True,
                "mean r on planted interaction voxels: audio+semantic MLP minus ridge")
        mllinear = _mean_r(results, subject, JOINT, "mllinear", target, inter)
        if mlp is not None and mllinear is not None and margins.interaction_nonlinearity is not None:
            checks["interaction_nonlinearity"] = _check(
                float(mlp - mllinear), margins.interaction_nonlinearity, True,
                "mean r on planted interaction voxels: audio+semantic MLP minus MLLinear (same "
                "network without its activation)")
        share = results.interactions.get(subject, {}).get(f"mlp/{target}")
        if share is not None:
            linear = np.isin(classes, [int(VoxelClass.AUDIO), int(VoxelClass.SEMANTIC),
                                       int(VoxelClass.AUDIO_SEMANTIC)])
            if margins.interaction_share_auc is not None:
                checks["interaction_share_auc"] = _check(
                    _auc(share[inter], share[linear]), margins.interaction_share_auc, True,
                    "AUC of the audio+semantic MLP's interaction share per voxel: planted interaction "
                    "voxels against the linear ones")
            if margins.interaction_share_linear is not None:
                checks["interaction_share_linear"] = _check(
                    float(np.median(share[linear])) if linear.any() else float("nan"),
                    margins.interaction_share_linear, False,
                    "median interaction share of the audio+semantic MLP on the planted linear voxels")
        checks.update(_sweep_checks(margins, truth, results, subject, classes))
        checks.update(_scaling_checks(margins, results, subject, target, inter))
        unknown = set(checks) - set(CHECK_NAMES)
        if unknown:
            raise AssertionError(f"planted checks missing from CHECK_NAMES: {sorted(unknown)}")
        for name in set(margins.skip) & set(checks):
            checks[name]["skipped"] = True
        out[subject] = checks
    return out


def _sweep_checks(margins, truth, results, subject: str, classes: np.ndarray) -> dict:
    """``best_window`` and ``best_layer``: the sweep curve (mean r of its ridge fits on the planted
    audio, or semantic, voxels) peaks within ``margins.sweep_steps`` grid steps of the planted
    audio time scale (``audio_time_scale`` seconds) or of the planted language model's layer
    averaging ``semantic_context`` words (``log4`` of it); only where the twin plants one, and the
    layer check only on the planted language model's layers (a real model's layers have no
    planted counterpart)."""
    swept = {m.info.get("sweep") for m in results.find(subject=subject)}
    if margins.sweep_steps is None or not swept & {WINDOW_SWEEP, LAYER_SWEEP}:
        return {}
    config = truth.config
    planted = {
        "best_window": (WINDOW_SWEEP, config.audio_time_scale, VoxelClass.AUDIO, False),
        "best_layer": (LAYER_SWEEP, np.log(config.semantic_context) / np.log(PLANTED_LAYER_BASE),
                       VoxelClass.SEMANTIC, True),
    }
    checks = {}
    for name, (sweep, x_planted, cls, planted_only) in planted.items():
        voxels = classes == int(cls)
        rows = [m for m in results.find(subject=subject) if m.info.get("sweep") == sweep
                and (m.info.get("source") == "planted" or not planted_only)]
        if not x_planted > 0 or len(rows) < 2 or not voxels.any():
            continue
        x = np.array([m.info["x"] for m in rows], np.float64)
        y = np.array([np.nanmean(m.scores.r[voxels]) for m in rows], np.float64)
        best, lead = curve_argmax(x, y)
        grid = np.sort(x)
        steps = abs(int(np.searchsorted(grid, best)) - int(np.argmin(np.abs(grid - x_planted))))
        checks[name] = _check(
            float(steps), margins.sweep_steps, False,
            f"grid steps between the {sweep} sweep's best point on planted {CLASS_NAMES[int(cls)]} voxels "
            f"({best:g}, mean r {y[x == best][0]:.3f}, {lead:.3f} above the next) and the planted "
            f"{x_planted:g}")
    return checks


def _scaling_checks(margins, results, subject: str, target: str, inter: np.ndarray) -> dict:
    """The data-scaling checks of a subject (analyses.data_fractions): the deeper MLPs against
    the MLP on the planted interaction voxels along the curve, and the paper's ordering at the
    smallest subset on all voxels; the curve crossing is named in the first check's text."""
    points = [(m, k / n) for m, features, k, n in curve_points(results.models)
              if m.subject == subject and m.target == target and features == JOINT]
    deeper = sorted({m.model for m, _ in points if (encoder(m.model).depth or 0) > 1})
    checks = {}
    if not points or "mlp" not in {m.model for m, _ in points}:
        return checks
    on_inter = curve_means([{"model": m.model, "x": x, "r": np.nanmean(m.scores.r[inter]) if inter.any() else np.nan}
                            for m, x in points], "r")
    on_all = curve_means([{"model": m.model, "x": x, "r": np.nanmean(m.scores.r)} for m, x in points], "r")
    xs = sorted(on_all["mlp"])
    if deeper and inter.any():
        best = max(deeper, key=lambda d: on_inter[d][xs[-1]])
        gaps = curve_gaps(on_inter, best, "mlp", margins.depth_gain_full_data or 0.0)
        crossing = "never" if gaps["crossing"] is None else f"from {gaps['crossing']:.3g} of the stories"
        if margins.depth_gain_full_data is not None:
            checks["depth_gain_full_data"] = _check(
                float(gaps["gaps"][-1]), margins.depth_gain_full_data, True,
                f"mean r on planted interaction voxels, all training stories: {best} minus the MLP (it "
                f"overtakes the MLP {crossing}; gaps {', '.join(f'{g:+.3f}' for g in gaps['gaps'])} at "
                f"{', '.join(f'{x:.3g}' for x in gaps['xs'])})")
        if margins.depth_gain_small_data is not None:
            checks["depth_gain_small_data"] = _check(
                float(gaps["gaps"][0]), margins.depth_gain_small_data, False,
                f"mean r on planted interaction voxels, {xs[0]:.3g} of the training stories: {best} minus the MLP")
    if margins.small_data_order is not None and "ridge" in on_all and deeper:
        small = xs[0]
        best = max(deeper, key=lambda d: on_all[d][small])
        checks["small_data_ridge_over_mlp"] = _check(
            float(on_all["ridge"][small] - on_all["mlp"][small]), margins.small_data_order, True,
            f"mean r on all voxels, {small:.3g} of the training stories: ridge minus the MLP")
        checks["small_data_mlp_over_deeper"] = _check(
            float(on_all["mlp"][small] - on_all[best][small]), margins.small_data_order, True,
            f"mean r on all voxels, {small:.3g} of the training stories: the MLP minus {best} (the best deeper MLP)")
    return checks


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of scores separating ``positive`` from ``negative`` (ties 1/2).

    The Mann-Whitney form: the share of (positive, negative) pairs ordered correctly.
    """
    if not positive.size or not negative.size:
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = positive.size, negative.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def class_means(truth, results) -> list[dict]:
    """Mean r and r2 (r·|r|) of every model on each planted voxel class.

    Returns
    -------
    list of dict
        ``{"subject", "model", "voxels", "n_voxels", "mean_r", "mean_r2"}`` per subject, model
        and class present.
    """
    rows = []
    for m in results.models:
        classes = np.asarray(truth.voxel_class[m.subject])
        for code, name in enumerate(CLASS_NAMES):
            mask = classes == code
            if mask.any():
                rows.append({"subject": m.subject, "model": m.model, "voxels": name, "n_voxels": int(mask.sum()),
                             "mean_r": float(np.nanmean(m.scores.r[mask])),
                             "mean_r2": float(np.nanmean(m.scores.r2[mask]))})
    return rows
