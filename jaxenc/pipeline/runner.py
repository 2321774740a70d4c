"""The one job runner: designs, targets and an encoder in, test-story predictions out.

A job is one encoder (an :class:`~jaxenc.models.EncoderSpec`) fitted for every subject on that
subject's arrays (:class:`SubjectArrays`: training design and responses, story of each row,
test design), on voxel targets or on principal components of the responses projected back to
voxels. :func:`fit_predict` runs it, whoever asks: the command line's fit stage (the table and
its sweeps), :func:`jaxenc.pipeline.fit_linear_baseline` and your own arrays.

- Ridge fits subject by subject: :class:`~jaxenc.models.RidgeCV` (a penalty per target chosen by
  story-grouped cross-validation), or with ``RidgeOptions(banded=True)`` and several modalities
  :class:`~jaxenc.models.BandedRidgeCV`. On PCA targets the components are those of the
  subject's training responses.
- Networks train every subject and fold in one compiled program
  (:func:`jaxenc.train.fit_encoders`; on voxel targets, subjects with equal voxel counts share a
  program), each fold fitting its own PCA; the test prediction averages the fold models.

Where the mesh enters: given ``mesh=`` (a one-axis mesh of several devices, e.g.
:func:`jaxenc.distributed.run_mesh`), ridge splits the voxels over the devices
(:class:`~jaxenc.models.ShardedRidgeCV`, :class:`~jaxenc.models.ShardedBandedRidgeCV`), the
networks' subject x fold (x grid) stack is split over the devices, padded to a multiple of their
count (``fit_encoders(..., mesh=)``), and the PCAs of PCA targets (the subject's for ridge,
each fold's for the networks) are fitted and projected back voxel-sharded
(:class:`jaxenc.decomp.ShardedPCA`), the responses read story by story into their shards. Ridge
on voxel targets takes the responses already voxel-sharded (:class:`~jaxenc.stream.VoxelShards`,
which :class:`jaxenc.pipeline.Designs` reads story by story straight into the shards for the jobs
:func:`response_mesh` names): no host copy of them is made.
Every array that leaves a device goes through :func:`jaxenc.distributed.to_host`, so every
process of a ``jax.distributed`` job runs the same calls and gets the same predictions. The
numbers equal the one-device run's within float32 rounding.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from jaxenc.analysis.interactions import fit_interaction_shares
from jaxenc.distributed import RUN_AXIS, to_host
from jaxenc.errors import AlignmentError, ConfigError, DataWarning
from jaxenc.models.registry import EncoderSpec, NetworkOptions, RidgeOptions, encoder
from jaxenc.stream import VoxelShards
from jaxenc.train import SubjectData, TrainConfig, fit_encoders, story_folds
from jaxenc.train.stack import response_pca
from jaxenc.validation import check_matrix

__all__ = ["TARGETS", "SubjectArrays", "JobResult", "fit_predict", "response_mesh", "network_programs"]

# What an encoder predicts: every voxel, or principal components of the training responses.
TARGETS = ("voxels", "pca")


@dataclass(frozen=True)
class SubjectArrays:
    """One subject's arrays for a job.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features)
        Delayed training features, e.g. :attr:`jaxenc.pipeline.Design.X`.
    Y : ndarray of shape (n_rows, n_voxels), or VoxelShards
        Training responses, row ``t`` the same TR as row ``t`` of ``X``: on the host, or
        voxel-sharded on the job's mesh where :func:`response_mesh` says the job takes them so.
    groups : array_like of shape (n_rows,)
        Story of each row: cross-validation folds never split a story.
    X_test : ndarray of shape (n_test, n_features)
        Delayed features of the test story.
    bands : tuple of (int, int)
        Column range of each modality in ``X`` (DIMLP, banded ridge and the GRU read them);
        empty: one modality.
    n_delays : int
        Delay blocks of each modality (the GRU's steps).
    """

    X: np.ndarray
    Y: np.ndarray
    groups: np.ndarray
    X_test: np.ndarray
    bands: tuple = ()
    n_delays: int = 4

    def __post_init__(self):
        rows = np.shape(self.X)[0]
        if np.shape(self.Y)[0] != rows or np.shape(self.groups) != (rows,):
            raise AlignmentError(f"X has {rows} rows, Y {np.shape(self.Y)[0]} and groups shape "
                                 f"{np.shape(self.groups)}: one row per training TR in each")
        if np.ndim(self.X_test) != 2 or np.shape(self.X_test)[1] != np.shape(self.X)[1]:
            raise AlignmentError(f"X_test has shape {np.shape(self.X_test)}; expected (n_test, "
                                 f"{np.shape(self.X)[1]}) like X")

    def stories(self) -> dict[str, object]:
        """Rows of each story: a slice where its rows are contiguous, else their indices."""
        groups = np.asarray(self.groups)
        out = {}
        for label in dict.fromkeys(groups.tolist()):
            rows = np.flatnonzero(groups == label)
            contiguous = rows[-1] - rows[0] + 1 == rows.size
            out[str(label)] = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
        return out


@dataclass
class JobResult:
    """What :func:`fit_predict` returns.

    Attributes
    ----------
    predictions : dict of str to ndarray of shape (n_test, n_voxels), float32
        Per subject, the voxel prediction of the test story.
    info : dict
        JSON-able facts of the fit: ``n_features``; ridge: ``median_alpha`` per subject;
        networks: ``best_epoch`` and ``stop_epoch`` per subject and fold, ``n_components``.
    checkpoints : list of Path
        The networks' checkpoint folders (removable once the predictions are stored).
    interactions : dict of str to ndarray of shape (n_voxels,), float32
        Per subject, the audio x semantic interaction share of each voxel's test-story
        prediction (:func:`jaxenc.analysis.fit_interaction_shares`, averaged over the fold
        models); empty unless asked for (networks on two modalities).
    fold_predictions : dict of str to ndarray of shape (n_folds, n_test, n_voxels), float32
        Per subject, each fold model's voxel prediction of the test story (what
        ``predictions`` averages); networks only, empty for ridge (one model per subject).
    """

    predictions: dict
    info: dict
    checkpoints: list = field(default_factory=list)
    interactions: dict = field(default_factory=dict)
    fold_predictions: dict = field(default_factory=dict)


def response_mesh(model: str | EncoderSpec, target: str, mesh):
    """The mesh on which a job takes its training responses voxel-sharded, or None: on the host.

    Ridge (and banded ridge) on voxel targets on a mesh of several devices fits the voxels
    shard by shard and takes the responses as a :class:`~jaxenc.stream.VoxelShards` on that
    mesh; every other job (PCA targets, networks, one device) takes host responses.

    Parameters
    ----------
    model : str or EncoderSpec
    target : {"voxels", "pca"}
    mesh : jax.sharding.Mesh or None
        The ``mesh`` given to :func:`fit_predict`.

    Returns
    -------
    jax.sharding.Mesh or None
    """
    spec = encoder(model) if isinstance(model, str) else model
    return mesh if spec.is_ridge and target == "voxels" else None


def fit_predict(model: str | EncoderSpec, data: Mapping[str, SubjectArrays], *, target: str = "voxels",
                ridge: RidgeOptions = RidgeOptions(), networks: NetworkOptions = NetworkOptions(),
                train: TrainConfig = TrainConfig(), grid: Sequence[Mapping] = (),
                checkpoint_dir: str | Path | None = None, cache: dict | None = None,
                progress: bool = False, interactions: bool = False, mesh=None) -> JobResult:
    """Fit one encoder for every subject and predict the test story's voxels.

    Parameters
    ----------
    model : str or EncoderSpec
        An encoder name of :data:`jaxenc.models.ENCODERS` (``"ridge"``, ``"mlp"``,
        ``"deepmlp-3"``, ...).
    data : mapping of str to SubjectArrays
        Per subject. Responses held as a :class:`~jaxenc.stream.VoxelShards` by a job that
        takes host responses (:func:`response_mesh`) are gathered to the host first.
    target : {"voxels", "pca"}
        Predict every voxel, or ``train.n_components`` principal components of the training
        responses (lowered, with a warning, to what the training rows and voxels allow),
        projected back to voxels.
    ridge : RidgeOptions
        Penalties, folds and banding of ridge.
    networks : NetworkOptions
        Hidden size, dropout, activation and BatchNorm of the networks.
    train : TrainConfig
        The networks' training, and for both families the seed and the PCA settings
        (``n_components``, ``pca_method``, ``pca_n_iter``) of PCA targets.
    grid : sequence of mapping
        Learning-rate / weight-decay points trained side by side (see
        :func:`jaxenc.train.fit_encoders`); empty: the one point of ``train``.
    checkpoint_dir : str or Path, optional
        The networks' orbax checkpoints go to ``checkpoint_dir / "<subjects>"``; a rerun resumes
        from them.
    cache : dict, optional
        Shared by jobs on the same responses (a subject name must mean the same responses in
        every call): the subjects' PCAs are fitted once.
    progress : bool
        Progress bars of the networks' training.
    interactions : bool
        Also decompose each network on two modalities (audio, semantic) over the test rows
        into main effects and their interaction (:attr:`JobResult.interactions`); ignored for
        ridge (linear: no interaction) and one modality.
    mesh : jax.sharding.Mesh, optional
        A mesh with the axis ``"data"`` (:data:`jaxenc.distributed.RUN_AXIS`;
        :func:`jaxenc.distributed.run_mesh` builds it) to shard the fit over (see the module
        docstring); None: one device. Under ``jax.distributed`` every process must make the
        same call.

    Returns
    -------
    JobResult

    Raises
    ------
    ConfigError
        An unknown model or target, DIMLP on one modality, or arrays that do not hold real
        numbers (:mod:`jaxenc.validation`).
    AlignmentError
        ``X``, ``Y`` or ``X_test`` without rows or columns, or an ``X_test`` of another width.
    NonFiniteError
        NaN or infinity in ``X``, ``Y`` or ``X_test``, naming which, the subject, row and column.

    Warns
    -----
    DataWarning
        PCA targets with more components asked (``train.n_components``) than the training
        rows and voxels allow: the count is lowered to that limit, named in the warning.
    """
    spec = encoder(model) if isinstance(model, str) else model
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {list(TARGETS)}, got {target!r}")
    if not data:
        raise ConfigError("no subjects to fit")
    if response_mesh(spec, target, mesh) is None:
        data = {subject: replace(arrays, Y=arrays.Y.to_host()) if isinstance(arrays.Y, VoxelShards) else arrays
                for subject, arrays in data.items()}
    for subject, arrays in data.items():
        # Checked here, naming the argument: a NaN in X_test is not "X has NaN" further down.
        n_features = np.shape(arrays.X)[1] if np.ndim(arrays.X) == 2 else None
        check_matrix(arrays.X, "X", what="(n_trs, n_features)", subject=subject)
        if not isinstance(arrays.Y, VoxelShards):
            # Sharded responses are scanned on their devices by the sharded ridge.
            check_matrix(arrays.Y, "Y", what="(n_trs, n_voxels)", subject=subject)
        check_matrix(arrays.X_test, "X_test", columns=n_features, what="(n_test, n_features) like X", subject=subject)
    cache = {} if cache is None else cache
    modality_counts = {max(len(arrays.bands), 1) for arrays in data.values()}
    if min(modality_counts) < spec.min_modalities:
        raise ConfigError(f"{spec.name} needs {spec.min_modalities} modalities, the design has "
                          f"{min(modality_counts)}")
    if spec.is_ridge:
        return _fit_ridge(data, target, ridge, train, cache.setdefault("ridge_pca", {}), mesh)
    return _fit_networks(spec, data, target, networks, train, grid, checkpoint_dir,
                         cache.setdefault("fold_pca", {}), progress, interactions, mesh)


def _fit_ridge(data, target, options: RidgeOptions, train: TrainConfig, pcas: dict, mesh) -> JobResult:
    predictions, alphas = {}, {}
    for subject, arrays in data.items():
        Y, pca = arrays.Y, None
        n_voxels = Y.shape[1]
        if target == "pca":
            blocks = _story_blocks(arrays)
            key = (subject, train.n_components, train.pca_method, train.pca_n_iter, train.pca_precision,
                   mesh is not None)
            if key not in pcas:
                k = _capped_components(train.n_components, min(Y.shape[0] - 1, Y.shape[1]),
                                       f"{Y.shape[0]} training rows - 1 and {Y.shape[1]} voxels", subject)
                # Voxel-sharded on a mesh, as the networks' fold PCAs.
                pcas[key] = response_pca(k, train, mesh, RUN_AXIS).fit(blocks)
            pca = pcas[key]
            Y = np.concatenate([np.asarray(pca.transform(block)) for block in blocks])
        model = options.estimator(arrays.bands, seed=train.seed, mesh=mesh, axis=RUN_AXIS)
        model.fit(arrays.X, Y, groups=arrays.groups)
        # On a mesh the voxel-sized results are sharded and padded past the real columns.
        prediction = to_host(model.predict(arrays.X_test))[:, :Y.shape[1]]
        if pca is not None:
            prediction = pca.inverse_transform(prediction)
        predictions[subject] = to_host(prediction)[:, :n_voxels].astype(np.float32)
        alphas[subject] = float(np.median(to_host(model.best_alphas_)[:Y.shape[1]]))
    n_features = int(np.shape(next(iter(data.values())).X)[1])
    return JobResult(predictions, {"n_features": n_features, "median_alpha": alphas})


def _story_blocks(arrays: SubjectArrays) -> list:
    """``arrays.Y`` as views of its consecutive stories' rows, in row order (one block, ``Y``
    itself, where a story's rows are not contiguous): the PCA fits and transforms them block by
    block, so a full-size subject's responses (9.7 GB) are never centred or copied whole."""
    rows = list(arrays.stories().values())
    if not all(isinstance(r, slice) for r in rows):
        return [arrays.Y]
    rows.sort(key=lambda r: r.start)
    return [arrays.Y[r] for r in rows]


