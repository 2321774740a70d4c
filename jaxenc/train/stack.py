"""The subjects' stories stacked into the host arrays every model of a run draws from.

One padded feature matrix per subject, one target matrix per (subject, fold) (the fold's PCA
scores) or per subject (the responses themselves, the same for every fold), and per model the
index arrays of its training and validation rows::

    X[subject, tr, feature]    Y[target, tr, output]
    train_idx[model, row]      val_idx[model, row]      (padded; n_train, n_val real rows)

Subjects may have different numbers of TRs (rows past a subject's end are zero and never
indexed) and of voxels (their targets share ``n_components``).

Memory: a subject's responses are read once, per story, as the caller passed them (views of
one stacked array cost nothing more, :meth:`SubjectData.from_arrays`): each fold's PCA reads its
training stories as a list of blocks and its scores are computed story by story; voxel targets,
the same for every fold, are one target per subject, copied story by story straight into the
padded stack. No concatenated or per-fold copy of the responses is made.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np

from jaxenc.decomp import PCA, ShardedPCA
from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.train.config import ModelKey, TrainConfig
from jaxenc.train.folds import story_folds
from jaxenc.validation import check_matrix

__all__ = ["SubjectData", "Stack", "stack_subjects", "pad_stack"]


@dataclass(frozen=True)
class SubjectData:
    """One subject's training stories: delayed features and responses on the same TR grid.

    Parameters
    ----------
    features : mapping of str to array of shape (n_trs, n_features)
        Delayed stimulus features per story; ``n_features`` equal across subjects.
    responses : mapping of str to array of shape (n_trs, n_voxels)
        Responses per story, row ``t`` aligned with row ``t`` of the features.
    """

    features: Mapping[str, np.ndarray]
    responses: Mapping[str, np.ndarray]

    @classmethod
    def from_arrays(cls, X, Y, groups, *, subject: str | None = None) -> SubjectData:
        """Stories of one subject from row-aligned matrices and a story label per row.

        Parameters
        ----------
        X : array of shape (n_trs, n_features)
            Delayed features of all training stories, one row per TR.
        Y : array of shape (n_trs, n_voxels)
            Responses, row ``t`` aligned with row ``t`` of ``X``.
        groups : array_like of shape (n_trs,)
            The story of each row (any labels; a story is named ``str(label)``). Folds group
            whole stories. A story's rows keep their order; contiguous ones are taken as
            views of ``X`` and ``Y``, without a copy.
        subject : str, optional
            Named in errors.

        Returns
        -------
        SubjectData
        """
        groups = np.asarray(groups)
        if groups.ndim != 1 or np.ndim(X) != 2 or np.ndim(Y) != 2:
            raise AlignmentError("X and Y must be 2-D (n_trs, columns) and groups 1-D (n_trs,)", subject=subject)
        if not len(groups) == np.shape(X)[0] == np.shape(Y)[0]:
            raise AlignmentError(
                f"X has {np.shape(X)[0]} rows (TRs), Y {np.shape(Y)[0]} and groups {len(groups)}; "
                "they must be row-aligned",
                subject=subject,
            )
        labels, first = np.unique(groups, return_index=True)
        names = [str(label) for label in labels[np.argsort(first)]]
        if len(set(names)) != len(names):
            raise ConfigError(f"story labels {list(labels)} are not distinct as names", subject=subject)
        features, responses = {}, {}
        for name, label in zip(names, labels[np.argsort(first)], strict=True):
            rows = np.flatnonzero(groups == label)
            if rows[-1] - rows[0] + 1 == rows.size:
                rows = slice(int(rows[0]), int(rows[-1]) + 1)
            features[name], responses[name] = X[rows], Y[rows]
        return cls(features, responses)


@dataclass
class Stack:
    """Every model's data as host arrays, and what the result needs to name the models.

    Attributes
    ----------
    keys : tuple of ModelKey
        The model on each index of the stacked axis: subjects, then folds, then grid points.
    folds : dict of str to list of (tuple, tuple)
        Per subject, the (training, validation) stories of each fold.
    grid : tuple of dict
        The hyperparameters of each grid index.
    pcas : list of PCA or None
        Per model, its fold's PCA (None without PCA).
    shared : dict
        ``X`` (n_subjects, max n_trs, n_features) and ``Y`` (n_targets, max n_trs, n_outputs)
        (a target per subject on voxel targets, per subject and fold on PCA targets),
        float32, zero padded.
    per_model : dict of str to ndarray with leading axis n_models
        ``subj``, ``tgt`` (indices into X and Y), ``train_idx`` (n_models, n_train_max),
        ``n_train``, ``val_idx`` (n_models, n_val_max), ``n_val`` and ``key`` (the shuffle
        PRNG key data).
    init_keys : ndarray of uint32, shape (n_models, key size)
        PRNG key data of each model's initialisation and dropout.
    learning_rate, weight_decay : ndarray of shape (n_models,)
    n_features, n_outputs : int
    val_chunk : int
        Rows per chunk of the validation pass; ``val_idx`` holds a whole number of chunks.
    """

    keys: tuple
    folds: dict
    grid: tuple
    pcas: list
    shared: dict
    per_model: dict
    init_keys: np.ndarray
    learning_rate: np.ndarray
    weight_decay: np.ndarray
    n_features: int
    n_outputs: int
    val_chunk: int

    @property
    def n_train_max(self) -> int:
        return self.per_model["train_idx"].shape[1]

    @property
    def n_val_max(self) -> int:
        return self.per_model["val_idx"].shape[1]


def pad_stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack arrays of shape (n_i, ...) into (len, max n_i, ...) float32, zero padded along rows."""
    n = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), n) + arrays[0].shape[1:], np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def _float32(a):
    """``a`` as float32, without a copy when it already is (e.g. a view of a stacked array)."""
    return a if isinstance(a, np.ndarray) and a.dtype == np.float32 else np.asarray(a, np.float32)


