"""End-to-end steps that chain the subpackages: data -> features -> align -> models -> metrics.

This is the one library module (with the command line built on it) allowed to import across
the whole package; everything below it takes arrays. A feature set is passed around as
``{story: (times, values)}``: time stamps in seconds from sound onset (word midpoints or frame
times) and the matching rows, so planted features of the synthetic twin, Whisper frames and
LLaMA word vectors all flow through the same alignment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from jaxenc import conventions
from jaxenc.align import stack_responses, stack_stories, story_features
from jaxenc.decomp import PCA
from jaxenc.errors import ConfigError
from jaxenc.metrics import best_model, cc_max, drop_first_rows, score_repeats, variance_partition
from jaxenc.metrics.scores import CC_MAX_FLOOR
from jaxenc.models import BandedRidgeCV, RidgeCV

__all__ = [
    "FeatureSet",
    "planted_features",
    "design_matrix",
    "training_responses",
    "TestScores",
    "score_test_story",
    "LinearBaseline",
    "fit_linear_baseline",
]

# story -> (times (n_samples,) seconds from sound onset, values (n_samples, n_features))
FeatureSet = Mapping[str, tuple[np.ndarray, np.ndarray]]


def planted_features(truth, stories: Sequence[str]) -> dict[str, dict]:
    """The synthetic twin's planted stimulus properties as feature sets ("oracle features").

    Parameters
    ----------
    truth : jaxenc.synthetic.SyntheticTruth
        From :func:`jaxenc.synthetic.load_truth`.
    stories : sequence of str
        Stories to load (training stories and the test story).

    Returns
    -------
    dict
        ``{"audio": FeatureSet, "semantic": FeatureSet}``: audio properties on their 0.1 s
        frame grid, and each word's semantic vector at its midpoint.
    """
    audio, semantic = {}, {}
    for story in stories:
        stimulus = truth.stimulus(story)
        audio[story] = (stimulus.audio_times, stimulus.audio)
        semantic[story] = (stimulus.word_times, stimulus.word_vectors)
    return {"audio": audio, "semantic": semantic}


def design_matrix(
    features: FeatureSet,
    respdict: Mapping[str, int],
    stories: Sequence[str],
    *,
    delays: Sequence[int] = conventions.DELAYS,
    boundary: str = "story",
):
    """Align one feature set to the stories' TR grids and stack it into a delayed design.

    Each story's features are Lanczos-downsampled to its TR centres, trimmed to the
    ``respdict[story] - 20`` rows of its hf5 file, z-scored, delayed and stacked
    (:func:`jaxenc.align.story_features`, :func:`jaxenc.align.stack_stories`).

    Parameters
    ----------
    features : FeatureSet
        ``{story: (times, values)}`` with ``values`` of shape (n_samples, n_features).
    respdict : mapping of str to int
        TRs acquired per story (the dataset's respdict).
    stories : sequence of str
        Stories to stack, in order.
    delays : sequence of int
        FIR delays in TRs.
    boundary : {"story", "concatenate"}
        Where delays are zero padded; see :func:`jaxenc.align.stack_stories`.

    Returns
    -------
    X : ndarray of shape (n_rows, n_features * len(delays)), float32
    groups : ndarray of shape (n_rows,), int
        Index into ``stories`` of each row.
    slices : dict of str to slice
        Rows of each story.
    """
    missing = [story for story in stories if story not in features]
    if missing:
        raise ConfigError(f"no features for stories {missing}")
    aligned = {
        story: story_features(
            np.asarray(features[story][1]),
            np.asarray(features[story][0]),
            respdict[story],
            story=story,
            expected_rows=respdict[story] - conventions.RESPDICT_OFFSET,
        )
        for story in stories
    }
    X, groups, slices = stack_stories(aligned, stories, delays=delays, boundary=boundary)
    return np.asarray(X, np.float32), np.asarray(groups), slices


def training_responses(dataset, subject: str, stories: Sequence[str], slices,
                       drop: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Stack a subject's responses to ``stories``, checked row by row against the design.

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
    subject : str
    stories : sequence of str
    slices : dict of str to slice
        Rows of each story in the design matrix (from :func:`design_matrix`).
    drop : (int, int)
        Rows of each story's response file dropped at its start and end, for a design trimmed
        beyond the protocol's ``[10:-5]`` by as many rows.

    Returns
    -------
    ndarray of shape (n_rows, n_voxels), float32
    """
    start, end = drop
    responses = {}
    for story in stories:
        rows = dataset.responses(subject, story)
        responses[story] = rows[start:rows.shape[0] - end]
    Y, _ = stack_responses(responses, stories, feature_rows=slices)
    return np.asarray(Y, np.float32)


@dataclasses.dataclass(frozen=True)
class TestScores:
    """Per-voxel scores of one model's prediction of the test story.

    All on the rows kept after the test-story trim (see :mod:`jaxenc.metrics.scores`).

    Attributes
    ----------
    r : ndarray of shape (n_voxels,)
        Pearson correlation with the mean of the test repeats.
    r2 : ndarray of shape (n_voxels,)
        The paper's r², ``r * |r|``.
    r2_cod : ndarray of shape (n_voxels,)
        Coefficient of determination against the mean of the repeats.
    cc_norm : ndarray of shape (n_voxels,)
        ``r / cc_max`` (Schoppe et al. 2016), cc_max floored at ``floor``.
    p : ndarray of shape (n_voxels,)
        Block-permutation p-value of ``r``.
    significant : ndarray of shape (n_voxels,), bool
        Benjamini-Hochberg at ``alpha`` over all voxels.
    """

    r: np.ndarray
    r2: np.ndarray
    r2_cod: np.ndarray
    cc_norm: np.ndarray
    p: np.ndarray
    significant: np.ndarray

    def summary(self) -> dict:
        """Mean r, r2, r2_cod and cc_norm over all voxels and the count of significant voxels."""
        return {
            "mean_r": float(np.nanmean(self.r)),
            "mean_r2": float(np.nanmean(self.r2)),
            "mean_r2_cod": float(np.nanmean(self.r2_cod)),
            "mean_cc_norm": float(np.nanmean(self.cc_norm)),
            "n_significant": int(self.significant.sum()),
            "n_voxels": int(self.r.size),
        }


def score_test_story(
    prediction,
    repeats,
    *,
    trim: int | None = None,
    floor: float = CC_MAX_FLOOR,
    n_permutations: int = 500,
    block_size: int = 10,
    alpha: float = 0.05,
    seed: int = 0,
) -> TestScores:
    """Score a prediction of the test story against its repeated presentations.

    :func:`jaxenc.metrics.score_repeats`, wrapped in :class:`TestScores`.

    Parameters
    ----------
    prediction : array of shape (n_trs, n_voxels)
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        z-scored responses to each presentation; the target is their mean.
    trim : int, optional
        Rows dropped from the start of the prediction and of every repeat; None: the reference
        protocol's 40 of 291 rows, the same share of a shorter story
        (:func:`jaxenc.metrics.protocol_trim`).
    floor : float
        Lower bound on cc_max in cc_norm (the paper's 0.25).
    n_permutations, block_size, seed
        Block permutation test (blocks of ``block_size`` TRs).
    alpha : float
        False discovery rate.

    Returns
    -------
    TestScores
    """
    return TestScores(**score_repeats(prediction, repeats, trim=trim, floor=floor,
                                      n_permutations=n_permutations, block_size=block_size,
                                      alpha=alpha, seed=seed))


@dataclasses.dataclass(frozen=True)
class LinearBaseline:
    """Ridge baselines of one subject on the test story, per feature set.

    Attributes
    ----------
    subject : str
    target : {"voxels", "pca"}
        Whether ridge predicted voxels directly or PCA components inverse-projected to voxels.
    scores : dict of str to TestScores
        Keyed ``"audio"``, ``"semantic"`` and ``"audio+semantic"``.
    best_alphas : dict of str to ndarray
        Chosen penalty per target (voxel or component) and feature set.
    cc_max : ndarray of shape (n_voxels,)
        Noise ceiling of each voxel from the test repeats on the rows scored (NaN where
        undefined).
    partition : jaxenc.metrics.VariancePartition
        Audio (a) versus semantic (b) partition of the test-story r2 (the paper's r·|r|),
        classified on voxels significant for the joint model.
    best_model : ndarray of shape (n_voxels,), int
        Index into ``("audio", "semantic", "audio+semantic")`` of the best r2 (r·|r|) per
        significant voxel, -1 elsewhere.
    """

    subject: str
    target: str
    scores: dict
    best_alphas: dict
    cc_max: np.ndarray
    partition: object
    best_model: np.ndarray

    FEATURE_SETS = ("audio", "semantic", "audio+semantic")

    def summary(self) -> dict:
        """Headline numbers: per feature set the test-story summary, and the partition shares."""
        significant = self.best_model >= 0
        shares = {
            name: float(np.mean(self.best_model[significant] == i)) if significant.any() else None
            for i, name in enumerate(self.FEATURE_SETS)
        }
        joint_fraction = float(self.partition.joint_fraction)
        return {
            "subject": self.subject,
            "target": self.target,
            "models": {name: self.scores[name].summary() for name in self.FEATURE_SETS},
            "best_model_share": shares,
            "shared_part_share": None if np.isnan(joint_fraction) else joint_fraction,
        }


def fit_linear_baseline(
    dataset,
    subject: str,
    features: Mapping[str, FeatureSet],
    *,
    target: str = "voxels",
    n_components: int = 512,
    alphas=np.logspace(-1, 5, 13),
    cv: int = 5,
    n_iter: int = 20,
    n_permutations: int = 500,
    trim: int | None = None,
    seed: int = 0,
) -> LinearBaseline:
    """Fit audio, semantic and audio+semantic ridge models of one subject; score the test story.

    The single-modality models are :class:`~jaxenc.models.RidgeCV` with a penalty per target;
    the joint model is :class:`~jaxenc.models.BandedRidgeCV` with one penalty per modality and
    target, the multimodal linear baseline of the field. Folds run over training stories.
    With ``target="pca"``, the responses are first reduced to ``n_components`` principal
    components fitted on the training stories only, ridge predicts the components, and the
    prediction is projected back to voxels for scoring.

    Parameters
    ----------
    dataset : jaxenc.data.LeBelDataset
    subject : str
    features : mapping
        ``{"audio": FeatureSet, "semantic": FeatureSet}`` covering the subject's training
        stories and the test story.
    target : {"voxels", "pca"}
    n_components : int
        Principal components kept when ``target="pca"`` (capped at the training rows).
    alphas : array-like
        Ridge penalties searched.
    cv : int
        Folds over training stories.
    n_iter : int
        Random band-weight candidates of the banded model.
    n_permutations : int
        Block permutations for the significance of each voxel.
    trim : int, optional
        Test-story rows dropped before scoring (see :func:`score_test_story`).
    seed : int

    Returns
    -------
    LinearBaseline
    """
    if target not in ("voxels", "pca"):
        raise ConfigError(f"target must be 'voxels' or 'pca', got {target!r}")
    if set(features) != {"audio", "semantic"}:
        raise ConfigError(f"expected features 'audio' and 'semantic', got {sorted(features)}")
    stories = list(dataset.stories(subject))
    test = [dataset.test_story]
    design, test_design = {}, {}
    for name, feature_set in features.items():
        design[name], groups, slices = design_matrix(feature_set, dataset.respdict, stories)
        test_design[name], _, _ = design_matrix(feature_set, dataset.respdict, test)
    Y = training_responses(dataset, subject, stories, slices)
    repeats = dataset.test_repeats(subject)

    pca = None
    if target == "pca":
        pca = PCA(n_components=min(n_components, Y.shape[0] - 1, Y.shape[1])).fit(Y)
        Y = np.asarray(pca.transform(Y))

    n_audio = design["audio"].shape[1]
    models = {
        "audio": (RidgeCV(alphas=alphas, cv=cv), design["audio"], test_design["audio"]),
        "semantic": (RidgeCV(alphas=alphas, cv=cv), design["semantic"], test_design["semantic"]),
        "audio+semantic": (
            BandedRidgeCV(
                bands=[slice(0, n_audio), slice(n_audio, None)], alphas=alphas, cv=cv,
                n_iter=n_iter, random_state=seed,
            ),
            np.hstack([design["audio"], design["semantic"]]),
            np.hstack([test_design["audio"], test_design["semantic"]]),
        ),
    }
    scores, best_alphas = {}, {}
    for name, (model, X_train, X_test) in models.items():
        model.fit(X_train, Y, groups=groups)
        prediction = model.predict(X_test)
        if pca is not None:
            prediction = pca.inverse_transform(prediction)
        scores[name] = score_test_story(prediction, repeats, trim=trim, n_permutations=n_permutations,
                                        seed=seed)
        best_alphas[name] = np.asarray(model.best_alphas_)

    significant = scores["audio+semantic"].significant
    partition = variance_partition(scores["audio"].r2, scores["semantic"].r2,
                                   scores["audio+semantic"].r2, significant=significant)
    best = best_model([scores[name].r2 for name in LinearBaseline.FEATURE_SETS],
                      significant=significant)
    return LinearBaseline(
        subject=subject,
        target=target,
        scores=scores,
        best_alphas=best_alphas,
        cc_max=np.asarray(cc_max(drop_first_rows(repeats, trim, axis=1, what="test repeats"))),
        partition=partition,
        best_model=np.asarray(best),
    )
