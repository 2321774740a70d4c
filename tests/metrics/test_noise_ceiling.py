"""cc_max, cc_norm and explainable_variance against the papers' formulas and simulations.

Float32 results against the float64 formulas are compared within bounds derived from float32
rounding (tests/_tolerance.py: ``noise_ceiling_rtol`` for the ceiling's cancellation,
``correlation_atol`` for centred sums over the TRs); the simulations' tolerances are
statistical and say so.
"""

import numpy as np
import pytest
import scipy.stats
from numpy.testing import assert_allclose

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import cc_max, cc_norm, explainable_variance, signal_power
from tests._tolerance import assert_within, correlation_atol, noise_ceiling_rtol

N_REPEATS, N_TRS = 10, 291


def simulated(snrs, n_voxels_each, seed=0):
    """Repeats = signal + independent unit-variance noise, signal variance = SNR per voxel group."""
    rng = np.random.default_rng(seed)
    snr = np.repeat(snrs, n_voxels_each)
    signal = rng.standard_normal((N_TRS, snr.size)) * np.sqrt(snr)
    repeats = signal + rng.standard_normal((N_REPEATS, N_TRS, snr.size))
    return signal, repeats, snr


def schoppe_reference(repeats):
    """Schoppe et al. 2016 written out from the paper, with ddof = 1 (jaxenc uses 0)."""
    n = repeats.shape[0]
    var_each = np.array([np.var(r, axis=0, ddof=1) for r in repeats])
    total_power = var_each.mean(axis=0)
    var_sum = np.var(repeats.sum(axis=0), axis=0, ddof=1)
    signal_pow = (var_sum - var_each.sum(axis=0)) / (n * (n - 1))
    with np.errstate(invalid="ignore"):  # SP < 0 gives NaN, which the tests expect
        return 1.0 / np.sqrt(1.0 + (total_power / signal_pow - 1.0) / n)


def sahani_linden_reference(repeats, bias_correction=True):
    z = scipy.stats.zscore(repeats, axis=1)
    ev = np.var(z.mean(axis=0), axis=0, ddof=1) / np.var(z, axis=1, ddof=1).mean(axis=0)
    if bias_correction:
        ev = ev - (1 - ev) / (repeats.shape[0] - 1)
    return ev


def test_cc_max_matches_formula():
    _, repeats, _ = simulated([0.1, 0.5, 2.0], 20, seed=1)
    # About 1e-5 here (SNR 0.1 voxels: TP / SP ~ 11, and the estimate's noise cancels SP further);
    # a ddof or 1 / N slip in the formula moves cc_max by 1e-2 or more.
    assert_within(cc_max(repeats), schoppe_reference(repeats), rtol=noise_ceiling_rtol(repeats))


def test_cc_max_recovers_known_ceiling():
    # With signal variance s and unit noise, the mean of N repeats correlates with the signal at
    # sqrt(s / (s + 1 / N)); over 400 voxels per SNR the estimate's mean is within 0.02 of it
    # (a statistical margin: the estimate's spread over voxels, not rounding).
    snrs = [0.05, 0.2, 1.0]
    signal, repeats, snr = simulated(snrs, 400, seed=2)
    estimate = np.asarray(cc_max(repeats))
    for s in snrs:
        group = estimate[snr == s]
        truth = np.sqrt(s / (s + 1 / N_REPEATS))
        assert np.mean(np.isnan(group)) < 0.01
        assert abs(np.nanmean(group) - truth) < 0.02, (s, np.nanmean(group), truth)


def test_undefined_ceiling_is_nan():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N_TRS, 2))
    repeats = np.stack([x, -x])  # SP = -Var(x) < 0
    repeats[:, :, 1] = 2.0  # constant voxel: SP = 0
    sp, tp = signal_power(repeats)
    assert np.all(np.asarray(sp) <= 0)
    assert np.all(np.isnan(np.asarray(cc_max(repeats))))


def test_cc_norm_matches_reference_with_and_without_floor():
    signal, repeats, _ = simulated([0.02, 0.3, 1.0], 15, seed=4)
    repeats[:2, :, 0] *= -1  # make voxel 0's signal power negative
    rng = np.random.default_rng(5)
    y_pred = signal + rng.standard_normal(signal.shape)
    mean = repeats.mean(axis=0)
    r = np.array([scipy.stats.pearsonr(m, p).statistic for m, p in zip(mean.T, y_pred.T, strict=True)])
    ceiling = schoppe_reference(repeats)
    assert np.isnan(ceiling[0])
    # r / c errs by (error of r) / c + |r / c| (relative error of c).
    r_atol, c_rtol = correlation_atol(N_TRS), noise_ceiling_rtol(repeats)
    assert_within(cc_norm(y_pred, repeats), r / ceiling, rtol=c_rtol, atol=r_atol / np.nanmin(ceiling))
    floored = np.where(np.isnan(ceiling), 0.25, np.maximum(ceiling, 0.25))
    # The floor replaces the undefined ceiling of voxel 0: r / 0.25 there, no ceiling error.
    assert_within(cc_norm(y_pred, repeats, floor=0.25), r / floored, rtol=c_rtol, atol=r_atol / 0.25)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_explainable_variance_matches_reference(bias_correction):
    _, repeats, _ = simulated([0.05, 0.5, 2.0], 20, seed=6)
    repeats = repeats * 3.0 + 7.0  # z-scoring must remove scale and offset
    # Centred sums over the TRs (the offset 7 is about 2.5 standard deviations: rms / std ~ 3),
    # then means over the repeats; the bias correction scales the error by N / (N - 1). About
    # 5e-6; a ddof or z-scoring slip moves EV by 1e-3 or more.
    rms_over_std = float(np.max(np.sqrt(np.mean(repeats**2, axis=1)) / repeats.std(axis=1)))
    atol = correlation_atol(N_TRS, rms_over_std) * N_REPEATS / (N_REPEATS - 1)
    assert_allclose(
        explainable_variance(repeats, bias_correction=bias_correction),
        sahani_linden_reference(repeats, bias_correction),
        rtol=0,
        atol=atol,
    )


def test_explainable_variance_recovers_signal_fraction():
    # Bias-corrected EV estimates s / (s + 1) (signal over total variance of one repeat); 0.01 is
    # a statistical margin for the mean over 400 voxels, not rounding.
    snrs = [0.05, 0.25, 1.0]
    _, repeats, snr = simulated(snrs, 400, seed=7)
    ev = np.asarray(explainable_variance(repeats))
    for s in snrs:
        assert abs(ev[snr == s].mean() - s / (s + 1)) < 0.01


def test_bad_inputs():
    _, repeats, _ = simulated([0.5], 4)
    with pytest.raises(AlignmentError, match="n_repeats, n_trs, n_voxels"):
        cc_max(repeats[0])
    with pytest.raises(ConfigError, match="2 repeats"):
        explainable_variance(repeats[:1])
    with pytest.raises(AlignmentError, match="y_pred has shape"):
        cc_norm(repeats[0, :-1], repeats)
    with pytest.raises(ConfigError, match="floor"):
        cc_norm(repeats[0], repeats, floor=1.5)
