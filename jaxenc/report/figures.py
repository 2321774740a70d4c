"""The report's figures, one function per section, each returning a matplotlib ``Figure``.

Figures are built on :class:`matplotlib.figure.Figure` directly rather than through pyplot, so
no GUI backend is chosen, no global figure registry fills up and the caller's matplotlib state
is untouched; :func:`to_png` renders through Agg. Every series differs by hatch, marker or line
style as well as by colour, so the figures stay readable printed in grayscale.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

__all__ = [
    "to_png",
    "model_bars",
    "linear_vs_mlp_scatter",
    "partition_bars",
    "noise_ceiling_hist",
    "sweep_lines",
    "scaling_lines",
    "clustering_bars",
    "nonlinearity_bars",
    "interaction_scatter",
]

# Paul Tol's "muted" colours: distinguishable with colour-vision deficiencies.
COLORS = ("#332288", "#88CCEE", "#117733", "#DDCC77", "#CC6677", "#AA4499", "#44AA99", "#999933")
# Hatches carry the series identity when colour is lost (grayscale print).
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1)), (0, (8, 2)))
# Rendering resolution of the PNGs, in dots per inch.
DPI = 150


def _style(i: int) -> dict:
    n = len(COLORS)
    return {
        "color": COLORS[i % n],
        "hatch": HATCHES[i % n],
        "marker": MARKERS[i % n],
        "linestyle": LINESTYLES[i % n],
    }


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def to_png(figure: Figure, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes with the Agg backend.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    dpi : int, default 150
        Resolution in dots per inch.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    buffer = io.BytesIO()
    # No "Software" stamp: the same figure gives the same bytes across matplotlib versions.
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def model_bars(per_subject: Sequence[dict], summary: Sequence[dict]) -> Figure:
    """Mean r and mean cc_norm of every features x model, one column of panels per target.

    Parameters
    ----------
    per_subject : sequence of dict
        Rows of :meth:`RunResults.table`: ``subject``, ``features``, ``model``, ``target``,
        ``mean_r``, ``mean_cc_norm`` (fraction); drawn as points.
    summary : sequence of dict
        The subject-averaged rows of the report's main table (same keys); drawn as bars.

    Returns
    -------
    matplotlib.figure.Figure
    """
    targets = _unique(row["target"] for row in summary)
    models = _unique(row["model"] for row in summary)
    by_key = {(r["features"], r["model"], r["target"]): r for r in summary}
    layout = {}
    for target in targets:
        features = _unique(r["features"] for r in summary if r["target"] == target)
        # Bars of a feature space sit side by side, centred on its tick, only for its models.
        layout[target] = (features, {
            feature: [m for m in models if (feature, m, target) in by_key] for feature in features
        })
    widest = max(len(ms) for _, present in layout.values() for ms in present.values())
    width = 0.8 / widest
    n_bars = [sum(len(ms) for ms in present.values()) for _, present in layout.values()]
    figure = _new_figure(sum(max(3.5, 1.0 + 0.45 * n) for n in n_bars), 5.6)
    axes = figure.subplots(2, len(targets), squeeze=False, sharey="row")
    metrics = (("mean_r", "mean r", 1.0), ("mean_cc_norm", "mean cc_norm (%)", 100.0))
    for col, target in enumerate(targets):
        features, present = layout[target]
        for row_i, (key, label, scale) in enumerate(metrics):
            ax = axes[row_i, col]
            for f, feature in enumerate(features):
                for j, model in enumerate(present[feature]):
                    value = by_key[(feature, model, target)][key]
                    if math.isnan(value):
                        continue
                    x = f + (j - (len(present[feature]) - 1) / 2) * width
                    style = _style(models.index(model))
                    ax.bar(x, value * scale, width, color=style["color"], hatch=style["hatch"],
                           edgecolor="black", linewidth=0.6)
                    points = [
                        r[key] * scale for r in per_subject
                        if (r["features"], r["model"], r["target"]) == (feature, model, target)
                    ]
                    ax.scatter(np.full(len(points), x), points, s=12, color="white",
                               edgecolor="black", linewidth=0.8, zorder=3)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xticks(range(len(features)), features, rotation=20, ha="right")
            ax.set_ylabel(label)
            if row_i == 0:
                ax.set_title(f"target: {target}")
    handles = [
        Patch(facecolor=_style(i)["color"], hatch=_style(i)["hatch"], edgecolor="black",
              label=model)
        for i, model in enumerate(models)
    ]
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white",
                          markeredgecolor="black", label="single subject"))
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles),
                  frameon=False, fontsize="small")
    return figure


def linear_vs_mlp_scatter(pairs: Sequence[tuple]) -> Figure:
    """Per-voxel r of the linear model against the MLP, one panel per pair.

    Parameters
    ----------
    pairs : sequence of (title, linear, mlp)
        ``title`` a panel title; ``linear`` and ``mlp`` are :class:`~jaxenc.report.ModelResult`
        of one subject on the same voxels.

    Returns
    -------
    matplotlib.figure.Figure
        Voxels significant for either model drawn dark and filled, the rest light and hollow;
        the dashed diagonal is equal performance.
    """
    n_cols = min(3, len(pairs))
    n_rows = math.ceil(len(pairs) / n_cols)
    figure = _new_figure(3.3 * n_cols, 3.3 * n_rows)
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax, (title, linear, mlp) in zip(axes, pairs, strict=False):
        a, b = linear.scores, mlp.scores
        either = a.significant | b.significant
        finite = np.isfinite(a.r) & np.isfinite(b.r)
        values = np.concatenate([a.r[finite], b.r[finite]])
        lo, hi = (min(values.min(), 0.0), max(values.max(), 0.0)) if values.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="black", linewidth=0.8)
        rest = finite & ~either
        sig = finite & either
        ax.scatter(
            a.r[rest], b.r[rest], s=6, facecolor="none", edgecolor="#999999",
            linewidth=0.5, label=f"n.s. ({int(rest.sum())})", rasterized=True,
        )
        ax.scatter(
            a.r[sig], b.r[sig], s=8, color=COLORS[0], linewidth=0,
            label=f"significant for either ({int(sig.sum())})", rasterized=True,
        )
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"r, {linear.model}")
        ax.set_ylabel(f"r, {mlp.model}")
        ax.set_title(title, fontsize="small")
        # A framed legend stays legible over a dense cloud of voxels.
        ax.legend(fontsize="x-small", loc="upper left", framealpha=0.9, edgecolor="none")
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    return figure


def partition_bars(rows: Sequence[dict]) -> Figure:
    """Variance partition per subject: shares of significant voxels, and mean r2 parts.

    Parameters
    ----------
    rows : sequence of dict
        Partition rows of one (target, model, features_a, features_b) comparison, one per
        subject: ``subject``, ``share_best_unique_a``, ``share_best_unique_b``,
        ``share_best_shared`` and ``unique_a``, ``unique_b``, ``shared`` (fractions).

    Returns
    -------
    matplotlib.figure.Figure
        Left: stacked shares of significant voxels best explained by each part (%). Right: the
        mean r2 of each part over significant voxels (%), grouped (parts may be negative).
    """
    first = rows[0]
    labels = (
        f"unique {first['features_a']}", f"unique {first['features_b']}", "shared"
    )
    subjects = [row["subject"] for row in rows]
    x = np.arange(len(subjects))
    figure = _new_figure(max(7.0, 2.0 + 1.6 * len(subjects)), 3.6)
    left, right = figure.subplots(1, 2)
    bottom = np.zeros(len(rows))
    for i, key in enumerate(("share_best_unique_a", "share_best_unique_b", "share_best_shared")):
        heights = np.array([row[key] * 100 for row in rows], dtype=float)
        style = _style(i)
        left.bar(x, heights, 0.6, bottom=bottom, color=style["color"], hatch=style["hatch"],
                 edgecolor="black", linewidth=0.6, label=labels[i])
        bottom += np.nan_to_num(heights)
    left.set_xticks(x, subjects)
    left.set_ylabel("significant voxels best explained (%)")
    left.set_ylim(0, 100)
    left.legend(fontsize="small", frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0),
                ncols=3)
    width = 0.25
    for i, key in enumerate(("unique_a", "unique_b", "shared")):
        style = _style(i)
        right.bar(x + (i - 1) * width, [row[key] * 100 for row in rows], width,
                  color=style["color"], hatch=style["hatch"], edgecolor="black", linewidth=0.6,
                  label=labels[i])
    right.axhline(0, color="black", linewidth=0.6)
    right.set_xticks(x, subjects)
    right.set_ylabel("mean r² over significant voxels (%)")
    figure.suptitle(
        f"Variance partition, {first['model']} on {first['target']}", fontsize="medium"
    )
    return figure


def noise_ceiling_hist(cc_max: dict) -> Figure:
    """Histogram of the noise ceiling per voxel, one outline per subject.

    Parameters
    ----------
    cc_max : dict of str to array of shape (n_voxels,)
        Subject -> noise ceiling (a correlation); NaN voxels are counted in the legend only.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure = _new_figure(6.0, 3.6)
    ax = figure.subplots()
    values = [np.asarray(v, dtype=float) for v in cc_max.values()]
    finite = [v[np.isfinite(v)] for v in values]
    lo = min([0.0] + [float(v.min()) for v in finite if v.size])
    bins = np.linspace(lo, 1.0, int(round((1.0 - lo) / 0.025)) + 1)
    for i, (subject, v, f) in enumerate(zip(cc_max, values, finite, strict=False)):
        style = _style(i)
        median = float(np.median(f)) if f.size else math.nan
        n_nan = v.size - f.size
        label = f"{subject} (median {median:.2f}" + (f", {n_nan} undefined)" if n_nan else ")")
        ax.hist(f, bins=bins, histtype="step", color=style["color"],
                linestyle=style["linestyle"], linewidth=1.6, label=label)
    ax.set_xlabel("noise ceiling cc_max (correlation)")
    ax.set_ylabel("voxels")
    ax.legend(fontsize="small", frameon=False, loc="upper left")
    return figure


