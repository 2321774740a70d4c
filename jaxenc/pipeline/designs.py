"""Design matrices and training responses: features and responses on the same rows, built once.

Every path that fits an encoder (the command line's fit stage, :func:`fit_linear_baseline`,
the sweeps) builds its designs here: :func:`align_stories` puts each story's time-stamped
features on its response rows (Lanczos to the TR centres, trim, z-score), :func:`stack_design`
delays and stacks stories, the modalities of a feature set side by side, and
:func:`design_matrix` does both. :func:`training_responses` stacks a subject's responses on the
rows of a design, read story by story into one host array, or, given a mesh, straight into
its voxel shards (:class:`~jaxenc.stream.VoxelShards`). :class:`Designs` chains them into each
subject's :class:`~jaxenc.pipeline.SubjectArrays` for the job runner, aligning every feature
source once for all subjects and holding every subject's responses once, in the form the last
job took them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jaxenc import conventions
from jaxenc.align import stack_stories, story_features
from jaxenc.distributed import RUN_AXIS
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.featuresets import AUDIO, SEMANTIC, FeatureSet
from jaxenc.pipeline.runner import SubjectArrays
from jaxenc.stream import VoxelShards, stack_story_rows
from jaxenc.synthetic.properties import FRAME_PERIOD, causal_mean, planted_layer_words

__all__ = [
    "GRID_TRIM",
    "AlignOptions",
    "Design",
    "align_stories",
    "stack_design",
    "design_matrix",
    "training_responses",
    "Designs",
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
                       trim: tuple[int, int] = GRID_TRIM, *, mesh=None) -> np.ndarray | VoxelShards:
    """Stack a subject's responses to ``stories`` on the rows of a design, story by story.

    Each story's responses are read and copied into one preallocated float32 array
    (:func:`jaxenc.stream.stack_story_rows`), checked against the design's rows of that story:
    no concatenated second copy is made. Given a mesh, each device's voxel shard is filled
    from the stories' blocks of its columns, one story at a time: no host array of all rows
    is made.

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
    subject : str
    stories : sequence of str
    slices : dict of str to slice
        Rows of each story in the design (:attr:`Design.slices`), in the order of ``stories``.
    trim : (int, int)
        The design's trim (:func:`align_stories`): beyond the protocol's, the same extra rows
        of each response file are dropped.
    mesh : jax.sharding.Mesh, optional
        Split the voxels along its axis ``"data"`` (:data:`jaxenc.distributed.RUN_AXIS`);
        None: a host array.

    Returns
    -------
    ndarray of shape (n_rows, n_voxels), float32, or VoxelShards
        The host array, or with a mesh the voxel-sharded one (columns padded to a multiple of
        the devices).

    Raises
    ------
    AlignmentError
        A story whose responses do not have the design's rows, naming the subject and story.
    DataError
        A story with another voxel count than the subject's, naming it.
    """
    start, end = trim[0] - GRID_TRIM[0], trim[1] - GRID_TRIM[1]
    missing = [story for story in stories if story not in slices]
    if missing:
        raise AlignmentError(f"the design has no rows of stories {missing}", subject=subject)
    counts = {story: slices[story].stop - slices[story].start for story in stories}

    def read(story):
        rows = dataset.responses(subject, story)
        rows = rows[start:rows.shape[0] - end]
        if rows.shape[0] != counts[story]:
            raise AlignmentError(f"responses have {rows.shape[0]} rows (TRs) after the trim {list(trim)}, but the "
                                 f"design has {counts[story]}", subject=subject, story=story)
        return rows

    n_voxels = dataset.n_voxels(subject)
    # The rows are checked before any is read (a mesh reads them shard by shard).
    stacked = dict(zip(stories, np.cumsum([0, *counts.values()]).tolist(), strict=False))
    if any(slices[story] != slice(stacked[story], stacked[story] + counts[story]) for story in stories):
        raise AlignmentError(f"the design's rows {dict(slices)} are not the stories {list(stories)} one after "
                             "another", subject=subject)
    Y, _ = stack_story_rows(read, stories, counts, n_voxels, mesh=mesh, axis=RUN_AXIS, shard="voxels",
                            subject=subject)
    return Y if mesh is None else VoxelShards(Y, n_voxels)


class Designs:
    """Each subject's :class:`~jaxenc.pipeline.SubjectArrays` for any feature sources: the one
    place a fitting path (``jaxenc run``'s fit stage, :func:`jaxenc.pipeline.fit_linear_baseline`)
    assembles its arrays.

    Every source's features are read and aligned once, for every story of every subject and
    the test story (training stories trimmed by ``align.train_trim``, the test story by the
    protocol's :data:`GRID_TRIM`); every subject's responses are read on the rows of its first
    design (the rows of a subject's stories do not depend on the source) and held once, in one
    form: on the host, or voxel-sharded on a mesh (:func:`jaxenc.pipeline.response_mesh`: ridge
    on voxel targets). A job asking for the other form drops the one held and reads the
    stories again, so a subject's responses are never in memory twice.

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
        Its ``respdict``, ``test_story`` and ``responses(subject, story)``.
    read : callable
        ``read(source)`` returns the :data:`~jaxenc.featuresets.FeatureSet` of a source (any
        hashable key: a modality name, a :class:`~jaxenc.featuresets.FeatureSource`).
    train_stories : mapping of str to sequence of str
        Training stories of each subject (the test story excluded), in stacking order.
    align : AlignOptions

    Attributes
    ----------
    cache : dict
        The job runner's cache shared by every job of these designs (the PCAs of the
        responses: :func:`jaxenc.pipeline.fit_predict`).
    """

    def __init__(self, dataset, read: Callable[[Hashable], FeatureSet], train_stories: Mapping[str, Sequence[str]],
                 align: AlignOptions = AlignOptions()):
        self.dataset, self.read, self.align = dataset, read, align
        self.train_stories = {subject: list(stories) for subject, stories in train_stories.items()}
        self._aligned: dict = {}
        self._responses: dict = {}
        self.cache: dict = {}

    def aligned(self, source: Hashable) -> dict[str, np.ndarray]:
        """Every story's features of ``source`` on its response rows (:func:`align_stories`)."""
        if source not in self._aligned:
            features = self.read(source)
            test = self.dataset.test_story
            train = sorted({s for stories in self.train_stories.values() for s in stories} - {test})
            aligned = align_stories(features, self.dataset.respdict, train, trim=self.align.train_trim)
            aligned.update(align_stories(features, self.dataset.respdict, [test], trim=GRID_TRIM))
            self._aligned[source] = aligned
        return self._aligned[source]

    def responses(self, subject: str, slices: Mapping[str, slice], mesh=None) -> np.ndarray | VoxelShards:
        """A subject's training responses on the rows ``slices`` of its designs: on the host, or
        with ``mesh`` voxel-sharded on it (:func:`training_responses`); read once per form."""
        held = self._responses.get(subject)
        if held is None or held[0] != mesh:
            # Dropped before the other form is read: one copy at a time.
            self._responses.pop(subject, None)
            del held
            self._responses[subject] = (mesh, training_responses(self.dataset, subject, self.train_stories[subject],
                                                                 slices, self.align.train_trim, mesh=mesh))
        return self._responses[subject][1]

    def arrays(self, sources: Sequence[Hashable], subject: str, *, mesh=None) -> SubjectArrays:
        """One subject's training and test arrays on ``sources``, side by side in that order.

        Parameters
        ----------
        sources : sequence of hashable
            One per modality, in design order (e.g. ``["audio", "semantic"]``).
        subject : str
        mesh : jax.sharding.Mesh, optional
            Hold the responses voxel-sharded on it, for a job that takes them so
            (:func:`jaxenc.pipeline.response_mesh`); None: on the host.

        Returns
        -------
        SubjectArrays
        """
        if subject not in self.train_stories:
            raise ConfigError(f"no training stories given for subject {subject!r}", subject=subject)
        aligned = [self.aligned(source) for source in sources]
        design = stack_design(aligned, self.train_stories[subject], self.align)
        test = stack_design(aligned, [self.dataset.test_story], self.align)
        return SubjectArrays(design.X, self.responses(subject, design.slices, mesh), design.groups, test.X,
                             design.bands, design.n_delays)


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
