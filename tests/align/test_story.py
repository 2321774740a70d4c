"""Tests of jaxenc.align.story against numpy/scipy formulations of the Huth-lab pipeline."""

import jax
import numpy as np
import pytest
import scipy.stats

from jaxenc.align import (
    stack_responses,
    stack_stories,
    story_features,
    tr_times,
    trim,
    zscore,
)
from jaxenc.errors import AlignmentError, ConfigError
from tests._tolerance import U32, assert_within, lanczos_atol, rounding_bound


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def lanczos_reference(data, old_times, new_times, window=3):
    # Broadcast formulation with numpy's sinc: sinc(t) sinc(t / w) equals
    # w sin(pi t) sin(pi t / w) / (pi t)^2, with value 1 at t = 0.
    t = (new_times[:, None] - old_times[None, :]) / np.mean(np.diff(new_times))
    weights = np.where(np.abs(t) > window, 0.0, np.sinc(t) * np.sinc(t / window))
    return weights @ data


def zscored_atol(x_atol, x, computations=1):
    """Bound for float32 z-scores of columns ``x`` whose entries err by up to ``x_atol``.

    An entry's error divided by the column's standard deviation, plus the standard deviation's
    own relative error (at most the largest entry error over it) times ``|z|``, plus the
    z-scoring's rounding (sums of n rows) of values ``|z|``.
    """
    x = np.asarray(x, np.float64)
    std = x.std(axis=0)
    z = np.abs(x - x.mean(axis=0)) / std
    propagated = (x_atol + np.max(x_atol, axis=0) * z) / std
    return propagated + rounding_bound([len(x), len(x), 1] * computations, scale=1 + z.max())


def delayed_reference(x, delays):
    n = x.shape[0]
    blocks = []
    for k in delays:
        block = np.zeros_like(x)
        for t in range(n):
            if 0 <= t - k < n:
                block[t] = x[t - k]
        blocks.append(block)
    return np.hstack(blocks)


def word_times(rng, n_acquired, rate=2.5):
    # Words spread over the story's audio: from sound onset to the end of the last kept TR.
    duration = 2.0 * (n_acquired - 5) - 10.0
    return np.sort(rng.uniform(0.0, duration, int(rate * duration)))


def test_tr_times_formula_and_golden_values():
    # Centres of triggers 2 i - 10 s: -10 + 1, -8 + 1, -6 + 1.
    np.testing.assert_array_equal(np.asarray(tr_times(8)), [-9.0, -7.0, -5.0])
    got = np.asarray(tr_times(261))
    i = np.arange(256)
    assert got.shape == (256,)
    np.testing.assert_allclose(got, 2.0 * i - 10.0 + 1.0)
    # Overridden convention: tr 1.5 s, sound onset 3 s, 2 padding TRs.
    np.testing.assert_allclose(
        np.asarray(tr_times(12, tr=1.5, sound_start=3.0, pad=2)), 1.5 * np.arange(10) - 2.25
    )


def test_trim_keeps_middle_rows():
    x = np.arange(30.0).reshape(15, 2)
    np.testing.assert_array_equal(np.asarray(trim(x, 10, 4)), x[10:11])
    np.testing.assert_array_equal(np.asarray(trim(x, 0, 0)), x)
    np.testing.assert_array_equal(np.asarray(trim(np.arange(256.0))), np.arange(256.0)[10:-5])


@pytest.mark.parametrize("axis, ddof", [(0, 0), (1, 0), (0, 1)])
def test_zscore_matches_scipy(x64, axis, ddof):
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 6))
    np.testing.assert_allclose(
        np.asarray(zscore(x, axis=axis, ddof=ddof)),
        scipy.stats.zscore(x, axis=axis, ddof=ddof),
        rtol=1e-12,
        atol=1e-12,
    )


def test_zscore_constant_columns_are_zero_not_nan():
    x = np.random.default_rng(1).standard_normal((241, 4)).astype(np.float32)
    # 0.1 is not representable, so the mean of the column differs from its entries by
    # rounding; such a column must still give zeros.
    x[:, 1] = 0.1
    x[:, 3] = 0.0
    got = np.asarray(zscore(x))
    np.testing.assert_array_equal(got[:, [1, 3]], 0.0)
    # Two float32 z-scorings (scipy's keeps float32) of exact inputs.
    live = x[:, [0, 2]]
    assert_within(got[:, [0, 2]], scipy.stats.zscore(live), atol=zscored_atol(np.zeros_like(live), live, 2))