def _positions(xs: list) -> tuple[dict, list | None]:
    """x positions: the values themselves when numeric, else their order of appearance."""
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
        return {x: x for x in xs}, None
    order = _unique(xs)
    return {x: i for i, x in enumerate(order)}, order


def sweep_lines(sweep: dict) -> Figure:
    """Mean r along a sweep (layer, model size, depth), one panel per encoder model.

    Parameters
    ----------
    sweep : dict
        ``{"name", "x_label", "rows": [{"subject", "model", "x", "mean_r", ...}]}``; ``x``
        numeric (drawn to scale) or labels (drawn in order of appearance).

    Returns
    -------
    matplotlib.figure.Figure
        Thin lines: subjects; bold black line: the mean over subjects at each x.
    """
    rows = sweep["rows"]
    models = _unique(row["model"] for row in rows)
    figure = _new_figure(4.6 * len(models), 3.6)
    axes = np.atleast_1d(figure.subplots(1, len(models), squeeze=False)).ravel()
    positions, order = _positions([row["x"] for row in rows])
    for ax, model in zip(axes, models, strict=False):
        subset = [row for row in rows if row["model"] == model]
        for i, subject in enumerate(_unique(row["subject"] for row in subset)):
            points = sorted(
                (positions[row["x"]], row["mean_r"]) for row in subset if row["subject"] == subject
            )
            style = _style(i)
            ax.plot(*zip(*points, strict=False), color=style["color"], marker=style["marker"],
                    linestyle=style["linestyle"], linewidth=1.0, markersize=4, label=subject)
        xs = sorted({positions[row["x"]] for row in subset})
        means = [
            float(np.nanmean([row["mean_r"] for row in subset if positions[row["x"]] == x]))
            for x in xs
        ]
        ax.plot(xs, means, color="black", linewidth=2.6, label="mean")
        if order is not None:
            ax.set_xticks(range(len(order)), order, rotation=20, ha="right")
        elif all(isinstance(row["x"], int) for row in subset):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(sweep.get("x_label", "x"))
        ax.set_ylabel("mean r (test story)")
        ax.set_title(f"{sweep['name']}: {model}", fontsize="medium")
        ax.legend(fontsize="small", frameon=False)
    return figure


