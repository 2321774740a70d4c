"""Whisper features: window times, the whole-story log-mel, and features vs per-window references."""

from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxenc.ckpt import load_whisper_encoder
from jaxenc.errors import ConfigError, DataError
from jaxenc.features import LogMelFrontend, story_log_mel, whisper_features, window_log_mel, window_times

SR = 16000
# A short context keeps the tests fast while still covering early (shorter) and full windows.
WINDOW = dict(context_s=1.0, chunk_s=0.1, stride_s=0.1)


def _reference_bounds(n_samples, sr, context_s, chunk_s, stride_s):
    """Window bounds enumerated one at a time, in exact rational seconds."""
    context, chunk, stride = (Fraction(str(x)) for x in (context_s, chunk_s, stride_s))
    starts, ends = [], []
    t = chunk
    while t * sr <= n_samples:
        ends.append(int(t * sr))
        starts.append(int(max(Fraction(0), t - context - chunk) * sr))
        t += stride
    return np.array(starts), np.array(ends)


@pytest.mark.parametrize(
    "seconds, context_s, chunk_s, stride_s",
    [(3.37, 1.0, 0.1, 0.1), (2.0, 1.0, 0.1, 0.1), (5.0, 16.0, 0.1, 0.1), (4.05, 0.5, 0.2, 0.3)],
)
def test_window_times_match_an_enumeration(seconds, context_s, chunk_s, stride_s):
    n = int(round(seconds * SR))
    starts, ends = window_times(n, SR, context_s=context_s, chunk_s=chunk_s, stride_s=stride_s)
    ref_starts, ref_ends = _reference_bounds(n, SR, context_s, chunk_s, stride_s)
    np.testing.assert_array_equal(ends, ref_ends)
    np.testing.assert_array_equal(starts, ref_starts)
    assert ends[0] == round(chunk_s * SR)
    assert ends[-1] <= n < ends[-1] + round(stride_s * SR)
    assert np.all(np.diff(ends) == round(stride_s * SR))


def test_window_times_reject_bad_lengths():
    with pytest.raises(ConfigError, match="chunk_s=0.105"):
        window_times(SR, SR, chunk_s=0.105)
    with pytest.raises(ConfigError, match="stride_s"):
        window_times(SR, SR, stride_s=0.0)
    with pytest.raises(DataError, match="story 'tiny'.*shorter than one chunk"):
        window_times(100, SR, story="tiny")


def test_front_end_filters_equal_the_feature_extractors(whisper_checkpoint):
    directory, _, _, feature_extractor = whisper_checkpoint
    front = LogMelFrontend.from_pretrained(directory)
    assert (front.feature_size, front.n_fft, front.hop_length) == (80, 400, 160)
    np.testing.assert_array_equal(front.mel_filters, feature_extractor.mel_filters)


@pytest.mark.parametrize("input_s", [30.0, 1.12])
def test_window_log_mel_equals_the_feature_extractor_per_window(whisper_checkpoint, waveform, input_s):
    """Slicing the whole-story STFT gives what WhisperFeatureExtractor gives each window.

    1.12 s is the shortest input for 1.1 s windows: the STFT's reflection at the end of the
    input then reaches into the audio. Tolerance 2e-5 on values of order 1: the extractor runs
    its STFT in float32 through torch, this code in float64.
    """
    _, _, _, fe = whisper_checkpoint
    wave = waveform(3.37)
    starts, ends = window_times(len(wave), SR, **WINDOW)
    n_frames = int(round(input_s * 100))
    story_mel = story_log_mel(wave, fe)
    picks = np.array([0, 1, 4, 9, 10, 11, 17, len(ends) - 1])  # first, growing, full, around the gap, last
    ours = window_log_mel(wave, story_mel, starts[picks], ends[picks], n_frames, fe)
    for row, k in enumerate(picks):
        ref = fe(
            wave[starts[k] : ends[k]],
            sampling_rate=SR,
            padding="max_length",
            max_length=n_frames * 160,
            return_tensors="np",
        )["input_features"][0]
        np.testing.assert_allclose(ours[row], ref, atol=2e-5, rtol=0)


def _last_real_frame(attention_mask: np.ndarray) -> int:
    """The last encoder frame that sees audio, by running the mask through both convolutions.

    The reference pipeline's rule: conv1 (kernel 3, stride 1, pad 1), then conv2 (kernel 3,
    stride 2, pad 1), applied to the extractor's 0/1 attention mask.
    """
    m = torch.tensor(attention_mask, dtype=torch.float32)[None, None]
    ones = torch.ones(1, 1, 3)
    m = torch.nn.functional.conv1d(m, ones, stride=1, padding=1)
    m = torch.nn.functional.conv1d(m, ones, stride=2, padding=1)
    return int(torch.nonzero(m[0, 0]).max())


