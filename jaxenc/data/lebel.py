"""Reader of the LeBel et al. 2023 dataset (OpenNeuro ds003020) in its published layout.

::

    <root>/derivative/respdict.json                              story -> TRs acquired
    <root>/derivative/preprocessed_data/<SUBJECT>/<story>.hf5    "data": (n_trs, n_voxels)
    <root>/derivative/TextGrids/<story>.TextGrid                 phone and word tiers
    <root>/stimuli/<story>.wav                                   2-channel int16, 44.1 kHz

The test story's hf5 also holds ``individual_repeats`` (n_repeats, n_trs, n_voxels), whose mean
is its ``data``. Responses are read lazily, one story at a time, and kept in a bounded LRU
cache; file shapes are remembered so that validation never reads data twice. Audio and words
are checked against each other and against respdict (:mod:`jaxenc.data.consistency`).

(Over 450 lines: one class whose cache, remembered shapes and bad-voxel masks are shared by
every reader method; about half of it is numpydoc.)
"""

from __future__ import annotations

import collections
import json
import warnings
from pathlib import Path

import h5py
import numpy as np

from jaxenc import conventions
from jaxenc.data.audio import read_wav
from jaxenc.data.consistency import check_audio_timing, check_word_timing
from jaxenc.data.textgrid import Intervals, drop_non_speech, read_textgrid, select_tier
from jaxenc.errors import ConfigError, DataError, DataWarning

__all__ = ["LeBelDataset"]

_DATA = "data"
_REPEATS = "individual_repeats"


