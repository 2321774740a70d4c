"""Train every (subject, fold, hyperparameter) encoder at once, as one compiled program.

The paper trains each fold of each subject separately. Here the pieces are:

1. :func:`jaxenc.train.stack.stack_subjects`: the stories of each subject split into
   story-grouped folds, a PCA per fold, and every model's data stacked as host arrays;
2. :func:`jaxenc.train.program.compiled_program`: one ``jax.jit(jax.vmap(...))`` program that
   advances every model of a stack by a chunk of epochs (or the one-model program);
3. :func:`jaxenc.train.loop.run_chunks`: the chunk loop with checkpoints, callbacks and the
   re-packing of the models still training into smaller stacks.

:func:`fit_encoders` chains them for data given per story (:class:`SubjectData`) and
:func:`fit_encoders_arrays` for row-aligned matrices with a story label per row; both return
an :class:`EncoderFit`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxenc import precision
from jaxenc.distributed import axis_size
from jaxenc.errors import ConfigError
from jaxenc.train import _checkpoint
from jaxenc.train._placement import place, to_local
from jaxenc.train.config import ModelKey, TrainConfig, resolve_grid
from jaxenc.train.loop import run_chunks, run_one_by_one, stack_sizes
from jaxenc.train.program import ProgramSpec, compiled_program, compiler_options, merged_state, stack_initializer
from jaxenc.train.stack import Stack, SubjectData, pad_stack, stack_subjects
from jaxenc.validation import check_matrix

__all__ = ["EncoderFit", "fit_encoders", "fit_encoders_arrays", "train_stack"]


@dataclass
class EncoderFit:
    """The trained stack of encoders returned by :func:`fit_encoders`.

    Attributes
    ----------
    keys : tuple of ModelKey
        The model on each index of the stacked axis.
    folds : dict of str to list of (tuple, tuple)
        Per subject, the (training, validation) stories of each fold.
    grid : tuple of dict
        The hyperparameters of each grid index.
    pcas : list of PCA or None
        Per model, the PCA fitted on its fold's training responses (None without PCA).
    graphdef : nnx.GraphDef
        Structure of one model; ``nnx.merge(graphdef, state)`` rebuilds it.
    best_state : nnx.State
        The models' parameters and BatchNorm statistics at their best validation epoch,
        stacked along a leading axis of size ``len(keys)``.
    best_val : ndarray of shape (n_models,)
        Best validation loss of each model.
    best_epoch, stop_epoch : ndarray of int, shape (n_models,)
        Epoch of the best validation loss, and epoch at which early stopping fired (-1 if the
        model ran to ``max_epochs``).
    history : ndarray of shape (n_models, max_epochs, 2)
        Training and validation loss per epoch; NaN after a model stopped.
    final_state : nnx.State
        Every model's parameters at the end of training (not the best ones), stacked.
    n_traces : int
        Times the compiled training program this run used has been traced in this process
        (runs of the same structure share it): one per stack size it ran at, so 1 when no
        model stopped early and everything compiled once.
    config : TrainConfig
    n_features : int
        Columns of the features the models were trained on (what :meth:`predict` expects).
    """

    keys: tuple[ModelKey, ...]
    folds: dict
    grid: tuple
    pcas: list
    graphdef: object
    best_state: object
    best_val: np.ndarray
    best_epoch: np.ndarray
    stop_epoch: np.ndarray
    history: np.ndarray
    final_state: object
    n_traces: int
    config: TrainConfig
    n_features: int

    def model(self, i: int) -> nnx.Module:
        """The ``i``-th model of the stack, at its best epoch, in evaluation mode."""
        return nnx.merge(self.graphdef, jax.tree.map(lambda a: a[i], self.best_state))

    def chosen_models(self, subject: str, grid: int | None = None) -> list[int]:
        """The models that predict for ``subject``, one per fold, in fold order.

        Parameters
        ----------
        subject : str
        grid : int, optional
            A grid index: that point's models. By default the subject's best on validation:
            the grid points are grouped by their hyperparameters (restarts, points that differ
            only in ``init``, form one group), each fold takes its group member of lowest
            validation loss, and the group whose folds' mean of those losses is lowest wins
            (without restarts: the point of lowest mean validation loss over the folds).

        Returns
        -------
        list of int
            Indices into ``keys``.

        Raises
        ------
        ConfigError
            No model of ``subject``, or none at ``grid``.
        """
        mine = [i for i, k in enumerate(self.keys) if k.subject == subject]
        if not mine:
            raise ConfigError(f"no model of subject {subject} in this fit", subject=subject)
        if grid is not None:
            chosen = [i for i in mine if self.keys[i].grid == grid]
            if not chosen:
                raise ConfigError(f"no model with grid index {grid}", subject=subject)
            return sorted(chosen, key=lambda i: self.keys[i].fold)
        groups: dict[tuple, dict[int, list[int]]] = {}  # hyperparameters -> fold -> its restarts' models
        for i in mine:
            point = self.grid[self.keys[i].grid]
            hyper = tuple(sorted((name, value) for name, value in point.items() if name != "init"))
            groups.setdefault(hyper, {}).setdefault(self.keys[i].fold, []).append(i)
        per_group = [[min(folds[f], key=lambda i: float(self.best_val[i])) for f in sorted(folds)]
                     for folds in groups.values()]
        return min(per_group, key=lambda models: float(np.mean([self.best_val[i] for i in models])))

    def predict_components(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Every model's output for its subject's features, in its own target space.

        Parameters
        ----------
        features : mapping of str to array of shape (n_trs, n_features)
            Per subject, e.g. the delayed features of the test story.

        Returns
        -------
        ndarray of shape (n_models, max n_trs, n_outputs)
            Rows past a subject's ``n_trs`` are padding.

        Raises
        ------
        ConfigError
            A subject without features, or features that are not real numbers.
        AlignmentError
            Features that are not 2-D, have no rows, or another width than the training's.
        NonFiniteError
            NaN or infinity in the features, naming the subject, row and column.
        """
        subjects = _subjects_of(self.keys)
        missing = [s for s in subjects if s not in features]
        if missing:
            raise ConfigError(f"no features given for subjects {missing}")
        for s in subjects:
            check_matrix(features[s], f"features[{s!r}]", columns=self.n_features,
                         what="(n_trs, n_features) like the training features", subject=s)
        x = pad_stack([np.asarray(features[s], np.float32) for s in subjects])
        subj = jnp.asarray([subjects.index(k.subject) for k in self.keys], jnp.int32)
        options = compiler_options(self.best_state, len(self.keys))
        predictor = _predictor(self.graphdef, options, self.config.precision)
        return np.asarray(predictor(self.best_state, jnp.asarray(x), subj), np.float32)

    def predict(self, features: Mapping[str, np.ndarray], *, grid: int | None = None) -> dict[str, np.ndarray]:
        """Voxel predictions per subject: the average of its fold models' predictions.

        Each fold's PCA inverse-projects its own model's components before the average.

        Parameters
        ----------
        features : mapping of str to array of shape (n_trs, n_features)
            Per subject, the delayed features of the stories to predict (e.g. the test story).
        grid : int, optional
            Grid index to use; by default each subject's best (:meth:`chosen_models`).

        Returns
        -------
        dict of str to ndarray of shape (n_trs, n_voxels)
        """
        return {s: folds.mean(axis=0) for s, folds in self.predict_folds(features, grid=grid).items()}

    def predict_folds(self, features: Mapping[str, np.ndarray], *, grid: int | None = None) -> dict[str, np.ndarray]:
        """Voxel predictions per subject and fold model (what :meth:`predict` averages).

        Parameters
        ----------
        features : mapping of str to array of shape (n_trs, n_features)
            Per subject, the delayed features of the stories to predict.
        grid : int, optional
            Grid index to use; by default each subject's best (:meth:`chosen_models`).

        Returns
        -------
        dict of str to ndarray of shape (n_folds, n_trs, n_voxels)
            Fold ``k`` is the model of the subject's fold ``k``, through its own fold's PCA.
        """
        z = self.predict_components(features)
        out = {}
        for subject in _subjects_of(self.keys):
            n = np.asarray(features[subject]).shape[0]
            out[subject] = np.stack([
                np.asarray(z[i, :n]) if self.pcas[i] is None else np.asarray(self.pcas[i].inverse_transform(z[i, :n]))
                for i in self.chosen_models(subject, grid)
            ])
        return out