def _capped_components(asked: int, limit: int, why: str, subject) -> int:
    """``asked`` components, or ``limit`` with a warning naming both when it is lower."""
    if asked > limit:
        warnings.warn(f"subject {subject}: train.n_components = {asked} principal components asked, but the "
                      f"responses allow at most {limit} (the fewest of {why}); fitting {limit}", DataWarning,
                      stacklevel=4)
        return limit
    return asked


def _n_components_cap(data: Mapping[str, SubjectArrays], train: TrainConfig) -> int:
    """The largest component count every fold of every subject can fit (<= ``n_components``),
    with a warning when it is lower."""
    cap = train.n_components
    for subject, arrays in data.items():
        counts = {story: len(range(arrays.X.shape[0])[rows]) if isinstance(rows, slice) else len(rows)
                  for story, rows in arrays.stories().items()}
        rows = min(sum(counts[s] for s in fold_train)
                   for fold_train, _ in story_folds(list(counts), train.n_folds, seed=train.seed, subject=subject))
        cap = _capped_components(cap, min(rows, arrays.Y.shape[1]),
                                 f"a fold's {rows} training rows and {arrays.Y.shape[1]} voxels", subject)
    return cap


def network_programs(target: str, voxels: Mapping[str, int]) -> list[list[str]]:
    """The subjects whose networks train in one compiled program, program by program.

    PCA targets share one output size, so every subject trains in one program; voxel targets
    train together only where the voxel counts are equal.

    Parameters
    ----------
    target : {"voxels", "pca"}
    voxels : mapping of str to int
        Voxels of each subject (or data-scaling key), in order.

    Returns
    -------
    list of list of str
    """
    groups: dict[int | None, list[str]] = {}
    for subject, count in voxels.items():
        groups.setdefault(None if target == "pca" else count, []).append(subject)
    return list(groups.values())


