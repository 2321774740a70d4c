"""One array policy at every public entry point (jaxenc.validation): the argument is named,
the errors are ValueErrors, booleans are numbers everywhere, empty arrays are refused."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest

from jaxenc.errors import AlignmentError, ConfigError, DataWarning, NonFiniteError
from jaxenc.metrics import ScoreConfig, score
from jaxenc.models import MLP, RidgeCV, RidgeOptions
from jaxenc.pipeline import SubjectArrays, fit_predict
from jaxenc.train import TrainConfig, fit_encoders_arrays

RIDGE = RidgeOptions(folds=2)
TRAIN = TrainConfig(n_components=None, max_epochs=2, n_folds=2)


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((120, 6)), rng.standard_normal((120, 5))
    groups = np.repeat(["a", "b", "c", "d"], 30)
    return X, Y, groups, rng.standard_normal((20, 6))


def test_the_library_errors_are_value_errors():
    assert issubclass(NonFiniteError, ValueError) and issubclass(NonFiniteError, FloatingPointError)
    from jaxenc.train import NonFiniteError as exported

    assert exported is NonFiniteError


def test_fit_predict_names_the_argument_holding_nan_for_ridge_and_networks(arrays):
    X, Y, groups, X_test = arrays
    bad = X_test.copy()
    bad[3, 2] = np.nan
    for model, kwargs in (("ridge", {"ridge": RIDGE}), ("mlp", {"train": TRAIN})):
        with pytest.raises(NonFiniteError, match=r"subject S1: NaN or infinity in X_test at row 3, column 2"):
            fit_predict(model, {"S1": SubjectArrays(X, Y, groups, bad)}, **kwargs)
    worse = Y.copy()
    worse[7, 4] = np.inf
    with pytest.raises(NonFiniteError, match=r"NaN or infinity in Y at row 7, column 4"):
        fit_predict("ridge", {"S1": SubjectArrays(X, worse, groups, X_test)}, ridge=RIDGE)


def test_no_voxels_rows_or_test_rows_are_refused_naming_the_argument(arrays):
    X, Y, groups, X_test = arrays
    cases = [((X, Y[:, :0], groups, X_test), r"Y has shape \(120, 0\)"),
             ((X[:0], Y[:0], groups[:0], X_test), r"X has shape \(0, 6\)"),
             ((X, Y, groups, X_test[:0]), r"X_test has shape \(0, 6\)")]
    for args, message in cases:
        for model in ("ridge", "mlp"):
            with pytest.raises(AlignmentError, match=message):
                fit_predict(model, {"S1": SubjectArrays(*args)}, ridge=RIDGE, train=TRAIN)
    with pytest.raises(AlignmentError, match=r"responses has shape \(30, 0\)"):
        fit_encoders_arrays(partial(MLP, hidden=4), {"S1": (X, Y[:, :0], groups)}, TRAIN, progress=False)
    with pytest.raises(AlignmentError, match=r"Y has shape \(120, 0\): at least one voxel"):
        RidgeCV(cv=2).fit(X, Y[:, :0], groups=groups)
    with pytest.raises(AlignmentError, match="no voxel to score"):
        score(np.zeros((20, 0)), np.zeros((2, 20, 0)), ScoreConfig(test_trim=0))


def test_a_fit_predicts_only_features_of_its_own_width(arrays):
    X, Y, groups, X_test = arrays
    fit = fit_encoders_arrays(partial(MLP, hidden=4), {"S1": (X, Y, groups)}, TRAIN, progress=False)
    assert fit.n_features == 6 and fit.predict({"S1": X_test})["S1"].shape == (20, 5)
    with pytest.raises(AlignmentError, match=r"subject S1: features\['S1'\] has 7 columns, expected 6"):
        fit.predict({"S1": np.zeros((20, 7))})
    with pytest.raises(NonFiniteError, match=r"NaN or infinity in features\['S1'\] at row 0, column 0"):
        fit.predict({"S1": np.full((20, 6), np.nan)})
    with pytest.raises(ConfigError, match="must hold real numbers"):
        fit.predict({"S1": X_test.astype(complex)})


def test_booleans_are_numbers_for_ridge_and_the_trainer_alike(arrays):
    """An indicator design as bool gives exactly what the same 0/1 floats give."""
    X, Y, groups, _ = arrays
    on = X > 0
    as_bool = RidgeCV(cv=2).fit(on, Y, groups=groups)
    as_float = RidgeCV(cv=2).fit(on.astype(np.float64), Y, groups=groups)
    np.testing.assert_array_equal(as_bool.coef_, as_float.coef_)
    np.testing.assert_array_equal(as_bool.predict(on), as_float.predict(on.astype(np.float64)))
    fits = [fit_encoders_arrays(partial(MLP, hidden=4), {"S1": (design, Y, groups)}, TRAIN, progress=False)
            for design in (on, on.astype(np.float32))]
    np.testing.assert_array_equal(fits[0].history, fits[1].history)
    for refused in (X.astype(complex), X.astype(str)):
        with pytest.raises(ConfigError, match="X must hold real numbers"):
            RidgeCV(cv=2).fit(refused, Y, groups=groups)
        with pytest.raises(ConfigError, match="X must hold real numbers"):
            fit_predict("ridge", {"S1": SubjectArrays(refused, Y, groups, refused[:20])}, ridge=RIDGE)


@pytest.mark.slow
def test_more_components_than_the_data_allows_are_lowered_with_a_warning(arrays):
    """Components beyond min(rows, voxels) have no variance to explain: fit_predict fits the
    most there are and says so; fit_encoders, given an exact count, refuses."""
    X, Y, groups, X_test = arrays
    data = {"S1": SubjectArrays(X, Y, groups, X_test)}
    with pytest.warns(DataWarning, match=r"subject S1: train.n_components = 500 principal components asked, "
                                         r"but the responses allow at most 5 .*; fitting 5"):
        job = fit_predict("mlp", data, target="pca", train=TrainConfig(max_epochs=1, n_folds=2, n_components=500))
    assert job.info["n_components"] == 5
    with pytest.warns(DataWarning, match="at most 5 "):
        fit_predict("ridge", data, target="pca", ridge=RIDGE, train=TrainConfig(n_components=500))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        fit_predict("ridge", data, target="pca", ridge=RIDGE, train=TrainConfig(n_components=4))
    with pytest.raises(ConfigError, match="n_components=500 exceeds"):
        fit_encoders_arrays(partial(MLP, hidden=4), {"S1": (X, Y, groups)},
                            TrainConfig(n_components=500, max_epochs=1, n_folds=2), progress=False)