@functools.lru_cache(maxsize=16)
def _predictor(graphdef, options: tuple, matmul_precision: str = precision.DEFAULTS["training"]):
    """Every model's evaluation-mode output for its subject's rows (float32), compiled once per
    structure, XLA options (:func:`jaxenc.train.program.compiler_options`) and precision."""

    def one(state, x_all, s):
        with precision.scope(matmul_precision, key="train.precision"):
            return nnx.merge(graphdef, state)(x_all[s], train=False).astype(jnp.float32)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0)), compiler_options=dict(options) or None)


def _with_dtype(make_model, compute_dtype: str):
    """``make_model`` building its models in ``compute_dtype`` (passed as ``dtype=`` unless float32,
    so factories without a ``dtype`` argument keep working at float32)."""
    if compute_dtype == "float32":
        return make_model

    def make(n_features, n_outputs, *, rngs):
        try:
            return make_model(n_features, n_outputs, rngs=rngs, dtype=jnp.dtype(compute_dtype))
        except TypeError as err:
            if "dtype" not in str(err):
                raise
            raise ConfigError(f"train.compute_dtype = {compute_dtype!r} needs a make_model that takes dtype=, "
                              f"as jaxenc's networks do ({err})") from None

    return make


def _subjects_of(keys) -> list[str]:
    return list(dict.fromkeys(k.subject for k in keys))


