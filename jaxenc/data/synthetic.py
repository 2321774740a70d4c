"""The synthetic twin of ds003020: the real layout, written with a planted ground truth.

:func:`write_synthetic` writes, under a root folder, exactly the files :class:`LeBelDataset`
reads from the real dataset (LeBel et al. 2023)::

    derivative/respdict.json                              story -> TRs acquired
    derivative/preprocessed_data/<SUBJECT>/<story>.hf5    "data" float64 (respdict - 20, n_voxels)
                                                          + "individual_repeats" for the test story
    derivative/TextGrids/<story>.TextGrid                 Praat long format, tiers "phone", "word"
    stimuli/<story>.wav                                   2-channel int16, 44.1 kHz by default

and beside them the planted truth, read back by :func:`load_truth`::

    synthetic_truth/config.json          {"format_version": 1, "config": {...}}
    synthetic_truth/complete.json        the same, written last: the tree is complete
    synthetic_truth/vocabulary.npz       the pseudo-words, their phones and semantic vectors
    synthetic_truth/latents.npz          latent names, interaction projections, HRF, covariance
    synthetic_truth/stimulus/<story>.npz planted audio properties, words, latent rows
    synthetic_truth/<SUBJECT>.npz        per-voxel class, weights, SNR, noise std, true cc_max

What is planted
---------------
Timing. A story of respdict ``R`` TRs has ``(R - 10) * TR`` seconds of audio (the real
adollshouse, R = 261, lasts 503.6 s), so the Huth-lab grid of ``R - PAD`` TRs centred at
``TR * i - SOUND_START + TR / 2`` seconds ends 1 s before the audio does; the hf5 rows are grid
rows ``[TRIM_START : R - PAD - TRIM_END]``. Every boundary lies on a 10 ms grid.

Words. A vocabulary of ``n_vocab`` lowercase pseudo-words built from syllables of ARPAbet-like
phones (shorter words more frequent, Zipf-Mandelbrot frequencies ``~ 1 / (rank + 2.7)``). Each
word has a latent semantic vector (``n_semantic`` standard normal entries). A story draws its
words with probabilities tilted towards a topic vector that drifts smoothly over the word
sequence (Gaussian width ``topic_words`` words), so semantic content has slow, multi-TR
structure. Words come in phrases of 2-10, separated by pauses of 0.15-1.4 s labelled "sp",
"br" or left empty, from about 1 s after sound onset to 1 s before the end; phones tile each
word. The TextGrids hold exactly these phones and words.

Audio. Per phone: vowels are voiced (formant wave functions at f0 with three formants, a
loudness, pitch and formant shift that depend on the word); consonants are shaped noise, voiced
ones with a low formant buzz; pauses are silent (plus a -70 dB noise floor). Prosody is drawn
per phrase independently of the words (pitch offset and declination, loudness offset and
slope), so audio and semantic properties are only weakly correlated (mainly through speech
versus silence). The planted audio properties (:data:`AUDIO_NAMES`: loudness, voicing, pitch,
formant1-3, frication, brightness, onset) are computed from the synthesis parameters, averaged
over 0.1 s frames centred at ``k * 0.1`` s from sound onset.

Semantic events. On the same 0.1 s frames, the sum of the semantic vectors of the words each
frame overlaps, weighted by the fraction of the frame each covers.

Responses. On a 0.1 s grid from the first trigger, the neural drive of a voxel is
``audio @ w_a + semantic @ w_s + interaction @ w_i``, where ``interaction`` has
``n_interaction`` columns ``(a_k - mean) * (s_k - mean)``, products of a projection of the audio
properties and one of the semantic events, each smoothed by a Gaussian of
``interaction_smoothing`` seconds (slow enough that TR-level delayed features can learn them),
minus the part of each product that a least-squares fit on the story's audio and semantic
frames explains (the two share the speech-versus-silence envelope, so a raw product would be
partly linear). The drive is convolved with SPM's canonical double-gamma HRF and sampled at
the rows' TR centres, giving ``signal = latent_rows @ weights``. Voxel classes
(:class:`VoxelClass`): noise (no signal), audio, semantic, audio+semantic (linear, audio share
U(0.25, 0.75)), interaction.
Weights are scaled so the signal has unit variance pooled over all stories (each centred);
per-voxel SNR (signal std / noise std) is log-uniform in ``snr_range``. Noise is Gaussian,
AR(1) over rows with coefficient ``noise_ar``. Each story, and each repeat of the test story
(same signal, independent noise), is z-scored per voxel; the test story's ``data`` is the mean
of its z-scored repeats.

Noise ceiling. The saved ``cc_max`` is the correlation between the noiseless signal and the
mean of N repeats, ``sqrt(SP / (SP + noise_std**2 / N))`` with SP the signal variance over the
test story's rows: Schoppe et al.'s (2016) ``1 / sqrt(1 + (TP / SP - 1) / N)`` with the
expected single-repeat power ``TP = SP + noise_std**2``. It ignores the per-repeat z-scoring,
which rescales each repeat by nearly the same factor.

Everything is deterministic given the config (the seed included). A re-run on a complete tree
is a no-op; an interrupted run resumes, since every file is written under a temporary name and
renamed when complete. Usage::

    python -m jaxenc.data.synthetic /tmp/ds003020-synth --preset tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import zlib
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from jaxenc import conventions
from jaxenc.data.synth_response import (
    CLASS_NAMES,
    FINE_PERIOD,
    VoxelClass,
    canonical_hrf,
    draw_voxels,
    pooled_covariance,
    row_fine_indices,
    simulate_responses,
    story_latents,
    true_cc_max,
)
from jaxenc.data.synth_stimulus import (
    AUDIO_NAMES,
    CONTROL_RATE,
    FRAME_PERIOD,
    audio_properties,
    make_story,
    make_vocabulary,
    semantic_frames,
    synthesize_audio,
    write_textgrid,
)
from jaxenc.errors import ConfigError, DataError

__all__ = [
    "SyntheticConfig",
    "SyntheticTruth",
    "PlantedStimulus",
    "VoxelClass",
    "CLASS_NAMES",
    "AUDIO_NAMES",
    "FORMAT_VERSION",
    "TRUTH_DIR",
    "real_respdict",
    "write_synthetic",
    "load_truth",
    "main",
]

# Version of the synthetic_truth/ files; load_truth refuses others.
FORMAT_VERSION = 1
# Folder of the planted truth, beside derivative/ and stimuli/.
TRUTH_DIR = "synthetic_truth"
# Voxels simulated at once: bounds memory at real size (10 repeats x 291 rows x 4096 x 8 B).
_VOXEL_CHUNK = 4096
_REAL_RESPDICT = Path(__file__).with_name("respdict.json")
_SUBJECT_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Independent random streams, keyed with the seed (and story or subject names).
_VOCABULARY, _STORY, _AUDIO, _VOXELS, _NOISE, _PROJECTIONS = range(6)


def real_respdict() -> dict[str, int]:
    """The real ds003020 respdict shipped with jaxenc: story -> TRs acquired (84 stories)."""
    return dict(_load_real_respdict())


@functools.cache
def _load_real_respdict() -> dict[str, int]:
    with open(_REAL_RESPDICT, encoding="utf-8") as file:
        return json.load(file)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a synthetic dataset; the defaults are the demo preset.

    Presets: :meth:`tiny` (tests), :meth:`demo` (default), :meth:`full` (real size).
    Sequences may be given as lists; they are stored as tuples.
    """

    # Subjects written under derivative/preprocessed_data/.
    subjects: tuple[str, ...] = ("UTS01", "UTS02", "UTS03")
    # Voxels of each subject, in the order of `subjects`.
    n_voxels: tuple[int, ...] = (2000, 2000, 2000)
    # Test-story repeats of each subject (the real UTS01-03 have 10, the others 5).
    n_repeats: tuple[int, ...] = (10, 10, 10)
    # Training stories: the first n real story names in alphabetical order, test story excluded.
    n_train_stories: int = 12
    # Subjects who heard fewer training stories, as (subject, n kept); they keep the first n.
    fewer_stories: tuple[tuple[str, int], ...] = ()
    # Story lengths relative to the real ones: respdict = max(round(real * scale), min_respdict).
    length_scale: float = 0.3
    # Smallest synthetic respdict, in TRs (at least 30: 10 rows and 40 s of audio).
    min_respdict: int = 60
    # Sample rate of the wav files in Hz, a multiple of 100 (the real files: 44100).
    audio_rate: int = conventions.AUDIO_RATE
    # Distinct pseudo-words in the vocabulary.
    n_vocab: int = 400
    # Dimensions of each word's latent semantic vector.
    n_semantic: int = 12
    # Audio x semantic interaction latents.
    n_interaction: int = 4
    # Fractions of noise, audio, semantic, audio+semantic and interaction voxels; sum to 1.
    class_fractions: tuple[float, ...] = (0.3, 0.2, 0.2, 0.15, 0.15)
    # Range of per-voxel SNR (signal std / noise std), drawn log-uniformly.
    snr_range: tuple[float, float] = (0.25, 2.0)
    # AR(1) coefficient of the noise over TRs (0: white noise).
    noise_ar: float = 0.3
    # Gaussian width of the topic drift, in words (40 words: about 15 s of speech).
    topic_words: float = 40.0
    # How strongly the topic biases word choice (0: words independent of the topic).
    topic_strength: float = 2.0
    # Gaussian width of the smoothing of the interaction projections, in seconds.
    interaction_smoothing: float = 1.0
    # Mean pitch of the synthetic speaker, in Hz.
    base_f0: float = 120.0
    # Seed of every random draw.
    seed: int = 0

    def __post_init__(self):
        for name in ("subjects", "n_voxels", "n_repeats", "class_fractions", "snr_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "fewer_stories", tuple(tuple(p) for p in self.fewer_stories))
        self._validate()
        # numpy integers pass validation but not json: store plain ints.
        for name in ("n_voxels", "n_repeats"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        integers = ("n_train_stories", "min_respdict", "audio_rate", "n_vocab", "n_semantic")
        for name in integers + ("n_interaction", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        kept = tuple((subject, int(n)) for subject, n in self.fewer_stories)
        object.__setattr__(self, "fewer_stories", kept)

    def _validate(self) -> None:
        def fail(message):
            raise ConfigError(f"SyntheticConfig: {message}")

        def is_int(value, low):
            integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            return integer and value >= low

        n_subjects = len(self.subjects)
        if n_subjects == 0 or len(set(self.subjects)) != n_subjects:
            fail(f"subjects must be distinct and at least one, got {self.subjects}")
        if not all(isinstance(s, str) and _SUBJECT_NAME.fullmatch(s) for s in self.subjects):
            fail(f"subjects must be folder names of letters, digits, _ or -, got {self.subjects}")
        for name, low in (("n_voxels", 1), ("n_repeats", 2)):
            values = getattr(self, name)
            if len(values) != n_subjects or not all(is_int(v, low) for v in values):
                fail(f"{name} must hold one integer >= {low} per subject, got {values}")
        n_real = len(real_respdict()) - 1
        if not is_int(self.n_train_stories, 1) or self.n_train_stories > n_real:
            fail(f"n_train_stories must be an integer in 1..{n_real}, got {self.n_train_stories}")
        kept = dict(self.fewer_stories)
        if len(kept) != len(self.fewer_stories) or not set(kept) <= set(self.subjects):
            fail(
                f"fewer_stories must name distinct subjects among {self.subjects}, "
                f"got {self.fewer_stories}"
            )
        if not all(is_int(n, 1) and n <= self.n_train_stories for n in kept.values()):
            fail(f"fewer_stories counts must be in 1..n_train_stories, got {self.fewer_stories}")
        if not self.length_scale > 0:
            fail(f"length_scale must be positive, got {self.length_scale}")
        if not is_int(self.min_respdict, 30):
            fail(f"min_respdict must be an integer >= 30, got {self.min_respdict}")
        if not is_int(self.audio_rate, CONTROL_RATE) or self.audio_rate % CONTROL_RATE:
            fail(f"audio_rate must be a multiple of {CONTROL_RATE} Hz, got {self.audio_rate}")
        if not is_int(self.n_vocab, 10) or self.n_vocab > 5000:
            fail(f"n_vocab must be an integer in 10..5000, got {self.n_vocab}")
        for name in ("n_semantic", "n_interaction"):
            if not is_int(getattr(self, name), 1):
                fail(f"{name} must be a positive integer, got {getattr(self, name)}")
        fractions = np.asarray(self.class_fractions, dtype=float)
        shape_ok = fractions.shape == (len(CLASS_NAMES),)
        if not shape_ok or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
            fail(
                f"class_fractions must be {len(CLASS_NAMES)} non-negative fractions of "
                f"{CLASS_NAMES} summing to 1, got {self.class_fractions}"
            )
        if len(self.snr_range) != 2 or not 0 < self.snr_range[0] <= self.snr_range[1]:
            fail(f"snr_range must be (low, high) with 0 < low <= high, got {self.snr_range}")
        if not 0 <= self.noise_ar < 1:
            fail(f"noise_ar must be in [0, 1), got {self.noise_ar}")
        positive = self.topic_words > 0 and self.interaction_smoothing > 0
        if not (positive and self.topic_strength >= 0):
            fail("topic_words and interaction_smoothing must be positive, topic_strength >= 0")
        if not 50 <= self.base_f0 <= 400:
            fail(f"base_f0 must be a voice pitch in 50..400 Hz, got {self.base_f0}")
        if not is_int(self.seed, 0):
            fail(f"seed must be a non-negative integer, got {self.seed}")

    @classmethod
    def tiny(cls, **changes) -> SyntheticConfig:
        """Test preset: 2 subjects (UTS02 heard 2 of the 3 training stories), 50-70 rows per
        story, a few hundred voxels, high SNR; writes in a few seconds.

        Parameters
        ----------
        **changes
            Fields to override.
        """
        fields = dict(
            subjects=("UTS01", "UTS02"),
            n_voxels=(320, 280),
            n_repeats=(10, 10),
            n_train_stories=3,
            fewer_stories=(("UTS02", 2),),
            length_scale=0.22,
            min_respdict=70,
            n_vocab=200,
            snr_range=(0.5, 3.0),
        )
        return cls(**{**fields, **changes})

    @classmethod
    def demo(cls, **changes) -> SyntheticConfig:
        """Demo preset (the defaults): UTS01-03, 12 training stories and the test story at 0.3
        of their real length, 2000 voxels each.

        Parameters
        ----------
        **changes
            Fields to override.
        """
        return cls(**changes)

    @classmethod
    def full(cls, **changes) -> SyntheticConfig:
        """Real-size preset: UTS01-03 with their real voxel counts, all 84 stories at their
        real lengths (about 67 GB of responses and 11 GB of audio; for benchmarks).

        Parameters
        ----------
        **changes
            Fields to override.
        """
        fields = dict(
            n_voxels=(81126, 94251, 95556),
            n_train_stories=len(real_respdict()) - 1,
            length_scale=1.0,
            n_vocab=1000,
        )
        return cls(**{**fields, **changes})

    @property
    def train_stories(self) -> tuple[str, ...]:
        """Names of the training stories, alphabetical."""
        names = sorted(s for s in real_respdict() if s != conventions.TEST_STORY)
        return tuple(names[: self.n_train_stories])

    @property
    def stories(self) -> tuple[str, ...]:
        """Training stories then the test story."""
        return self.train_stories + (conventions.TEST_STORY,)

    def subject_stories(self, subject: str) -> tuple[str, ...]:
        """Training stories heard by ``subject`` (all subjects also hear the test story)."""
        if subject not in self.subjects:
            raise ConfigError(f"unknown subject; the config has {self.subjects}", subject=subject)
        return self.train_stories[: dict(self.fewer_stories).get(subject, self.n_train_stories)]

    def respdict(self) -> dict[str, int]:
        """The synthetic respdict: story -> TRs acquired, following the real relative lengths."""
        real = real_respdict()
        return {s: max(round(real[s] * self.length_scale), self.min_respdict) for s in self.stories}

    def to_dict(self) -> dict:
        """Plain JSON-able dict of the fields (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, fields: dict) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise ConfigError(
                f"unknown SyntheticConfig fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**fields)


@dataclasses.dataclass(frozen=True, eq=False)
class PlantedStimulus:
    """The planted stimulus of one story (the oracle features), as saved by the writer.

    Times are in seconds from sound onset.

    Parameters
    ----------
    story : str
    respdict : int
        TRs acquired.
    duration : float
        Length of the audio, seconds.
    audio_times : ndarray of shape (n_frames,)
        ``k * 0.1``: centres of the property frames.
    audio : ndarray of shape (n_frames, n_audio)
        Planted audio properties, columns :data:`AUDIO_NAMES`.
    semantic : ndarray of shape (n_frames, n_semantic)
        Semantic events on the same frames.
    words : ndarray of shape (n_words,), str
    word_ids : ndarray of shape (n_words,), int
        Indices into the vocabulary.
    word_start, word_end : ndarray of shape (n_words,)
    word_vectors : ndarray of shape (n_words, n_semantic)
        Semantic vector of each word.
    topic : ndarray of shape (n_words, n_semantic)
        Topic at each word, which biased its choice.
    phones : ndarray of shape (n_phones,), str
    phone_start, phone_end : ndarray of shape (n_phones,)
    row_times : ndarray of shape (respdict - 20,)
        TR centres of the hf5 rows.
    latent_rows : ndarray of shape (respdict - 20, n_latent)
        HRF-convolved latents at the rows: the signal of a voxel is ``latent_rows @ weights``.
    """

    story: str
    respdict: int
    duration: float
    audio_times: np.ndarray
    audio: np.ndarray
    semantic: np.ndarray
    words: np.ndarray
    word_ids: np.ndarray
    word_start: np.ndarray
    word_end: np.ndarray
    word_vectors: np.ndarray
    topic: np.ndarray
    phones: np.ndarray
    phone_start: np.ndarray
    phone_end: np.ndarray
    row_times: np.ndarray
    latent_rows: np.ndarray

    @property
    def word_times(self) -> np.ndarray:
        """Word midpoints, the Huth-lab word times, shape (n_words,)."""
        return (self.word_start + self.word_end) / 2


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The ground truth planted in a synthetic dataset.

    Per-subject arrays are dicts keyed by subject; per-story stimuli are read on demand.

    Parameters
    ----------
    root : Path
        The dataset root.
    config : SyntheticConfig
    respdict : dict of str to int
        The synthetic respdict.
    latent_names : tuple of str, length n_latent
        Names of the rows of ``weights``: ``audio:<name>``, ``semantic:<k>``,
        ``interaction:<k>``.
    words : tuple of str, length n_vocab
        The vocabulary.
    word_semantic : ndarray of shape (n_vocab, n_semantic)
        Semantic vector of each vocabulary word.
    voxel_class : dict of str to ndarray of shape (n_voxels,), int8
        :class:`VoxelClass` codes.
    weights : dict of str to ndarray of shape (n_latent, n_voxels)
    snr : dict of str to ndarray of shape (n_voxels,)
        Signal std over noise std (0 for noise voxels).
    noise_std : dict of str to ndarray of shape (n_voxels,)
        Noise std before z-scoring (the signal has unit pooled variance).
    cc_max : dict of str to ndarray of shape (n_voxels,)
        True noise ceiling of the test story's repeat mean (see the module notes).
    part_variance : dict of str to ndarray of shape (n_voxels, 3)
        Pooled variance of the audio, semantic and interaction parts of the signal.
    """

    root: Path
    config: SyntheticConfig
    respdict: dict
    latent_names: tuple
    words: tuple
    word_semantic: np.ndarray
    voxel_class: dict
    weights: dict
    snr: dict
    noise_std: dict
    cc_max: dict
    part_variance: dict

    @property
    def subjects(self) -> tuple[str, ...]:
        """Subjects of the dataset."""
        return self.config.subjects

    def stories(self, subject: str) -> tuple[str, ...]:
        """Training stories of ``subject``."""
        return self.config.subject_stories(subject)

    def stimulus(self, story: str) -> PlantedStimulus:
        """The planted stimulus of ``story`` (a training story or the test story)."""
        path = self.root / TRUTH_DIR / "stimulus" / f"{story}.npz"
        if story not in self.respdict:
            raise DataError(
                f"no such story; stories: {sorted(self.respdict)}", path=path, story=story
            )
        names = [f.name for f in dataclasses.fields(PlantedStimulus) if f.name != "story"]
        with np.load(path) as saved:
            fields = {name: saved[name] for name in names}
        return PlantedStimulus(
            story=story,
            respdict=int(fields.pop("respdict")),
            duration=float(fields.pop("duration")),
            **fields,
        )

    def audio_properties(self, story: str) -> tuple[np.ndarray, np.ndarray]:
        """Planted audio properties of ``story``.

        Returns
        -------
        times : ndarray of shape (n_frames,)
            Frame centres, seconds from sound onset.
        properties : ndarray of shape (n_frames, len(AUDIO_NAMES))
        """
        stimulus = self.stimulus(story)
        return stimulus.audio_times, stimulus.audio

    def semantic_vectors(self, story: str) -> tuple[np.ndarray, np.ndarray]:
        """Planted semantic vector of every word of ``story``.

        Returns
        -------
        word_times : ndarray of shape (n_words,)
            Word midpoints, seconds from sound onset.
        vectors : ndarray of shape (n_words, n_semantic)
        """
        stimulus = self.stimulus(story)
        return stimulus.word_times, stimulus.word_vectors

    def voxels_of(self, subject: str, voxel_class: VoxelClass | int) -> np.ndarray:
        """Indices of ``subject``'s voxels of one class, shape (n,), int."""
        return np.flatnonzero(self.voxel_class[subject] == int(voxel_class))


def _rng(seed: int, stream: int, *names: str) -> np.random.Generator:
    keys = [seed, stream] + [zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence(keys))


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _write_json(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _partial(path).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(_partial(path), path)


def _write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_partial(path), "wb") as file:
        np.savez(file, **arrays)
    os.replace(_partial(path), path)


def _claim(root: Path, record: dict) -> bool:
    """Check ``root`` may receive this config; return whether the tree is already complete."""
    truth = root / TRUTH_DIR
    config_path = truth / "config.json"
    if config_path.exists():
        existing = json.loads(config_path.read_text(encoding="utf-8"))
        if existing != record:
            raise ConfigError(
                "the folder holds a synthetic dataset written with another config (or format "
                f"version); expected {record}, found {existing}. Write elsewhere or delete it",
                path=config_path,
            )
    elif (root / "derivative").exists() or (root / "stimuli").exists():
        raise ConfigError(
            f"the folder holds a dataset without {TRUTH_DIR}/config.json (a real one?); "
            "refusing to write a synthetic twin into it",
            path=root,
        )
    else:
        _write_json(config_path, record)
    complete = truth / "complete.json"
    return complete.exists() and json.loads(complete.read_text(encoding="utf-8")) == record


def _story(config: SyntheticConfig, vocabulary, story: str, respdict: int):
    # The audio ends where the simulated TR grid does.
    duration = (respdict - conventions.PAD) * conventions.TR - conventions.SOUND_START
    return make_story(
        _rng(config.seed, _STORY, story),
        vocabulary,
        story,
        duration,
        topic_words=config.topic_words,
        topic_strength=config.topic_strength,
        base_f0=config.base_f0,
    )


def _write_responses(path: Path, config, subject, story, latent_rows, voxels, n_repeats) -> None:
    n_rows = latent_rows.shape[0]
    n_voxels = voxels["weights"].shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(_partial(path), "w") as file:
        data = file.create_dataset("data", shape=(n_rows, n_voxels), dtype="<f8")
        if n_repeats:
            repeats = file.create_dataset(
                "individual_repeats", shape=(n_repeats, n_rows, n_voxels), dtype="<f8"
            )
        for chunk, begin in enumerate(range(0, n_voxels, _VOXEL_CHUNK)):
            voxel_slice = slice(begin, begin + _VOXEL_CHUNK)
            responses = simulate_responses(
                latent_rows,
                voxels["weights"][:, voxel_slice],
                voxels["noise_std"][voxel_slice],
                _rng(config.seed, _NOISE, subject, story, str(chunk)),
                config.noise_ar,
                n_repeats,
            )
            if n_repeats:
                repeats[:, :, voxel_slice] = responses
                data[:, voxel_slice] = responses.mean(axis=0)
            else:
                data[:, voxel_slice] = responses
    os.replace(_partial(path), path)


def write_synthetic(
    root, config: SyntheticConfig = SyntheticConfig.demo(), *, progress: bool = True
) -> SyntheticTruth:
    """Write a synthetic ds003020 with planted ground truth (see the module notes).

    Deterministic given ``config``. A re-run on a complete tree with the same config returns at
    once; an interrupted run is resumed (finished files are kept, the rest written).

    Parameters
    ----------
    root : str or os.PathLike
        Folder to write into (created if needed); it must be empty, or hold a synthetic
        dataset (complete or interrupted) written with the same config.
    config : SyntheticConfig, default SyntheticConfig.demo()
    progress : bool, default True
        Show a progress bar over stories.

    Returns
    -------
    SyntheticTruth

    Raises
    ------
    ConfigError
        ``root`` holds a synthetic dataset of another config, or a dataset that is not synthetic.
    """
    root = Path(root)
    record = {"format_version": FORMAT_VERSION, "config": config.to_dict()}
    if _claim(root, record):
        return load_truth(root)
    truth_dir = root / TRUTH_DIR
    respdict = config.respdict()
    _write_json(root / "derivative" / "respdict.json", respdict)

    vocabulary = make_vocabulary(_rng(config.seed, _VOCABULARY), config.n_vocab, config.n_semantic)
    _write_npz(
        truth_dir / "vocabulary.npz",
        words=np.array(vocabulary.words),
        phones=np.array([" ".join(vocabulary.phone_labels(i)) for i in range(config.n_vocab)]),
        probability=vocabulary.probability,
        semantic=vocabulary.semantic,
        loudness=vocabulary.loudness,
        pitch=vocabulary.pitch,
        formant_shift=vocabulary.formant_shift,
    )
    projections = _rng(config.seed, _PROJECTIONS)
    audio_projection = projections.standard_normal((config.n_interaction, len(AUDIO_NAMES)))
    audio_projection /= np.sqrt(len(AUDIO_NAMES))
    semantic_projection = projections.standard_normal((config.n_interaction, config.n_semantic))
    semantic_projection /= np.sqrt(config.n_semantic)

    latents = {}
    for name in config.stories:
        story = _story(config, vocabulary, name, respdict[name])
        audio = audio_properties(story, config.base_f0)
        semantic = semantic_frames(story, vocabulary)
        latents[name] = story_latents(
            audio,
            semantic,
            respdict[name],
            audio_projection,
            semantic_projection,
            config.interaction_smoothing,
        )
        path = truth_dir / "stimulus" / f"{name}.npz"
        if not path.exists():
            row_times = row_fine_indices(respdict[name]) * FINE_PERIOD - conventions.SOUND_START
            _write_npz(
                path,
                respdict=respdict[name],
                duration=story.duration,
                audio_times=np.arange(audio.shape[0]) * FRAME_PERIOD,
                audio=audio,
                semantic=semantic,
                words=np.array([vocabulary.words[i] for i in story.word_ids], dtype=str),
                word_ids=story.word_ids,
                word_start=story.word_start / CONTROL_RATE,
                word_end=story.word_end / CONTROL_RATE,
                word_vectors=vocabulary.semantic[story.word_ids],
                topic=story.topic,
                phones=np.array(story.phone_labels, dtype=str),
                phone_start=story.phone_start / CONTROL_RATE,
                phone_end=story.phone_end / CONTROL_RATE,
                row_times=row_times,
                latent_rows=latents[name],
            )
    covariance = pooled_covariance(list(latents.values()))
    latent_names = (
        tuple(f"audio:{n}" for n in AUDIO_NAMES)
        + tuple(f"semantic:{k}" for k in range(config.n_semantic))
        + tuple(f"interaction:{k}" for k in range(config.n_interaction))
    )
    _write_npz(
        truth_dir / "latents.npz",
        latent_names=np.array(latent_names),
        audio_names=np.array(AUDIO_NAMES),
        audio_projection=audio_projection,
        semantic_projection=semantic_projection,
        interaction_smoothing=config.interaction_smoothing,
        hrf=canonical_hrf(),
        hrf_period=FINE_PERIOD,
        covariance=covariance,
    )

    voxels = {}
    for subject, n_voxels, n_repeats in zip(config.subjects, config.n_voxels, config.n_repeats):
        voxels[subject] = draw_voxels(
            _rng(config.seed, _VOXELS, subject),
            n_voxels,
            config.class_fractions,
            config.snr_range,
            len(AUDIO_NAMES),
            config.n_semantic,
            covariance,
        )
        cc_max = true_cc_max(
            latents[conventions.TEST_STORY],
            voxels[subject]["weights"],
            voxels[subject]["noise_std"],
            n_repeats,
        )
        _write_npz(
            truth_dir / f"{subject}.npz",
            class_codes=np.array([int(c) for c in VoxelClass]),
            class_names=np.array(CLASS_NAMES),
            cc_max=cc_max,
            n_repeats=n_repeats,
            train_stories=np.array(config.subject_stories(subject)),
            **voxels[subject],
        )

    for name in tqdm(config.stories, desc="synthetic ds003020", unit="story", disable=not progress):
        wav = root / "stimuli" / f"{name}.wav"
        grid = root / "derivative" / "TextGrids" / f"{name}.TextGrid"
        if not (wav.exists() and grid.exists()):
            story = _story(config, vocabulary, name, respdict[name])
            for path in (wav, grid):
                path.parent.mkdir(parents=True, exist_ok=True)
            if not wav.exists():
                noise = _rng(config.seed, _AUDIO, name)
                synthesize_audio(_partial(wav), story, noise, config.audio_rate)
                os.replace(_partial(wav), wav)
            if not grid.exists():
                write_textgrid(_partial(grid), story, vocabulary)
                os.replace(_partial(grid), grid)
        for subject, n_repeats in zip(config.subjects, config.n_repeats):
            is_test = name == conventions.TEST_STORY
            if not (is_test or name in config.subject_stories(subject)):
                continue
            path = root / "derivative" / "preprocessed_data" / subject / f"{name}.hf5"
            if not path.exists():
                repeats = n_repeats if is_test else None
                _write_responses(
                    path, config, subject, name, latents[name], voxels[subject], repeats
                )
    _write_json(truth_dir / "complete.json", record)
    return load_truth(root)


def load_truth(root) -> SyntheticTruth:
    """Read back the ground truth of a synthetic dataset written by :func:`write_synthetic`.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset root.

    Returns
    -------
    SyntheticTruth

    Raises
    ------
    DataError
        No synthetic truth, another format version, or an incomplete (interrupted) tree.
    """
    root = Path(root)
    truth_dir = root / TRUTH_DIR
    config_path = truth_dir / "config.json"
    if not config_path.exists():
        raise DataError(f"no synthetic truth: expected {TRUTH_DIR}/config.json", path=root)
    record = json.loads(config_path.read_text(encoding="utf-8"))
    if record.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"synthetic truth format version {record.get('format_version')!r}, this jaxenc reads "
            f"{FORMAT_VERSION}; write the dataset again",
            path=config_path,
        )
    complete = truth_dir / "complete.json"
    if not complete.exists() or json.loads(complete.read_text(encoding="utf-8")) != record:
        raise DataError(
            "the synthetic dataset is incomplete (interrupted?): run write_synthetic on it again",
            path=root,
        )
    config = SyntheticConfig.from_dict(record["config"])
    with np.load(truth_dir / "vocabulary.npz") as vocabulary:
        words = tuple(vocabulary["words"].tolist())
        word_semantic = vocabulary["semantic"]
    with np.load(truth_dir / "latents.npz") as latents:
        latent_names = tuple(latents["latent_names"].tolist())
    keys = ("voxel_class", "weights", "snr", "noise_std", "cc_max", "part_variance")
    per_subject = {key: {} for key in keys}
    for subject in config.subjects:
        with np.load(truth_dir / f"{subject}.npz") as saved:
            for key, values in per_subject.items():
                values[subject] = saved[key]
    return SyntheticTruth(
        root=root,
        config=config,
        respdict=json.loads((root / "derivative" / "respdict.json").read_text(encoding="utf-8")),
        latent_names=latent_names,
        words=words,
        word_semantic=word_semantic,
        **per_subject,
    )


def main(argv=None) -> int:
    """Command line: ``python -m jaxenc.data.synthetic ROOT [--preset P] [--seed N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxenc.data.synthetic",
        description=(
            "Write a synthetic twin of OpenNeuro ds003020 (LeBel et al. 2023): responses, "
            "TextGrids, wav stimuli and respdict in the real layout, with the planted ground "
            f"truth in ROOT/{TRUTH_DIR}/. Re-running on a complete folder does nothing; an "
            "interrupted run resumes."
        ),
    )
    parser.add_argument("root", metavar="ROOT", help="folder to write the dataset into")
    parser.add_argument(
        "--preset",
        choices=("tiny", "demo", "full"),
        default="demo",
        help=(
            "tiny: 2 subjects, 3 short training stories, a few hundred voxels (seconds); "
            "demo: 3 subjects, 12 training stories at 0.3 of real length, 2000 voxels (default); "
            "full: real size, 84 stories and 81k-96k voxels for UTS01-03 (about 78 GB)"
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    preset = getattr(SyntheticConfig, args.preset)
    truth = write_synthetic(args.root, preset(seed=args.seed), progress=not args.quiet)
    counts = ", ".join(f"{s}: {truth.weights[s].shape[1]} voxels" for s in truth.subjects)
    print(f"synthetic ds003020 in {truth.root}: {len(truth.respdict)} stories; {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
