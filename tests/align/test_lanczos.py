"""Tests of jaxenc.align.lanczos against a float64 loop formulation written from the math."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxenc.align import lanczos as lanczos_module
from jaxenc.align import lanczos_interp, lanczos_kernel
from jaxenc.align.lanczos import bucket_length
from jaxenc.errors import AlignmentError, ConfigError
from tests._tolerance import U32, assert_within, lanczos_atol


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def kernel_reference(t, window):
    if t == 0:
        return 1.0
    if abs(t) > window:
        return 0.0
    return window * math.sin(math.pi * t) * math.sin(math.pi * t / window) / (math.pi**2 * t**2)


def interp_reference(data, old_times, new_times, window=3, cutoff_mult=1.0):
    data = np.asarray(data, np.float64).reshape(len(old_times), -1)
    cutoff = cutoff_mult / np.mean(np.diff(new_times))
    out = np.zeros((len(new_times), data.shape[1]))
    for i, new in enumerate(new_times):
        for j, old in enumerate(old_times):
            out[i] += kernel_reference(cutoff * (new - old), window) * data[j]
    return out


def irregular_case(rng, n_old=60, n_new=14, n_features=3):
    # Word-like times: irregular, with a repeated time and old times landing exactly on new
    # times (t == 0) as well as far beyond the window.
    old_times = np.sort(rng.uniform(-5.0, 30.0, n_old))
    new_times = np.arange(n_new) * 2.0 - 1.0
    old_times[[10, 11]] = old_times[10]
    old_times[20] = new_times[5]
    old_times = np.sort(old_times)
    data = rng.standard_normal((n_old, n_features))
    return data, old_times, new_times


def test_kernel_matches_formula_including_zero_and_edges(x64):
    t = np.array(
        [0.0, 1e-9, -1e-6, 9.9e-5, 1.01e-4, 0.3, -1.7, 2.5, 2.999, 3.0, 3.0001, -4.0, 10.0]
    )
    for window in (3, 2.5):
        expected = np.array([kernel_reference(v, window) for v in t])
        got = np.asarray(lanczos_kernel(t, window))
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_kernel_finite_values_and_gradients_near_zero_in_float32():
    t = jnp.array([0.0, 1e-38, 1e-30, -1e-12, 1e-5, 1e-4, 3.0, 5.0], jnp.float32)
    values = lanczos_kernel(t)
    grads = jax.vmap(jax.grad(lanczos_kernel))(t)
    assert values.dtype == jnp.float32
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    # L(t) = 1 - c t^2 + ..., c = (pi^2 / 6) (1 + 1 / w^2) < 2: below 2e-8 for |t| <= 1e-4, so
    # float32 gives 1 within one rounding of the formula's few operations (2 u).
    np.testing.assert_allclose(values[:5], 1.0, atol=2 * U32)
    # L is even with a maximum at 0, so its slope -2 c t vanishes there: below 4e-5 for these t.
    np.testing.assert_allclose(grads[:5], 0.0, atol=4 * np.abs(np.asarray(t[:5])).max() + 2 * U32)


def test_golden_values_by_hand(x64):
    # new_times [0, 2] -> mean spacing 2 s -> cutoff 0.5 Hz; t = 0.5 * (new - old).
    # new = 0: t = [0, -0.5, -1, -3.5] -> L = [1, 6/pi^2, 0, 0] since
    #   L(0.5) = 3 sin(pi/2) sin(pi/6) / (pi^2 / 4) = 3 * 1 * 0.5 * 4 / pi^2 = 6 / pi^2,
    #   L(1) = 0 (sin(pi) = 0), |-3.5| > 3 -> 0.  out = 1 + 10 * 6/pi^2 = 1 + 60/pi^2.
    # new = 2: t = [1, 0.5, 0, -2.5] -> L = [0, 6/pi^2, 1, 0.24/pi^2] since
    #   L(2.5) = 3 sin(2.5 pi) sin(2.5 pi / 3) / (6.25 pi^2) = 3 * 1 * 0.5 / (6.25 pi^2).
    #   out = 60/pi^2 + 100 + 240/pi^2 = 100 + 300/pi^2.
    # With pi^2 = 9.8696044010894: 1 + 60/pi^2 = 7.07927101854, 100 + 300/pi^2 = 130.39635509270.
    data = np.array([1.0, 10.0, 100.0, 1000.0])
    old_times = np.array([0.0, 1.0, 2.0, 7.0])
    got = np.asarray(lanczos_interp(data, old_times, np.array([0.0, 2.0])))
    np.testing.assert_allclose(got, [7.0792710185402665, 130.39635509270133], rtol=1e-12)


@pytest.mark.parametrize("window, cutoff_mult", [(3, 1.0), (2, 0.7), (4, 1.5)])
def test_matches_loop_reference(x64, window, cutoff_mult):
    data, old_times, new_times = irregular_case(np.random.default_rng(window))
    expected = interp_reference(data, old_times, new_times, window, cutoff_mult)
    got = lanczos_interp(data, old_times, new_times, window, cutoff_mult)
    assert got.dtype == jnp.float64 and got.shape == (len(new_times), data.shape[1])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


def test_one_dimensional_data(x64):
    data, old_times, new_times = irregular_case(np.random.default_rng(1), n_features=1)
    got = lanczos_interp(data[:, 0], old_times, new_times)
    assert got.shape == (len(new_times),)
    np.testing.assert_allclose(np.asarray(got), interp_reference(data, old_times, new_times)[:, 0])


def test_float32_by_default_close_to_float64_reference():
    data, old_times, new_times = irregular_case(np.random.default_rng(2))
    got = lanczos_interp(data.astype(np.float32), old_times, new_times)
    assert got.dtype == jnp.float32
    expected = interp_reference(data, old_times, new_times)
    # lanczos_atol: float32 times (30 s: 4e-6 s of rounding) through the kernel's slope, and the
    # weighted sum's rounding; about 1e-5 here, where a kernel off by one lobe or a wrong cutoff
    # is off by 0.1 or more.
    assert_within(got, expected, atol=lanczos_atol(data, old_times, new_times))


@pytest.mark.parametrize("chunk_size", [1, 5, 14, 100])
def test_chunked_equals_dense(x64, chunk_size):
    data, old_times, new_times = irregular_case(np.random.default_rng(3))
    dense = lanczos_interp(data, old_times, new_times)
    chunked = lanczos_interp(data, old_times, new_times, chunk_size=chunk_size)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(dense), rtol=1e-13, atol=1e-13)


def test_automatic_chunking_of_large_inputs_equals_dense(x64, monkeypatch):
    data, old_times, new_times = irregular_case(np.random.default_rng(4))
    dense = lanczos_interp(data, old_times, new_times)
    # A bound of 3 old-time rows' worth of weights forces the chunked path with chunks of 3.
    monkeypatch.setattr(lanczos_module, "_MAX_DENSE_WEIGHTS", 3 * len(old_times))
    chunked = lanczos_interp(data, old_times, new_times)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(dense), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_jit_matches_eager(chunk_size):
    data, old_times, new_times = irregular_case(np.random.default_rng(5))
    data = data.astype(np.float32)
    eager = lanczos_interp(data, old_times, new_times, chunk_size=chunk_size)
    jitted = jax.jit(lanczos_interp, static_argnames=("window", "cutoff_mult", "chunk_size"))(
        data, old_times, new_times, chunk_size=chunk_size
    )
    # Both round the times alike; only the sums' order may differ.
    assert_within(jitted, eager, atol=lanczos_atol(data, old_times, new_times, computations=2))


def test_gradients_finite_with_coinciding_times_and_match_finite_differences(x64):
    data, old_times, new_times = irregular_case(np.random.default_rng(6))
    weights = np.random.default_rng(7).standard_normal((len(new_times), data.shape[1]))

    def loss(d, old, new):
        return jnp.sum(weights * lanczos_interp(d, old, new))

    grads = jax.grad(loss, argnums=(0, 1, 2))(data, old_times, new_times)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    # Old time 3 is off the new grid; a central difference checks the slope of the kernel.
    step = 1e-6
    shifted = [old_times.copy(), old_times.copy()]
    shifted[0][3] += step
    shifted[1][3] -= step
    numeric = (loss(data, shifted[0], new_times) - loss(data, shifted[1], new_times)) / (2 * step)
    np.testing.assert_allclose(float(grads[1][3]), float(numeric), rtol=1e-6, atol=1e-8)


def test_sine_passband_kept_and_far_stopband_suppressed():
    # Old grid 0.1 s (Nyquist 5 Hz), new grid 2 s (cutoff 0.5 Hz, new Nyquist 0.25 Hz). The
    # kernel is not renormalised: a constant comes out multiplied by about 2 s / 0.1 s = 20,
    # so gains are taken relative to the output for a constant input.
    old_times = np.arange(0.0, 400.0, 0.1)
    new_times = np.arange(40.0, 360.0, 2.0) + 0.3
    dc = np.asarray(lanczos_interp(np.ones_like(old_times), old_times, new_times))
    np.testing.assert_allclose(dc, 20.0, rtol=0.01)

    def relative_output(freq):
        sine = np.sin(2 * np.pi * freq * old_times)
        return np.asarray(lanczos_interp(sine, old_times, new_times)) / dc

    # Well inside the passband the sine survives: within 0.1% at 0.03 Hz (measured 2.5e-4)
    # and 2% at 0.1 Hz (measured 1.2e-2, the ripple of the three-lobe window).
    for freq, tolerance in ((0.03, 1e-3), (0.1, 0.02)):
        expected = np.sin(2 * np.pi * freq * new_times)
        np.testing.assert_allclose(relative_output(freq), expected, atol=tolerance)
    # 1.13 Hz, 4.5 times the new Nyquist, is suppressed below 0.1% (measured 1.7e-4).
    assert np.max(np.abs(relative_output(1.13))) < 1e-3


def test_non_decreasing_times_error_names_index_and_story():
    data, old_times, new_times = irregular_case(np.random.default_rng(8))
    old_times[30] = old_times[29] - 0.5
    with pytest.raises(AlignmentError, match=r"story 'adollshouse'.*old_times\[30\]"):
        lanczos_interp(data, old_times, new_times, story="adollshouse")
    bad_new = new_times.copy()
    bad_new[4] = bad_new[2]
    with pytest.raises(AlignmentError, match=r"new_times\[4\]"):
        lanczos_interp(data, np.sort(old_times), bad_new)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("times_2d", r"old_times must be 1-D"),
        ("rows", r"data has 59 rows but old_times has 60"),
        ("nan_data", r"non-finite value in row 7"),
        ("inf_time", r"new_times must be finite.*new_times\[3\]"),
        ("one_new_time", r"at least two distinct times"),
        ("data_3d", r"data must be \(n_old,\) or \(n_old, n_features\)"),
    ],
)
def test_invalid_inputs_raise_alignment_error_naming_story(case, pattern):
    data, old_times, new_times = irregular_case(np.random.default_rng(9))
    if case == "times_2d":
        old_times = old_times[:, None]
    elif case == "rows":
        data = data[:-1]
    elif case == "nan_data":
        data[7, 1] = np.nan
    elif case == "inf_time":
        new_times[3] = np.inf
    elif case == "one_new_time":
        new_times = new_times[:1]
    elif case == "data_3d":
        data = data[:, :, None]
    with pytest.raises(AlignmentError, match=r"story 'souls'.*" + pattern):
        lanczos_interp(jnp.asarray(data), old_times, new_times, story="souls")


def test_bad_options_raise_config_error():
    data, old_times, new_times = irregular_case(np.random.default_rng(10))
    with pytest.raises(ConfigError, match="window"):
        lanczos_interp(data, old_times, new_times, window=0)
    for chunk_size in (0, 2.5, True):
        with pytest.raises(ConfigError, match="chunk_size"):
            lanczos_interp(data, old_times, new_times, chunk_size=chunk_size)


def test_bucket_lengths_pad_at_most_half():
    got = [bucket_length(n) for n in (0, 1, 16, 17, 24, 25, 33, 49, 97, 1000, 1025)]
    assert got == [16, 16, 16, 24, 24, 32, 48, 64, 128, 1024, 1536]
    for n in range(17, 5000):
        assert n <= bucket_length(n) <= 1.5 * n


def test_lengths_in_one_bucket_share_one_program_and_match_the_reference(backend_compiles):
    # 14 and 15 new times share the bucket 16; 60, 50 and 56 old times the bucket 64.
    rng = np.random.default_rng(12)
    cases = [irregular_case(rng, n_old, n_new) for n_old, n_new in ((60, 14), (50, 15), (56, 14))]
    counts = []
    for data, old_times, new_times in cases:
        with backend_compiles() as compiles:
            got = lanczos_interp(data.astype(np.float32), old_times, new_times)
        counts.append(len(compiles))
        expected = interp_reference(data, old_times, new_times)
        assert_within(got, expected, atol=lanczos_atol(data, old_times, new_times))
    assert counts[0] >= 1 and counts[1:] == [0, 0]
