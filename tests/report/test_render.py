"""write_report: files, PNG figures, numbers as the arrays give them, skipped sections, escaping."""

from __future__ import annotations

import base64
import html
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from matplotlib.image import imread

from jaxenc.errors import ConfigError
from jaxenc.report import RunResults, write_report
from jaxenc.report.flatmaps import render_flatmaps
from jaxenc.report.render import model_table, relative_gain

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory, shared_results):
    """A complete report of the fixture run, written once for the module."""
    folder = tmp_path_factory.mktemp("report")
    results = shared_results
    paths = write_report(results, folder)
    return results, folder, paths


def _mean_over_subjects(results, features, model, target, stat):
    """Independent reference: per-subject means from the raw arrays, then the subject mean."""
    values = []
    for m in results.models:
        if (m.features, m.model, m.target) == (features, model, target):
            array = getattr(m.scores, stat).astype(np.float64)
            values.append(np.nanmean(array) if stat != "significant" else array.sum())
    return float(np.mean(values))


def test_files_written(report):
    _, folder, paths = report
    assert paths == {"html": folder / "report.html", "md": folder / "report.md"}
    assert paths["html"].stat().st_size > 0 and paths["md"].stat().st_size > 0


def test_figures_are_valid_png(report):
    _, folder, _ = report
    pngs = sorted((folder / "figures").glob("*.png"))
    names = {p.stem.split("-")[0] for p in pngs}
    assert {"models", "scatter", "partition", "noise", "sweep", "clustering"} <= names
    md = (folder / "report.md").read_text()
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert f"](figures/{png.name})" in md
    text = (folder / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(embedded) == len(pngs)
    assert all(base64.b64decode(data)[:8] == PNG_SIGNATURE for data in embedded)


def test_html_self_contained(report):
    _, folder, _ = report
    text = (folder / "report.html").read_text()
    assert "<style>" in text
    assert not re.search(r'(src|href)="(?!data:)', text), "external asset referenced"


def test_table_numbers_come_from_arrays(report):
    results, folder, _ = report
    text = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    mean_r = _mean_over_subjects(results, "audio+semantic", "mlp", "voxels", "r")
    mean_r2 = _mean_over_subjects(results, "audio+semantic", "mlp", "voxels", "r2")
    mean_cod = _mean_over_subjects(results, "audio+semantic", "mlp", "voxels", "r2_cod")
    mean_cc = _mean_over_subjects(results, "audio+semantic", "mlp", "voxels", "cc_norm")
    n_sig = _mean_over_subjects(results, "audio+semantic", "mlp", "voxels", "significant")
    expected = [f"{mean_r:.3f}", f"{100 * mean_r2:.2f}", f"{100 * mean_cod:.2f}", f"{100 * mean_cc:.1f}",
                f"{n_sig:.1f}" if n_sig % 1 else f"{int(n_sig)}"]
    # The Table 1 columns name both r²: the paper's r·|r| and the coefficient of determination.
    assert "mean r² = r·|r| (%)" in text and "coef. of determination (%)" in text
    row = re.search(
        r"<tr><td[^>]*>audio\+semantic</td><td[^>]*>mlp</td><td[^>]*>voxels</td>(.*?)</tr>", text
    )
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[1:5] == expected[:4] and cells[6] == expected[4]
    md_row = next(line for line in md.splitlines()
                  if re.match(r"\| audio\+semantic +\| mlp +\| voxels", line))
    assert [c.strip() for c in md_row.strip("|").split("|")][4:8] == expected[:4]
    # Per-subject table: UTS02's semantic ridge on pca, straight from its arrays.
    s = results.find(subject="UTS02", features="semantic", model="ridge", target="pca")[0].scores
    assert (f"<td class=\"r\">{np.mean(s.r):.3f}</td><td class=\"r\">"
            f"{100 * np.mean(s.r2.astype(np.float64)):.2f}</td><td class=\"r\">"
            f"{100 * np.mean(s.r2_cod.astype(np.float64)):.2f}</td>") in text


def test_relative_gain_hand_computed(report):
    results, folder, _ = report
    # Hand-computed: 0.2 vs 0.16 is a 25% gain.
    assert relative_gain(0.2, 0.16) == pytest.approx(25.0)
    assert np.isnan(relative_gain(0.2, 0.0))
    model = _mean_over_subjects(results, "semantic", "mlp", "pca", "r")
    baseline = _mean_over_subjects(results, "semantic", "ridge", "pca", "r")
    gain = (model / baseline - 1) * 100
    row = next(r for r in model_table(results)
               if (r["features"], r["model"], r["target"]) == ("semantic", "mlp", "pca"))
    assert row["gain"] == pytest.approx(gain, rel=1e-12)
    assert f"{gain:+.1f}%" in (folder / "report.html").read_text()
    dimlp = next(r for r in model_table(results) if r["model"] == "dimlp")
    baseline_voxels = _mean_over_subjects(results, "semantic", "ridge", "voxels", "r")
    dimlp_r = _mean_over_subjects(results, "semantic/L3", "dimlp", "voxels", "r")
    assert dimlp["gain"] == pytest.approx((dimlp_r / baseline_voxels - 1) * 100, rel=1e-12)


def test_gain_on_shared_subjects_only(run_results):
    run_results.models = [m for m in run_results.models
                          if not (m.subject == "UTS02" and m.model == "mlp")]
    row = next(r for r in model_table(run_results)
               if (r["features"], r["model"], r["target"]) == ("semantic", "mlp", "voxels"))
    model = run_results.find(subject="UTS01", features="semantic", model="mlp",
                             target="voxels")[0].scores.r.mean()
    base = run_results.find(subject="UTS01", features="semantic", model="ridge",
                            target="voxels")[0].scores.r.mean()
    assert row["gain"] == pytest.approx((model / base - 1) * 100, rel=1e-12)
    assert row["gain_subjects_differ"]


def test_sections_absent_are_skipped(tmp_path):
    results = RunResults(name="empty", config={}, cc_max={}, models=[])
    paths = write_report(results, tmp_path)
    md = paths["md"].read_text()
    for note in ("skipped: no model scores", "skipped: no variance partition",
                 "skipped: no noise ceiling", "skipped: no sweeps", "skipped: no clustering",
                 "skipped: not a synthetic run", "skipped: no pycortex subject given",
                 "skipped: no nonlinearity step",
                 "skipped: no features and target scored by both ridge and mlp"):
        assert note in md
        assert note in paths["html"].read_text()
    assert not list(tmp_path.glob("figures/*.png"))


def test_planted_headline(run_results, tmp_path):
    run_results.planted["UTS02"]["ceiling_recovered"]["passed"] = False
    text = write_report(run_results, tmp_path, formats=("md",))["md"].read_text()
    assert "1 of 4 planted checks FAILED: UTS02 ceiling_recovered." in text
    assert not (tmp_path / "report.html").exists()
    run_results.planted["UTS02"]["ceiling_recovered"]["passed"] = True
    text = write_report(run_results, tmp_path, formats=("html",))["html"].read_text()
    assert "All 4 planted checks passed." in text
    run_results.planted["UTS02"]["ceiling_recovered"].update(passed=False, skipped=True)
    text = write_report(run_results, tmp_path, formats=("md",))["md"].read_text()
    assert "All 3 planted checks passed." in text
    assert "not checked in this config (planted.skip; its header says why): ceiling_recovered." in text
    assert "| not checked" in text


def test_nonlinearity_step_table_and_figure(report):
    results, folder, _ = report
    md = (folder / "report.md").read_text()
    assert "## The nonlinearity where the twin plants it" in md
    assert (folder / "figures" / "nonlinearity.png").read_bytes()[:8] == PNG_SIGNATURE
    row = next(r for r in results.nonlinearity["rows"] if (r["model"], r["voxels"]) == ("mlp", "interaction"))
    line = next(line for line in md.splitlines() if re.match(r"\| mlp +\| interaction ", line))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["24", f"{row['mean_r']:.3f}", f"{100 * row['mean_r2']:.1f}"]


def test_html_escapes_strings(report):
    results, folder, _ = report
    text = (folder / "report.html").read_text()
    assert "<script>" not in text
    assert html.escape("<script>alert('x')</script>") in text
    assert "unit &lt;run&gt;" in text
    # Markdown viewers render inline HTML too: the Markdown report escapes it the same way,
    # outside code fences (whose content is shown as it is).
    markdown = re.sub(r"(?ms)^(`{3,})\w*\n.*?^\1$", "", (folder / "report.md").read_text())
    assert "<script>" not in markdown and "<run>" not in markdown
    assert "# jaxenc report: unit &lt;run&gt;" in markdown


def test_voxels_without_a_finite_score_are_counted_not_hidden(run_results, tmp_path):
    model = run_results.models[0]
    r = model.scores.r.copy()
    r[:3] = np.nan
    r[3] = np.inf
    model.scores = type(model.scores)(**{**model.scores.arrays(), "r": r})
    summary = model.scores.summary()
    assert summary["n_nonfinite"] == model.scores.n_nonfinite == 4
    assert summary["mean_r"] == pytest.approx(np.mean(r[4:]), rel=1e-6)
    text = write_report(run_results, tmp_path, formats=("md",))["md"].read_text()
    assert (f"left out of every mean: {model.subject} {model.features} | {model.model} | {model.target}: 4 of "
            f"{model.scores.n_voxels}") in text


def test_unknown_format_refused(run_results, tmp_path):
    with pytest.raises(ConfigError, match="pdf"):
        write_report(run_results, tmp_path, formats=("pdf",))


def test_pycortex_absent(run_results, monkeypatch, tmp_path):
    # None in sys.modules makes `import cortex` raise ImportError even where it is installed.
    monkeypatch.setitem(sys.modules, "cortex", None)
    flatmaps = {"UTS01": {"pycortex_subject": "UTS01", "xfm": "UTS01_auto"}}
    assert render_flatmaps(run_results, flatmaps) == ([], "skipped: pycortex not installed")
    assert render_flatmaps(run_results, None) == ([], "skipped: no pycortex subject given")
    run_results.sweeps = []
    text = write_report(run_results, tmp_path, formats=("md",), flatmaps=flatmaps)["md"]
    assert "## Flatmaps\n\n*skipped: pycortex not installed*" in text.read_text()


def test_import_is_light():
    code = textwrap.dedent("""
        import sys
        import jaxenc.report
        assert "matplotlib" not in sys.modules, "matplotlib loaded by importing jaxenc.report"
        from jaxenc.report import write_report
        assert "matplotlib.pyplot" not in sys.modules
        assert "jax" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_data_scaling_curve_shows_its_fold_spread(run_results, tmp_path):
    def row(subject, model, x, label, r, folds):
        folds = np.asarray(folds, float)
        return {"subject": subject, "model": model, "x": x, "label": label, "mean_r": r,
                "fold_mean_r": folds.mean() if folds.size else np.nan,
                "fold_std_r": folds.std() if folds.size else np.nan, "n_folds": folds.size}

    rows = [row("UTS01", "mlp", 0.25, "3/12", 0.20, [0.1, 0.2]), row("UTS02", "mlp", 0.25, "3/12", 0.30, [0.3, 0.5]),
            row("UTS01", "mlp", 1.0, "12/12", 0.40, [0.3, 0.3]), row("UTS01", "ridge", 0.25, "3/12", 0.35, [])]
    run_results.sweeps = [{"name": "training data (audio+semantic, pca)", "x_label": "share of the training stories",
                           "rows": rows}]
    text = write_report(run_results, tmp_path, formats=("md",))["md"].read_text()
    # Per subject, their mean, and the fold models' mean +- std averaged over subjects:
    # UTS01 folds 0.15 +- 0.05, UTS02 0.4 +- 0.1 -> 0.275 +- 0.075.
    (line,) = [x for x in text.splitlines() if x.startswith("| mlp") and "3/12" in x]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["0.200", "0.300", "0.250", "0.275 +- 0.075"], cells
    (ridge,) = [x for x in text.splitlines() if x.startswith("| ridge") and "3/12" in x]
    assert ridge.rstrip(" |").endswith("n/a")
    assert (tmp_path / "figures" / "sweep-1-training-data-audio+semantic-pca.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_data_scaling_curve_of_several_draws_shows_their_spread(run_results, tmp_path):
    def row(subject, x, label, r, n_draws, draw_std):
        return {"subject": subject, "model": "mlp", "x": x, "label": label, "mean_r": r, "fold_mean_r": r,
                "fold_std_r": 0.01, "n_folds": 2 * n_draws, "n_draws": n_draws, "draw_std_r": draw_std}

    rows = [row("UTS01", 0.25, "3/12", 0.2, 4, 0.02), row("UTS02", 0.25, "3/12", 0.3, 4, 0.04),
            row("UTS01", 1.0, "12/12", 0.4, 1, 0.0)]
    run_results.sweeps = [{"name": "training data (audio+semantic, pca)", "x_label": "share of the training stories",
                           "rows": rows}]
    text = write_report(run_results, tmp_path, formats=("md",))["md"].read_text()
    # The draws column: how many, and the subjects' mean std over them (0.02 and 0.04 -> 0.03).
    (line,) = [x for x in text.splitlines() if x.startswith("| mlp") and "3/12" in x]
    assert line.rstrip(" |").endswith("4 (std 0.030)"), line
    assert "bands: +- the std over the subset draws" in text
