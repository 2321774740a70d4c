"""The planted truth of a synthetic twin and its files: :class:`SyntheticTruth`.

:class:`SyntheticTruth` owns the format of ``ROOT/synthetic_truth/`` (version
:data:`FORMAT_VERSION`): the writer saves the truth through it and every reader loads it through
it, so the file names and keys below are written here and nowhere else::

    config.json           {"format_version": 1, "config": {...}}: written first, claims ROOT
    complete.json         the same, written last: the tree is complete
    vocabulary.npz        words, phones ("B AA1 T"), probability, semantic, loudness, pitch,
                          formant_shift
    latents.npz           latent_names, audio_names, audio_projection, semantic_projection,
                          interaction_smoothing, hrf, hrf_period, covariance
    stimulus/<story>.npz  the fields of PlantedStimulus but its name
    <SUBJECT>.npz         class_codes, class_names, cc_max, n_repeats, train_stories,
                          voxel_class, weights, snr, noise_std, part_variance

Keys that restate the config or jaxenc's constants (audio_names, interaction_smoothing, hrf,
hrf_period, class_codes, class_names, n_repeats, train_stories) make the files readable without
jaxenc; loading reads the rest and checks ``latent_names`` against the config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError, DataError
from jaxenc.synthetic.config import SyntheticConfig
from jaxenc.synthetic.files import read_json, read_npz, write_json, write_npz
from jaxenc.synthetic.properties import AUDIO_NAMES
from jaxenc.synthetic.responses import (
    CLASS_NAMES,
    FINE_PERIOD,
    VoxelClass,
    canonical_hrf,
)
from jaxenc.synthetic.words import PHONES, Vocabulary

__all__ = ["SyntheticTruth", "PlantedStimulus", "FORMAT_VERSION", "TRUTH_DIR"]

# Version of the synthetic_truth/ files; SyntheticTruth.load refuses others.
FORMAT_VERSION = 1
# Folder of the planted truth, beside derivative/ and stimuli/.
TRUTH_DIR = "synthetic_truth"
# Vocabulary fields saved as they are, after the words and their phone labels.
_VOCABULARY_KEYS = ("probability", "semantic", "loudness", "pitch", "formant_shift")
# Per-voxel arrays of each subject, in the order of the <SUBJECT>.npz files.
_VOXEL_KEYS = ("voxel_class", "weights", "snr", "noise_std", "part_variance")


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
        Planted audio properties, columns :data:`~jaxenc.synthetic.properties.AUDIO_NAMES`.
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


# Saved arrays of a stimulus file, in file order: every field but the story's name.
_STIMULUS_KEYS = tuple(f.name for f in dataclasses.fields(PlantedStimulus))[1:]


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The ground truth planted in a synthetic dataset; it saves and loads its own files.

    Per-subject arrays are dicts keyed by subject; per-story stimuli are read on demand.

    Parameters
    ----------
    root : Path
        The dataset root.
    config : SyntheticConfig
    vocabulary : Vocabulary
        The pseudo-words, their phones, frequencies, semantic vectors and voice.
    audio_projection : ndarray of shape (n_interaction, n_audio)
        Projection of the audio properties into each interaction latent.
    semantic_projection : ndarray of shape (n_interaction, n_semantic)
        Projection of the semantic events into each interaction latent.
    covariance : ndarray of shape (n_latent, n_latent)
        Covariance of the latent rows pooled over stories, each centred.
    voxel_class : dict of str to ndarray of shape (n_voxels,), int8
        :class:`~jaxenc.synthetic.responses.VoxelClass` codes.
    weights : dict of str to ndarray of shape (n_latent, n_voxels)
    snr : dict of str to ndarray of shape (n_voxels,)
        Signal std over noise std (0 for noise voxels).
    noise_std : dict of str to ndarray of shape (n_voxels,)
        Noise std before z-scoring (the signal has unit pooled variance).
    cc_max : dict of str to ndarray of shape (n_voxels,)
        True noise ceiling of the test story's repeat mean (see :mod:`jaxenc.synthetic`).
    part_variance : dict of str to ndarray of shape (n_voxels, 3)
        Pooled variance of the audio, semantic and interaction parts of the signal.
    """

    root: Path
    config: SyntheticConfig
    vocabulary: Vocabulary
    audio_projection: np.ndarray
    semantic_projection: np.ndarray
    covariance: np.ndarray
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

    @property
    def respdict(self) -> dict[str, int]:
        """The synthetic respdict: story -> TRs acquired."""
        return self.config.respdict()

    @property
    def latent_names(self) -> tuple[str, ...]:
        """Names of the rows of ``weights``: ``audio:<name>``, ``semantic:<k>``,
        ``interaction:<k>``, length n_latent."""
        return (
            tuple(f"audio:{n}" for n in AUDIO_NAMES)
            + tuple(f"semantic:{k}" for k in range(self.config.n_semantic))
            + tuple(f"interaction:{k}" for k in range(self.config.n_interaction))
        )

    @property
    def words(self) -> tuple[str, ...]:
        """The vocabulary's words, length n_vocab."""
        return self.vocabulary.words

    @property
    def word_semantic(self) -> np.ndarray:
        """Semantic vector of each vocabulary word, shape (n_vocab, n_semantic)."""
        return self.vocabulary.semantic

    def stories(self, subject: str) -> tuple[str, ...]:
        """Training stories of ``subject``."""
        return self.config.subject_stories(subject)

    def stimulus(self, story: str) -> PlantedStimulus:
        """The planted stimulus of ``story`` (a training story or the test story)."""
        path = self._stimulus_path(story)
        if story not in self.respdict:
            raise DataError(
                f"no such story; stories: {sorted(self.respdict)}", path=path, story=story
            )
        fields = read_npz(path, _STIMULUS_KEYS)
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

    # Writing: claim the folder, save the arrays and stimuli, then mark the tree complete.

    @staticmethod
    def claim(root, config: SyntheticConfig) -> bool:
        """Check ``root`` may receive a twin of ``config`` and claim it; return whether the
        tree is already complete.

        Raises
        ------
        ConfigError
            ``root`` holds a synthetic dataset of another config (or format version), or a
            dataset that is not synthetic.
        """
        root = Path(root)
        config_path = root / TRUTH_DIR / "config.json"
        record = _record(config)
        if config_path.exists():
            existing = read_json(config_path)
            if existing != record:
                raise ConfigError(
                    "the folder holds a synthetic dataset written with another config (or "
                    f"format version); expected {record}, found {existing}. Write elsewhere or "
                    "delete it",
                    path=config_path,
                )
        elif (root / "derivative").exists() or (root / "stimuli").exists():
            raise ConfigError(
                f"the folder holds a dataset without {TRUTH_DIR}/config.json (a real one?); "
                "refusing to write a synthetic twin into it",
                path=root,
            )
        else:
            write_json(config_path, record)
        return SyntheticTruth.is_complete(root, config)

    @staticmethod
    def is_complete(root, config: SyntheticConfig) -> bool:
        """Whether ``root`` holds a complete twin of ``config`` (reads only complete.json)."""
        complete = Path(root) / TRUTH_DIR / "complete.json"
        return complete.exists() and read_json(complete) == _record(config)

    def save(self) -> None:
        """Write the vocabulary, the latents and every subject's voxels, each atomically."""
        truth_dir = self.root / TRUTH_DIR
        vocabulary, words = self.vocabulary, self.vocabulary.words
        write_npz(
            truth_dir / "vocabulary.npz",
            words=np.array(words),
            phones=np.array([" ".join(vocabulary.phone_labels(i)) for i in range(len(words))]),
            **{key: getattr(vocabulary, key) for key in _VOCABULARY_KEYS},
        )
        write_npz(
            truth_dir / "latents.npz",
            latent_names=np.array(self.latent_names),
            audio_names=np.array(AUDIO_NAMES),
            audio_projection=self.audio_projection,
            semantic_projection=self.semantic_projection,
            interaction_smoothing=self.config.interaction_smoothing,
            hrf=canonical_hrf(),
            hrf_period=FINE_PERIOD,
            covariance=self.covariance,
        )
        for subject, n_repeats in zip(self.subjects, self.config.n_repeats, strict=True):
            write_npz(
                truth_dir / f"{subject}.npz",
                class_codes=np.array([int(c) for c in VoxelClass]),
                class_names=np.array(CLASS_NAMES),
                cc_max=self.cc_max[subject],
                n_repeats=n_repeats,
                train_stories=np.array(self.stories(subject)),
                **{key: getattr(self, key)[subject] for key in _VOXEL_KEYS},
            )

    def save_stimulus(self, stimulus: PlantedStimulus) -> None:
        """Write the planted stimulus of one story, atomically."""
        path = self._stimulus_path(stimulus.story)
        write_npz(path, **{key: getattr(stimulus, key) for key in _STIMULUS_KEYS})

    def mark_complete(self) -> None:
        """Record that every file of the tree is written (the last write of a twin)."""
        write_json(self.root / TRUTH_DIR / "complete.json", _record(self.config))

    @classmethod
    def load(cls, root) -> SyntheticTruth:
        """Read back the ground truth of a synthetic dataset.

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
            No synthetic truth, another format version, an incomplete (interrupted) tree, or a
            truth file that is missing, unreadable or lacks a key (the error names the file).
        """
        root = Path(root)
        truth_dir = root / TRUTH_DIR
        config_path = truth_dir / "config.json"
        if not config_path.exists():
            raise DataError(f"no synthetic truth: expected {TRUTH_DIR}/config.json", path=root)
        record = read_json(config_path)
        version = record.get("format_version") if isinstance(record, dict) else None
        if version != FORMAT_VERSION:
            raise DataError(
                f"synthetic truth format version {version!r}, this jaxenc reads "
                f"{FORMAT_VERSION}; write the dataset again",
                path=config_path,
            )
        complete = truth_dir / "complete.json"
        if not complete.exists() or read_json(complete) != record:
            raise DataError(
                "the synthetic dataset is incomplete (interrupted?): run write_synthetic on it "
                "again",
                path=root,
            )
        try:
            config = SyntheticConfig.from_dict(record.get("config"))
        except (ConfigError, TypeError) as exc:
            raise DataError(
                f"synthetic truth holds no valid config ({exc})", path=config_path
            ) from exc
        vocabulary_path = truth_dir / "vocabulary.npz"
        vocabulary = _vocabulary(
            vocabulary_path, read_npz(vocabulary_path, ("words", "phones") + _VOCABULARY_KEYS)
        )
        latents_path = truth_dir / "latents.npz"
        latents = read_npz(
            latents_path, ("latent_names", "audio_projection", "semantic_projection", "covariance")
        )
        per_subject = {key: {} for key in _VOXEL_KEYS + ("cc_max",)}
        for subject in config.subjects:
            saved = read_npz(truth_dir / f"{subject}.npz", tuple(per_subject))
            for key, values in per_subject.items():
                values[subject] = saved[key]
        truth = cls(
            root=root,
            config=config,
            vocabulary=vocabulary,
            audio_projection=latents["audio_projection"],
            semantic_projection=latents["semantic_projection"],
            covariance=latents["covariance"],
            **per_subject,
        )
        if tuple(latents["latent_names"].tolist()) != truth.latent_names:
            raise DataError(
                f"latent_names {latents['latent_names'].tolist()} do not match the config's "
                f"{list(truth.latent_names)}; write the dataset again",
                path=latents_path,
            )
        return truth

    def _stimulus_path(self, story: str) -> Path:
        return self.root / TRUTH_DIR / "stimulus" / f"{story}.npz"


def _record(config: SyntheticConfig) -> dict:
    """What config.json and complete.json hold."""
    return {"format_version": FORMAT_VERSION, "config": config.to_dict()}


def _vocabulary(path: Path, saved: dict[str, np.ndarray]) -> Vocabulary:
    """The Vocabulary of a vocabulary.npz, phone ids and stress parsed back from the labels."""
    labels = [str(phones).split() for phones in saved["phones"].tolist()]
    ids = np.full((len(labels), max(map(len, labels))), -1, dtype=np.int64)
    stressed = np.zeros(ids.shape, dtype=bool)
    for i, word in enumerate(labels):
        for j, label in enumerate(word):
            name = label.rstrip("012")
            if name not in PHONES:
                raise DataError(f"unknown phone {label!r} in the vocabulary", path=path)
            ids[i, j] = PHONES.index(name)
            stressed[i, j] = label.endswith("1")
    return Vocabulary(
        words=tuple(saved["words"].tolist()),
        phones=ids,
        stressed=stressed,
        **{key: saved[key] for key in _VOCABULARY_KEYS},
    )
