"""Stories of the synthetic twin: words, phrases, pauses, timing and synthesis parameters.

A story is a sequence of words from a pseudo-word :class:`~jaxenc.synthetic.words.Vocabulary`,
grouped into phrases separated by pauses, every boundary on the 10 ms control grid. Its
synthesis parameters per control frame (voiced and noise amplitude, f0, three formants, noise
brightness) are drawn with it; :mod:`jaxenc.synthetic.audio` turns them into the wav file and
:mod:`jaxenc.synthetic.properties` into the planted audio properties. :func:`write_textgrid`
writes the phone and word tiers.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from praatio import textgrid
from scipy.ndimage import gaussian_filter1d

from jaxenc.synthetic.words import (
    BRIGHTNESS,
    CONTROL_RATE,
    FORMANTS,
    IS_VOWEL,
    MEAN_DURATION,
    NEUTRAL_FORMANTS,
    NOISE_GAIN,
    VOICED_GAIN,
    Vocabulary,
    phone_label,
)

__all__ = ["Story", "make_story", "write_textgrid"]

# Words start at least this long after sound onset and end this long before the audio ends (s).
_EDGE_SILENCE = 1.0
# Labels of the pauses between phrases, and their probabilities.
_PAUSE_LABELS = ("sp", "br", "")
_PAUSE_PROBABILITY = (0.6, 0.15, 0.25)


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
    phone_length = MEAN_DURATION[phone_ids] * speaking_rate[phone_word] * jitter
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
    labels = tuple(phone_label(int(p), bool(s)) for p, s in zip(phone_ids, phone_stressed, strict=True))
    story = Story(
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
        controls={},
    )
    # The prosody is drawn last, from the same generator, over the story's phrases.
    controls = _controls(rng, vocabulary, story, phrase, phone_word, phone_stressed, base_f0)
    return dataclasses.replace(story, controls=controls)


def _controls(rng, vocabulary, story, phrase, phone_word, phone_stressed, base_f0) -> dict:
    """Synthesis parameters per control frame; see :class:`Story` for the keys.

    ``phrase`` holds the phrase of each word, ``phone_word`` and ``phone_stressed`` the word and
    the stress of each phone, shape (n_words,) and (n_phones,).
    """
    n_frames, phone_ids, phone_start = story.n_frames, story.phone_ids, story.phone_start
    phone_length = story.phone_end - phone_start
    word_ids, word_start, word_end = story.word_ids, story.word_start, story.word_end
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
    vowel = IS_VOWEL[p]
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
        "f1": np.full(n_frames, NEUTRAL_FORMANTS[0]),
        "f2": np.full(n_frames, NEUTRAL_FORMANTS[1]),
        "f3": np.full(n_frames, NEUTRAL_FORMANTS[2]),
        "brightness": np.full(n_frames, 0.5),
    }
    controls["voiced"][speech] = VOICED_GAIN[p] * gain
    controls["noise"][speech] = NOISE_GAIN[p] * gain
    controls["f0"][speech] = base_f0 * 2.0**octaves
    for j in range(3):
        controls[f"f{j + 1}"][speech] = FORMANTS[p, j] * shift
    controls["brightness"][speech] = BRIGHTNESS[p]
    return controls


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
            for s, e, label in zip(starts.tolist(), ends.tolist(), labels, strict=True)
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
