"""Pseudo-words of the synthetic twin: the phone inventory and the :class:`Vocabulary`.

Every phone, word and pause boundary of a story lies on the :data:`CONTROL_RATE` grid (10 ms,
the resolution of forced aligners). The phone inventory's columns (arrays indexed by phone id,
an index into :data:`PHONES`) drive both the words' spelling and timing and the speech
synthesis of :mod:`jaxenc.synthetic.stimulus`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxenc import conventions
from jaxenc.errors import ConfigError

__all__ = [
    "CONTROL_RATE",
    "PHONES",
    "IS_VOWEL",
    "VOICED_GAIN",
    "NOISE_GAIN",
    "BRIGHTNESS",
    "FORMANTS",
    "MEAN_DURATION",
    "NEUTRAL_FORMANTS",
    "Vocabulary",
    "phone_label",
    "make_vocabulary",
]

# Rate of the synthesis parameters, in Hz; every phone, word and pause boundary is on its grid.
CONTROL_RATE = 100

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
# The other columns, indexed by phone id.
_SPELLING = tuple(row[1] for row in _PHONE_TABLE)
IS_VOWEL = np.array([row[2] for row in _PHONE_TABLE])
VOICED_GAIN = np.array([row[3] for row in _PHONE_TABLE])
NOISE_GAIN = np.array([row[4] for row in _PHONE_TABLE])
BRIGHTNESS = np.array([row[5] for row in _PHONE_TABLE])
FORMANTS = np.array([row[6:9] for row in _PHONE_TABLE], dtype=float)
MEAN_DURATION = np.array([row[9] for row in _PHONE_TABLE], dtype=float)
_VOWELS = np.flatnonzero(IS_VOWEL)
_CONSONANTS = np.flatnonzero(~IS_VOWEL)
# Formants and f0 held during silence, so the synthesis parameters never jump to 0.
NEUTRAL_FORMANTS = (500.0, 1500.0, 2500.0)


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
        return tuple(phone_label(int(p), bool(s)) for p, s in zip(ids, stress, strict=True) if p >= 0)


def phone_label(phone: int, stressed: bool) -> str:
    """TextGrid label of phone id ``phone``: vowels carry a CMUdict stress digit (1 or 0)."""
    if not IS_VOWEL[phone]:
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

