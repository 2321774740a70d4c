"""Data-scaling curves: the fold models' mean r against numpy, the curves' layout, and where one
encoder overtakes another."""

from __future__ import annotations

import numpy as np
import pytest

from jaxenc.analysis import sweep_curves
from jaxenc.analysis.scaling import curve_gaps, curve_means, data_curves, fold_mean_r
from jaxenc.metrics import Scores
from jaxenc.report import ModelResult
from tests._tolerance import correlation_atol


def test_fold_mean_r_is_the_mean_pearson_r_of_each_fold_model():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((50, 7)).astype(np.float32)
    folds = (target + rng.standard_normal((3, 50, 7)) * np.asarray([0.5, 1.0, 2.0])[:, None, None]).astype(np.float32)
    trim = 5
    expected = [np.mean([np.corrcoef(target[trim:, v].astype(np.float64), f[trim:, v].astype(np.float64))[0, 1]
                         for v in range(7)]) for f in folds]
    got = fold_mean_r(folds, target, trim=trim)
    # Float32 Pearson r over 45 rows against float64 (correlation_atol; a mean of rs is no worse
    # than its worst r); a wrong trim or row moves r by 1e-2 or more.
    np.testing.assert_allclose(got, expected, atol=correlation_atol(45))
    assert got[0] > got[1] > got[2]  # more noise, lower r


def _result(features, model, r_mean, info=None, subject="S1"):
    r = np.full(10, r_mean)
    scores = Scores(r=r, r2=r * np.abs(r), r2_cod=r**2, cc_norm=2 * r, p=np.full(10, 0.01),
                    significant=np.ones(10, bool))
    return ModelResult(subject, features, model, "pca", scores, info or {})


def test_subsets_and_the_full_fit_form_one_curve_per_features_and_target():
    models = [
        _result("audio+semantic", "mlp", 0.4, {"fold_mean_r": [0.3, 0.35, 0.4]}),
        _result("audio+semantic@3of12", "mlp", 0.2, {"data_stories": [3, 12], "fold_mean_r": [0.1, 0.2, 0.3]}),
        _result("audio+semantic@6of12", "mlp", 0.3, {"data_stories": [6, 12]}),
        _result("audio+semantic", "ridge", 0.5),
        _result("audio+semantic@3of12", "ridge", 0.45, {"data_stories": [3, 12]}),
        _result("audio", "mlp", 0.1),  # no subsets: not on a curve
    ]
    (curve,) = data_curves(models)
    assert curve["name"] == "training data (audio+semantic, pca)"
    rows = {(r["model"], r["label"]): r for r in curve["rows"]}
    assert sorted(rows) == [("mlp", "12/12"), ("mlp", "3/12"), ("mlp", "6/12"), ("ridge", "12/12"),
                            ("ridge", "3/12")]
    assert rows["mlp", "3/12"]["x"] == 0.25 and rows["mlp", "12/12"]["x"] == 1.0
    assert rows["mlp", "3/12"]["fold_mean_r"] == pytest.approx(0.2)
    assert rows["mlp", "3/12"]["fold_std_r"] == pytest.approx(np.std([0.1, 0.2, 0.3]))
    assert rows["mlp", "12/12"]["n_folds"] == 3 and rows["mlp", "12/12"]["mean_r"] == pytest.approx(0.4)
    assert np.isnan(rows["ridge", "3/12"]["fold_mean_r"]) and rows["ridge", "3/12"]["n_folds"] == 0
    # sweep_curves lists them with the other sweeps; the depth curve ignores the subsets.
    assert [c["name"] for c in sweep_curves(models)] == ["training data (audio+semantic, pca)"]


def test_a_subjects_draws_at_one_size_are_one_row_their_mean():
    models = [
        _result("audio+semantic", "mlp", 0.4, {"fold_mean_r": [0.3, 0.4]}),
        _result("audio+semantic@3of12", "mlp", 0.2, {"data_stories": [3, 12], "fold_mean_r": [0.1, 0.2]}),
        _result("audio+semantic@3of12d1", "mlp", 0.3,
                {"data_stories": [3, 12], "data_draw": 1, "fold_mean_r": [0.25, 0.35]}),
        _result("audio+semantic@3of12", "mlp", 0.1, {"data_stories": [3, 12]}, subject="S2"),
    ]
    (curve,) = data_curves(models)
    rows = {(r["subject"], r["label"]): r for r in curve["rows"]}
    assert sorted(rows) == [("S1", "12/12"), ("S1", "3/12"), ("S2", "3/12")]
    small = rows["S1", "3/12"]
    assert small["n_draws"] == 2 and small["mean_r"] == pytest.approx(0.25)
    assert small["mean_cc_norm"] == pytest.approx(0.5)
    assert small["draw_std_r"] == pytest.approx(0.05)
    # The fold models of both draws: 4 of them.
    assert small["n_folds"] == 4 and small["fold_mean_r"] == pytest.approx(0.225)
    assert small["fold_std_r"] == pytest.approx(np.std([0.1, 0.2, 0.25, 0.35]))
    assert rows["S1", "12/12"]["n_draws"] == 1 and rows["S1", "12/12"]["draw_std_r"] == 0.0
    assert rows["S2", "3/12"]["n_draws"] == 1


def test_curve_gaps_find_where_a_model_overtakes():
    means = {"deep": {0.25: 0.1, 0.5: 0.3, 1.0: 0.5}, "mlp": {0.25: 0.2, 0.5: 0.35, 1.0: 0.4}}
    gaps = curve_gaps(means, "deep", "mlp")
    assert gaps["xs"] == [0.25, 0.5, 1.0]
    np.testing.assert_allclose(gaps["gaps"], [-0.1, -0.05, 0.1])
    assert gaps["crossing"] == 1.0
    assert curve_gaps(means, "deep", "mlp", margin=0.2)["crossing"] is None  # never 0.2 ahead
    assert curve_gaps(means, "mlp", "deep", margin=-0.5)["crossing"] is None  # ahead from the start


def test_curve_means_average_subjects_at_each_x():
    rows = [{"model": "mlp", "x": 0.5, "r": 0.2}, {"model": "mlp", "x": 0.5, "r": 0.4},
            {"model": "mlp", "x": 1.0, "r": 0.5}]
    assert curve_means(rows, "r") == {"mlp": {0.5: pytest.approx(0.3), 1.0: 0.5}}
