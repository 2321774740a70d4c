"""Stimuli of the synthetic twin: words and their timing, the vocabulary, and the synthesised
speech checked against spectra and autocorrelations computed here (scipy.signal.welch).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile
from scipy import signal as sps

from jaxenc import conventions
from jaxenc.synthetic import AUDIO_NAMES
from jaxenc.synthetic.audio import synthesize_audio
from jaxenc.synthetic.stimulus import Story, make_story
from jaxenc.synthetic.words import make_vocabulary


def test_phones_tile_words_within_one_second_of_the_edges(tiny):
    for story in tiny.config.stories:
        s = tiny.stimulus(story)
        assert s.word_start[0] >= 1.0 and s.word_end[-1] <= s.duration - 1.0
        assert np.all(s.word_start[1:] >= s.word_end[:-1])
        word_of_phone = np.searchsorted(s.word_end, s.phone_start, side="right")
        assert np.array_equal(np.unique(word_of_phone), np.arange(len(s.words)))
        first = np.searchsorted(word_of_phone, np.arange(len(s.words)))
        last = np.searchsorted(word_of_phone, np.arange(len(s.words)), side="right") - 1
        assert np.allclose(s.phone_start[first], s.word_start)
        assert np.allclose(s.phone_end[last], s.word_end)
        inner = np.flatnonzero(word_of_phone[1:] == word_of_phone[:-1])
        assert np.allclose(s.phone_end[inner], s.phone_start[inner + 1])


def test_audio_loudness_matches_the_waveform(tiny):
    for story in tiny.config.stories:
        planted = tiny.stimulus(story)
        samples, rate = soundfile.read(str(tiny.root / "stimuli" / f"{story}.wav"))
        assert np.array_equal(samples[:, 0], samples[:, 1])
        mono = samples[:, 0]
        hop = rate // 10
        # Frames of 0.1 s centred on k * 0.1 s, as the planted properties.
        padded = np.concatenate([np.zeros(hop // 2), mono])[: len(planted.audio_times) * hop]
        rms = np.sqrt((padded.reshape(-1, hop) ** 2).mean(axis=1))
        loudness = planted.audio[:, AUDIO_NAMES.index("loudness")]
        assert np.corrcoef(rms, loudness)[0, 1] > 0.8
        silent = (planted.audio_times < planted.word_start[0] - 0.1) | (
            planted.audio_times > planted.word_end[-1] + 0.1
        )
        assert rms[silent].max() < 0.02 * rms[loudness > 0.5].mean()


def _constant_story(n_frames, **controls):
    full = {"voiced": 0.0, "noise": 0.0, "f0": 120.0, "f1": 500.0, "f2": 1500.0, "f3": 2500.0}
    full["brightness"] = 0.5
    full.update(controls)
    empty = np.zeros(0, dtype=int)
    return Story(
        name="constant",
        n_frames=n_frames,
        word_ids=empty,
        word_start=empty,
        word_end=empty,
        topic=np.zeros((0, 1)),
        phone_ids=empty,
        phone_labels=(),
        phone_start=empty,
        phone_end=empty,
        pause_start=empty,
        pause_end=empty,
        pause_labels=(),
        controls={k: np.full(n_frames, float(v)) for k, v in full.items()},
    )


def test_synthesised_vowel_has_the_planted_pitch_and_first_formant(tmp_path):
    path = tmp_path / "vowel.wav"
    story = _constant_story(100, voiced=1.0, f0=150.0, f1=700.0, f2=1200.0, f3=2500.0)
    synthesize_audio(path, story, np.random.default_rng(0), 16000)
    samples, rate = soundfile.read(str(path))
    assert rate == 16000 and samples.shape == (16000, 2)
    mono = samples[:, 0]
    frequencies, power = sps.welch(mono, fs=rate, nperseg=4096)
    peak = frequencies[np.argmax(power)]
    assert abs(peak - 700) <= 100
    assert abs(peak / 150 - round(peak / 150)) * 150 < 6
    lags = np.arange(40, 400)
    autocorrelation = [np.dot(mono[:-lag], mono[lag:]) for lag in lags]
    assert rate / lags[np.argmax(autocorrelation)] == pytest.approx(150, rel=0.02)


def test_consonant_noise_brightness_tilts_the_spectrum(tmp_path):
    high_share = {}
    for brightness in (0.1, 0.95):
        path = tmp_path / f"noise{brightness}.wav"
        story = _constant_story(100, noise=1.0, brightness=brightness)
        synthesize_audio(path, story, np.random.default_rng(1), 16000)
        samples, rate = soundfile.read(str(path))
        frequencies, power = sps.welch(samples[:, 0], fs=rate, nperseg=1024)
        high_share[brightness] = power[frequencies > 4000].sum() / power.sum()
    assert high_share[0.95] > 0.8 > 0.2 > high_share[0.1]


def test_topic_makes_semantic_content_slow():
    vocabulary = make_vocabulary(np.random.default_rng(0), 200, 8)

    def lag_correlation(strength, lag=10):
        story = make_story(
            np.random.default_rng(1),
            vocabulary,
            "drift",
            1200.0,
            topic_words=40.0,
            topic_strength=strength,
            base_f0=120.0,
        )
        vectors = vocabulary.semantic[story.word_ids]
        vectors = vectors - vectors.mean(axis=0)
        return np.mean([np.corrcoef(v[:-lag], v[lag:])[0, 1] for v in vectors.T])

    # Words 10 apart (about 4 s) share the topic only when the topic biases word choice.
    assert lag_correlation(3.0) > 0.1
    assert abs(lag_correlation(0.0)) < 0.05


def test_vocabulary_words_are_lowercase_distinct_and_zipf_distributed(tiny):
    words = tiny.words
    assert len(set(words)) == len(words) == tiny.config.n_vocab
    assert all(re.fullmatch("[a-z]+", w) for w in words)
    assert not set(words) & conventions.NON_SPEECH_LABELS
    spoken = np.concatenate([tiny.stimulus(s).word_ids for s in tiny.config.stories])
    counts = np.bincount(spoken, minlength=len(words))
    # Frequencies fall with rank: the 10 most probable words are spoken far more often.
    assert counts[:10].mean() > 5 * counts[100:].mean()