def _check_subject(subject: str, data: SubjectData) -> list[str]:
    """Validate one subject's stories (pairing, shapes, finite values); return them sorted."""
    f_stories, r_stories = set(data.features), set(data.responses)
    if f_stories != r_stories:
        story = sorted(f_stories ^ r_stories)[0]
        has, lacks = ("features", "responses") if story in f_stories else ("responses", "features")
        raise AlignmentError(f"story has {has} but no {lacks}", subject=subject, story=story)
    if not f_stories:
        raise AlignmentError("no training stories", subject=subject)
    for story in sorted(f_stories):
        f, r = data.features[story], data.responses[story]
        if np.ndim(f) != 2 or np.ndim(r) != 2:
            raise AlignmentError("features and responses must be 2-D (n_trs, columns)", subject=subject, story=story)
        if np.shape(f)[0] != np.shape(r)[0]:
            raise AlignmentError(
                f"features have {np.shape(f)[0]} rows (TRs) but responses have {np.shape(r)[0]}; they "
                "must be on the same TR grid",
                subject=subject, story=story,
            )
        # Checked here, once, rather than in every training step (jaxenc.validation's policy).
        check_matrix(f, "features", what="(n_trs, n_features)", subject=subject, story=story)
        check_matrix(r, "responses", what="(n_trs, n_voxels)", subject=subject, story=story)
    return sorted(f_stories)


def model_key_data(seed: int, key: ModelKey, stream: int, init: int = 0) -> np.ndarray:
    """Per-model PRNG key data from (seed, subject, fold, stream, init), independent of the other models.

    Grid points of one (subject, fold) with the same ``init`` share it, so they differ only by
    their hyperparameters; a point's ``init`` (a restart index) gives it another draw, and
    restart 0 keeps the key of a grid without restarts. Stream 0 initialises the model and its
    dropout, stream 1 shuffles its minibatches.
    """
    k = jax.random.fold_in(jax.random.key(seed), zlib.crc32(key.subject.encode()) & 0x7FFFFFFF)
    k = jax.random.fold_in(jax.random.fold_in(k, key.fold), stream)
    return np.asarray(jax.random.key_data(jax.random.fold_in(k, init) if init else k))