def _fit_networks(spec: EncoderSpec, data, target, options: NetworkOptions, train: TrainConfig, grid,
                  checkpoint_dir, fold_pcas: dict, progress: bool, interactions: bool, mesh) -> JobResult:
    predictions, info, folders, shares, per_fold = {}, {"best_epoch": {}, "stop_epoch": {}}, [], {}, {}
    for subjects in network_programs(target, {subject: arrays.Y.shape[1] for subject, arrays in data.items()}):
        fits, tests = {}, {}
        for subject in subjects:
            arrays = data[subject]
            X = spec.prepare(arrays.X, arrays.bands, arrays.n_delays)
            tests[subject] = spec.prepare(arrays.X_test, arrays.bands, arrays.n_delays)
            # Views of the one training array per story: the stack copies each once.
            fits[subject] = SubjectData.from_arrays(X, arrays.Y, arrays.groups, subject=subject)
        n_components = None
        if target == "pca":
            n_components = _n_components_cap({s: data[s] for s in subjects}, train)
        first = data[subjects[0]]
        make_model = spec.make_model(options, bands=first.bands, n_delays=first.n_delays)
        folder = None
        if checkpoint_dir is not None:
            folder = (Path(checkpoint_dir) / group_folder(subjects)).resolve()
            folders.append(folder)
        fit = fit_encoders(make_model, fits, replace(train, n_components=n_components),
                           grid=[dict(p) for p in grid] or None, checkpoint_dir=folder, progress=progress,
                           pca_cache=fold_pcas, mesh=mesh, axis=RUN_AXIS)
        folds = {s: np.asarray(p, np.float32) for s, p in fit.predict_folds(tests).items()}
        per_fold.update(folds)
        predictions.update({s: p.mean(axis=0) for s, p in folds.items()})
        if interactions:
            shares.update({s: _interaction_shares(spec, fit, s, data[s], tests[s]) for s in subjects
                           if len(data[s].bands) == 2})
        for i, key in enumerate(fit.keys):
            info["best_epoch"].setdefault(key.subject, []).append(int(fit.best_epoch[i]))
            info["stop_epoch"].setdefault(key.subject, []).append(int(fit.stop_epoch[i]))
        info["n_components"] = n_components
        info["n_features"] = int(next(iter(tests.values())).shape[1])
    return JobResult(predictions, info, folders, shares, per_fold)