@pytest.mark.parametrize(
    "story, n_acquired, rows", [("adollshouse", 261, 241), ("wheretheressmoke", 311, 291)]
)
def test_story_features_match_reference_pipeline(x64, story, n_acquired, rows):
    rng = np.random.default_rng(n_acquired)
    times = word_times(rng, n_acquired)
    values = rng.standard_normal((len(times), 3))
    got = story_features(values, times, n_acquired, story=story, expected_rows=rows)
    centres = 2.0 * np.arange(n_acquired - 5) - 10.0 + 1.0
    expected = scipy.stats.zscore(lanczos_reference(values, times, centres)[10:-5])
    assert got.shape == (rows, 3)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def test_story_features_unstandardized_one_dimensional_and_overridden_grid(x64):
    rng = np.random.default_rng(2)
    times = np.sort(rng.uniform(0.0, 60.0, 150))
    values = rng.standard_normal(len(times))
    got = story_features(
        values,
        times,
        50,
        tr=1.5,
        sound_start=3.0,
        pad=2,
        trim_start=4,
        trim_end=3,
        standardize=False,
    )
    centres = 1.5 * np.arange(48) - 3.0 + 0.75
    expected = lanczos_reference(values[:, None], times, centres)[4:-3]
    assert got.shape == (41, 1)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def test_story_features_wrong_row_count_names_story_and_counts():
    times = word_times(np.random.default_rng(3), 261)
    values = np.ones((len(times), 2))
    with pytest.raises(AlignmentError, match=r"story 'adollshouse'.*241 rows.*expected 240"):
        story_features(values, times, 261, story="adollshouse", expected_rows=240)


def test_story_features_bad_times_name_story():
    times = word_times(np.random.default_rng(4), 100)
    times[5] = -100.0
    with pytest.raises(AlignmentError, match=r"story 'souls'.*old_times\[5\]"):
        story_features(np.ones((len(times), 2)), times, 100, story="souls")


def test_too_short_story_errors_name_story():
    with pytest.raises(AlignmentError, match=r"story 'tiny'.*leaves none"):
        story_features(np.ones((10, 1)), np.linspace(0.0, 20.0, 10), 20, story="tiny")
    with pytest.raises(AlignmentError, match=r"story 'tiny'.*no TRs"):
        tr_times(5, story="tiny")
    with pytest.raises(AlignmentError, match=r"story 'tiny'.*>= 0"):
        trim(np.ones((20, 1)), -1, 5, story="tiny")


def three_stories(rng, n_features=2):
    rows = {"alpha": 6, "beta": 4, "gamma": 5}
    return {s: rng.standard_normal((n, n_features)).astype(np.float32) for s, n in rows.items()}


def test_stack_stories_boundary_story_pads_each_story():
    features = three_stories(np.random.default_rng(5))
    order = ["beta", "alpha", "gamma"]
    delays = (1, 2, -1)
    x, groups, slices = stack_stories(features, order, delays=delays)
    expected = np.vstack([delayed_reference(features[s], delays) for s in order])
    np.testing.assert_allclose(np.asarray(x), expected)
    assert slices == {"beta": slice(0, 4), "alpha": slice(4, 10), "gamma": slice(10, 15)}
    np.testing.assert_array_equal(np.asarray(groups), [0] * 4 + [1] * 6 + [2] * 5)
    assert groups.dtype == np.int32
    # No leakage across stories: the first row of every story is zero in the delay-1 and
    # delay-2 blocks, its second row in the delay-2 block, its last row in the delay -1 block.
    for s in order:
        start, stop = slices[s].start, slices[s].stop
        np.testing.assert_array_equal(np.asarray(x[start, :4]), 0.0)
        np.testing.assert_array_equal(np.asarray(x[start + 1, 2:4]), 0.0)
        np.testing.assert_array_equal(np.asarray(x[stop - 1, 4:]), 0.0)


def test_stack_stories_concatenate_matches_stack_then_delay():
    features = three_stories(np.random.default_rng(6))
    order = ["gamma", "alpha", "beta"]
    x, groups, slices = stack_stories(features, order, boundary="concatenate")
    stacked = np.vstack([features[s] for s in order])
    np.testing.assert_allclose(np.asarray(x), delayed_reference(stacked, (1, 2, 3, 4)))
    # The reference convention lets alpha's first row see gamma's last row at delay 1.
    np.testing.assert_allclose(np.asarray(x[slices["alpha"].start, :2]), features["gamma"][-1])
    np.testing.assert_array_equal(np.asarray(groups), [0] * 5 + [1] * 6 + [2] * 4)