def response_pca(n_components: int, cfg: TrainConfig, mesh=None, axis: str = "data"):
    """An unfitted PCA of responses with ``cfg``'s solver settings (``pca_method``,
    ``pca_n_iter``, ``pca_precision``).

    Parameters
    ----------
    n_components : int
    cfg : TrainConfig
    mesh : jax.sharding.Mesh, optional
        Fit and apply it voxel-sharded along ``axis`` (:class:`jaxenc.decomp.ShardedPCA`, every
        solver); None: on one device (:class:`jaxenc.decomp.PCA`).
    axis : str

    Returns
    -------
    jaxenc.decomp.PCA or jaxenc.decomp.ShardedPCA
    """
    if mesh is None:
        return PCA(n_components, method=cfg.pca_method, n_iter=cfg.pca_n_iter, precision=cfg.pca_precision)
    return ShardedPCA(n_components, mesh, axis, method=cfg.pca_method, n_iter=cfg.pca_n_iter,
                      precision=cfg.pca_precision)


def _fold_targets(subject, sd, stories, train, n_voxels, cfg, pca_cache, mesh, axis):
    """The PCA fitted on a fold's training responses and every story's scores, stacked by row
    (voxel-sharded on a mesh, :class:`jaxenc.decomp.ShardedPCA`)."""
    n_train = sum(np.shape(sd.responses[s])[0] for s in train)
    if cfg.n_components > min(n_train, n_voxels):
        raise ConfigError(
            f"n_components={cfg.n_components} exceeds min(training TRs {n_train}, voxels {n_voxels}) of a fold",
            subject=subject,
        )
    key = (subject, tuple(stories), tuple(train), n_voxels, cfg.n_components, cfg.pca_method, cfg.pca_n_iter,
           cfg.pca_precision, mesh is not None)
    if pca_cache is not None and key in pca_cache:
        return pca_cache[key]
    pca = response_pca(cfg.n_components, cfg, mesh, axis)
    pca.fit([_float32(sd.responses[s]) for s in train])
    # Scores story by story: the responses are never concatenated into a copy.
    z = np.concatenate([np.asarray(pca.transform(_float32(sd.responses[s]))) for s in stories])
    if pca_cache is not None:
        pca_cache[key] = (pca, z)
    return pca, z