# Longest checkpoint folder name built from the keys themselves (file systems allow 255 bytes).
_FOLDER_BYTES = 120


def group_folder(keys: Sequence[str]) -> str:
    """The checkpoint folder name of a network program's data keys (subjects, subsets).

    The keys joined by ``-`` where that is at most 120 bytes; otherwise, as with many subjects or
    data-scaling subsets, the first key, how many follow and a digest of them all, so a rerun
    of the same program resumes from the same folder.

    Parameters
    ----------
    keys : sequence of str

    Returns
    -------
    str
    """
    name = "-".join(keys)
    if len(name.encode()) <= _FOLDER_BYTES:
        return name
    digest = hashlib.sha256("\0".join(keys).encode()).hexdigest()[:16]
    return f"{keys[0]}-and-{len(keys) - 1}-more-{digest}"


def _interaction_shares(spec: EncoderSpec, fit, subject: str, arrays: SubjectArrays, X_test) -> np.ndarray:
    """Per voxel, the interaction share of a subject's fold models, averaged (float32)."""
    audio, semantic = modality_ranges(spec, arrays.bands, arrays.n_delays, X_test.shape[1])
    shares = fit_interaction_shares(fit, subject, X_test, audio, semantic)
    return np.asarray(shares.mean_over_models().interaction, np.float32)


def modality_ranges(spec: EncoderSpec, bands, n_delays: int, n_features: int) -> list[list[tuple[int, int]]]:
    """Each modality's columns in the design as ``spec`` reads it (:meth:`EncoderSpec.prepare`).

    Parameters
    ----------
    spec : EncoderSpec
    bands : sequence of (int, int)
        Column range of each modality in the design as built.
    n_delays : int
    n_features : int

    Returns
    -------
    list of list of (int, int)
        Per modality, its maximal runs of columns ``(start, stop)`` in the prepared design
        (one run, or one per delay where the GRU and the transformer regroup by delay).
    """
    order = spec.prepare(np.arange(n_features)[None], bands, n_delays)[0]
    position = np.argsort(order)  # where column c of the design went
    out = []
    for start, stop in bands:
        columns = np.sort(position[start:stop])
        runs = np.split(columns, np.flatnonzero(np.diff(columns) != 1) + 1)
        out.append([(int(run[0]), int(run[-1]) + 1) for run in runs])
    return out
