"""The evaluate stage: stored predictions -> per-voxel test scores -> analyses -> RunResults.

Every prediction is scored against the test story's repeats with
:func:`jaxenc.pipeline.score_test_story` (correlation with the repeat mean, the paper's r2 =
r·|r|, the coefficient of determination r2_cod, cc_norm, block permutation p and BH-FDR), on
the rows kept after ``evaluate.test_trim``. On top of the scores: the variance partition audio
/ semantic / joint for every model and target fitted on all three feature sets, the clustering
of voxels by best-predicting feature set, sweep curves, and on the synthetic twin the planted
checks.

The partition, the best model per voxel and the clustering compare feature sets by the
paper's r2 (r·|r|) per voxel, not by r2_cod: the paper states its variance explained as r·|r|,
and r·|r| does not depend on the scale or offset of a prediction, which differ between ridge
and the networks (see the README's note on r2_cod) but say nothing about which features
explain a voxel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate_all", "partition_rows", "planted_checks"]

_SETS = ("audio", "semantic", "audio+semantic")


def evaluate_all(exp):
    """Score every stored prediction of ``exp`` and run the analyses; return RunResults."""
    from jaxenc import pipeline
    from jaxenc.experiment.fitting import job_name, table_jobs
    from jaxenc.metrics import cc_max, drop_first_rows
    from jaxenc.report import ModelScores, RunResults

    cfg = exp.config
    ev = cfg.evaluate
    repeats = {s: np.asarray(exp.dataset.test_repeats(s), np.float32) for s in exp.subjects}
    # The test rows every score is computed on (score_test_story drops the same rows).
    scored_rows = {s: drop_first_rows(r, ev.test_trim, axis=1, what="test repeats") for s, r in repeats.items()}
    names = [job_name(job) for job in table_jobs(cfg)]
    missing = [n for n in names if exp.load_prediction(n) is None]
    if missing:
        from jaxenc.errors import ConfigError

        raise ConfigError(f"no stored predictions for {missing}: run `jaxenc fit` first", path=exp.out)
    scores = []
    for name in exp.bar(names, desc="scoring", unit="model"):
        predictions, meta = exp.load_prediction(name)
        info = {k: v for k, v in meta.items() if k not in ("features", "model", "target")}
        for subject in exp.subjects:
            s = pipeline.score_test_story(
                predictions[subject], repeats[subject], trim=ev.test_trim, floor=ev.floor,
                n_permutations=ev.permutations, block_size=ev.block_size, alpha=ev.alpha, seed=cfg.seed)
            scores.append(ModelScores(
                subject=subject, features=meta["features"], model=meta["model"], target=meta["target"],
                r=s.r, r2=s.r2, r2_cod=s.r2_cod, cc_norm=s.cc_norm, p=s.p, significant=s.significant,
                info=info))
    results = RunResults(
        name=cfg.name,
        config=cfg.to_dict(),
        cc_max={s: np.asarray(cc_max(scored_rows[s])) for s in exp.subjects},
        scores=scores,
    )
    if cfg.analyses.partition:
        results.partition = partition_rows(results)
    if cfg.analyses.clustering:
        results.clustering = _clustering(exp, results, scored_rows)
    results.sweeps = _sweeps(results)
    if exp.truth is not None:
        results.planted = planted_checks(exp, results)
    return results


def _by_set(results, subject, model, target) -> dict | None:
    found = {}
    for name in _SETS:
        match = results.find(subject=subject, features=name, model=model, target=target)
        if not match:
            return None
        found[name] = match[0]
    return found


def _partition(sets: dict):
    """``(significant, VariancePartition, best feature set index)`` of one model's three sets,
    classified on the voxels significant for the joint set."""
    from jaxenc.metrics import best_model, variance_partition

    significant = np.asarray(sets["audio+semantic"].significant)
    part = variance_partition(sets["audio"].r2, sets["semantic"].r2, sets["audio+semantic"].r2,
                              significant=significant)
    best = np.asarray(best_model([sets[n].r2 for n in _SETS], significant=significant))
    return significant, part, best


def partition_rows(results) -> list[dict]:
    """Variance partition rows (see :class:`jaxenc.report.RunResults`) for every subject,
    model and target with audio, semantic and audio+semantic scores."""
    from jaxenc.metrics import SHARED, UNIQUE_A, UNIQUE_B

    rows = []
    combos = dict.fromkeys((s.subject, s.model, s.target) for s in results.scores if s.features in _SETS)
    for subject, model, target in combos:
        sets = _by_set(results, subject, model, target)
        if sets is None:
            continue
        significant, part, best = _partition(sets)
        best_part = np.asarray(part.best_part)
        classified = best_part >= 0

        def share(values, code, mask):
            return float(np.mean(values[mask] == code)) if mask.any() else float("nan")

        def mean(values):
            return float(np.nanmean(np.asarray(values)[significant])) if significant.any() else float("nan")

        rows.append({
            "subject": subject, "target": target, "model": model,
            "features_a": "audio", "features_b": "semantic",
            "n_significant": int(significant.sum()),
            "unique_a": mean(part.unique_a), "unique_b": mean(part.unique_b), "shared": mean(part.shared),
            "share_best_unique_a": share(best_part, UNIQUE_A, classified),
            "share_best_unique_b": share(best_part, UNIQUE_B, classified),
            "share_best_shared": share(best_part, SHARED, classified),
            "best_model_share": {n: share(best, i, best >= 0) for i, n in enumerate(_SETS)},
        })
    return rows


def _preferred_model(results, subject, target) -> str | None:
    """The model fitted on all three sets whose audio+semantic fit has the highest mean r."""
    best, best_r = None, -np.inf
    for model in dict.fromkeys(s.model for s in results.scores if s.subject == subject):
        sets = _by_set(results, subject, model, target)
        if sets is not None and np.nanmean(sets["audio+semantic"].r) > best_r:
            best, best_r = model, float(np.nanmean(sets["audio+semantic"].r))
    return best


def _clustering(exp, results, repeats) -> dict:
    from jaxenc.analysis import best_model_clusters

    cfg = exp.config
    target = cfg.table.targets[0]
    out = {}
    for subject in exp.subjects:
        model = _preferred_model(results, subject, target)
        if model is None:
            continue
        sets = _by_set(results, subject, model, target)
        significant = np.asarray(sets["audio+semantic"].significant)
        if significant.sum() < 2 * cfg.analyses.cluster_k:
            continue
        profiles = repeats[subject].mean(axis=0).T  # [voxel, test TR]
        result = best_model_clusters({n: sets[n].r2 for n in _SETS}, significant, profiles,
                                     k=cfg.analyses.cluster_k, seed=cfg.seed)
        out[subject] = {
            "labels": np.asarray(result.labels), "label_names": list(result.label_names),
            "modularity": float(result.modularity), "null_mean": float(result.null_mean),
            "null_std": float(result.null_std), "model": model, "target": target,
        }
    return out


def _sweeps(results) -> list[dict]:
    sweeps: dict[str, list] = {}
    for s in results.scores:
        name = s.info.get("sweep")
        if name:
            sweeps.setdefault(name, []).append({
                "subject": s.subject, "model": s.model, "x": s.info.get("x"), "label": s.info.get("x_label"),
                "mean_r": float(np.nanmean(s.r)), "mean_cc_norm": float(np.nanmean(s.cc_norm)),
                "n_significant": int(np.sum(s.significant)),
            })
    depth = {"mlp": 1, **{f"deepmlp-{n}": n for n in range(2, 17)}}
    rows = [
        {"subject": s.subject, "model": s.model, "x": float(depth[s.model]), "label": s.model,
         "mean_r": float(np.nanmean(s.r)), "mean_cc_norm": float(np.nanmean(s.cc_norm)),
         "n_significant": int(np.sum(s.significant))}
        for s in results.scores if s.model in depth and s.features == "audio+semantic" and not s.info.get("sweep")
    ]
    out = [{"name": name, "x_label": "layer" if name == "semantic layer" else "parameters", "rows": rows_}
           for name, rows_ in sweeps.items()]
    if len({r["x"] for r in rows}) > 1:
        out.append({"name": "depth (audio+semantic)", "x_label": "hidden layers", "rows": rows})
    return out


def planted_checks(exp, results) -> dict:
    """The planted checks of the synthetic twin, per subject (see
    :class:`jaxenc.experiment.config.PlantedConfig`)."""
    from jaxenc.synthetic import VoxelClass

    margins = exp.config.planted
    target = exp.config.table.targets[0]
    out = {}
    for subject in exp.subjects:
        classes = np.asarray(exp.truth.voxel_class[subject])
        checks = {}
        sets = _by_set(results, subject, "ridge", target)
        if sets is not None:
            significant, part, best = _partition(sets)
            audio_over_semantic = np.asarray(part.unique_a) > np.asarray(part.unique_b)

            def share(cls, values, code, mask=None):
                mask = (classes == int(cls)) & (values >= 0 if mask is None else mask)
                return float(np.mean(values[mask] == code)) if mask.any() else float("nan")

            # Unique parts, not the largest part: features extracted from speech carry its
            # envelope in both modalities, so the shared part can legitimately be the largest
            # even where one modality alone adds what the other lacks.
            checks["audio_unique"] = _check(
                share(VoxelClass.AUDIO, audio_over_semantic, True, significant), margins.audio_unique, True,
                "planted audio voxels (significant) where unique audio exceeds unique semantic")
            checks["semantic_unique"] = _check(
                share(VoxelClass.SEMANTIC, audio_over_semantic, False, significant), margins.semantic_unique, True,
                "planted semantic voxels (significant) where unique semantic exceeds unique audio")
            checks["joint_best"] = _check(
                share(VoxelClass.AUDIO_SEMANTIC, best, 2), margins.joint_best, True,
                "planted audio+semantic voxels (significant) best fitted by the joint ridge")
            noise = classes == int(VoxelClass.NOISE)
            checks["noise_significant"] = _check(
                float(np.mean(significant[noise])) if noise.any() else float("nan"), margins.noise_significant,
                False, "planted noise voxels significant for the joint ridge (at most)")
        for modality, cls in (("audio", VoxelClass.AUDIO), ("semantic", VoxelClass.SEMANTIC)):
            fitted = results.find(subject=subject, features=modality, model="ridge", target=target)
            own, noise = classes == int(cls), classes == int(VoxelClass.NOISE)
            if fitted and own.any() and noise.any():
                r = np.asarray(fitted[0].r)
                checks[f"{modality}_selectivity"] = _check(
                    float(np.nanmean(r[own]) - np.nanmean(r[noise])), margins.selectivity, True,
                    f"mean r of the {modality} ridge on planted {modality} voxels minus on noise voxels")
        mlp = results.find(subject=subject, features="audio+semantic", model="mlp", target=target)
        ridge = results.find(subject=subject, features="audio+semantic", model="ridge", target=target)
        inter = classes == int(VoxelClass.INTERACTION)
        if mlp and ridge and inter.any():
            gain = float(np.nanmean(mlp[0].r[inter]) - np.nanmean(ridge[0].r[inter]))
            checks["interaction_gain"] = _check(
                gain, margins.interaction_gain, True,
                "mean r on planted interaction voxels: audio+semantic MLP minus ridge")
        mllinear = results.find(subject=subject, features="audio+semantic", model="mllinear", target=target)
        if mlp and mllinear and inter.any() and margins.interaction_nonlinearity is not None:
            gain = float(np.nanmean(mlp[0].r[inter]) - np.nanmean(mllinear[0].r[inter]))
            checks["interaction_nonlinearity"] = _check(
                gain, margins.interaction_nonlinearity, True,
                "mean r on planted interaction voxels: audio+semantic MLP minus MLLinear (same "
                "network without its activation)")
        out[subject] = checks
    return out


def _check(value: float, margin: float, at_least: bool, what: str) -> dict:
    passed = bool(np.isfinite(value) and (value >= margin if at_least else value <= margin))
    return {"value": value, "margin": float(margin), "passed": passed,
            "what": f"{what} ({'>=' if at_least else '<='} margin)"}