def scaling_lines(sweep: dict) -> Figure:
    """A data-scaling curve: mean r against the share of training stories, with the fold spread.

    Parameters
    ----------
    sweep : dict
        A curve of :func:`jaxenc.analysis.scaling.data_curves`: rows with ``model``, ``x``,
        ``mean_r``, ``fold_mean_r``, ``fold_std_r``, ``n_draws`` and ``draw_std_r``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: every encoder's mean r (the fold models averaged), averaged over subjects. Then
        one panel per encoder: that line, with a band of +- the standard deviation over the
        subset draws where there are several, and the fold models' own mean r, mean +- std
        over the folds (of every draw; averaged over subjects) as markers with error bars
        (networks only).
    """
    rows = sweep["rows"]
    models = _unique(row["model"] for row in rows)
    # At most 4 panels a row: the first shows every encoder, then one panel each.
    n_cols = min(4, len(models) + 1)
    n_rows = math.ceil((len(models) + 1) / n_cols)
    figure = _new_figure(3.4 * n_cols, 3.2 * n_rows)
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols, squeeze=False, sharey=True)).ravel()
    for ax in axes[len(models) + 1:]:
        ax.set_axis_off()
    axes = axes[:len(models) + 1]

    def means(model, key):
        # Over subjects; NaN where no subject has a value (ridge's fold entries, the draws'
        # spread in runs written before there were draws).
        xs = sorted({row["x"] for row in rows if row["model"] == model})
        values = [np.asarray([row.get(key, math.nan) for row in rows if row["model"] == model and row["x"] == x],
                             float) for x in xs]
        return xs, [float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else math.nan for v in values]

    for i, model in enumerate(models):
        style = _style(i)
        xs, ys = means(model, "mean_r")
        for ax in (axes[0], axes[i + 1]):
            ax.plot(xs, ys, color=style["color"], marker=style["marker"], linestyle=style["linestyle"],
                    linewidth=1.6, markersize=4, label=model)
        _, draw_stds = means(model, "draw_std_r")
        if any(row.get("n_draws", 1) > 1 for row in rows if row["model"] == model):
            low, high = np.subtract(ys, draw_stds), np.add(ys, draw_stds)
            axes[i + 1].fill_between(xs, low, high, color=style["color"], alpha=0.2, linewidth=0,
                                     label="subset draws, mean +- std")
        _, fold_means = means(model, "fold_mean_r")
        _, fold_stds = means(model, "fold_std_r")
        if np.isfinite(fold_means).any():
            axes[i + 1].errorbar(xs, fold_means, yerr=fold_stds, color="black", fmt="s", markersize=3,
                                 capsize=3, linewidth=1.0, label="fold models, mean +- std")
        axes[i + 1].set_title(model, fontsize="medium")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel(sweep.get("x_label", "x"))
        ax.legend(fontsize="small", frameon=False)
    axes[0].set_ylabel("mean r (test story)")
    axes[0].set_title(sweep["name"], fontsize="medium")
    return figure


