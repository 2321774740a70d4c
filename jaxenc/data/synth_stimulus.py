"""Stimuli of the synthetic ds003020 twin: pseudo-word stories, their timing and their audio.

A story is a sequence of words from a pseudo-word :class:`Vocabulary`, grouped into phrases
separated by pauses. Every boundary (phone, word, pause) lies on a 10 ms grid, the
:data:`CONTROL_RATE` grid, the resolution of forced aligners. The audio is synthesised from
per-control-frame parameters (voiced and noise amplitude, f0, three formants, noise
brightness) by :func:`synthesize_audio`, and the planted audio properties are computed from the
same parameters by :func:`audio_properties`, so they are exact rather than estimated.

This module is an implementation part of :mod:`jaxenc.data.synthetic`, which documents what is
planted; it imports nothing of jaxenc except the conventions and errors.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import soundfile
from praatio import textgrid
from scipy.ndimage import gaussian_filter1d

from jaxenc import conventions
from jaxenc.errors import ConfigError

__all__ = [
    "CONTROL_RATE",
    "FRAME_PERIOD",
    "AUDIO_NAMES",
    "PHONES",
    "Vocabulary",
    "Story",
    "make_vocabulary",
    "make_story",
    "audio_properties",
    "semantic_frames",
    "frame_average",
    "synthesize_audio",
    "write_textgrid",
]

# Rate of the synthesis parameters, in Hz; every phone, word and pause boundary is on its grid.
CONTROL_RATE = 100
# Period of the planted property frames, in seconds (frame k is centred on k * FRAME_PERIOD).
FRAME_PERIOD = 0.1
_FRAME_HOP = round(FRAME_PERIOD * CONTROL_RATE)
# Words start at least this long after sound onset and end this long before the audio ends (s).
_EDGE_SILENCE = 1.0

# Names of the planted audio properties, the columns of audio_properties().
AUDIO_NAMES = (
    "loudness",
    "voicing",
    "pitch",
    "formant1",
    "formant2",
    "formant3",
    "frication",
    "brightness",
    "onset",
)

# ARPAbet-like phone inventory: label, spelling, vowel?, voiced gain, noise gain, noise
# brightness (0 dark .. 1 hissing), formants F1-F3 (Hz, adult male), mean duration (10 ms units).
_PHONE_TABLE = (
    ("AA", "a", True, 1.0, 0.03, 0.2, 730, 1090, 2440, 11),
    ("AE", "ae", True, 1.0, 0.03, 0.2, 660, 1720, 2410, 11),
    ("AH", "u", True, 1.0, 0.03, 0.2, 520, 1190, 2390, 9),
    ("AO", "o", True, 1.0, 0.03, 0.2, 570, 840, 2410, 11),
    ("EH", "e", True, 1.0, 0.03, 0.2, 530, 1840, 2480, 10),
    ("ER", "er", True, 1.0, 0.03, 0.2, 490, 1350, 1690, 11),
    ("IH", "i", True, 1.0, 0.03, 0.2, 390, 1990, 2550, 9),
    ("IY", "ee", True, 1.0, 0.03, 0.2, 270, 2290, 3010, 11),
    ("UH", "oo", True, 1.0, 0.03, 0.2, 440, 1020, 2240, 9),
    ("UW", "ou", True, 1.0, 0.03, 0.2, 300, 870, 2240, 11),
    ("P", "p", False, 0.0, 0.5, 0.45, 400, 1200, 2400, 6),
    ("B", "b", False, 0.25, 0.3, 0.4, 300, 1100, 2300, 6),
    ("T", "t", False, 0.0, 0.5, 0.85, 400, 1700, 2600, 6),
    ("D", "d", False, 0.25, 0.3, 0.8, 300, 1600, 2600, 6),
    ("K", "k", False, 0.0, 0.5, 0.6, 400, 1500, 2500, 7),
    ("G", "g", False, 0.25, 0.3, 0.55, 300, 1400, 2400, 6),
    ("F", "f", False, 0.0, 0.3, 0.65, 400, 1400, 2500, 9),
    ("V", "v", False, 0.3, 0.2, 0.6, 300, 1300, 2400, 7),
    ("TH", "th", False, 0.0, 0.25, 0.55, 400, 1500, 2500, 9),
    ("S", "s", False, 0.0, 0.45, 0.95, 400, 1700, 2700, 10),
    ("Z", "z", False, 0.3, 0.3, 0.9, 300, 1600, 2600, 8),
    ("SH", "sh", False, 0.0, 0.45, 0.75, 400, 1800, 2500, 10),
    ("HH", "h", False, 0.0, 0.3, 0.3, 500, 1500, 2500, 6),
    ("M", "m", False, 0.45, 0.0, 0.5, 250, 1100, 2300, 7),
    ("N", "n", False, 0.45, 0.0, 0.5, 250, 1600, 2600, 7),
    ("L", "l", False, 0.5, 0.0, 0.5, 360, 1000, 2600, 7),
    ("R", "r", False, 0.5, 0.0, 0.5, 420, 1300, 1600, 7),
    ("W", "w", False, 0.45, 0.0, 0.5, 300, 700, 2200, 6),
    ("Y", "y", False, 0.45, 0.0, 0.5, 280, 2200, 2900, 6),
)
# Phone labels as written to the TextGrids (vowels carry a CMUdict stress digit there).
PHONES = tuple(row[0] for row in _PHONE_TABLE)
_SPELLING = tuple(row[1] for row in _PHONE_TABLE)
_IS_VOWEL = np.array([row[2] for row in _PHONE_TABLE])
_VOICED_GAIN = np.array([row[3] for row in _PHONE_TABLE])
_NOISE_GAIN = np.array([row[4] for row in _PHONE_TABLE])
_BRIGHTNESS = np.array([row[5] for row in _PHONE_TABLE])
_FORMANTS = np.array([row[6:9] for row in _PHONE_TABLE], dtype=float)
_MEAN_DURATION = np.array([row[9] for row in _PHONE_TABLE], dtype=float)
_VOWELS = np.flatnonzero(_IS_VOWEL)
_CONSONANTS = np.flatnonzero(~_IS_VOWEL)
# Formants and f0 held during silence, so the synthesis parameters never jump to 0.
_NEUTRAL_FORMANTS = (500.0, 1500.0, 2500.0)
# Labels of the pauses between phrases, and their probabilities.
_PAUSE_LABELS = ("sp", "br", "")
_PAUSE_PROBABILITY = (0.6, 0.15, 0.25)

# Scales that bring every planted audio property to order 1 (they enter the neural drive as is).
_PITCH_SCALE = 4.0
_FORMANT_CENTRE = np.array(_NEUTRAL_FORMANTS)
_FORMANT_SCALE = np.array([200.0, 500.0, 400.0])
_FRICATION_SCALE = 2.0
_ONSET_LAG = 5
_ONSET_SCALE = 2.0

# Formant wave function synthesis: relative formant amplitudes and bandwidth (Hz).
_FORMANT_AMPLITUDE = (1.0, 0.6, 0.35)
_FORMANT_BANDWIDTH = 80.0
# Gain from synthesis amplitude to full scale, and the recording's noise floor (full scale).
_OUTPUT_GAIN = 0.15
_NOISE_FLOOR = 3e-4
# Control frames synthesised at once, bounding memory for real-length stories (20 s).
_BLOCK_FRAMES = 2000


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
    """Pseudo-words with phones, a Zipf-like frequency, a semantic vector and a voice.

    Parameters
    ----------
    words : tuple of str, length n_vocab
        Lowercase letter-only spellings, most frequent first.
    phones : ndarray of shape (n_vocab, max_phones), int
        Indices into :data:`PHONES`, padded with -1.
    stressed : ndarray of shape (n_vocab, max_phones), bool
        The stressed vowel of each word (its first one).
    probability : ndarray of shape (n_vocab,)
        Base word probability, proportional to ``1 / (rank + 2.7)`` (Zipf-Mandelbrot).
    semantic : ndarray of shape (n_vocab, n_semantic)
        Latent semantic vector of each word, standard normal entries.
    loudness : ndarray of shape (n_vocab,)
        Log amplitude offset of each word (natural log units).
    pitch : ndarray of shape (n_vocab,)
        Log2 f0 offset of each word (octaves).
    formant_shift : ndarray of shape (n_vocab,)
        Factor on the formant frequencies of each word's vowels.
    """

    words: tuple[str, ...]
    phones: np.ndarray
    stressed: np.ndarray
    probability: np.ndarray
    semantic: np.ndarray
    loudness: np.ndarray
    pitch: np.ndarray
    formant_shift: np.ndarray

    def phone_labels(self, index: int) -> tuple[str, ...]:
        """TextGrid labels of the phones of word ``index``, e.g. ``("B", "AA1", "T")``."""
        ids = self.phones[index]
        stress = self.stressed[index]
        return tuple(
            _phone_label(int(p), bool(s), bool(_IS_VOWEL[p])) for p, s in zip(ids, stress) if p >= 0
        )


def _phone_label(phone: int, stressed: bool, vowel: bool) -> str:
    if not vowel:
        return PHONES[phone]
    return PHONES[phone] + ("1" if stressed else "0")


def make_vocabulary(rng: np.random.Generator, n_vocab: int, n_semantic: int) -> Vocabulary:
    """Draw a vocabulary of distinct pseudo-words.

    Words have one to three syllables of the form (consonant) vowel (consonant); shorter words
    are given the higher frequencies, as in natural languages. No word spells one of
    :data:`jaxenc.conventions.NON_SPEECH_LABELS`.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_vocab : int
        Number of distinct words.
    n_semantic : int
        Dimensions of the semantic vectors.

    Returns
    -------
    Vocabulary
    """
    spelled: dict[str, tuple[list[int], int]] = {}
    # One syllable alone has about 4000 spellings, so distinct words come quickly; the bound on
    # draws only turns an impossible request (n_vocab far too large) into an error.
    for _ in range(200 * n_vocab):
        if len(spelled) == n_vocab:
            break
        n_syllables = int(rng.choice(3, p=(0.45, 0.4, 0.15))) + 1
        phones: list[int] = []
        stressed_at = -1
        for syllable in range(n_syllables):
            if rng.random() < 0.8:
                phones.append(int(rng.choice(_CONSONANTS)))
            if syllable == 0:
                stressed_at = len(phones)
            phones.append(int(rng.choice(_VOWELS)))
            if rng.random() < 0.4:
                phones.append(int(rng.choice(_CONSONANTS)))
        word = "".join(_SPELLING[p] for p in phones)
        if word not in spelled and word not in conventions.NON_SPEECH_LABELS:
            spelled[word] = (phones, stressed_at)
    if len(spelled) < n_vocab:
        raise ConfigError(f"could not draw {n_vocab} distinct pseudo-words; ask for fewer")

    # Shorter words first (stable, so ties keep their random draw order): frequent words are short.
    words = sorted(spelled, key=lambda w: len(spelled[w][0]))
    max_phones = max(len(p) for p, _ in spelled.values())
    phone_ids = np.full((n_vocab, max_phones), -1, dtype=np.int64)
    stressed = np.zeros((n_vocab, max_phones), dtype=bool)
    for i, word in enumerate(words):
        phones, stressed_at = spelled[word]
        phone_ids[i, : len(phones)] = phones
        stressed[i, stressed_at] = True
    rank = np.arange(n_vocab)
    probability = 1.0 / (rank + 2.7)
    return Vocabulary(
        words=tuple(words),
        phones=phone_ids,
        stressed=stressed,
        probability=probability / probability.sum(),
        semantic=rng.standard_normal((n_vocab, n_semantic)),
        loudness=rng.normal(0.0, 0.15, n_vocab),
        pitch=rng.normal(0.0, 0.06, n_vocab),
        formant_shift=np.exp(rng.normal(0.0, 0.04, n_vocab)),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Story:
    """The planted content and timing of one synthetic story.

    Times are integers in control frames (10 ms units) from sound onset; a segment
    ``[start, end)`` covers control frames ``start .. end - 1``.

    Parameters
    ----------
    name : str
    n_frames : int
        Control frames of the audio; the audio lasts ``n_frames / CONTROL_RATE`` seconds.
    word_ids : ndarray of shape (n_words,), int
        Vocabulary index of each spoken word.
    word_start, word_end : ndarray of shape (n_words,), int
    topic : ndarray of shape (n_words, n_semantic)
        The story's drifting topic at each word, which biased the choice of that word.
    phone_ids : ndarray of shape (n_phones,), int
        Indices into :data:`PHONES`.
    phone_labels : tuple of str, length n_phones
        TextGrid labels of the phones (vowels with their stress digit).
    phone_start, phone_end : ndarray of shape (n_phones,), int
        The phones of a word tile it exactly.
    pause_start, pause_end : ndarray of shape (n_pauses,), int
        Pauses between phrases.
    pause_labels : tuple of str, length n_pauses
        "sp", "br" or "" (an empty interval).
    controls : dict of str to ndarray of shape (n_frames,)
        Synthesis parameters per control frame: ``voiced`` and ``noise`` amplitudes, ``f0``
        (Hz), ``f1``, ``f2``, ``f3`` (formants, Hz) and ``brightness`` (0..1).
    """

    name: str
    n_frames: int
    word_ids: np.ndarray
    word_start: np.ndarray
    word_end: np.ndarray
    topic: np.ndarray
    phone_ids: np.ndarray
    phone_labels: tuple[str, ...]
    phone_start: np.ndarray
    phone_end: np.ndarray
    pause_start: np.ndarray
    pause_end: np.ndarray
    pause_labels: tuple[str, ...]
    controls: dict

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.n_frames / CONTROL_RATE


def make_story(
    rng: np.random.Generator,
    vocabulary: Vocabulary,
    name: str,
    duration: float,
    *,
    topic_words: float,
    topic_strength: float,
    base_f0: float,
) -> Story:
    """Draw the words, timing and synthesis parameters of one story.

    Word choice follows ``p(word) ~ probability * exp(topic_strength * topic . semantic /
    sqrt(n_semantic))`` with a topic that drifts smoothly over the word sequence. Phrases of
    2-10 words are followed by pauses of 0.15-1.4 s. Prosody is drawn per phrase, independently
    of the words: a pitch offset and declination, a loudness offset and slope.

    Parameters
    ----------
    rng : numpy.random.Generator
    vocabulary : Vocabulary
    name : str
        Story name.
    duration : float
        Length of the audio in seconds, a multiple of ``1 / CONTROL_RATE``.
    topic_words : float
        Gaussian width of the topic drift, in words.
    topic_strength : float
        How strongly the topic biases word choice (0: not at all).
    base_f0 : float
        Mean f0 of the speaker, in Hz.

    Returns
    -------
    Story
    """
    n_frames = round(duration * CONTROL_RATE)
    first = round(_EDGE_SILENCE * CONTROL_RATE) + int(rng.integers(0, 20))
    last = n_frames - round(_EDGE_SILENCE * CONTROL_RATE)
    # More words than fit: speech averages under 3 words per second.
    n_max = int(duration * 6) + 20
    n_semantic = vocabulary.semantic.shape[1]

    topic = gaussian_filter1d(rng.standard_normal((n_max, n_semantic)), topic_words, axis=0)
    topic /= topic.std(axis=0, keepdims=True)
    logits = np.log(vocabulary.probability) + topic_strength * (
        topic @ vocabulary.semantic.T
    ) / np.sqrt(n_semantic)  # [word, vocab]
    # Gumbel-max draws one word per row of logits.
    word_ids = np.argmax(logits - np.log(-np.log(rng.random(logits.shape))), axis=1)

    phrase_lengths = rng.integers(2, 11, size=n_max)
    phrase_final = np.zeros(n_max, dtype=bool)
    ends = np.cumsum(phrase_lengths)
    phrase_final[ends[ends <= n_max] - 1] = True
    pause_kind = rng.choice(len(_PAUSE_LABELS), size=n_max, p=_PAUSE_PROBABILITY)
    pause_length = np.clip(np.round(np.exp(rng.normal(np.log(35.0), 0.4, n_max))), 15, 120)
    pause_length += 20 * (pause_kind == _PAUSE_LABELS.index("br"))
    pause_after = np.where(phrase_final, pause_length, 0).astype(np.int64)

    # Phones of every word drawn, in order: [word, slot] -> flat.
    slots = vocabulary.phones[word_ids]
    present = slots >= 0
    phone_word = np.nonzero(present)[0]
    phone_ids = slots[present]
    phone_stressed = vocabulary.stressed[word_ids][present]
    speaking_rate = np.exp(rng.normal(0.0, 0.12, n_max))
    jitter = np.exp(rng.normal(0.0, 0.15, phone_ids.size))
    phone_length = _MEAN_DURATION[phone_ids] * speaking_rate[phone_word] * jitter
    phone_length *= np.where(phone_stressed, 1.25, 1.0)
    phone_length = np.maximum(np.round(phone_length), 3).astype(np.int64)

    word_length = np.bincount(phone_word, weights=phone_length, minlength=n_max).astype(np.int64)
    word_start = first + np.concatenate([[0], np.cumsum(word_length + pause_after)[:-1]])
    word_end = word_start + word_length
    n_words = int(np.searchsorted(word_end, last, side="right"))
    if n_words == n_max:
        raise RuntimeError(f"story {name!r}: {n_max} words did not fill {duration} s")

    phone_keep = phone_word < n_words
    phone_word, phone_ids = phone_word[phone_keep], phone_ids[phone_keep]
    phone_stressed, phone_length = phone_stressed[phone_keep], phone_length[phone_keep]
    within = np.cumsum(phone_length) - phone_length
    first_phone = np.searchsorted(phone_word, np.arange(n_words))
    phone_start = word_start[phone_word] + within - within[first_phone][phone_word]
    phone_end = phone_start + phone_length

    # The pause after the last spoken word runs into the closing silence: drop it.
    pauses = np.flatnonzero(phrase_final[: n_words - 1])
    pause_start = word_end[pauses]
    pause_end = pause_start + pause_after[pauses]
    pause_labels = tuple(_PAUSE_LABELS[k] for k in pause_kind[pauses])

    word_ids, word_start, word_end = word_ids[:n_words], word_start[:n_words], word_end[:n_words]
    phrase = np.concatenate([[0], np.cumsum(phrase_final[: n_words - 1])])
    controls = _controls(
        rng,
        vocabulary,
        n_frames,
        word_ids,
        word_start,
        word_end,
        phrase,
        phone_ids,
        phone_start,
        phone_length,
        phone_word,
        phone_stressed,
        base_f0,
    )
    labels = tuple(
        _phone_label(int(p), bool(s), bool(_IS_VOWEL[p])) for p, s in zip(phone_ids, phone_stressed)
    )
    return Story(
        name=name,
        n_frames=n_frames,
        word_ids=word_ids,
        word_start=word_start,
        word_end=word_end,
        topic=topic[:n_words],
        phone_ids=phone_ids,
        phone_labels=labels,
        phone_start=phone_start,
        phone_end=phone_end,
        pause_start=pause_start,
        pause_end=pause_end,
        pause_labels=pause_labels,
        controls=controls,
    )


def _controls(
    rng,
    vocabulary,
    n_frames,
    word_ids,
    word_start,
    word_end,
    phrase,
    phone_ids,
    phone_start,
    phone_length,
    phone_word,
    phone_stressed,
    base_f0,
) -> dict:
    """Synthesis parameters per control frame; see :class:`Story` for the keys."""
    n_phrases = int(phrase[-1]) + 1
    pitch_offset = rng.normal(0.0, 0.1, n_phrases)
    pitch_slope = rng.normal(-0.2, 0.08, n_phrases)
    loud_offset = rng.normal(0.0, 0.25, n_phrases)
    loud_slope = rng.normal(-0.25, 0.15, n_phrases)

    # Control frame -> phone, by laying each phone's frames at its start.
    frame_phone = np.full(n_frames, -1, dtype=np.int64)
    phone_of = np.repeat(np.arange(phone_ids.size), phone_length)
    phone_first = np.cumsum(phone_length) - phone_length
    offset = np.arange(phone_of.size) - np.repeat(phone_first, phone_length)
    frame_phone[phone_start[phone_of] + offset] = phone_of
    speech = np.flatnonzero(frame_phone >= 0)
    ph = frame_phone[speech]
    p = phone_ids[ph]
    w = phone_word[ph]
    vowel = _IS_VOWEL[p]
    stressed = phone_stressed[ph]

    first_word = np.searchsorted(phrase, np.arange(n_phrases))
    last_word = np.searchsorted(phrase, np.arange(n_phrases), side="right") - 1
    phrase_start, phrase_end = word_start[first_word], word_end[last_word]
    k = phrase[w]
    position = (speech - phrase_start[k]) / (phrase_end[k] - phrase_start[k])
    vocab = word_ids[w]

    gain = np.exp(vocabulary.loudness[vocab] + loud_offset[k] + loud_slope[k] * position)
    gain *= np.where(vowel & ~stressed, 0.75, 1.0)
    octaves = vocabulary.pitch[vocab] + pitch_offset[k] + pitch_slope[k] * position
    octaves += np.where(stressed, 0.08, 0.0)
    shift = np.where(vowel, vocabulary.formant_shift[vocab], 1.0)

    controls = {
        "voiced": np.zeros(n_frames),
        "noise": np.zeros(n_frames),
        "f0": np.full(n_frames, base_f0),
        "f1": np.full(n_frames, _NEUTRAL_FORMANTS[0]),
        "f2": np.full(n_frames, _NEUTRAL_FORMANTS[1]),
        "f3": np.full(n_frames, _NEUTRAL_FORMANTS[2]),
        "brightness": np.full(n_frames, 0.5),
    }
    controls["voiced"][speech] = _VOICED_GAIN[p] * gain
    controls["noise"][speech] = _NOISE_GAIN[p] * gain
    controls["f0"][speech] = base_f0 * 2.0**octaves
    for j in range(3):
        controls[f"f{j + 1}"][speech] = _FORMANTS[p, j] * shift
    controls["brightness"][speech] = _BRIGHTNESS[p]
    return controls


def frame_average(values: np.ndarray) -> np.ndarray:
    """Average control-rate values over frames of :data:`FRAME_PERIOD` centred on their times.

    Frame ``k`` (time ``k * FRAME_PERIOD`` seconds from sound onset) averages the control
    frames whose centres lie within ``FRAME_PERIOD / 2`` of it; control frames before sound
    onset count as 0 (silence).

    Parameters
    ----------
    values : ndarray of shape (n_control, ...)
        ``n_control`` a multiple of ``FRAME_PERIOD * CONTROL_RATE``.

    Returns
    -------
    ndarray of shape (n_control // 10, ...)
    """
    n_out = values.shape[0] // _FRAME_HOP
    half = _FRAME_HOP // 2
    padded = np.concatenate(
        [np.zeros((half,) + values.shape[1:]), values[: values.shape[0] - half]]
    )
    return padded.reshape((n_out, _FRAME_HOP) + values.shape[1:]).mean(axis=1)


def audio_properties(story: Story, base_f0: float) -> np.ndarray:
    """The planted audio properties of a story on the frame grid, computed from its parameters.

    Columns (:data:`AUDIO_NAMES`), each scaled to order 1 and 0 in silence: loudness (total
    amplitude), voicing (voiced share of the amplitude), pitch (log2 f0 / base_f0, times 4,
    where voiced), formant1-3 (centred and scaled formant frequencies, where voiced),
    frication (noise amplitude), brightness (centred noise brightness, where there is noise),
    onset (rise of loudness over 50 ms).

    Parameters
    ----------
    story : Story
    base_f0 : float
        The speaker's mean f0, in Hz.

    Returns
    -------
    ndarray of shape (n_frames, len(AUDIO_NAMES)), float64
        Frame ``k`` is at ``k * FRAME_PERIOD`` seconds from sound onset.
    """
    c = story.controls
    voiced, noise = c["voiced"], c["noise"]
    loudness = np.sqrt(voiced**2 + noise**2)
    total = voiced + noise
    voicing = np.divide(voiced, total, out=np.zeros_like(total), where=total > 0)
    is_voiced = voiced > 0
    formants = np.stack([c["f1"], c["f2"], c["f3"]], axis=1)  # [control, formant]
    formants = is_voiced[:, None] * (formants - _FORMANT_CENTRE) / _FORMANT_SCALE
    rise = loudness - np.concatenate([np.zeros(_ONSET_LAG), loudness[:-_ONSET_LAG]])
    columns = [
        loudness,
        voicing,
        is_voiced * _PITCH_SCALE * np.log2(c["f0"] / base_f0),
        formants[:, 0],
        formants[:, 1],
        formants[:, 2],
        _FRICATION_SCALE * noise,
        (noise > 0) * 2.0 * (c["brightness"] - 0.5),
        _ONSET_SCALE * np.maximum(rise, 0.0),
    ]
    return frame_average(np.stack(columns, axis=1))


def semantic_frames(story: Story, vocabulary: Vocabulary) -> np.ndarray:
    """Semantic events of a story on the frame grid.

    Each word contributes its semantic vector over its duration: frame ``k`` holds the sum of
    the vectors of the words it overlaps, each weighted by the fraction of the frame covered.

    Parameters
    ----------
    story : Story
    vocabulary : Vocabulary

    Returns
    -------
    ndarray of shape (n_frames, n_semantic), float64
    """
    n_semantic = vocabulary.semantic.shape[1]
    per_control = np.zeros((story.n_frames, n_semantic))
    lengths = story.word_end - story.word_start
    word_of = np.repeat(np.arange(lengths.size), lengths)
    offset = np.arange(word_of.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    per_control[story.word_start[word_of] + offset] = vocabulary.semantic[story.word_ids[word_of]]
    return frame_average(per_control)


def synthesize_audio(path, story: Story, rng: np.random.Generator, sample_rate: int) -> None:
    """Synthesise a story's speech and write it as a 2-channel int16 wav file.

    Vowels and voiced consonants are formant wave functions: at every glottal pulse (rate f0)
    each formant starts a damped sinusoid, which gives harmonics of f0 shaped by formant peaks.
    Consonant noise is white noise tilted between a low-pass and a high-pass first difference
    by the phone's brightness. Amplitudes ramp linearly over each 10 ms control frame; pitch,
    formants and brightness are held per control frame, the glottal phase running on
    continuously. The work goes by blocks of 20 s, so memory stays bounded for real-length
    stories.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written as WAV whatever its extension).
    story : Story
    rng : numpy.random.Generator
        Source of the noise.
    sample_rate : int
        In Hz, a multiple of :data:`CONTROL_RATE`.
    """
    hop = sample_rate // CONTROL_RATE
    c = {k: v.astype(np.float32) for k, v in story.controls.items()}
    # Glottal cycles completed at the start of every control frame; f0 is constant within one.
    cycles = np.concatenate([[0.0], np.cumsum(story.controls["f0"] * (hop / sample_rate))])
    start_phase = np.mod(cycles[:-1], 1.0).astype(np.float32)
    step = (c["f0"] / np.float32(sample_rate))[:, None]  # [control, 1] cycles per sample
    inverse_f0 = (1.0 / c["f0"])[:, None]
    in_frame = np.arange(hop, dtype=np.float32)[None, :]
    ramp = (np.arange(1, hop + 1, dtype=np.float32) / hop)[None, :]
    previous = {"voiced": c["voiced"][:1], "noise": c["noise"][:1]}
    last_noise = np.zeros((1,), dtype=np.float32)
    with soundfile.SoundFile(
        os.fspath(path),
        "w",
        samplerate=sample_rate,
        channels=conventions.AUDIO_CHANNELS,
        subtype="PCM_16",
        format="WAV",
    ) as out:
        for begin in range(0, story.n_frames, _BLOCK_FRAMES):
            frames = slice(begin, begin + _BLOCK_FRAMES)
            amplitude = {}
            for key in ("voiced", "noise"):
                now = c[key][frames]
                before = np.concatenate([previous[key], now[:-1]])
                previous[key] = now[-1:]
                # [control, sample in frame]
                amplitude[key] = before[:, None] + (now - before)[:, None] * ramp

            phase = start_phase[frames, None] + in_frame * step[frames]
            phase -= np.floor(phase)
            since_pulse = phase * inverse_f0[frames]  # seconds, [control, sample]
            two_pi_tau = np.float32(2 * np.pi) * since_pulse
            wave = _FORMANT_AMPLITUDE[0] * np.sin(two_pi_tau * c["f1"][frames, None])
            wave += _FORMANT_AMPLITUDE[1] * np.sin(two_pi_tau * c["f2"][frames, None])
            wave += _FORMANT_AMPLITUDE[2] * np.sin(two_pi_tau * c["f3"][frames, None])
            wave *= np.exp(np.float32(-np.pi * _FORMANT_BANDWIDTH) * since_pulse)

            white = rng.standard_normal(wave.shape, dtype=np.float32)
            shifted = np.concatenate([last_noise, white.ravel()[:-1]]).reshape(white.shape)
            last_noise = white.ravel()[-1:]
            low, high = white + shifted, white - shifted
            noise = low + c["brightness"][frames, None] * (high - low)

            signal = amplitude["voiced"] * wave + amplitude["noise"] * noise
            signal += np.float32(_NOISE_FLOOR / _OUTPUT_GAIN) * white
            samples = np.round(signal.ravel() * np.float32(_OUTPUT_GAIN * 32767))
            samples = np.clip(samples, -32768, 32767).astype(np.int16)
            out.write(np.repeat(samples[:, None], conventions.AUDIO_CHANNELS, axis=1))


def write_textgrid(path, story: Story, vocabulary: Vocabulary) -> None:
    """Write a story's phone and word tiers as a Praat long-format TextGrid.

    Tier 0 is "phone", tier 1 "word", as in ds003020. Pauses carry their label ("sp", "br")
    in both tiers; empty pauses and the silences before the first and after the last word are
    empty intervals.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    story : Story
    vocabulary : Vocabulary
    """
    def seconds(starts, ends, labels):
        return [
            (s / CONTROL_RATE, e / CONTROL_RATE, label)
            for s, e, label in zip(starts.tolist(), ends.tolist(), labels)
            if label
        ]

    pauses = seconds(story.pause_start, story.pause_end, story.pause_labels)
    phones = seconds(story.phone_start, story.phone_end, story.phone_labels)
    spelled = [vocabulary.words[i] for i in story.word_ids.tolist()]
    words = seconds(story.word_start, story.word_end, spelled)
    grid = textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=story.duration)
    for name, entries in (("phone", phones + pauses), ("word", words + pauses)):
        entries.sort()
        tier = textgrid.IntervalTier(name, entries, minT=0.0, maxT=story.duration)
        grid.addTier(tier, reportingMode="error")
    grid.save(
        os.fspath(path), format="long_textgrid", includeBlankSpaces=True, reportingMode="error"
    )