def stack_subjects(data: Mapping[str, SubjectData], cfg: TrainConfig, points: Sequence[dict],
                   pca_cache: dict | None = None, mesh=None, axis: str = "models") -> Stack:
    """Split each subject's stories into folds, fit the fold PCAs and stack every model's data.

    Parameters
    ----------
    data : mapping of str to SubjectData
        Training stories per subject (the test story excluded).
    cfg : TrainConfig
        Folds, seed, PCA and batch settings.
    points : sequence of dict
        Hyperparameter points (:func:`jaxenc.train.config.resolve_grid`).
    pca_cache : dict, optional
        Fold PCAs and scores kept across calls (see :func:`jaxenc.train.fit_encoders`).
    mesh : jax.sharding.Mesh, optional
        Fit the fold PCAs voxel-sharded along its ``axis`` (:class:`jaxenc.decomp.ShardedPCA`).
    axis : str

    Returns
    -------
    Stack

    Raises
    ------
    AlignmentError
        Features and responses of a story with different row counts, or a story with one of
        the two only.
    NonFiniteError
        NaN or infinity in a story's features or responses (names the row and column).
    ConfigError
        Subjects with different feature counts or output sizes, too many PCA components.
    """
    if not data:
        raise ConfigError("no subjects to train")
    subjects = list(data)
    stories_of = {subject: _check_subject(subject, data[subject]) for subject in subjects}
    first = subjects[0], stories_of[subjects[0]][0]
    n_features = np.shape(data[first[0]].features[first[1]])[1]
    for subject in subjects:
        for story in stories_of[subject]:
            if np.shape(data[subject].features[story])[1] != n_features:
                raise ConfigError(
                    f"{np.shape(data[subject].features[story])[1]} feature columns where subject {first[0]}, "
                    f"story {first[1]!r} has {n_features}: all stories of all subjects must have the same",
                    subject=subject, story=story,
                )
    n_trs = [sum(np.shape(data[s].features[story])[0] for story in stories_of[s]) for s in subjects]
    # Filled story by story: the features are copied once, into the padded stack.
    X = np.zeros((len(subjects), max(n_trs), n_features), np.float32)
    # Per target (the subject's responses, or a fold's PCA scores): its subject, how to write it
    # into the padded target stack, its PCA; per (subject, fold): its target and its rows.
    targets, pcas_by_target, per_fold, folds = [], [], [], {}
    for si, subject in enumerate(subjects):
        sd, stories = data[subject], stories_of[subject]
        folds[subject] = story_folds(stories, cfg.n_folds, seed=cfg.seed, subject=subject)
        starts = np.cumsum([0] + [np.shape(sd.responses[s])[0] for s in stories])
        rows_of = {s: np.arange(starts[i], starts[i + 1]) for i, s in enumerate(stories)}
        for i, s in enumerate(stories):
            X[si, starts[i] : starts[i + 1]] = sd.features[s]
        n_voxels = np.shape(sd.responses[stories[0]])[1]
        if cfg.n_components is None:
            # The responses themselves: one target for every fold of the subject.
            targets.append((n_voxels, [(starts[i], sd.responses[s]) for i, s in enumerate(stories)]))
            pcas_by_target.append(None)
        for train, val in folds[subject]:
            if cfg.n_components is not None:
                pca, z = _fold_targets(subject, sd, stories, train, n_voxels, cfg, pca_cache, mesh, axis)
                targets.append((z.shape[1], [(0, z)]))
                pcas_by_target.append(pca)
            per_fold.append((si, len(targets) - 1, np.concatenate([rows_of[s] for s in train]),
                             np.concatenate([rows_of[s] for s in val])))
    n_outputs = {width for width, _ in targets}
    if len(n_outputs) != 1:
        raise ConfigError("subjects have different voxel counts: set n_components so they share one output size")
    Y = np.zeros((len(targets), max(n_trs), n_outputs.pop()), np.float32)
    for t, (_, blocks) in enumerate(targets):
        for start, block in blocks:
            Y[t, start : start + np.shape(block)[0]] = block

    keys = tuple(ModelKey(s, fold, g) for s in subjects for fold in range(cfg.n_folds) for g in range(len(points)))
    fold_of = [i // len(points) for i in range(len(keys))]
    n_train_max = math.ceil(max(tr.size for _, _, tr, _ in per_fold) / cfg.batch_size) * cfg.batch_size
    # Validation chunks of at most val_batch_size rows, as equal as possible: the padding of the
    # longest validation set stays below one row per chunk.
    n_val = max(va.size for _, _, _, va in per_fold)
    n_chunks = math.ceil(n_val / cfg.val_batch_size)
    val_chunk = math.ceil(n_val / n_chunks)
    n_val_max = n_chunks * val_chunk
    train_idx = np.zeros((len(keys), n_train_max), np.int32)
    val_idx = np.zeros((len(keys), n_val_max), np.int32)
    for m, f in enumerate(fold_of):
        _, _, tr, va = per_fold[f]
        train_idx[m, : tr.size] = tr
        val_idx[m, : va.size] = va
    target_of = [per_fold[f][1] for f in fold_of]
    per_model = {
        "subj": np.asarray([per_fold[f][0] for f in fold_of], np.int32),
        "tgt": np.asarray(target_of, np.int32),
        "train_idx": train_idx,
        "n_train": np.asarray([per_fold[f][2].size for f in fold_of], np.int32),
        "val_idx": val_idx,
        "n_val": np.asarray([per_fold[f][3].size for f in fold_of], np.int32),
        "key": np.stack([model_key_data(cfg.seed, k, 1, points[k.grid].get("init", 0)) for k in keys]),
    }
    return Stack(
        keys=keys,
        folds=folds,
        grid=tuple(points),
        pcas=[pcas_by_target[t] for t in target_of],
        shared={"X": X, "Y": Y},
        per_model=per_model,
        init_keys=np.stack([model_key_data(cfg.seed, k, 0, points[k.grid].get("init", 0)) for k in keys]),
        learning_rate=np.asarray([points[k.grid]["learning_rate"] for k in keys], np.float32),
        weight_decay=np.asarray([points[k.grid]["weight_decay"] for k in keys], np.float32),
        n_features=n_features,
        n_outputs=Y.shape[2],
        val_chunk=val_chunk,
    )