def clustering_bars(clustering: dict) -> Figure:
    """Voxel clusters per subject: label shares, and modularity against the null.

    Parameters
    ----------
    clustering : dict
        Subject -> ``{"labels": int array (n_voxels,) (-1: not significant), "label_names",
        "modularity", "null_mean", "null_std"}``.

    Returns
    -------
    matplotlib.figure.Figure
        Left: stacked shares of significant voxels per cluster (%). Right: modularity (filled)
        and the null's mean +- std (hollow with error bars).
    """
    subjects = list(clustering)
    x = np.arange(len(subjects))
    figure = _new_figure(max(7.0, 2.5 + 1.6 * len(subjects)), 3.8)
    left, right = figure.subplots(1, 2)
    names = _unique(n for entry in clustering.values() for n in entry.get("label_names", []))
    bottom = np.zeros(len(subjects))
    for i, name in enumerate(names):
        shares = []
        for entry in clustering.values():
            labels = np.asarray(entry["labels"])
            significant = labels >= 0
            code = entry["label_names"].index(name) if name in entry["label_names"] else None
            share = (
                100.0 * np.count_nonzero(labels == code) / np.count_nonzero(significant)
                if code is not None and significant.any() else 0.0
            )
            shares.append(share)
        style = _style(i)
        left.bar(x, shares, 0.6, bottom=bottom, color=style["color"], hatch=style["hatch"],
                 edgecolor="black", linewidth=0.6, label=name)
        bottom += shares
    left.set_xticks(x, subjects)
    left.set_ylim(0, 100)
    left.set_ylabel("significant voxels (%)")
    left.legend(fontsize="small", frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0),
                ncols=min(3, max(1, len(names))))
    modularity = [clustering[s].get("modularity", math.nan) for s in subjects]
    null_mean = [clustering[s].get("null_mean", math.nan) for s in subjects]
    null_std = [clustering[s].get("null_std", math.nan) for s in subjects]
    right.errorbar(x + 0.1, null_mean, yerr=null_std, fmt="o", mfc="white", color="black",
                   capsize=4, label="null (mean ± std)")
    right.scatter(x - 0.1, modularity, marker="D", color=COLORS[0], zorder=3,
                  label="observed")
    right.set_xticks(x, subjects)
    right.set_xlim(-0.6, len(subjects) - 0.4)
    right.set_ylabel("modularity Q")
    right.legend(fontsize="small", frameon=False)
    return figure


