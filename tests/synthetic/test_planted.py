"""The planted truth of the synthetic twin, checked against computations written here.

The Schoppe noise ceiling, an HRF from the gamma closed form with np.convolve, least squares
with numpy: never the generator's own functions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxenc import conventions
from jaxenc.synthetic import VoxelClass, write_synthetic
from jaxenc.synthetic.properties import causal_mean, planted_layer_words
from jaxenc.synthetic.responses import canonical_hrf, simulate_responses

TEST = conventions.TEST_STORY


def _hrf(dt=0.1, length=32.0):
    """SPM canonical HRF from the gamma density's closed form t^(k-1) e^-t / Gamma(k)."""
    t = np.arange(round(length / dt)) * dt
    gamma = lambda k: t ** (k - 1) * np.exp(-t) / math.gamma(k)  # noqa: E731
    return gamma(6) - gamma(16) / 6


def _convolved_at_rows(frames, respdict):
    """Frames at k * 0.1 s from sound onset -> HRF-convolved values at the hf5 row centres."""
    onset = round(conventions.SOUND_START / 0.1)
    n_fine = round((respdict - conventions.PAD) * conventions.TR / 0.1)
    fine = np.zeros((n_fine, frames.shape[1]))
    fine[onset : onset + frames.shape[0]] = frames
    hrf = _hrf()
    convolved = np.stack([np.convolve(fine[:, k], hrf)[:n_fine] for k in range(fine.shape[1])], 1)
    rows = np.arange(conventions.TRIM_START, respdict - conventions.PAD - conventions.TRIM_END)
    return convolved[np.round((conventions.TR * rows + conventions.TR / 2) / 0.1).astype(int)]


def _r2(regressors, responses):
    """In-sample R2 of an ordinary least-squares fit with intercept, per response column."""
    design = np.column_stack([regressors, np.ones(len(regressors))])
    coefficients, *_ = np.linalg.lstsq(design, responses, rcond=None)
    residual = responses - design @ coefficients
    return 1 - residual.var(axis=0) / responses.var(axis=0)


