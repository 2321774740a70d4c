"""The test-story scores pinned against formulas written here, in float64 numpy.

r: Pearson correlation with the mean of the repeats; r2: the paper's r·|r|; r2_cod: the
coefficient of determination; cc_norm: r / max(cc_max, 0.25), Schoppe's cc_max from the
repeats; all on the rows left after dropping the first ``trim`` rows of the prediction and of
every repeat (the reference protocol drops 40 of the test story's 291 rows).

The float32 scores are compared within ``score_tolerances`` (tests/_tolerance.py), derived from
float32 rounding: about 1e-5 absolute, and up to 3e-4 relative for the ceilings of the SNR
0.005 voxels, whose signal power cancels 200-fold. A trim, floor or ddof bug moves scores by
1e-2 or more.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import (
    VOXEL_SCORES,
    ScoreConfig,
    block_permutations,
    drop_first_rows,
    fdr_bh,
    permutation_test,
    protocol_trim,
    score,
    signed_r2,
    voxel_scores,
)
from tests._tolerance import assert_within, score_tolerances

N_REPEATS, N_TRS, N_VOXELS = 10, 291, 48


def reference(prediction, repeats, trim, floor):
    """Every score written out from its definition, on rows [trim:], in float64."""
    pred = prediction[trim:].astype(np.float64)
    rep = repeats[:, trim:].astype(np.float64)
    y = rep.mean(axis=0)
    yc, pc = y - y.mean(axis=0), pred - pred.mean(axis=0)
    r = (yc * pc).sum(axis=0) / np.sqrt((yc**2).sum(axis=0) * (pc**2).sum(axis=0))
    cod = 1 - ((y - pred) ** 2).sum(axis=0) / (yc**2).sum(axis=0)
    n = rep.shape[0]
    var_each = rep.var(axis=1)  # ddof 0; the ratio TP / SP does not depend on it
    total_power = var_each.mean(axis=0)
    signal_power = (rep.sum(axis=0).var(axis=0) - var_each.sum(axis=0)) / (n * (n - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ceiling = 1 / np.sqrt(1 + (total_power / signal_power - 1) / n)
    ceiling = np.where(signal_power > 0, ceiling, np.nan)
    ceiling = np.fmax(ceiling, floor)  # an undefined ceiling takes the floor
    return {"r": r, "r2": r * np.abs(r), "r2_cod": cod, "cc_norm": r / ceiling, "cc_max": ceiling}


def simulated(seed=0):
    """Repeats = signal + noise over a range of SNRs (some ceilings below the floor); the
    prediction is a scaled, offset, noisy copy of the signal, a few voxels anti-correlated."""
    rng = np.random.default_rng(seed)
    snr = np.geomspace(0.005, 3.0, N_VOXELS)
    signal = rng.standard_normal((N_TRS, N_VOXELS)) * np.sqrt(snr)
    repeats = signal + rng.standard_normal((N_REPEATS, N_TRS, N_VOXELS))
    prediction = 0.6 * signal + 0.3 + 0.5 * rng.standard_normal((N_TRS, N_VOXELS))
    prediction[:, -5:] *= -1
    return prediction.astype(np.float32), repeats.astype(np.float32)


def test_each_score_matches_its_formula_on_the_rows_kept():
    prediction, repeats = simulated()
    ref = reference(prediction, repeats, 40, 0.25)
    # The floor is exercised: several voxels' ceilings are below 0.25 or undefined.
    assert np.sum(ref["cc_max"] == 0.25) >= 5
    got = voxel_scores(repeats.mean(axis=0), prediction, repeats, trim=40, floor=0.25)
    assert tuple(got) == VOXEL_SCORES
    for name in VOXEL_SCORES:
        assert got[name].shape == (N_VOXELS,)
        rtol, atol = score_tolerances(prediction, repeats, 40, 0.25)[name]
        assert_within(got[name], ref[name], rtol=rtol, atol=atol, err_msg=name)
    assert (got["r2"][-5:] < -0.1).all(), "anti-correlated voxels keep the sign of r in r2"
    # The coefficient of determination charges the prediction's scale and offset; r2 does not.
    assert np.mean(got["r2_cod"]) < np.mean(got["r2"])


def test_the_trim_drops_rows_of_the_prediction_and_of_every_repeat():
    prediction, repeats = simulated(1)
    config = ScoreConfig(test_trim=40, permutations=20)
    base = score(prediction, repeats, config).arrays()
    changed_p, changed_rep = prediction.copy(), repeats.copy()
    changed_p[:40] = 100.0
    changed_rep[3, :40] = -50.0  # one repeat only: the noise ceiling must ignore it too
    changed = score(changed_p, changed_rep, config).arrays()
    for name in base:
        np.testing.assert_array_equal(changed[name], base[name], err_msg=name)
    changed_rep[3, 40] += 5.0  # the first row kept does count
    moved = score(changed_p, changed_rep, config)
    assert not np.array_equal(moved.cc_norm, base["cc_norm"])


def test_permutation_significance_is_computed_on_the_rows_kept():
    prediction, repeats = simulated(2)
    got = score(prediction, repeats, ScoreConfig(test_trim=40, permutations=50, block_size=10, alpha=0.05), seed=3)
    target = repeats[:, 40:].mean(axis=0)
    p = np.asarray(permutation_test(target, prediction[40:], n_permutations=50, block_size=10, seed=3))
    # Block permutations of the kept rows only: 251 rows in blocks of 10.
    assert block_permutations(251, 50, 10, seed=3).shape == (50, 251)
    np.testing.assert_array_equal(got.p, p)
    np.testing.assert_array_equal(got.significant, np.asarray(fdr_bh(p, alpha=0.05)[0]))


def test_the_default_trim_is_the_protocols_share_of_the_story():
    assert protocol_trim(291) == 40  # ds003020's wheretheressmoke, the reference's 50:-5
    assert protocol_trim(73) == 10  # the demo twin's test story
    assert protocol_trim(50) == 7  # the tiny twin's
    prediction, repeats = simulated(3)
    target = repeats.mean(axis=0)
    default = voxel_scores(target, prediction, repeats)
    explicit = voxel_scores(target, prediction, repeats, trim=40)
    for name in VOXEL_SCORES:
        np.testing.assert_array_equal(default[name], explicit[name])
    untrimmed = reference(prediction, repeats, 0, 0.25)
    _, atol = score_tolerances(prediction, repeats, 0, 0.25)["r"]
    assert_allclose(voxel_scores(target, prediction, repeats, trim=0)["r"], untrimmed["r"], rtol=0, atol=atol)


def test_score_config_refuses_unusable_settings():
    for change, message in (({"permutations": 0}, "permutations must be positive"),
                            ({"block_size": 0}, "block_size must be positive"),
                            ({"alpha": 1.0}, "alpha must be in"), ({"floor": 0.0}, "floor must be in"),
                            ({"test_trim": -1}, "test_trim must be at least 0")):
        with pytest.raises(ConfigError, match=message):
            ScoreConfig(**change).validate()


def test_signed_r2_keeps_the_sign():
    r = np.array([-0.5, 0.0, 0.2, np.nan])
    assert_allclose(signed_r2(r), [-0.25, 0.0, 0.04, np.nan])


def test_bad_trims_and_shapes_are_named():
    prediction, repeats = simulated(4)
    target = repeats.mean(axis=0)
    with pytest.raises(ConfigError, match="leaves 1 of the 291 rows"):
        voxel_scores(target, prediction, repeats, trim=290)
    with pytest.raises(ConfigError, match="non-negative number of TRs"):
        drop_first_rows(target, -1)
    with pytest.raises(AlignmentError, match="test responses have shape"):
        voxel_scores(target[:-1], prediction)
    with pytest.raises(AlignmentError, match="test repeats have shape"):
        voxel_scores(target, prediction, repeats[:, :-1])