def nonlinearity_bars(rows: Sequence[dict]) -> Figure:
    """The nonlinearity step: mean test r per encoder on each planted voxel class.

    Parameters
    ----------
    rows : sequence of dict
        ``{"subject", "model", "voxels", "mean_r"}`` (see
        :func:`jaxenc.experiment.nonlinearity.step_summary`); several subjects are averaged.

    Returns
    -------
    matplotlib.figure.Figure
        Grouped bars: voxel classes on the x axis, one bar per encoder in the order of
        ``rows``.
    """
    classes = _unique(r["voxels"] for r in rows)
    models = _unique(r["model"] for r in rows)
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(models))
    figure = _new_figure(max(6.0, 1.5 + 1.3 * len(classes)), 3.6)
    axes = figure.subplots()
    for i, model in enumerate(models):
        means = []
        for name in classes:
            values = [r["mean_r"] for r in rows if r["model"] == model and r["voxels"] == name]
            means.append(float(np.mean(values)) if values else math.nan)
        style = _style(i)
        axes.bar(x + (i - (len(models) - 1) / 2) * width, means, width, color=style["color"],
                 hatch=style["hatch"], edgecolor="black", linewidth=0.6, label=model)
    axes.axhline(0, color="black", linewidth=0.6)
    axes.set_xticks(x, classes)
    axes.set_xlabel("planted voxel class")
    axes.set_ylabel("mean test r")
    axes.legend(fontsize="small", frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0),
                ncols=max(1, len(models)))
    return figure


def interaction_scatter(panels: Sequence[tuple]) -> Figure:
    """Per voxel, a network's interaction share against the MLP - DIMLP gain in r, one panel each.

    Parameters
    ----------
    panels : sequence of (title, share, gain, significant)
        ``share`` (n_voxels,) the interaction share of each voxel's prediction, ``gain``
        (n_voxels,) the MLP's test r minus DIMLP's, ``significant`` (n_voxels,) bool, the
        voxels significant for either.

    Returns
    -------
    matplotlib.figure.Figure
        Significant voxels dark and filled, the rest light and hollow; the dashed line is no
        gain.
    """
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    figure = _new_figure(3.6 * n_cols, 3.3 * n_rows)
    axes = np.atleast_1d(figure.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax, (title, share, gain, significant) in zip(axes, panels, strict=False):
        finite = np.isfinite(share) & np.isfinite(gain)
        rest, sig = finite & ~significant, finite & significant
        ax.axhline(0, color="black", linestyle="--", linewidth=0.8)
        ax.scatter(share[rest], gain[rest], s=6, facecolor="none", edgecolor="#999999", linewidth=0.5,
                   label=f"n.s. ({int(rest.sum())})", rasterized=True)
        ax.scatter(share[sig], gain[sig], s=8, color=COLORS[0], linewidth=0,
                   label=f"significant for either ({int(sig.sum())})", rasterized=True)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("interaction share of the prediction")
        ax.set_ylabel("r, MLP minus DIMLP")
        ax.set_title(title, fontsize="small")
        ax.legend(fontsize="x-small", loc="upper left", framealpha=0.9, edgecolor="none")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return figure