def fit_encoders(
    make_model: Callable[..., nnx.Module],
    data: Mapping[str, SubjectData],
    config: TrainConfig = TrainConfig(),
    *,
    grid: Sequence[Mapping[str, float]] | None = None,
    checkpoint_dir: str | Path | None = None,
    callback: Callable[[int, dict], None] | None = None,
    vectorize: bool = True,
    progress: bool = True,
    mesh: Mesh | None = None,
    axis: str = "models",
    pca_cache: dict | None = None,
) -> EncoderFit:
    """Train one encoder per (subject, fold, grid point), all in one compiled program.

    For each subject the training stories are split into story-grouped folds
    (:func:`story_folds`); per fold a PCA is fitted on the fold's training responses only and
    the model learns the PCA scores. All models train together: AdamW, minibatches of
    ``batch_size`` rows shuffled per model and epoch, the MAE (or MSE) loss, early stopping on
    each model's validation loss with ``patience``, keeping its best parameters. As models
    stop, the ones still training are re-packed into a smaller stack between chunks of
    epochs (the result does not change).

    Parameters
    ----------
    make_model : callable
        ``make_model(n_features, n_outputs, rngs=nnx.Rngs)`` returns a module mapping
        (batch, n_features) to (batch, n_outputs) and accepting ``train`` and ``mask``
        keywords, e.g. ``functools.partial(MLP, hidden=256, dropout=0.2)``.
    data : mapping of str to SubjectData
        Training stories per subject (the test story excluded). Subjects may have different
        numbers of TRs (padded and masked) and of voxels (they share ``n_components``).
    config : TrainConfig
        Training settings.
    grid : sequence of mapping, optional
        Hyperparameter points trained side by side, each overriding ``learning_rate`` and/or
        ``weight_decay``; one point from ``config`` by default.
    checkpoint_dir : str or Path, optional
        Orbax checkpoints of the whole stacked state every ``checkpoint_every`` epochs; if the
        directory holds one from the same run, training resumes from it and ends with the
        result of an uninterrupted run.
    callback : callable, optional
        ``callback(epoch, info)`` after every chunk of epochs, where ``epoch`` is the number of
        epochs done and ``info`` holds ``val_loss`` (n_models,) and ``stopped`` (n_models,).
        An exception it raises ends the run after the chunk's checkpoint was written.
    vectorize : bool
        False trains the same models one at a time with the same compiled one-model program
        (the reference the vmapped run is tested against); no checkpoints nor callbacks.
    progress : bool
        Show a progress bar over epochs.
    mesh : jax.sharding.Mesh, optional
        Spread the models along the mesh axis ``axis`` (see :mod:`jaxenc.train._placement`):
        their states live on the devices of that axis, the data are replicated; the fold PCAs
        are fitted and applied voxel-sharded along it (:class:`jaxenc.decomp.ShardedPCA`, every
        solver). The result equals the unsharded run up to float
        rounding and is returned on the default device.
    axis : str
        Name of the mesh axis the models are split along.
    pca_cache : dict, optional
        Shared by calls that train several models on the same responses (e.g. MLP, MLLinear
        and DIMLP of one experiment): each fold's PCA and scores are kept in it under the
        subject, its stories, the fold's training stories and the PCA settings, and reused
        instead of refitted. A subject name must then mean the same responses in every call.

    Returns
    -------
    EncoderFit

    Raises
    ------
    AlignmentError
        Features and responses of a story with different row counts (names subject, story
        and both counts), or stories with only one of the two.
    ConfigError
        A fold without validation stories, subjects with different feature counts, too many
        PCA components for a subject, or unusable settings.
    NonFiniteError
        NaN or infinity in a story's features or responses (names the subject, story, row and
        column), or in a loss during training (names the subject, fold and epoch).
    CheckpointError
        A checkpoint in ``checkpoint_dir`` from a different run.
    """
    config.validate()
    if not vectorize and (checkpoint_dir is not None or callback is not None or mesh is not None):
        raise ConfigError("checkpoints, callbacks and a mesh need vectorize=True")
    if mesh is not None:
        axis_size(mesh, axis)
    stack = stack_subjects(data, config, resolve_grid(grid, config), pca_cache, mesh, axis)
    return train_stack(make_model, stack, config, checkpoint_dir=checkpoint_dir, callback=callback,
                       vectorize=vectorize, progress=progress, mesh=mesh, axis=axis)


