"""read_wav against wav files written with soundfile and analytic or scipy references."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile
from scipy import signal

from jaxenc.data import read_wav
from jaxenc.errors import ConfigError, DataError, DataWarning


def context(path, story) -> str:
    return re.escape(f"story '{story}', file {path}")


def test_downmix_is_the_channel_mean(tmp_path, wav):
    stereo = wav.stereo_tones()
    path = tmp_path / "tale.wav"
    soundfile.write(path, stereo, wav.rate, subtype="PCM_16")
    waveform, rate = read_wav(path)
    assert rate == wav.rate and waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_allclose(waveform, stereo.astype(np.float64).mean(axis=1) / 32768, atol=1e-7)


def test_resampling_to_16k_matches_scipy_and_the_analytic_sine(tmp_path, wav):
    path = tmp_path / "tale.wav"
    soundfile.write(path, wav.stereo_tones(), wav.rate, subtype="PCM_16")
    waveform, rate = read_wav(path, sample_rate=16000)
    assert rate == 16000 and waveform.dtype == np.float32
    t = np.arange(waveform.shape[0]) / 16000
    analytic = sum(amp * np.sin(2 * np.pi * freq * t) for freq, amp in wav.tones) / 2
    mono = wav.stereo_tones().astype(np.float64).mean(axis=1) / 32768
    reference = signal.resample_poly(mono, 160, 441)
    assert waveform.shape == reference.shape
    middle = slice(400, -400)  # both filters ramp up differently at the edges
    np.testing.assert_allclose(waveform[middle], analytic[middle], atol=1e-3)
    np.testing.assert_allclose(waveform[middle], reference[middle], atol=1e-3)


def test_unexpected_rate_warns_and_resamples(tmp_path):
    path = tmp_path / "tale.wav"
    rate = 22050
    t = np.arange(rate // 4) / rate
    tone = 0.5 * np.sin(2 * np.pi * 300.0 * t)
    soundfile.write(path, np.stack([tone, tone], axis=1), rate, subtype="PCM_16")
    with pytest.warns(DataWarning, match=context(path, "tale") + ".*22050 Hz.*44100 Hz"):
        waveform, got_rate = read_wav(path)
    assert got_rate == 44100 and waveform.shape[0] == 2 * t.shape[0]
    t_out = np.arange(waveform.shape[0]) / 44100
    np.testing.assert_allclose(
        waveform[800:-800], 0.5 * np.sin(2 * np.pi * 300.0 * t_out)[800:-800], atol=1e-3
    )


def test_overshoot_is_clipped_with_a_warning(tmp_path):
    path = tmp_path / "loud.wav"
    samples = np.array([[0.5, 0.5], [1.5, 1.5], [-2.0, -2.0], [0.0, 0.0]] * 4000, dtype=np.float32)
    soundfile.write(path, samples, 44100, subtype="FLOAT")
    with pytest.warns(DataWarning, match="16000 samples lie outside"):
        waveform, _ = read_wav(path)
    np.testing.assert_array_equal(waveform[:4], [0.5, 1.0, -1.0, 0.0])


def test_missing_and_unreadable(tmp_path):
    missing = tmp_path / "gone.wav"
    with pytest.raises(DataError, match=context(missing, "gone") + ".*not found"):
        read_wav(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF but not really a wav file" * 3)
    with pytest.raises(DataError, match=context(garbage, "story") + ".*cannot read audio"):
        read_wav(garbage, story="story")


def test_empty_low_rate_and_non_finite(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 2), dtype=np.int16), 44100, subtype="PCM_16")
    with pytest.raises(DataError, match=context(empty, "empty") + ".*zero samples"):
        read_wav(empty)
    low = tmp_path / "low.wav"
    soundfile.write(low, np.zeros((100, 2), dtype=np.int16), 4000, subtype="PCM_16")
    with pytest.raises(DataError, match=context(low, "low") + ".*4000 Hz is below the 8000 Hz"):
        read_wav(low)
    bad = tmp_path / "nan.wav"
    samples = np.zeros((441, 2), dtype=np.float32)
    samples[220, 1] = np.nan
    samples[300, 0] = np.inf
    soundfile.write(bad, samples, 44100, subtype="FLOAT")
    expected = ".*2 non-finite samples, the first at 0.005 s"
    with pytest.raises(DataError, match=context(bad, "nan") + expected):
        read_wav(bad)
    with pytest.raises(ConfigError, match="sample_rate must be an integer of at least 8000"):
        read_wav(low, sample_rate=100)
