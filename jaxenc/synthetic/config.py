"""What determines a synthetic twin: :class:`SyntheticConfig` and its presets.

Every file of a twin follows from its config, the seed included (see :mod:`jaxenc.synthetic`).
Story names and relative lengths come from the real ds003020 respdict that :mod:`jaxenc.data`
ships (:func:`real_respdict`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re

import numpy as np

from jaxenc import conventions
from jaxenc.errors import ConfigError
from jaxenc.synthetic.cortex import parse_cortex
from jaxenc.synthetic.properties import FRAME_PERIOD
from jaxenc.synthetic.responses import CLASS_NAMES
from jaxenc.synthetic.words import CONTROL_RATE

__all__ = ["SyntheticConfig", "PRESETS", "real_respdict"]

# The sizes of a twin, each a class method of SyntheticConfig.
PRESETS = ("tiny", "demo", "full")

# The real ds003020 respdict (story -> TRs acquired), the source of story names and lengths.
_REAL_RESPDICT = importlib.resources.files("jaxenc.data").joinpath("respdict.json")
# Subject names become folder names.
_SUBJECT_NAME = re.compile(r"[A-Za-z0-9_-]+")


def real_respdict() -> dict[str, int]:
    """The real ds003020 respdict shipped with jaxenc: story -> TRs acquired (84 stories)."""
    return dict(_load_real_respdict())


@functools.cache
def _load_real_respdict() -> dict[str, int]:
    return json.loads(_REAL_RESPDICT.read_text(encoding="utf-8"))


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
    # Fractions of noise, audio, semantic, audio+semantic and interaction voxels; sum to 1. With
    # `cortex`, the audio voxels are those of `cortex_roi` and the other four classes share the
    # rest in proportion to their fractions (the audio fraction is not used).
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
    # Stages of the interaction voxels' drive: 1, products of an audio and a semantic
    # projection (what one hidden layer learns); 2, products of two of those products (a
    # composition, for the data-scaling curves of deeper networks; needs n_interaction >= 3).
    interaction_depth: int = 1
    # Mean pitch of the synthetic speaker, in Hz.
    base_f0: float = 120.0
    # Planted audio time scale, in seconds: the voxels respond to the audio properties averaged
    # over the preceding audio_time_scale seconds (a causal running mean,
    # jaxenc.synthetic.properties.causal_mean) instead of the properties of the moment; the
    # window sweep's planted check looks for it. 0: the properties of the moment.
    audio_time_scale: float = 0.0
    # Planted semantic context, in words: the voxels respond to each word's semantic vector
    # averaged with those of the semantic_context - 1 words before it; the layer sweep's
    # planted check looks for the planted language model's layer that averages as many words
    # (jaxenc.synthetic.properties.planted_layer_words). 1: each word's own vector.
    semantic_context: int = 1
    # Seed of every random draw.
    seed: int = 0
    # "SUBJECT/TRANSFORM" of the pycortex database (e.g. "S1/fullhead", the subject pycortex
    # ships; needs the maps extra): every subject's voxels are that transform's cortical mask,
    # in mask order, so n_voxels must be its size (S1/fullhead: 37226); see
    # jaxenc.synthetic.cortex. "": voxels without anatomy.
    cortex: str = ""
    # With cortex: the ROI of the pycortex subject's overlays that holds the planted audio
    # voxels ("AC": auditory cortex); every other class lies outside it.
    cortex_roi: str = "AC"

    def __post_init__(self):
        for name in ("subjects", "n_voxels", "n_repeats", "class_fractions", "snr_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "fewer_stories", tuple(tuple(p) for p in self.fewer_stories))
        self._validate()
        # numpy integers pass validation but not json: store plain ints.
        for name in ("n_voxels", "n_repeats"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        integers = ("n_train_stories", "min_respdict", "audio_rate", "n_vocab", "n_semantic")
        for name in integers + ("n_interaction", "interaction_depth", "seed", "semantic_context"):
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
        if self.interaction_depth not in (1, 2) or isinstance(self.interaction_depth, bool):
            fail(f"interaction_depth must be 1 or 2, got {self.interaction_depth!r}")
        # Term k pairs products k and k + 1 cyclically: with two, both terms are the same product.
        if self.interaction_depth == 2 and self.n_interaction < 3:
            fail(f"interaction_depth = 2 multiplies interaction products k and k + 1 (cyclically): n_interaction "
                 f"must be at least 3 for distinct terms, got {self.n_interaction}")
        positive = self.topic_words > 0 and self.interaction_smoothing > 0
        if not (positive and self.topic_strength >= 0):
            fail("topic_words and interaction_smoothing must be positive, topic_strength >= 0")
        frames = self.audio_time_scale / FRAME_PERIOD
        if not (self.audio_time_scale >= 0 and abs(frames - round(frames)) < 1e-6 * max(1.0, frames)):
            fail(f"audio_time_scale must be 0 or a positive multiple of {FRAME_PERIOD} s, got {self.audio_time_scale}")
        if not is_int(self.semantic_context, 1):
            fail(f"semantic_context must be a positive integer (words), got {self.semantic_context}")
        if not 50 <= self.base_f0 <= 400:
            fail(f"base_f0 must be a voice pitch in 50..400 Hz, got {self.base_f0}")
        if not is_int(self.seed, 0):
            fail(f"seed must be a non-negative integer, got {self.seed}")
        if not isinstance(self.cortex, str) or not isinstance(self.cortex_roi, str) or not self.cortex_roi:
            fail(f"cortex and cortex_roi must be strings, cortex_roi not empty, got {self.cortex!r}, "
                 f"{self.cortex_roi!r}")
        if self.cortex:
            try:
                parse_cortex(self.cortex)
            except ConfigError as err:
                fail(str(err))

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
        """Plain JSON-able dict of the fields (tuples as lists); without ``cortex`` and
        ``cortex_roi`` when ``cortex`` is unset and without ``interaction_depth`` at 1, so that
        twins written before those fields existed still match their config
        (:meth:`SyntheticTruth.claim`)."""
        fields = json.loads(json.dumps(dataclasses.asdict(self)))
        if not self.cortex:
            del fields["cortex"], fields["cortex_roi"]
        if self.interaction_depth == 1:
            # Likewise for twins written before interaction_depth existed.
            del fields["interaction_depth"]
        return fields

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