def test_features_equal_the_transformers_pipeline_run_window_by_window(whisper_checkpoint, waveform):
    """30 s inputs: the reference is WhisperFeatureExtractor's default padding, the transformers
    encoder and the last frame its attention mask reaches, one window at a time (the pipeline
    of Antonello et al.). Tolerance 1e-4: float32 through two different frameworks.
    """
    _, module, reference, fe = whisper_checkpoint
    wave = waveform(2.5)
    layers = (0, 1, 2)
    window = dict(context_s=1.0, chunk_s=0.1, stride_s=0.2)
    times, features = whisper_features(module, fe, wave, SR, layers=layers, batch_size=8, **window)
    starts, ends = window_times(len(wave), SR, **window)
    assert len(times) == 13  # 8 windows per call: the second call is padded
    np.testing.assert_allclose(times, ends / SR)
    for k in [0, 4, 5, 9, 12]:  # first, last short, first full (1.1 s), middle, last
        inputs = fe(
            wave[starts[k] : ends[k]], sampling_rate=SR, return_tensors="pt", return_attention_mask=True
        )
        frame = _last_real_frame(inputs["attention_mask"][0].numpy())
        with torch.no_grad():
            hidden = reference(inputs["input_features"], output_hidden_states=True).hidden_states
        for layer in layers:
            np.testing.assert_allclose(
                features[layer][k], hidden[layer][0, frame].numpy(), atol=1e-4, rtol=1e-4
            )
        # The chosen frame is centred on the window's end: 20 ms frames from the window start.
        assert starts[k] / SR + 0.02 * frame == pytest.approx(times[k])


def test_short_input_equals_the_module_on_each_extracted_window(whisper_checkpoint, waveform):
    """A shorter encoder input: the reference is the extractor padded to that length and the
    jaxenc encoder on one window at a time. Tolerance 1e-5 (same model, same float32)."""
    _, module, _, fe = whisper_checkpoint
    encode = nnx.jit(lambda m, x: m(x))
    wave = waveform(2.6, seed=1)
    input_s = 1.2
    times, features = whisper_features(
        module, fe, wave, SR, layers=(1, 2), input_s=input_s, batch_size=8, **WINDOW
    )
    starts, ends = window_times(len(wave), SR, **WINDOW)
    for k in [0, 7, 10, len(ends) - 1]:
        inputs = fe(
            wave[starts[k] : ends[k]],
            sampling_rate=SR,
            padding="max_length",
            max_length=int(input_s * SR),
            return_tensors="np",
            return_attention_mask=True,
        )
        frame = _last_real_frame(inputs["attention_mask"][0])
        hidden = encode(module, jnp.asarray(inputs["input_features"]))
        for layer in (1, 2):
            np.testing.assert_allclose(
                features[layer][k], np.asarray(hidden[layer][0, frame]), atol=1e-5, rtol=1e-5
            )


def test_the_dot_product_attention_route_gives_the_same_features(whisper_checkpoint, waveform):
    """The GPU/TPU attention route (jax.nn.dot_product_attention, XLA's implementation) through
    the window path: bidirectional layers, then one query at the window's last frame.
    Tolerance 1e-5 relative to the features' scale, as the port against transformers."""
    directory, module, _, fe = whisper_checkpoint
    xla, _ = load_whisper_encoder(directory, attention="xla")
    kw = dict(layers=(1, 2), batch_size=4, context_s=1.0, chunk_s=0.1, stride_s=0.3)
    wave = waveform(1.5)
    _, want = whisper_features(module, fe, wave, SR, **kw)
    _, got = whisper_features(xla, fe, wave, SR, **kw)
    for layer in kw["layers"]:
        np.testing.assert_allclose(got[layer], want[layer], rtol=1e-5, atol=1e-5 * np.abs(want[layer]).max())


def test_bad_audio_and_options_raise_naming_the_story(whisper_checkpoint, waveform):
    _, module, _, fe = whisper_checkpoint
    wave = waveform(1.5)
    with pytest.raises(DataError, match="story 'alpha'.*44100 Hz, expected 16000 Hz"):
        whisper_features(module, fe, wave, 44100, layers=(1,), story="alpha")
    with pytest.raises(DataError, match="story 'alpha'.*mono"):
        whisper_features(module, fe, np.stack([wave, wave]), SR, layers=(1,), story="alpha")
    with pytest.raises(ConfigError, match="layers"):
        whisper_features(module, fe, wave, SR, layers=(3,), story="alpha")
    with pytest.raises(ConfigError, match="input_s=1.1"):
        whisper_features(module, fe, wave, SR, layers=(1,), input_s=1.1, story="alpha", **WINDOW)