class LeBelDataset:
    """Lazy, validating reader of ds003020 responses, word and phone times, and audio.

    Parameters
    ----------
    root : str or os.PathLike
        Dataset root, the folder holding ``derivative/`` and ``stimuli/``.
    cache_bytes : int, default 1 GiB
        Bound on the bytes of response arrays kept in memory (least recently used are evicted
        first); 0 disables the cache. An array larger than the bound is returned uncached.
    audio_rate : int, default :data:`jaxenc.conventions.AUDIO_RATE`
        Rate every stimulus wav should have, in Hz; a file at another rate is resampled to it
        with a warning.

    Attributes
    ----------
    root : Path
        The dataset root.
    respdict : dict of str to int
        Story -> number of TRs acquired, from ``derivative/respdict.json``.
    test_story : str
        The held-out story with repeats, :data:`jaxenc.conventions.TEST_STORY`.

    Notes
    -----
    Arrays returned by :meth:`responses`, :meth:`test_response` and :meth:`test_repeats` are
    shared with the cache and therefore read-only; copy them to modify them.

    Voxels holding NaN or infinite values, or constant over time (within any repeat), are set
    to 0 in the returned arrays, reported once per file with a
    :class:`~jaxenc.errors.DataWarning`, and collected in :meth:`bad_voxels`.
    """

    def __init__(
        self, root, *, cache_bytes: int = 1 << 30, audio_rate: int = conventions.AUDIO_RATE
    ):
        self.root = Path(root)
        if not (self.root / "derivative").is_dir():
            raise DataError(
                "not a ds003020 root: expected a folder holding derivative/ and stimuli/",
                path=self.root,
            )
        if int(cache_bytes) != cache_bytes or cache_bytes < 0:
            raise ConfigError(f"cache_bytes must be a non-negative integer, got {cache_bytes!r}")
        self.cache_bytes = int(cache_bytes)
        self.audio_rate = audio_rate
        self.test_story = conventions.TEST_STORY
        self._respdict_path = self.root / "derivative" / "respdict.json"
        self.respdict = _read_respdict(self._respdict_path)
        self._cache: collections.OrderedDict[tuple[str, str, str], np.ndarray] = (
            collections.OrderedDict()
        )
        self._cached_bytes = 0
        # (subject, story) -> {dataset name: shape}, filled at the first opening of each file.
        self._shapes: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}
        # subject -> (n_voxels, story that fixed it).
        self._voxels: dict[str, tuple[int, str]] = {}
        self._bad: dict[str, np.ndarray] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._textgrids: dict[str, dict[str, Intervals]] = {}

    @property
    def subjects(self) -> list[str]:
        """Sorted subjects: the folders under ``derivative/preprocessed_data`` that hold response
        files (``*.hf5``, e.g. UTS01..UTS09); other folders are :attr:`ignored_folders`."""
        return self._folders()[0]

    @property
    def ignored_folders(self) -> list[str]:
        """Sorted folders under ``derivative/preprocessed_data`` that hold no response file
        (e.g. a stray ``notes/``): not subjects."""
        return self._folders()[1]

    def _folders(self) -> tuple[list[str], list[str]]:
        folder = self.root / "derivative" / "preprocessed_data"
        if not folder.is_dir():
            return [], []
        subjects, ignored = [], []
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith("."):
                held = any(not p.name.startswith(".") for p in path.glob("*.hf5"))
                (subjects if held else ignored).append(path.name)
        return subjects, ignored

    def stories(self, subject: str) -> list[str]:
        """Sorted training stories that have an hf5 file for ``subject`` (test story excluded).

        Parameters
        ----------
        subject : str
            E.g. ``"UTS01"``.

        Returns
        -------
        list of str
        """
        return [s for s in self.hf5_stories(subject) if s != self.test_story]

    def hf5_stories(self, subject: str) -> list[str]:
        """Sorted stories that have an hf5 file for ``subject``, the test story included.

        Parameters
        ----------
        subject : str

        Returns
        -------
        list of str
        """
        folder = self._subject_dir(subject)
        return sorted(p.stem for p in folder.glob("*.hf5") if not p.name.startswith("."))

    def n_voxels(self, subject: str) -> int:
        """Number of voxels of ``subject``, read from file metadata without reading data.

        Parameters
        ----------
        subject : str

        Returns
        -------
        int
        """
        if subject not in self._voxels:
            available = self.hf5_stories(subject)
            if not available:
                raise DataError(
                    "no hf5 files: cannot tell the number of voxels",
                    path=self._subject_dir(subject),
                    subject=subject,
                )
            stories = self.stories(subject)
            story = stories[0] if stories else self.test_story
            path = self.hf5_path(subject, story)
            with self._open(path, subject, story) as file:
                self._record_shapes(file, path, subject, story)
            self._check_data_shape(subject, story, path)
        return self._voxels[subject][0]

    def responses(self, subject: str, story: str) -> np.ndarray:
        """BOLD responses of ``subject`` to ``story``, one row per kept TR.

        Parameters
        ----------
        subject : str
            E.g. ``"UTS01"``.
        story : str
            A story with an hf5 file for ``subject`` (the test story gives its repeat mean).

        Returns
        -------
        ndarray of shape (respdict[story] - 20, n_voxels), float32, read-only
            Rows are at :meth:`response_times`; bad voxels are 0.

        Raises
        ------
        DataError
            Unknown subject or story, story absent from respdict, unreadable file, no ``data``
            dataset, not 2-D, wrong row count, or a voxel count that differs from the
            subject's other stories.
        """
        return self._load(subject, story, _DATA)

    def test_response(self, subject: str) -> np.ndarray:
        """Mean response over the test story's repeats, ``data`` of its hf5.

        Parameters
        ----------
        subject : str

        Returns
        -------
        ndarray of shape (respdict[test_story] - 20, n_voxels), float32, read-only
        """
        return self._load(subject, self.test_story, _DATA)

    def test_repeats(self, subject: str) -> np.ndarray:
        """Every repeat of the test story, ``individual_repeats`` of its hf5.

        Parameters
        ----------
        subject : str

        Returns
        -------
        ndarray of shape (n_repeats, respdict[test_story] - 20, n_voxels), float32, read-only
            Bad voxels (in any repeat) are 0 in every repeat.

        Raises
        ------
        DataError
            As :meth:`responses`, plus: no ``individual_repeats``, not 3-D, or rows or voxels
            that differ from ``data``.
        """
        return self._load(subject, self.test_story, _REPEATS)

    def bad_voxels(self, subject: str) -> np.ndarray:
        """Voxels found NaN, infinite or constant in any array of ``subject`` read so far.

        Parameters
        ----------
        subject : str

        Returns
        -------
        ndarray of shape (n_voxels,), bool
            A copy; True marks a bad voxel. See :meth:`scan_voxels` for the full mask.
        """
        n_voxels = self.n_voxels(subject)
        mask = self._bad.get(subject)
        return np.zeros(n_voxels, dtype=bool) if mask is None else mask.copy()

    def scan_voxels(self, subject: str) -> np.ndarray:
        """Read every response of ``subject`` once and return the complete bad-voxel mask.

        Reads every training story, and the test story's mean and repeats when present,
        through the cache.

        Parameters
        ----------
        subject : str

        Returns
        -------
        ndarray of shape (n_voxels,), bool
        """
        for story in self.stories(subject):
            self.responses(subject, story)
        if self.test_story in self.hf5_stories(subject):
            self.test_response(subject)
            self.test_repeats(subject)
        return self.bad_voxels(subject)

    def tr_times(self, story: str) -> np.ndarray:
        """Centres of the simulated TRs of ``story``, in seconds from sound onset.

        Huth-lab convention: ``respdict[story] - PAD`` triggers at ``TR * i - SOUND_START``,
        each TR's time being its centre (+ TR / 2).

        Parameters
        ----------
        story : str

        Returns
        -------
        ndarray of shape (respdict[story] - 5,), float64
        """
        n_trs = self._acquired(story) - conventions.PAD
        return conventions.TR * np.arange(n_trs) - conventions.SOUND_START + conventions.TR / 2

    def response_times(self, story: str) -> np.ndarray:
        """Times of the rows of ``story``'s hf5, in seconds from sound onset.

        Parameters
        ----------
        story : str

        Returns
        -------
        ndarray of shape (respdict[story] - 20,), float64
            ``tr_times(story)[TRIM_START:-TRIM_END]``.
        """
        times = self.tr_times(story)
        return times[conventions.TRIM_START : len(times) - conventions.TRIM_END]

    def words(self, story: str) -> Intervals:
        """Spoken words of ``story``, lower-cased, silences and noises dropped.

        Parameters
        ----------
        story : str

        Returns
        -------
        Intervals
            Times in seconds from sound onset; use ``.midpoints`` as the word times.

        Raises
        ------
        DataError
            Missing or unreadable TextGrid, no word tier, a story absent from respdict, or a
            last word that ends past the story's TR grid
            (:func:`jaxenc.data.consistency.check_word_timing`).
        """
        path = self.textgrid_path(story)
        tier = select_tier(self._textgrid(story), "word", path=path, story=story)
        words = drop_non_speech(tier, lowercase=True)
        if len(words):
            check_word_timing(float(words.end.max()), self._acquired(story, path=path),
                              story=story, path=path)
        return words

    def phones(self, story: str) -> Intervals:
        """Phones of ``story`` (labels as in the file, e.g. ARPAbet), silences dropped.

        Parameters
        ----------
        story : str

        Returns
        -------
        Intervals
            Times in seconds from sound onset.
        """
        path = self.textgrid_path(story)
        tier = select_tier(self._textgrid(story), "phone", path=path, story=story)
        return drop_non_speech(tier, lowercase=False)

    def audio(self, story: str, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
        """Mono waveform of ``stimuli/<story>.wav``.

        Parameters
        ----------
        story : str
        sample_rate : int, optional
            Rate to resample to in Hz (16000 for Whisper); default ``audio_rate``.

        Returns
        -------
        waveform : ndarray of shape (n_samples,), float32
            Channel average, in [-1, 1]; sample 0 is the sound onset.
        sample_rate : int
            Rate of ``waveform`` in Hz.

        Raises
        ------
        DataError
            As :func:`~jaxenc.data.audio.read_wav`; also a story absent from respdict, or audio
            whose duration disagrees with the story's TR grid or its TextGrid's last word
            (:func:`jaxenc.data.consistency.check_audio_timing`).

        See Also
        --------
        jaxenc.data.audio.read_wav : the checks and the resampling.
        """
        path = self.wav_path(story)
        acquired = self._acquired(story, path=path)
        waveform, rate = read_wav(path, sample_rate=sample_rate, expected_rate=self.audio_rate,
                                  story=story)
        textgrid = self.textgrid_path(story)
        # A missing TextGrid is words()'s error to raise; the audio is checked against the rest.
        words = self.words(story) if textgrid.is_file() else None
        last_word = float(words.end.max()) if words is not None and len(words) else None
        check_audio_timing(waveform.shape[0] / rate, acquired, last_word, story=story,
                           path=path, textgrid=textgrid)
        return waveform, rate

    def textgrid_path(self, story: str) -> Path:
        """``derivative/TextGrids/<story>.TextGrid`` (whether or not it exists)."""
        return self.root / "derivative" / "TextGrids" / f"{story}.TextGrid"

    def wav_path(self, story: str) -> Path:
        """``stimuli/<story>.wav`` (whether or not it exists)."""
        return self.root / "stimuli" / f"{story}.wav"

    def __repr__(self) -> str:
        parts = [f"{s} ({len(self.stories(s))} stories)" for s in self.subjects]
        return (
            f"LeBelDataset(root={str(self.root)!r}, {len(parts)} subjects: "
            f"{', '.join(parts) or 'none'}; {len(self.respdict)} stories in respdict; "
            f"test story {self.test_story!r})"
        )

    def _subject_dir(self, subject: str) -> Path:
        subjects, ignored = self._folders()
        if subject not in subjects:
            held = " (its folder holds no .hf5 response file)" if subject in ignored else ""
            raise DataError(
                f"unknown subject{held}; subjects present: {subjects}",
                path=self.root / "derivative" / "preprocessed_data",
                subject=subject,
            )
        return self.root / "derivative" / "preprocessed_data" / subject

    def hf5_path(self, subject: str, story: str) -> Path:
        """``derivative/preprocessed_data/<subject>/<story>.hf5``, which must exist.

        Raises
        ------
        DataError
            Unknown subject, or no hf5 file for the story (naming the stories present).
        """
        path = self._subject_dir(subject) / f"{story}.hf5"
        if not path.is_file():
            raise DataError(
                f"no hf5 file for this story; stories present: {self.hf5_stories(subject)}",
                path=path,
                subject=subject,
                story=story,
            )
        return path

    def _acquired(self, story: str, subject: str | None = None, path=None) -> int:
        if story not in self.respdict:
            raise DataError(
                f"story absent from respdict {self._respdict_path}; known stories: "
                f"{sorted(self.respdict)}",
                path=self._respdict_path if path is None else path,
                subject=subject,
                story=story,
            )
        return self.respdict[story]

    def _open(self, path: Path, subject: str, story: str) -> h5py.File:
        try:
            return h5py.File(path, "r")
        except OSError as exc:
            raise DataError(
                f"cannot open hf5 (truncated or corrupt?): {exc}",
                path=path,
                subject=subject,
                story=story,
            ) from exc

    def _record_shapes(self, file: h5py.File, path: Path, subject: str, story: str) -> None:
        if (subject, story) in self._shapes:
            return
        shapes = {}
        try:
            for name, item in file.items():
                if isinstance(item, h5py.Dataset):
                    shapes[name] = item.shape
        except (OSError, KeyError, RuntimeError) as exc:
            raise DataError(
                f"cannot list the hf5's datasets (corrupt?): {exc}",
                path=path,
                subject=subject,
                story=story,
            ) from exc
        self._shapes[subject, story] = shapes

    def _check_data_shape(self, subject: str, story: str, path: Path) -> None:
        shapes = self._shapes[subject, story]
        if _DATA not in shapes:
            raise DataError(
                f"no {_DATA!r} dataset; datasets found: {sorted(shapes)}",
                path=path,
                subject=subject,
                story=story,
            )
        shape = shapes[_DATA]
        if len(shape) != 2:
            raise DataError(
                f"{_DATA!r} must be 2-D (n_trs, n_voxels), found shape {shape}",
                path=path,
                subject=subject,
                story=story,
            )
        acquired = self._acquired(story, subject, path)
        expected = acquired - conventions.RESPDICT_OFFSET
        if shape[0] != expected:
            raise DataError(
                f"expected {expected} rows (respdict {acquired} TRs minus "
                f"{conventions.RESPDICT_OFFSET}), found {shape[0]}",
                path=path,
                subject=subject,
                story=story,
            )
        reference = self._voxels.setdefault(subject, (shape[1], story))
        if shape[1] != reference[0]:
            raise DataError(
                f"{shape[1]} voxels, but story {reference[1]!r} of the same subject has "
                f"{reference[0]}",
                path=path,
                subject=subject,
                story=story,
            )

    def _check_repeats_shape(self, subject: str, story: str, path: Path) -> None:
        shapes = self._shapes[subject, story]
        if _REPEATS not in shapes:
            raise DataError(
                f"no {_REPEATS!r} dataset in the test story's hf5; datasets found: "
                f"{sorted(shapes)}",
                path=path,
                subject=subject,
                story=story,
            )
        shape, data_shape = shapes[_REPEATS], shapes[_DATA]
        if len(shape) != 3:
            raise DataError(
                f"{_REPEATS!r} must be 3-D (n_repeats, n_trs, n_voxels), found shape {shape}",
                path=path,
                subject=subject,
                story=story,
            )
        if shape[1:] != data_shape:
            raise DataError(
                f"{_REPEATS!r} has {shape[1]} rows and {shape[2]} voxels per repeat, expected "
                f"{data_shape[0]} and {data_shape[1]} as in {_DATA!r}",
                path=path,
                subject=subject,
                story=story,
            )

    def _load(self, subject: str, story: str, name: str) -> np.ndarray:
        key = (subject, story, name)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self.hf5_path(subject, story)
        self._acquired(story, subject, path)
        with self._open(path, subject, story) as file:
            self._record_shapes(file, path, subject, story)
            self._check_data_shape(subject, story, path)
            if name == _REPEATS:
                self._check_repeats_shape(subject, story, path)
            dataset = file[name]
            if not np.issubdtype(dataset.dtype, np.number):
                raise DataError(
                    f"{name!r} holds {dataset.dtype}, expected floating-point numbers",
                    path=path,
                    subject=subject,
                    story=story,
                )
            array = np.empty(dataset.shape, dtype=np.float32)
            try:
                # HDF5 converts float64 to float32 while reading, so no float64 copy is made.
                dataset.read_direct(array)
            except OSError as exc:
                raise DataError(
                    f"cannot read {name!r} (truncated or corrupt?): {exc}",
                    path=path,
                    subject=subject,
                    story=story,
                ) from exc
        self._repair(array, subject, story, name, path)
        array.flags.writeable = False
        self._store(key, array)
        return array

    def _repair(self, array: np.ndarray, subject: str, story: str, name: str, path: Path) -> None:
        # Reductions instead of elementwise masks: no temporary as large as the array.
        # max/min propagate NaN and reach +-inf, so both are finite only for finite voxels.
        high, low = array.max(axis=-2), array.min(axis=-2)
        bad = ~(np.isfinite(high) & np.isfinite(low)) | (high == low)
        bad = bad.reshape(-1, array.shape[-1]).any(axis=0)
        if not bad.any():
            return
        array[..., bad] = 0.0
        mask = self._bad.setdefault(subject, np.zeros(array.shape[-1], dtype=bool))
        mask |= bad
        if (subject, story, name) not in self._warned:
            self._warned.add((subject, story, name))
            warnings.warn(
                f"subject {subject}, story {story!r}, file {path}: {int(bad.sum())} of "
                f"{bad.size} voxels in {name!r} are NaN, infinite or constant; set to 0 and "
                "recorded in bad_voxels()",
                DataWarning,
                stacklevel=4,
            )

    def _store(self, key: tuple[str, str, str], array: np.ndarray) -> None:
        if array.nbytes > self.cache_bytes:
            return
        self._cache[key] = array
        self._cached_bytes += array.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.nbytes


    def _textgrid(self, story: str) -> dict[str, Intervals]:
        if story not in self._textgrids:
            self._textgrids[story] = read_textgrid(self.textgrid_path(story), story=story)
        return self._textgrids[story]


def _read_respdict(path: Path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as file:
            respdict = json.load(file)
    except FileNotFoundError:
        raise DataError("respdict.json not found", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"respdict.json is not readable JSON: {exc}", path=path) from exc
    if not isinstance(respdict, dict) or not respdict:
        raise DataError(
            "respdict.json must be a non-empty JSON object mapping story to TRs acquired",
            path=path,
        )
    for story, acquired in respdict.items():
        if (
            isinstance(acquired, bool)
            or not isinstance(acquired, int)
            or acquired <= conventions.RESPDICT_OFFSET
        ):
            raise DataError(
                f"TRs acquired must be an integer above {conventions.RESPDICT_OFFSET}, found "
                f"{acquired!r}",
                path=path,
                story=story,
            )
    return respdict