def _schoppe_cc_max(repeats):
    """Schoppe et al. 2016 noise ceiling of the repeat mean; repeats (N, n_rows, n_voxels)."""
    n = repeats.shape[0]
    total_power = repeats.var(axis=1, ddof=1).mean(axis=0)
    signal_power = (repeats.sum(axis=0).var(axis=0, ddof=1) - n * total_power) / (n * (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        cc_max = 1 / np.sqrt(1 + (total_power / signal_power - 1) / n)
    return np.where(signal_power > 0, cc_max, 0.0)


def test_noise_ceiling_matches_schoppe_estimate_from_repeats(tiny, hf5):
    for subject in tiny.subjects:
        repeats = hf5.read(hf5.path(tiny.root, subject, TEST), "individual_repeats")
        estimate, true = _schoppe_cc_max(repeats), tiny.cc_max[subject]
        signal_voxels = tiny.voxel_class[subject] != VoxelClass.NOISE
        # 10 repeats of 50 rows: the estimate is noisy per voxel but tracks the truth closely.
        assert np.corrcoef(estimate, true)[0, 1] > 0.9
        assert np.median(np.abs(estimate - true)[signal_voxels]) < 0.05
        assert estimate[~signal_voxels].mean() < 0.3 < true[signal_voxels].min()


def test_responses_carry_the_planted_signal_at_the_planted_snr(tiny, hf5):
    subject = "UTS01"
    weights, noise_std = tiny.weights[subject], tiny.noise_std[subject]
    signal_voxels = tiny.voxel_class[subject] != VoxelClass.NOISE
    for story in tiny.stories(subject):
        latents = tiny.stimulus(story).latent_rows
        clean = (latents - latents.mean(axis=0)) @ weights
        responses = hf5.read(hf5.path(tiny.root, subject, story))
        centred = responses - responses.mean(axis=0)
        r = (centred * clean).sum(0) / np.sqrt((centred**2).sum(0) * (clean**2).sum(0) + 1e-300)
        signal_var = clean.var(axis=0)
        expected = np.sqrt(signal_var / (signal_var + noise_std**2))
        # With ~60 rows the sampling error of r is about (1 - r^2) / sqrt(60) < 0.13.
        assert np.median(np.abs(r - expected)[signal_voxels]) < 0.06
        assert np.corrcoef(r[signal_voxels], expected[signal_voxels])[0, 1] > 0.8


def _design(truth, subject, hf5):
    """HRF-convolved planted audio and semantic frames at the rows of subject's stories."""
    audio, semantic, responses = [], [], []
    zscore = lambda x: (x - x.mean(0)) / x.std(0)  # noqa: E731
    for story in truth.stories(subject):
        planted = truth.stimulus(story)
        audio.append(zscore(_convolved_at_rows(planted.audio, planted.respdict)))
        semantic.append(zscore(_convolved_at_rows(planted.semantic, planted.respdict)))
        responses.append(hf5.read(hf5.path(truth.root, subject, story)))
    return np.concatenate(audio), np.concatenate(semantic), np.concatenate(responses)


def test_planted_features_explain_the_voxels_they_drive(tiny, hf5):
    subject = "UTS01"
    audio, semantic, responses = _design(tiny, subject, hf5)
    assert audio.shape[0] == sum(tiny.respdict[s] - 20 for s in tiny.stories(subject))

    def mean_r2(regressors, code):
        return _r2(regressors, responses[:, tiny.voxels_of(subject, code)]).mean()

    noise_audio = mean_r2(audio, VoxelClass.NOISE)
    noise_semantic = mean_r2(semantic, VoxelClass.NOISE)
    # Margins: audio-only and semantic-only voxels gain > 0.3 of R2 over noise voxels from
    # their own modality (about 0.5 observed), and > 0.15 more than from the other modality.
    assert mean_r2(audio, VoxelClass.AUDIO) > noise_audio + 0.3
    assert mean_r2(semantic, VoxelClass.SEMANTIC) > noise_semantic + 0.3
    assert mean_r2(audio, VoxelClass.AUDIO) > mean_r2(semantic, VoxelClass.AUDIO) + 0.15
    assert mean_r2(semantic, VoxelClass.SEMANTIC) > mean_r2(audio, VoxelClass.SEMANTIC) + 0.15
    # Interaction voxels are mostly beyond any linear model of both modalities.
    both = np.column_stack([audio, semantic])
    noise_both = mean_r2(both, VoxelClass.NOISE)
    joint_gain = mean_r2(both, VoxelClass.AUDIO_SEMANTIC) - noise_both
    interaction_gain = mean_r2(both, VoxelClass.INTERACTION) - noise_both
    assert joint_gain > 0.3 and interaction_gain < 0.5 * joint_gain


def test_hrf_is_the_spm_canonical_double_gamma():
    reference = _hrf()
    np.testing.assert_allclose(canonical_hrf(), reference / reference.sum(), rtol=1e-10, atol=1e-14)
    t = np.arange(len(reference)) * 0.1
    assert 4.5 <= t[np.argmax(reference)] <= 5.5 and 14 <= t[np.argmin(reference)] <= 17


def test_noise_is_ar1_with_unit_variance():
    rng = np.random.default_rng(0)
    weights = np.zeros((3, 400))
    noise = simulate_responses(np.zeros((2000, 3)), weights, np.ones(400), rng, noise_ar=0.5)
    for lag in (1, 2, 3):
        r = np.mean([np.corrcoef(v[:-lag], v[lag:])[0, 1] for v in noise.T])
        assert r == pytest.approx(0.5**lag, abs=0.02)
    repeats = simulate_responses(np.zeros((50, 3)), weights, np.ones(400), rng, 0.5, n_repeats=4)
    assert repeats.shape == (4, 50, 400)
    assert abs(np.corrcoef(repeats[0].ravel(), repeats[1].ravel())[0, 1]) < 0.02


def _running_mean(values, n):
    """Explicit loop: each row averaged with up to n - 1 rows before it."""
    return np.stack([values[max(0, i - n + 1) : i + 1].mean(axis=0) for i in range(len(values))])


@pytest.mark.parametrize("n", [1, 3, 80])
def test_causal_mean_is_the_running_mean_of_the_rows_so_far(n):
    values = np.random.default_rng(n).standard_normal((120, 4))
    # Cumulative sums of 120 float64 values of order 1: 1e-12 is far above their rounding.
    np.testing.assert_allclose(causal_mean(values, n), _running_mean(values, n), atol=1e-12)
    assert [planted_layer_words(layer) for layer in range(4)] == [1, 4, 16, 64]


def test_planted_time_scales_drive_the_voxels_with_the_averaged_properties(tmp_path, small):
    truth = write_synthetic(tmp_path, small(audio_time_scale=8.0, semantic_context=4), progress=False)
    stimulus = truth.stimulus(truth.config.train_stories[0])
    n_audio = stimulus.audio.shape[1]
    # The audio latents: the properties averaged over the preceding 80 frames (8 s), then the
    # HRF (the generator's has unit sum), both computed here; the truth keeps the properties of
    # the moment.
    expected = _convolved_at_rows(_running_mean(stimulus.audio, 80), stimulus.respdict) / _hrf().sum()
    # Float64 sums of at most 320 kernel taps of order-1 values: 1e-10 is far above rounding.
    np.testing.assert_allclose(stimulus.latent_rows[:, :n_audio], expected, atol=1e-10)
    moment = _convolved_at_rows(stimulus.audio, stimulus.respdict)
    assert not np.allclose(stimulus.latent_rows[:, :n_audio], moment, atol=1e-3)
    # The semantic latents: each word's vector averaged with its 3 predecessors, spread over the
    # 0.1 s frames it overlaps (weighted by the overlap), then the HRF.
    n_frames, n_semantic = stimulus.audio.shape[0], stimulus.word_vectors.shape[1]
    frames = np.zeros((n_frames, n_semantic))
    for vector, start, end in zip(_running_mean(stimulus.word_vectors, 4), stimulus.word_start,
                                  stimulus.word_end, strict=True):
        for k in range(int(start / 0.1), min(int(np.ceil(end / 0.1)) + 1, n_frames)):
            overlap = min(end, k * 0.1 + 0.05) - max(start, k * 0.1 - 0.05)
            frames[k] += max(overlap, 0.0) / 0.1 * vector
    expected = _convolved_at_rows(frames, stimulus.respdict) / _hrf().sum()
    semantic = stimulus.latent_rows[:, n_audio : n_audio + n_semantic]
    # Word edges fall on the 1 ms control grid; the overlaps above are float64 differences of
    # seconds (about 1e-15 each), far below 1e-9.
    np.testing.assert_allclose(semantic, expected, atol=1e-9)


def test_two_stage_interaction_latents_are_products_of_products():
    from jaxenc.synthetic.responses import story_latents

    rng = np.random.default_rng(0)
    respdict = 60
    n_frames = round(((respdict - conventions.PAD) * conventions.TR - conventions.SOUND_START) / 0.1)
    audio, semantic = rng.standard_normal((n_frames, 3)), rng.standard_normal((n_frames, 2))
    p_audio, p_semantic = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))  # 3 interaction latents
    latents = story_latents(audio, semantic, respdict, p_audio, p_semantic, 1.0, depth=2)
    # Gaussian smoothing of 1 s (10 frames), zeros outside, kernel cut at 4 sigma.
    offsets = np.arange(-40, 41)
    kernel = np.exp(-0.5 * (offsets / 10.0) ** 2)
    kernel /= kernel.sum()

    def smooth(x):
        return np.stack([np.convolve(x[:, k], kernel, mode="same") for k in range(x.shape[1])], 1)

    a, s = smooth(audio @ p_audio.T), smooth(semantic @ p_semantic.T)
    first = (a - a.mean(0)) * (s - s.mean(0))
    first /= first.std(0)
    second = np.stack([first[:, k] * first[:, (k + 1) % 3] for k in range(3)], 1)
    second -= second.mean(0)
    linear = np.column_stack([audio, semantic, np.ones(n_frames)])
    residual = second - linear @ np.linalg.lstsq(linear, second, rcond=None)[0]
    # The generator's HRF has unit sum.
    expected = _convolved_at_rows(residual, respdict) / _hrf().sum()
    # Float64 both ways (FFT against direct convolution): 1e-9 of the latents' scale; another
    # pairing, scaling or a first-stage product moves them by O(1).
    np.testing.assert_allclose(latents[:, 5:], expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    linear_part = _convolved_at_rows(np.column_stack([audio, semantic]), respdict) / _hrf().sum()
    np.testing.assert_allclose(latents[:, :5], linear_part, rtol=0, atol=1e-9 * np.abs(linear_part).max())


def test_two_stage_interactions_need_three_latents():
    from jaxenc.errors import ConfigError
    from jaxenc.synthetic import SyntheticConfig

    # With two latents, products 0 x 1 and 1 x 0 would plant one term twice.
    for n in (1, 2):
        with pytest.raises(ConfigError, match="n_interaction must be at least 3 for distinct terms, got"):
            SyntheticConfig.tiny(interaction_depth=2, n_interaction=n)
    with pytest.raises(ConfigError, match="interaction_depth must be 1 or 2"):
        SyntheticConfig.tiny(interaction_depth=3)
    assert "interaction_depth" not in SyntheticConfig.tiny().to_dict()  # older twins still match
    assert SyntheticConfig.tiny(interaction_depth=2).to_dict()["interaction_depth"] == 2
