"""The run report: one self-contained HTML file and one Markdown file with PNG figures.

Every number in a table is taken from :meth:`jaxenc.metrics.Scores.summary` of the saved arrays (or from
the run's saved partition, sweep, clustering and planted rows), averaged over subjects where
the table says so, and formatted once by the functions below, so HTML, Markdown and figures
agree to the digit. Sections whose data the run lacks are replaced by a one-line note.

(Over 450 lines: the formatting functions, one builder per report section and the two writers,
HTML and Markdown, of the same section list; kept together so that both formats read one list.)
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from jaxenc.errors import ConfigError
from jaxenc.featuresets import JOINT
from jaxenc.report import figures
from jaxenc.report.flatmaps import render_flatmaps
from jaxenc.report.results import RunResults, slug
from jaxenc.store import RunStore

__all__ = [
    "write_report",
    "model_table",
    "relative_gain",
    "fmt_r",
    "fmt_percent",
    "fmt_count",
    "fmt_gain",
    "BASELINE",
]

# The (features, model) every other row's relative gain is measured against, per target.
BASELINE = ("semantic", "ridge")
# The model pair of the per-voxel scatter: linear baseline and its nonlinear counterpart.
SCATTER_MODELS = ("ridge", "mlp")
FORMATS = ("html", "md")
NA = "n/a"
# Column headers of the two r² of the tables: the paper's (Table 1) and the coefficient of
# determination.
R2_HEADER = "mean r² = r·|r| (%)"
R2_COD_HEADER = "coef. of determination (%)"


def fmt_r(value: float) -> str:
    """A correlation with 3 decimals, ``"n/a"`` for NaN."""
    return NA if _isnan(value) else f"{value:.3f}"


def fmt_percent(value: float, digits: int = 1) -> str:
    """A fraction shown in percent (``0.1234 -> "12.3"``), ``"n/a"`` for NaN."""
    return NA if _isnan(value) else f"{100.0 * value:.{digits}f}"


def fmt_count(value: float) -> str:
    """A count: whole numbers as integers, averages with one decimal, ``"n/a"`` for NaN."""
    if _isnan(value):
        return NA
    return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"


def fmt_gain(value: float) -> str:
    """A relative gain in percent with its sign, as the paper states it (``"+17.2%"``)."""
    return NA if _isnan(value) else f"{value:+.1f}%"


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _nanmean(values) -> float:
    values = np.asarray([v for v in values if not _isnan(v)], dtype=float)
    return float(values.mean()) if values.size else math.nan


def relative_gain(mean_r_model: float, mean_r_baseline: float) -> float:
    """Relative gain in mean correlation over a baseline, in percent.

    Parameters
    ----------
    mean_r_model, mean_r_baseline : float
        Mean test-story r of the model and of the baseline.

    Returns
    -------
    float
        ``(mean_r_model / mean_r_baseline - 1) * 100``; NaN when the baseline is 0 or NaN.
    """
    if _isnan(mean_r_model) or _isnan(mean_r_baseline) or mean_r_baseline == 0:
        return math.nan
    return (mean_r_model / mean_r_baseline - 1.0) * 100.0


def model_table(results: RunResults, top_k: int = 1000) -> list[dict]:
    """The run's Table 1: per features x model x target, summaries averaged over subjects.

    Parameters
    ----------
    results : RunResults
    top_k : int, default 1000
        Voxels averaged in ``top_k_mean_r``.

    Returns
    -------
    list of dict
        In order of first appearance: ``features``, ``model``, ``target``, ``subjects`` (list),
        ``mean_r``, ``mean_r2`` (the paper's r·|r|), ``mean_r2_cod`` (coefficient of
        determination), ``mean_cc_norm``, ``top_k_mean_r``, ``n_significant`` (means
        over subjects of the per-subject summaries, NaN subjects ignored), and ``gain`` (percent
        over the ``semantic | ridge`` row of the same target, computed on the subjects both
        rows have; NaN without a baseline) with ``gain_subjects_differ`` (bool).
    """
    per_subject = results.table(top_k)
    keys = list(dict.fromkeys((r["features"], r["model"], r["target"]) for r in per_subject))
    groups = {key: [r for r in per_subject if (r["features"], r["model"], r["target"]) == key]
              for key in keys}
    rows = []
    for (features, model, target), group in groups.items():
        row = {"features": features, "model": model, "target": target,
               "subjects": [r["subject"] for r in group]}
        for stat in ("mean_r", "mean_r2", "mean_r2_cod", "mean_cc_norm", "top_k_mean_r", "n_significant"):
            row[stat] = _nanmean(r[stat] for r in group)
        row["top_k"] = top_k
        baseline = groups.get((*BASELINE, target))
        row["gain"], row["gain_subjects_differ"] = math.nan, False
        if baseline is not None and (features, model) != BASELINE:
            base_r = {r["subject"]: r["mean_r"] for r in baseline}
            common = [r for r in group if r["subject"] in base_r]
            row["gain"] = relative_gain(
                _nanmean(r["mean_r"] for r in common),
                _nanmean(base_r[r["subject"]] for r in common),
            )
            row["gain_subjects_differ"] = set(base_r) != set(row["subjects"])
        rows.append(row)
    return rows


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    # "l" or "r" per column: text left, numbers right.
    align: list[str]


@dataclass
class _Figure:
    name: str
    png: bytes
    caption: str


@dataclass
class _Code:
    title: str
    text: str
    language: str


@dataclass
class _Section:
    title: str
    # Paragraphs (str), tables and figures, in order.
    blocks: list = field(default_factory=list)
    note: str | None = None


def _header(results: RunResults) -> _Section:
    section = _Section("Run")
    section.blocks.append(
        f"Run {results.name!s}, report written "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}."
    )
    summary = _config_summary(results.config)
    if summary:
        section.blocks.append(_Table(["setting", "value"], summary, ["l", "l"]))
    if results.timings:
        rows = [[str(stage), f"{float(sec):.1f}"] for stage, sec in results.timings.items()]
        rows.append(["total", f"{sum(float(s) for s in results.timings.values()):.1f}"])
        section.blocks.append(_Table(["stage", "wall time (s)"], rows, ["l", "r"]))
    else:
        section.blocks.append("No timings recorded.")
    section.blocks.append(_Code("Full config", json.dumps(results.config, indent=1), "json"))
    return section


# Config entries shown in the header, by the last part of their dotted key.
_SUMMARY_KEYS = ("data_root", "root", "synthetic", "preset", "subjects", "features", "models",
                 "targets", "seed")


def _config_summary(config: dict) -> list[list[str]]:
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk("", config)
    rows = []
    for key, value in flat.items():
        if key.rsplit(".", 1)[-1] in _SUMMARY_KEYS:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append([key, shown])
    return rows


def _models_section(results: RunResults, top_k: int) -> list[_Section]:
    if not results.models:
        return [_Section("Encoding models", note="skipped: no model scores in this run")]
    rows = model_table(results, top_k)
    has_baseline = any((r["features"], r["model"]) == BASELINE for r in rows)
    headers = ["features", "model", "target", "subjects", "mean r", R2_HEADER, R2_COD_HEADER,
               "mean cc_norm (%)", f"top-{top_k} r", "n significant",
               f"gain vs {' | '.join(BASELINE)}"]
    table_rows = []
    for r in rows:
        if (r["features"], r["model"]) == BASELINE:
            gain = "baseline"
        else:
            gain = fmt_gain(r["gain"]) + (" †" if r["gain_subjects_differ"] else "")
        table_rows.append([r["features"], r["model"], r["target"], str(len(r["subjects"])),
                           fmt_r(r["mean_r"]), fmt_percent(r["mean_r2"], 2),
                           fmt_percent(r["mean_r2_cod"], 2), fmt_percent(r["mean_cc_norm"], 1),
                           fmt_r(r["top_k_mean_r"]), fmt_count(r["n_significant"]), gain])
    main = _Section("Encoding models (Table 1)")
    main.blocks.append(
        "Test-story scores averaged over the subjects each row has (per-voxel means first, "
        "NaN voxels ignored), on the test-story rows kept after the trim; r², the coefficient "
        "of determination and cc_norm in percent; n significant after FDR correction. r² is "
        "the paper's, the mean over voxels of r·|r|; the coefficient of determination "
        "(1 − SS_res / SS_tot) also charges a prediction for its scale and offset. "
        "Gain: (mean r / mean r of the semantic ridge baseline of the same target − 1) × 100."
    )
    main.blocks.append(_Table(headers, table_rows, ["l"] * 3 + ["r"] * 8))
    if not has_baseline:
        main.blocks.append(f"No {' | '.join(BASELINE)} rows: relative gains not computed.")
    if any(r["gain_subjects_differ"] for r in rows):
        main.blocks.append("† gain computed on the subjects shared with the baseline only.")
    per = _Section("Encoding models per subject")
    per.blocks.append(_Table(
        ["subject", "features", "model", "target", "mean r", R2_HEADER, R2_COD_HEADER,
         "mean cc_norm (%)", f"top-{top_k} r", "n significant", "n voxels"],
        [[r["subject"], r["features"], r["model"], r["target"], fmt_r(r["mean_r"]),
          fmt_percent(r["mean_r2"], 2), fmt_percent(r["mean_r2_cod"], 2),
          fmt_percent(r["mean_cc_norm"], 1), fmt_r(r["top_k_mean_r"]),
          fmt_count(r["n_significant"]), fmt_count(r["n_voxels"])]
         for r in results.table(top_k)],
        ["l"] * 4 + ["r"] * 7,
    ))
    nonfinite = [f"{r['subject']} {r['features']} | {r['model']} | {r['target']}: {r['n_nonfinite']} of {r['n_voxels']}"
                 for r in results.table(top_k) if r["n_nonfinite"]]
    if nonfinite:
        per.blocks.append("Voxels without a finite score (a constant or non-finite prediction or response), left "
                          "out of every mean: " + "; ".join(nonfinite) + ".")
    bars = _Section("Model comparison")
    bars.blocks.append(_Figure(
        "models", figures.to_png(figures.model_bars(results.table(top_k), rows)),
        "Mean test-story r (top) and cc_norm in % (bottom) per feature space and model; bars "
        "are means over subjects, points single subjects.",
    ))
    return [main, per, bars]


def _scatter_section(results: RunResults) -> _Section:
    section = _Section(f"Per-voxel {SCATTER_MODELS[0]} vs {SCATTER_MODELS[1]}")
    pairs = []
    for linear in results.find(model=SCATTER_MODELS[0]):
        match = results.find(subject=linear.subject, features=linear.features,
                             model=SCATTER_MODELS[1], target=linear.target)
        if match:
            pairs.append((f"{linear.subject}: {linear.features}, {linear.target}", linear,
                          match[0]))
    if not pairs:
        section.note = (f"skipped: no features and target scored by both {SCATTER_MODELS[0]} "
                        f"and {SCATTER_MODELS[1]}")
        return section
    section.blocks.append(_Figure(
        "scatter", figures.to_png(figures.linear_vs_mlp_scatter(pairs)),
        f"Test-story r per voxel, {SCATTER_MODELS[0]} (x) against {SCATTER_MODELS[1]} (y); "
        "filled: significant for either model; dashed: equal performance.",
    ))
    return section


def _partition_section(results: RunResults) -> _Section:
    section = _Section("Variance partition")
    if not results.partition:
        section.note = "skipped: no variance partition in this run"
        return section
    section.blocks.append(
        "Among voxels significant for the joint model: shares best explained by each part, and "
        "the mean r² (the paper's r·|r|) of each part (set-theoretic partition, in %)."
    )
    rows = []
    for p in results.partition:
        best = p.get("best_model_share") or {}
        rows.append([
            str(p["subject"]), str(p["target"]), str(p["model"]),
            f"{p['features_a']} / {p['features_b']}", fmt_count(p["n_significant"]),
            fmt_percent(p["unique_a"], 2), fmt_percent(p["unique_b"], 2),
            fmt_percent(p["shared"], 2), fmt_percent(p["share_best_unique_a"]),
            fmt_percent(p["share_best_unique_b"]), fmt_percent(p["share_best_shared"]),
            "; ".join(f"{k} {fmt_percent(v)}" for k, v in best.items()) or NA,
        ])
    section.blocks.append(_Table(
        ["subject", "target", "model", "a / b", "n significant", "unique a r² (%)",
         "unique b r² (%)", "shared r² (%)", "best unique a (%)", "best unique b (%)",
         "best shared (%)", "best model share (%)"],
        rows, ["l"] * 4 + ["r"] * 7 + ["l"],
    ))
    groups = {}
    for p in results.partition:
        groups.setdefault((p["target"], p["model"], p["features_a"], p["features_b"]), []).append(p)
    for i, ((target, model, a, b), group) in enumerate(groups.items(), start=1):
        section.blocks.append(_Figure(
            f"partition-{i}-{slug(f'{target} {model}')}",
            figures.to_png(figures.partition_bars(group)),
            f"Variance partition of {a} and {b}, {model} on {target}, per subject.",
        ))
    return section


def _noise_ceiling_section(results: RunResults) -> _Section:
    section = _Section("Noise ceiling")
    if not results.cc_max:
        section.note = "skipped: no noise ceiling in this run"
        return section
    rows = []
    for subject, values in results.cc_max.items():
        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values)]
        rows.append([subject, fmt_count(values.size), fmt_count(finite.size),
                     fmt_r(float(finite.mean()) if finite.size else math.nan),
                     fmt_r(float(np.median(finite)) if finite.size else math.nan)])
    section.blocks.append(_Table(
        ["subject", "n voxels", "n defined", "mean cc_max", "median cc_max"], rows,
        ["l", "r", "r", "r", "r"],
    ))
    section.blocks.append(_Figure(
        "noise-ceiling", figures.to_png(figures.noise_ceiling_hist(results.cc_max)),
        "Noise ceiling cc_max per voxel (Schoppe et al. 2016), from the test-story repeats.",
    ))
    return section


def _sweeps_section(results: RunResults) -> _Section:
    section = _Section("Sweeps")
    if not results.sweeps:
        section.note = "skipped: no sweeps in this run"
        return section
    for i, sweep in enumerate(results.sweeps, start=1):
        if any("fold_mean_r" in r for r in sweep["rows"]):
            # A data-scaling curve (jaxenc.analysis.scaling.data_curves): with the fold spread.
            _scaling_blocks(section, i, sweep)
            continue
        section.blocks.append(f"{sweep['name']} (mean r on the test story)")
        rows = sweep["rows"]
        subjects = list(dict.fromkeys(r["subject"] for r in rows))
        table_rows = []
        for model, x in dict.fromkeys((r["model"], r["x"]) for r in rows):
            by_subject = {r["subject"]: r["mean_r"] for r in rows
                          if (r["model"], r["x"]) == (model, x)}
            table_rows.append([str(model), str(x)]
                              + [fmt_r(by_subject.get(s, math.nan)) for s in subjects]
                              + [fmt_r(_nanmean(by_subject.values()))])
        section.blocks.append(_Table(
            ["model", str(sweep.get("x_label", "x"))] + subjects + ["mean"], table_rows,
            ["l", "l"] + ["r"] * (len(subjects) + 1),
        ))
        section.blocks.append(_Figure(
            f"sweep-{i}-{slug(sweep['name'])}", figures.to_png(figures.sweep_lines(sweep)),
            f"{sweep['name']}: mean test-story r against {sweep.get('x_label', 'x')}; thin "
            "lines subjects, bold line their mean.",
        ))
    return section


def _scaling_blocks(section: _Section, i: int, sweep: dict) -> None:
    """A data-scaling curve's table (mean r per subject, and the fold models' spread) and figure."""
    rows = sweep["rows"]
    subjects = list(dict.fromkeys(r["subject"] for r in rows))
    # Rows of runs written before the draws have no draw entries: one draw.
    drawn = any(r.get("n_draws", 1) > 1 for r in rows)
    section.blocks.append(f"{sweep['name']}: mean r on the test story of the fold models' average per subject, "
                          "and each fold model's own mean r, mean +- std over the folds (averaged over subjects; "
                          "ridge: one model per subject, no folds)"
                          + ("; a subset's mean r is that of its draws, and 'draws' gives how many and the std "
                             "of a subject's mean r over them (averaged over subjects)" if drawn else ""))
    table_rows = []
    for model, x in dict.fromkeys((r["model"], r["x"]) for r in rows):
        here = [r for r in rows if (r["model"], r["x"]) == (model, x)]
        by_subject = {r["subject"]: r["mean_r"] for r in here}
        fold_mean, fold_std = _nanmean(r["fold_mean_r"] for r in here), _nanmean(r["fold_std_r"] for r in here)
        spread = "n/a" if _isnan(fold_mean) else f"{fmt_r(fold_mean)} +- {fmt_r(fold_std)}"
        draws = [f"{max(r.get('n_draws', 1) for r in here)} (std {fmt_r(_nanmean(r['draw_std_r'] for r in here))})"
                 ] if drawn else []
        table_rows.append([str(model), f"{x:.3g} ({here[0]['label']})"]
                          + [fmt_r(by_subject.get(s, math.nan)) for s in subjects]
                          + [fmt_r(_nanmean(by_subject.values())), spread] + draws)
    section.blocks.append(_Table(
        ["model", "share of stories"] + subjects + ["mean", "fold models"] + (["draws"] if drawn else []),
        table_rows, ["l", "l"] + ["r"] * (len(subjects) + 2 + int(drawn)),
    ))
    section.blocks.append(_Figure(
        f"sweep-{i}-{slug(sweep['name'])}", figures.to_png(figures.scaling_lines(sweep)),
        f"{sweep['name']}: mean test-story r against the share of training stories (nested subsets), averaged "
        "over subjects; per encoder, the fold models' own mean r, mean +- std over the folds"
        + ("; bands: +- the std over the subset draws." if drawn else "."),
    ))


def _clustering_section(results: RunResults) -> _Section:
    section = _Section("Voxel clusters")
    if not results.clustering:
        section.note = "skipped: no clustering in this run"
        return section
    rows = []
    for subject, entry in results.clustering.items():
        labels = np.asarray(entry["labels"])
        n_sig = int(np.count_nonzero(labels >= 0))
        shares = "; ".join(
            f"{name} {fmt_percent(np.count_nonzero(labels == code) / n_sig if n_sig else math.nan)}"
            for code, name in enumerate(entry.get("label_names", []))
        )
        q, mu, sd = (entry.get(k, math.nan) for k in ("modularity", "null_mean", "null_std"))
        z = (q - mu) / sd if not any(map(_isnan, (q, mu, sd))) and sd > 0 else math.nan
        ari = (f"{fmt_r(entry['ari_mean'])} ± {fmt_r(entry['ari_std'])} (5%: {fmt_r(entry['ari_p05'])})"
               if "ari_mean" in entry else NA)
        if "ari_folds_mean" in entry:
            folds = f"{fmt_r(entry['ari_folds_mean'])} (min {fmt_r(entry['ari_folds_min'])}, {entry['n_folds']} folds)"
        else:
            folds = f"{NA} ({entry['folds_note']})" if "folds_note" in entry else NA
        rows.append([subject, fmt_count(n_sig), shares or NA, fmt_r(q),
                     f"{fmt_r(mu)} ± {fmt_r(sd)}", NA if _isnan(z) else f"{z:.1f}", ari,
                     fmt_r(entry.get("ari_halves", math.nan)), fmt_r(entry.get("ari_r2_cod", math.nan)),
                     fmt_r(entry.get("ari_encoders", math.nan)), folds])
    section.blocks.append(_Table(
        ["subject", "n significant", "cluster shares (%)", "modularity Q", "null Q (mean ± std)",
         "z", "label ARI, test-row bootstrap (mean ± std)", "label ARI, odd vs even repeats",
         "label ARI, ranked by r2_cod", "label ARI across encoders", "label ARI across fold models"], rows,
        ["l", "r", "l", "r", "r", "r", "r", "r", "r", "r", "r"],
    ))
    section.blocks.append(
        "Stability (adjusted Rand index: 1 the same clusters, 0 chance agreement): the best-model "
        "labels recomputed on block-bootstrap resamples of the scored test rows against the "
        "labels of all the rows; the labels on the mean of the odd test repeats against those on "
        "the even ones (independent noise); the labels with the models ranked by the coefficient "
        "of determination instead of r² = r·|r|; and the mean over pairs of the table's encoders "
        "fitted on the three feature sets of their labels' agreement; the labels of each "
        "cross-validation fold's model of the preferred network against the other folds' (mean "
        "and minimum over pairs; ridge refits one model, so n/a). The labels depend on no "
        "seed and not on the graph's k (which shape only the modularity and its null)."
    )
    section.blocks.append(_Figure(
        "clustering", figures.to_png(figures.clustering_bars(results.clustering)),
        "Significant voxels per cluster of best-predicting model (%), and the partition's "
        "modularity against its null distribution (mean ± std).",
    ))
    return section


def _planted_section(results: RunResults) -> _Section:
    section = _Section("Planted checks (synthetic twin)")
    if not results.planted:
        section.note = "skipped: not a synthetic run (no planted checks)"
        return section
    rows = []
    for subject, checks in results.planted.items():
        for check, c in checks.items():
            passed = "not checked" if c.get("skipped") else "yes" if c["passed"] else "NO"
            rows.append([subject, check, str(c.get("what", "")), f"{c['value']:.4g}", f"{c['margin']:.4g}", passed])
    outcomes = results.planted_outcomes()
    failed = [f"{subject} {check}" for subject, check, _ in outcomes["failed"]]
    n_checked = len(outcomes["passed"]) + len(failed)
    if failed:
        section.blocks.append(f"{len(failed)} of {n_checked} planted checks FAILED: " + ", ".join(failed) + ".")
    else:
        section.blocks.append(f"All {n_checked} planted checks passed.")
    skipped = sorted({check for _, check, _ in outcomes["skipped"]})
    if skipped:
        section.blocks.append(f"Computed but not checked in this config (planted.skip; its header says why): "
                              f"{', '.join(skipped)}.")
    section.blocks.append(_Table(["subject", "check", "what", "value", "margin", "passed"], rows,
                                 ["l", "l", "l", "r", "r", "l"]))
    return section


def _nonlinearity_section(results: RunResults) -> _Section:
    section = _Section("The nonlinearity where the twin plants it")
    step = results.nonlinearity
    if not step:
        section.note = "skipped: no nonlinearity step in this run"
        return section
    section.blocks.append(
        "A second synthetic twin, reshaped so the planted audio x semantic products can be "
        "learned (one subject, 24 training stories, few semantic dimensions), fitted from its "
        "planted stimulus properties on audio+semantic voxel targets; a run of its own in "
        f"{step['folder']}/. The MLP and MLLinear are the same network with and without its "
        "activation, so their difference on the interaction voxels is what the nonlinearity "
        "adds; its planted checks are listed with the others as "
        f"{step['folder']}/<subject>. Mean test r (and the paper's r²) per planted voxel class:"
    )
    rows = step["rows"]
    subjects = list(dict.fromkeys(r["subject"] for r in rows))
    table_rows = []
    for model, voxels in dict.fromkeys((r["model"], r["voxels"]) for r in rows):
        group = [r for r in rows if (r["model"], r["voxels"]) == (model, voxels)]
        table_rows.append([model, voxels, fmt_count(_nanmean(r["n_voxels"] for r in group)),
                           fmt_r(_nanmean(r["mean_r"] for r in group)),
                           fmt_percent(_nanmean(r["mean_r2"] for r in group), 1)])
    section.blocks.append(_Table(["model", "voxels", "n voxels", "mean r", "mean r² = r·|r| (%)"],
                                 table_rows, ["l", "l", "r", "r", "r"]))
    section.blocks.append(_Figure(
        "nonlinearity", figures.to_png(figures.nonlinearity_bars(rows)),
        f"Nonlinearity step ({', '.join(subjects)}): mean test-story r per encoder on each "
        "planted voxel class of the reshaped twin.",
    ))
    return section


def _interaction_section(results: RunResults) -> _Section:
    section = _Section("Audio x semantic interactions")
    if not results.interactions:
        section.note = "skipped: no interaction attribution in this run (analyses.interactions)"
        return section
    section.blocks.append(
        "How much of each voxel's test-story prediction a network owes to audio x semantic "
        "interaction: the variance of f(a, s) - PD_audio(a) - PD_semantic(s) + mean over the "
        "test rows (partial dependences over every pairing of an audio row with a semantic row) "
        "divided by the prediction's variance, averaged over the fold models: 0 for a network "
        "additive across modalities, 1 for a pure product. Beside it the MLP's test r minus "
        "DIMLP's (nonlinear within each modality, additive across them) on the same voxels."
    )
    rows, panels = [], []
    for subject, entry in results.interactions.items():
        for key, share in entry.items():
            model, target = key.split("/", 1)
            share = np.asarray(share, np.float64)
            found = results.find(subject=subject, features=JOINT, model=model, target=target)
            significant = np.asarray(found[0].scores.significant, bool) if found else np.zeros(share.shape, bool)
            mlp = results.find(subject=subject, features=JOINT, model="mlp", target=target)
            dimlp = results.find(subject=subject, features=JOINT, model="dimlp", target=target)
            gain, rho = None, math.nan
            if mlp and dimlp:
                gain = np.asarray(mlp[0].scores.r, np.float64) - np.asarray(dimlp[0].scores.r, np.float64)
                either = significant | np.asarray(dimlp[0].scores.significant, bool)
                finite = np.isfinite(share) & np.isfinite(gain) & either
                # A constant side (DIMLP's zero shares) has no rank correlation.
                if finite.sum() > 2 and np.ptp(share[finite]) > 0 and np.ptp(gain[finite]) > 0:
                    rho = float(spearmanr(share[finite], gain[finite]).statistic)
                panels.append((f"{subject}, {model} ({target})", share, gain, either))
            rows.append([subject, model, target, fmt_r(_nanmedian(share)),
                         fmt_r(_nanmedian(share[significant])) if significant.any() else NA,
                         fmt_count(int(significant.sum())),
                         fmt_r(_nanmedian(gain[significant])) if gain is not None and significant.any() else NA,
                         fmt_r(rho)])
    section.blocks.append(_Table(
        ["subject", "model", "target", "median share (all voxels)", "median share (significant)",
         "n significant", "median r gain MLP - DIMLP (significant)", "Spearman share vs gain"],
        rows, ["l", "l", "l", "r", "r", "r", "r", "r"],
    ))
    if panels:
        section.blocks.append(_Figure(
            "interactions", figures.to_png(figures.interaction_scatter(panels)),
            "Per voxel: the network's interaction share against the MLP's test r minus DIMLP's; "
            "voxels significant for either drawn dark.",
        ))
    return section


def _nanmedian(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def _flatmap_section(results: RunResults, flatmaps: dict | None) -> _Section:
    section = _Section("Flatmaps")
    images, note = render_flatmaps(results, flatmaps)
    if images:
        section.blocks.append(
            "Each model's test-story r per voxel on the pycortex subject's flatmap (both hemispheres, "
            "curvature underneath, one colour scale per subject), with the named ROIs outlined."
        )
    for name, caption, png in images:
        section.blocks.append(_Figure(f"flatmap-{name}", png, caption))
    if note and not images:
        section.note = note
    elif note:
        section.blocks.append(note)
    return section


def _sections(results: RunResults, flatmaps: dict | None, top_k: int) -> list[_Section]:
    return [
        _header(results),
        *_models_section(results, top_k),
        _scatter_section(results),
        _partition_section(results),
        _noise_ceiling_section(results),
        _sweeps_section(results),
        _clustering_section(results),
        _nonlinearity_section(results),
        _interaction_section(results),
        _planted_section(results),
        _flatmap_section(results, flatmaps),
    ]


_CSS = """
body { font-family: Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       color: #111; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #888; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ccc; }
th { border-bottom: 2px solid #333; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #333; }
p.note { color: #555; font-style: italic; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""


def _html(results: RunResults, sections: list[_Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>jaxenc report: {e(results.name)}</title>", f"<style>{_CSS}</style>",
           "</head>", "<body>", f"<h1>jaxenc report: {e(results.name)}</h1>"]
    for section in sections:
        out.append(f"<section>\n<h2>{e(section.title)}</h2>")
        if section.note:
            out.append(f'<p class="note">{e(section.note)}</p>')
        for block in section.blocks:
            if isinstance(block, str):
                out.append(f"<p>{e(block)}</p>")
            elif isinstance(block, _Code):
                out.append(f"<details><summary>{e(block.title)}</summary><pre>{e(block.text)}"
                           "</pre></details>")
            elif isinstance(block, _Table):
                head = "".join(f'<th class="{a}">{e(h)}</th>'
                               for h, a in zip(block.headers, block.align, strict=True))
                body = "\n".join(
                    "<tr>" + "".join(f'<td class="{a}">{e(c)}</td>'
                                     for c, a in zip(row, block.align, strict=True)) + "</tr>"
                    for row in block.rows
                )
                out.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n"
                           "</tbody>\n</table>")
            else:
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" '
                           f'alt="{e(block.caption)}"><figcaption>{e(block.caption)}'
                           "</figcaption></figure>")
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_text(text: str) -> str:
    # Markdown viewers render inline HTML: a subject, story or config name holding "<script>"
    # must show as text, as in the HTML report.
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(table: _Table) -> str:
    cells = [[_md_cell(h) for h in table.headers]] + [[_md_cell(c) for c in r] for r in table.rows]
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(table.headers))]

    def line(row):
        return "| " + " | ".join(
            c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, table.align, strict=True)
        ) + " |"

    rule = "| " + " | ".join(
        "-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, table.align, strict=True)
    ) + " |"
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def _markdown(results: RunResults, sections: list[_Section], figure_paths: dict) -> str:
    out = [f"# jaxenc report: {_md_text(results.name)}", ""]
    for section in sections:
        out += [f"## {_md_text(section.title)}", ""]
        if section.note:
            out += [f"*{_md_text(section.note)}*", ""]
        for block in section.blocks:
            if isinstance(block, str):
                out += [_md_text(block), ""]
            elif isinstance(block, _Code):
                # A fence longer than any backtick run inside keeps the block closed.
                longest = max((len(run) for run in re.findall("`+", block.text)), default=0)
                fence = "`" * max(3, longest + 1)
                out += [f"<details><summary>{html.escape(block.title)}</summary>", "",
                        f"{fence}{block.language}", block.text, fence, "", "</details>", ""]
            elif isinstance(block, _Table):
                out += [_md_table(block), ""]
            else:
                out += [f"![{_md_cell(block.caption)}]({figure_paths[block.name]})", "",
                        f"*{_md_text(block.caption)}*", ""]
    return "\n".join(out)


