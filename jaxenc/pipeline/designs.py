"""Design matrices and training responses: features and responses on the same rows, built once.

Every path that fits an encoder (the command line's fit stage, :func:`fit_linear_baseline`,
the sweeps) builds its designs here: :func:`align_stories` puts each story's time-stamped
features on its response rows (Lanczos to the TR centres, trim, z-score), :func:`stack_design`
delays and stacks stories, the modalities of a feature set side by side, and
:func:`design_matrix` does both. :func:`training_responses` stacks a subject's responses on the
rows of a design, checked story by story.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jaxenc import conventions
from jaxenc.align import stack_responses, stack_stories, story_features
from jaxenc.errors import ConfigError
from jaxenc.featuresets import AUDIO, SEMANTIC, FeatureSet
from jaxenc.synthetic.properties import FRAME_PERIOD, causal_mean, planted_layer_words

__all__ = [
    "GRID_TRIM",
    "AlignOptions",
    "Design",
    "align_stories",
    "stack_design",
    "design_matrix",
    "training_responses",
    "planted_features",
]

# Rows of each story's TR grid dropped at its start and end by the protocol: [10:-5], the rows
# of the dataset's response files (the test story's scoring trim is another:
# jaxenc.metrics.PROTOCOL_TRIM).
GRID_TRIM = (conventions.TRIM_START, conventions.TRIM_END)
_BOUNDARIES = ("story", "concatenate")


@dataclass(frozen=True)
class AlignOptions:
    """How features meet the TR grid (the experiment config's ``[align]``; see :mod:`jaxenc.align`)."""

    # FIR delays in TRs (1-4 TRs: 2, 4, 6, 8 s).
    delays: tuple[int, ...] = conventions.DELAYS
    # "story": delays zero padded at each story's edges; "concatenate": as the Huth-lab code.
    boundary: str = "story"
    # Rows of each training story's TR grid dropped at its start and end: the protocol's
    # [10:-5], whose rows are those of the dataset's response files. More drops the same rows
    # of features and responses; fewer is impossible (the files hold no other rows). The test
    # story keeps [10:-5] and is trimmed for scoring by the score settings' test_trim.
    train_trim: tuple[int, int] = GRID_TRIM

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot be used."""
        if self.boundary not in _BOUNDARIES:
            raise ConfigError(f"boundary must be one of {list(_BOUNDARIES)}, got {self.boundary!r}")
        if not self.delays or any(d < 0 for d in self.delays):
            raise ConfigError(f"delays must be non-negative TR counts, got {list(self.delays)}")
        _check_trim(self.train_trim, "train_trim")


def _check_trim(trim, what: str) -> None:
    if len(trim) != 2 or trim[0] < GRID_TRIM[0] or trim[1] < GRID_TRIM[1]:
        raise ConfigError(f"{what} must be at least {list(GRID_TRIM)} (the rows of the response files), "
                          f"got {list(trim)}")


@dataclass(frozen=True)
class Design:
    """Delayed features of some stories, each modality a block of columns.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32
        Stories one after another; within a modality's block, its delays side by side.
    groups : ndarray of shape (n_rows,)
        Story of each row (its name).
    slices : dict of str to slice
        Rows of each story.
    bands : tuple of (int, int)
        Column range ``[start, stop)`` of each modality, in order.
    n_delays : int
        Delays of each block (every band holds ``n_delays`` equal blocks).
    """

    X: np.ndarray
    groups: np.ndarray
    slices: dict
    bands: tuple
    n_delays: int


def align_stories(features: FeatureSet, respdict: Mapping[str, int], stories: Sequence[str], *,
                  trim: tuple[int, int] = GRID_TRIM) -> dict[str, np.ndarray]:
    """Put each story's features on its response rows (:func:`jaxenc.align.story_features`).

    Parameters
    ----------
    features : FeatureSet
        ``{story: (times, values)}`` with ``values`` of shape (n_samples, n_features).
    respdict : mapping of str to int
        TRs acquired per story (the dataset's respdict).
    stories : sequence of str
    trim : (int, int)
        Rows of each story's TR grid dropped at its start and end: the protocol's ``(10, 5)``
        keeps the ``respdict[story] - 20`` rows of its response file; more drops as many more
        (trim the responses alike, :func:`training_responses`).

    Returns
    -------
    dict of str to ndarray of shape (n_rows_story, n_features)
        Lanczos-downsampled to the TR centres, trimmed and z-scored per story.

    Raises
    ------
    ConfigError
        A story without features, or a trim below the protocol's.
    AlignmentError
        A story whose rows do not come out as expected (see :func:`story_features`).
    """
    missing = [story for story in stories if story not in features]
    if missing:
        raise ConfigError(f"no features for stories {missing}")
    _check_trim(trim, "trim")
    start, end = trim
    extra = start - GRID_TRIM[0] + end - GRID_TRIM[1]
    return {
        story: story_features(
            np.asarray(features[story][1]), np.asarray(features[story][0]), respdict[story], story=story,
            trim_start=start, trim_end=end,
            expected_rows=respdict[story] - conventions.RESPDICT_OFFSET - extra,
        )
        for story in stories
    }


def stack_design(aligned: Sequence[Mapping[str, np.ndarray]], stories: Sequence[str],
                 align: AlignOptions = AlignOptions()) -> Design:
    """Delay and stack the stories of one or several modalities, side by side.

    Parameters
    ----------
    aligned : sequence of mapping of str to ndarray
        Per modality, the output of :func:`align_stories`.
    stories : sequence of str
        Stories to stack, in order.
    align : AlignOptions
        Its delays and boundary (where delays are zero padded; see
        :func:`jaxenc.align.stack_stories`).

    Returns
    -------
    Design
    """
    if not aligned:
        raise ConfigError("no feature sets to stack")
    blocks, bands, start = [], [], 0
    for per_story in aligned:
        X, groups, slices = stack_stories(per_story, stories, delays=align.delays, boundary=align.boundary)
        blocks.append(np.asarray(X, np.float32))
        bands.append((start, start + blocks[-1].shape[1]))
        start = bands[-1][1]
    X = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
    return Design(X=X, groups=np.asarray(stories)[np.asarray(groups)], slices=slices, bands=tuple(bands),
                  n_delays=len(align.delays))


def design_matrix(features: FeatureSet | Sequence[FeatureSet], respdict: Mapping[str, int],
                  stories: Sequence[str], align: AlignOptions = AlignOptions(), *,
                  trim: tuple[int, int] | None = None) -> Design:
    """Align feature sets to the stories' TR grids and stack them into a delayed design.

    :func:`align_stories` then :func:`stack_design`.

    Parameters
    ----------
    features : FeatureSet or sequence of FeatureSet
        One modality's ``{story: (times, values)}``, or several, stacked side by side in order
        (e.g. audio then semantic for ``"audio+semantic"``).
    respdict : mapping of str to int
    stories : sequence of str
    align : AlignOptions
        Delays, boundary and the training stories' trim.
    trim : (int, int), optional
        Rows dropped from each story's TR grid (:func:`align_stories`); None:
        ``align.train_trim``. The test story keeps the protocol's: pass
        :data:`GRID_TRIM`.

    Returns
    -------
    Design
    """
    sets = [features] if isinstance(features, Mapping) else list(features)
    trim = align.train_trim if trim is None else trim
    aligned = [align_stories(fs, respdict, stories, trim=trim) for fs in sets]
    return stack_design(aligned, stories, align)


def training_responses(dataset, subject: str, stories: Sequence[str], slices,
                       trim: tuple[int, int] = GRID_TRIM) -> np.ndarray:
    """Stack a subject's responses to ``stories``, checked row by row against the design.

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
    subject : str
    stories : sequence of str
    slices : dict of str to slice
        Rows of each story in the design (:attr:`Design.slices`).
    trim : (int, int)
        The design's trim (:func:`align_stories`): beyond the protocol's, the same extra rows
        of each response file are dropped.

    Returns
    -------
    ndarray of shape (n_rows, n_voxels), float32
    """
    start, end = trim[0] - GRID_TRIM[0], trim[1] - GRID_TRIM[1]
    responses = {}
    for story in stories:
        rows = dataset.responses(subject, story)
        responses[story] = rows[start:rows.shape[0] - end]
    Y, _ = stack_responses(responses, stories, feature_rows=slices)
    return np.asarray(Y, np.float32)


def planted_features(truth, stories: Sequence[str], *, window_s: float | None = None,
                     layer: int | None = None) -> dict[str, dict]:
    """The synthetic twin's planted stimulus properties as feature sets ("oracle features").

    Parameters
    ----------
    truth : jaxenc.synthetic.SyntheticTruth
        From :func:`jaxenc.synthetic.load_truth`.
    stories : sequence of str
        Stories to load (training stories and the test story).
    window_s : float, optional
        Seconds of audio window (the audio window sweep): each frame's properties averaged with
        those of the frames before it over that long (:func:`jaxenc.synthetic.properties.causal_mean`).
        None: the properties of the moment.
    layer : int, optional
        Layer of the planted language model (the layer sweep): each word's vector averaged with
        its predecessors over :func:`jaxenc.synthetic.properties.planted_layer_words` words.
        None: each word's own vector (layer 0).

    Returns
    -------
    dict
        ``{"audio": FeatureSet, "semantic": FeatureSet}``: audio properties on their 0.1 s
        frame grid, and each word's semantic vector at its midpoint.
    """
    frames = 1 if window_s is None else max(1, round(window_s / FRAME_PERIOD))
    words = 1 if layer is None else planted_layer_words(layer)
    audio, semantic = {}, {}
    for story in stories:
        stimulus = truth.stimulus(story)
        audio[story] = (stimulus.audio_times, causal_mean(stimulus.audio, frames))
        semantic[story] = (stimulus.word_times, causal_mean(stimulus.word_vectors, words))
    return {AUDIO: audio, SEMANTIC: semantic}
