"""sweep_curves: which fits form which curve, at which x, with the one summary of their scores."""

from __future__ import annotations

import numpy as np
import pytest

from jaxenc.analysis import curve_argmax, sweep_curves
from jaxenc.metrics import Scores
from jaxenc.report import ModelResult


def _result(features, model, info=None, shift=0.0):
    r = np.linspace(-0.1, 0.5, 12) + shift
    scores = Scores(r=r, r2=r * np.abs(r), r2_cod=r**2, cc_norm=2 * r, p=np.full(12, 0.01),
                    significant=np.arange(12) > 3)
    return ModelResult("S1", features, model, "pca", scores, info or {})


def test_layers_models_and_depths_become_curves():
    models = [
        _result("semantic/L0", "ridge", {"sweep": "semantic layer", "x": 0.0, "x_label": "L0"}),
        _result("semantic/L2", "ridge", {"sweep": "semantic layer", "x": 2.0, "x_label": "L2"}, 0.1),
        _result("semantic/big", "ridge", {"sweep": "semantic model", "x": 3e6, "x_label": "big"}),
        _result("audio+semantic", "mlp", shift=0.2),
        _result("audio+semantic", "deepmlp-3", shift=0.1),
        _result("audio+semantic", "ridge"),
        _result("audio", "deepmlp-2"),
    ]
    curves = {c["name"]: c for c in sweep_curves(models)}
    assert list(curves) == ["semantic layer", "semantic model", "depth (audio+semantic)"]
    assert curves["semantic layer"]["x_label"] == "layer"
    assert curves["semantic model"]["x_label"] == "parameters"
    layer = curves["semantic layer"]["rows"]
    assert [(row["x"], row["label"]) for row in layer] == [(0.0, "L0"), (2.0, "L2")]
    assert layer[1]["mean_r"] == models[1].scores.summary()["mean_r"]
    assert layer[1]["n_significant"] == 8
    depth = curves["depth (audio+semantic)"]
    assert depth["x_label"] == "hidden layers"
    assert [(row["model"], row["x"]) for row in depth["rows"]] == [("mlp", 1.0), ("deepmlp-3", 3.0)]


def test_one_depth_is_no_curve():
    assert sweep_curves([_result("audio+semantic", "mlp"), _result("audio+semantic", "ridge")]) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_argmax_is_numpy_s_argmax_and_lead(seed):
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.array([2.0, 4.0, 8.0, 16.0, 32.0]))
    y = rng.random(5)
    y[1] = np.nan
    best, lead = curve_argmax(x, y)
    finite = np.isfinite(y)
    ranked = np.sort(y[finite])
    assert best == x[finite][np.argmax(y[finite])]
    # Differences of the given float64 values: exact.
    assert lead == ranked[-1] - ranked[-2]


def test_curve_argmax_takes_the_first_of_equal_points_in_x_order():
    assert curve_argmax([8.0, 2.0, 4.0], [0.5, 0.1, 0.5]) == (4.0, 0.0)
    best, lead = curve_argmax([1.0], [0.3])
    assert best == 1.0 and np.isnan(lead)
    assert all(np.isnan(curve_argmax([1.0, 2.0], [np.nan, np.nan])))