def write_report(results: RunResults, folder, *, formats=FORMATS, flatmaps: dict | None = None,
                 top_k: int = 1000) -> dict[str, Path]:
    """Write the run's report: ``report.html`` and/or ``report.md`` with ``figures/*.png``.

    Parameters
    ----------
    results : RunResults
        The run; validated first.
    folder : str or os.PathLike
        Output folder (created if needed), usually the run folder.
    formats : sequence of {"html", "md"}, default ("html", "md")
        ``"html"``: one self-contained file (inline CSS, figures as base64 PNG). ``"md"``:
        Markdown with aligned tables, figures written to ``folder/figures/<name>.png``.
    flatmaps : dict, optional
        Subject -> ``{"pycortex_subject", "xfm"}`` for cortical flatmaps (needs pycortex); see
        :func:`jaxenc.report.flatmaps.render_flatmaps`.
    top_k : int, default 1000
        Number of best voxels in the ``top-k r`` columns.

    Returns
    -------
    dict of str to Path
        Format -> the file written.

    Raises
    ------
    ConfigError
        On an unknown format.
    DataError
        If the results are inconsistent (see :meth:`RunResults.validate`).
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"report formats must be among {FORMATS}, got {formats}")
    results.validate()
    store = RunStore(folder)
    sections = _sections(results, flatmaps, top_k)
    written = {}
    if "md" in formats:
        figure_paths = {}
        for section in sections:
            for block in section.blocks:
                if isinstance(block, _Figure):
                    rel = f"figures/{block.name}.png"
                    store.write_bytes(rel, block.png)
                    figure_paths[block.name] = rel
        text = _markdown(results, sections, figure_paths)
        store.write_text("report.md", text)
        written["md"] = store.path("report.md")
    if "html" in formats:
        text = _html(results, sections)
        store.write_text("report.html", text)
        written["html"] = store.path("report.html")
    return written