def test_stack_responses_checks_rows_against_features():
    rng = np.random.default_rng(7)
    features = three_stories(rng)
    responses = {s: rng.standard_normal((f.shape[0], 3)) for s, f in features.items()}
    order = ["alpha", "gamma"]
    _, feature_groups, slices = stack_stories(features, order)
    y, groups = stack_responses(responses, order, feature_rows=slices)
    # float64 responses stored as float32: one rounding.
    np.testing.assert_allclose(np.asarray(y), np.vstack([responses[s] for s in order]), rtol=U32)
    np.testing.assert_array_equal(np.asarray(groups), np.asarray(feature_groups))
    counts = {"alpha": 6, "gamma": 5}
    stack_responses(responses, order, feature_rows=counts)
    mismatch = r"story 'gamma'.*responses have 5 rows but features have 4"
    with pytest.raises(AlignmentError, match=mismatch):
        stack_responses(responses, order, feature_rows={"alpha": 6, "gamma": 4})


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (
            lambda f, r: stack_stories(f, ["alpha", "delta"]),
            AlignmentError,
            r"story 'delta'.*no features",
        ),
        (
            lambda f, r: stack_responses(r, ["delta"]),
            AlignmentError,
            r"story 'delta'.*no responses",
        ),
        (
            lambda f, r: stack_responses(r, ["alpha", "beta"], feature_rows={"alpha": 6}),
            AlignmentError,
            r"story 'beta'.*no feature row count",
        ),
        (
            lambda f, r: stack_stories({**f, "beta": np.ones((4, 3))}, ["alpha", "beta"]),
            AlignmentError,
            r"story 'beta'.*3 columns, expected 2",
        ),
        (
            lambda f, r: stack_responses({**r, "beta": np.ones(4)}, ["alpha", "beta"]),
            AlignmentError,
            r"story 'beta'.*2-D",
        ),
        (lambda f, r: stack_stories(f, ["alpha", "alpha"]), ConfigError, r"story 'alpha'.*unique"),
        (lambda f, r: stack_stories(f, []), ConfigError, r"at least one story"),
        (lambda f, r: stack_stories(f, "alpha"), ConfigError, r"sequence of story names"),
        (lambda f, r: stack_stories(f, ["alpha"], boundary="run"), ConfigError, r"boundary"),
    ],
)
def test_stacking_errors_name_the_story(call, error, pattern):
    rng = np.random.default_rng(8)
    features = three_stories(rng)
    responses = {s: rng.standard_normal((f.shape[0], 3)) for s, f in features.items()}
    with pytest.raises(error, match=pattern):
        call(features, responses)


def same_bucket_stories(rng, n_stories):
    # Grids of 129-192 TRs and 385-512 words: every story has its own lengths, all in the
    # buckets 192 (TRs) and 512 (words).
    acquired = 135 + 8 * np.arange(n_stories)
    words = 400 + 14 * np.arange(n_stories)
    stories = {}
    for k, (n_acq, n_words) in enumerate(zip(acquired, words, strict=True)):
        duration = 2.0 * (n_acq - 5) - 10.0
        times = np.sort(rng.uniform(0.0, duration, n_words))
        stories[f"s{k}"] = (int(n_acq), times, rng.standard_normal((n_words, 3)).astype(np.float32))
    return stories


def test_story_features_compile_once_for_all_lengths_and_equal_the_unpadded_program(
    backend_compiles,
):
    stories = same_bucket_stories(np.random.default_rng(11), 8)
    aligned = {}
    for name, (n_acq, times, values) in stories.items():
        with backend_compiles() as compiles:
            aligned[name] = story_features(values, times, n_acq, story=name,
                                           expected_rows=n_acq - 20)
        # The first story compiles the one program of its buckets; the 7 others, each of
        # another length, reuse it.
        assert (len(compiles) >= 1) if name == "s0" else (compiles == []), name
    for name, (n_acq, times, values) in stories.items():
        # Today's formulation: the same steps on the story's exact shapes, in one trace.
        exact = jax.jit(lambda v, t, n=n_acq: story_features(v, t, n))(values, times)
        centres = 2.0 * np.arange(n_acq - 5) - 9.0
        interpolated = lanczos_reference(values.astype(np.float64), times, centres)
        # Both programs round the times alike: only their sums' order may differ.
        same_times = lanczos_atol(values, times, centres, computations=2)[10:-5]
        assert_within(aligned[name], exact, atol=zscored_atol(same_times, interpolated[10:-5], 2))
        # Against float64: float32 times of a 370 s story are off by up to 1.5e-5 s, which moves
        # the weights by that times the kernel's slope (lanczos_atol), about 3e-5 of the
        # unit-variance columns here; a window or cutoff slip moves them by 0.1 or more.
        expected = scipy.stats.zscore(interpolated[10:-5])
        x_atol = lanczos_atol(values, times, centres)[10:-5]
        assert_within(aligned[name], expected, atol=zscored_atol(x_atol, interpolated[10:-5]))
    with backend_compiles() as compiles:
        stack_stories(aligned, list(aligned))
    # Stacking compiles per stack (its total rows), not per story: one concatenation and one
    # delay program.
    assert 1 <= len(compiles) <= 2