def fit_encoders_arrays(
    make_model: Callable[..., nnx.Module],
    data: Mapping[str, tuple],
    config: TrainConfig = TrainConfig(),
    **kwargs,
) -> EncoderFit:
    """:func:`fit_encoders` on row-aligned matrices with a story label per row.

    Parameters
    ----------
    make_model : callable
        As in :func:`fit_encoders`.
    data : mapping of str to (X, Y, groups)
        Per subject: ``X`` of shape (n_trs, n_features), the delayed features of all training
        stories; ``Y`` of shape (n_trs, n_voxels), the responses row-aligned with ``X``;
        ``groups`` of shape (n_trs,), the story of each row. Folds group whole stories (see
        :meth:`SubjectData.from_arrays`).
    config : TrainConfig
    **kwargs
        Any keyword of :func:`fit_encoders`.

    Returns
    -------
    EncoderFit
        The same as :func:`fit_encoders` on the stories the labels define.

    Examples
    --------
    >>> fit = fit_encoders_arrays(partial(MLP, hidden=256), {"UTS01": (X, Y, story_of_row)},
    ...                           TrainConfig())  # doctest: +SKIP
    """
    subjects = {}
    for subject, arrays in data.items():
        if len(arrays) != 3:
            raise ConfigError(f"expected (X, Y, groups) per subject, found {len(arrays)} item(s)", subject=subject)
        subjects[subject] = SubjectData.from_arrays(*arrays, subject=subject)
    return fit_encoders(make_model, subjects, config, **kwargs)


def train_stack(make_model, stack: Stack, config: TrainConfig, *, checkpoint_dir=None, callback=None,
                vectorize: bool = True, progress: bool = True, mesh: Mesh | None = None, axis: str = "models",
                repack: bool = True) -> EncoderFit:
    """Create the models of a stack, train them with the compiled program, collect the result.

    Parameters
    ----------
    make_model : callable
    stack : Stack
        From :func:`jaxenc.train.stack.stack_subjects`.
    config : TrainConfig
    checkpoint_dir, callback, vectorize, progress, mesh, axis
        As in :func:`fit_encoders`.
    repack : bool
        Re-pack the models still training into smaller stacks as others stop (the result is
        the same; False keeps the full stack, for tests and measurements).

    Returns
    -------
    EncoderFit
    """
    cfg, n_models = config, len(stack.keys)
    precision.check(cfg.precision, "train.precision", on=precision.platform())
    create, graphs = stack_initializer(_with_dtype(make_model, cfg.compute_dtype), stack.n_features,
                                       stack.n_outputs, cfg.max_epochs)
    data, carry = place(create, stack, mesh, axis)
    graphdef = graphs[-1]
    spec = ProgramSpec.of(cfg, stack)
    options = compiler_options(carry["params"], len(carry["stopped"])) if vectorize else ()
    program, counter = compiled_program(graphdef, spec, vectorize, mesh, axis if mesh is not None else None, options)
    if vectorize:
        n_slots = len(carry["stopped"])
        unit = 1 if mesh is None else axis_size(mesh, axis)
        manager = None if checkpoint_dir is None else _checkpoint.open_manager(checkpoint_dir)
        meta = _checkpoint.run_signature(stack.keys, carry, cfg, stack.grid)
        bar = tqdm(total=cfg.max_epochs, desc="epochs", unit="epoch", disable=not progress)
        try:
            carry = run_chunks(program, carry, data, cfg, stack.keys, manager=manager, meta=meta, callback=callback,
                               bar=bar, sizes=stack_sizes(n_slots, unit) if repack else None)
        finally:
            bar.close()
            if manager is not None:
                manager.close()
    else:
        with tqdm(total=n_models, desc="models", unit="model", disable=not progress) as bar:
            carry = run_one_by_one(program, carry, data, cfg, stack.keys, bar=bar)
    if mesh is not None:
        # The result lives on the default device, as an unsharded run's: padding dropped.
        carry = {name: carry[name] for name in ("params", "rest", "best", "best_val", "best_epoch", "stop_epoch",
                                                "history")}
        carry = jax.tree.map(lambda a: to_local(a, n_models), carry)
    return EncoderFit(
        keys=stack.keys,
        folds=stack.folds,
        grid=stack.grid,
        pcas=stack.pcas,
        graphdef=graphdef,
        best_state=merged_state(carry["best"]["params"], carry["best"]["rest"]),
        best_val=np.asarray(carry["best_val"]),
        best_epoch=np.asarray(carry["best_epoch"]),
        stop_epoch=np.asarray(carry["stop_epoch"]),
        history=np.asarray(carry["history"]),
        final_state=merged_state(carry["params"], carry["rest"]),
        n_traces=counter[0],
        config=dataclasses.replace(cfg),
        n_features=stack.n_features,
    )
