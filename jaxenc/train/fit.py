"""Train every (subject, fold, hyperparameter) encoder at once, as one compiled program.

The paper trains each fold of each subject separately. Here the models' parameters, optimizer
states, early-stopping counters and best parameters are stacked along a leading model axis and
one ``jax.jit(jax.vmap(...))`` program advances all of them by a chunk of epochs:

    carry[model, ...]  --chunk of epochs: lax.scan over epochs, each a lax.scan over
                         minibatches, then the validation loss and the early-stopping rule-->
    carry[model, ...]

The data stay on the device: features per subject ``X[subject, tr, feature]`` and PCA targets
per (subject, fold) ``Y[target, tr, component]``, padded to the longest subject. Each model
draws its minibatches through index arrays of its own training rows, so padded rows never
enter a batch's loss, BatchNorm statistics or validation loss.

Every step is written for one model; the vmapped program and the one-model-at-a-time loop
(``vectorize=False``, the reference the tests compare against) run the same function.

Models along a mesh axis
------------------------
With ``mesh=`` the model axis is split across the devices of one mesh axis: the stack is padded
to a multiple of the axis size (padded slots repeat the last model's data and start stopped,
so they never change and are dropped from the result), parameters, optimizer states and the
rest of the carry are created on their devices inside :func:`jax.shard_map`, the feature and
target matrices are replicated, and the same one-model chunk function runs ``vmap``-ed over
each device's local models. Models never interact, so no collective is needed and the result
equals the unsharded run up to float rounding. Every array is built with
:func:`jax.make_array_from_callback` or inside the sharded program, so the same code runs on
several hosts after ``jax.distributed.initialize`` (see :mod:`jaxenc.distributed`).

Memory
------
A subject's responses are read once, per story, as the caller passed them (views of one
stacked array, e.g. from :func:`jaxenc.stream.stack_story_rows`, cost nothing more): each
fold's PCA reads its training stories as a list of blocks, and the PCA scores are computed
story by story, so no concatenated copy of the responses is ever made.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxenc.decomp import PCA
from jaxenc.decomp.pca import METHODS as PCA_METHODS
from jaxenc.distributed import axis_size, padded_size, to_host
from jaxenc.errors import AlignmentError, ConfigError, JaxencError
from jaxenc.train import _checkpoint
from jaxenc.train.folds import story_folds

__all__ = ["TrainConfig", "SubjectData", "ModelKey", "EncoderFit", "NonFiniteError", "fit_encoders"]

_LOSSES = ("mae", "mse")
_GRID_KEYS = ("learning_rate", "weight_decay")
# One optimizer object for every run: its hyperparameters live in each model's optimizer state
# (set per model at creation), and a shared object keeps graph definitions equal across runs,
# so a second run of the same shapes reuses the compiled program.
_ADAMW = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0)


class NonFiniteError(JaxencError, FloatingPointError):
    """NaN or infinity in a training batch or a loss; names the subject, fold and epoch."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`fit_encoders`."""

    # Story-grouped folds over the training stories (the paper uses 5).
    n_folds: int = 5
    # Seed of the fold split, the initialisation, dropout and the minibatch shuffles.
    seed: int = 0
    # PCA components of the responses the networks predict; None predicts voxels directly.
    n_components: int | None = 512
    # Rows per minibatch.
    batch_size: int = 128
    # Rows per chunk of the validation pass (memory only; the loss does not depend on it).
    val_batch_size: int = 512
    # Upper bound on training epochs.
    max_epochs: int = 200
    # Epochs without a validation improvement before a model stops.
    patience: int = 10
    # Improvement of the validation loss that resets the patience counter.
    min_delta: float = 0.0
    # AdamW step size (a grid may override it per model).
    learning_rate: float = 1e-3
    # AdamW decoupled weight decay (a grid may override it per model).
    weight_decay: float = 1e-4
    # "mae" (the paper's) or "mse", averaged over rows and outputs.
    loss: str = "mae"
    # Epochs per call of the compiled program; progress, NaN checks and callbacks run between.
    epochs_per_call: int = 5
    # Epochs between orbax checkpoints, a multiple of epochs_per_call.
    checkpoint_every: int = 10
    # Solver of the per-fold PCAs (see jaxenc.decomp.pca_fit); "randomized" for full-size data.
    pca_method: str = "auto"
    # Power iterations of the randomized PCA solver.
    pca_n_iter: int = 7

    def validate(self) -> None:
        """Raise :class:`ConfigError` on settings the trainer cannot use."""
        if self.loss not in _LOSSES:
            raise ConfigError(f"loss must be one of {_LOSSES}, found {self.loss!r}")
        for name in ("batch_size", "val_batch_size", "max_epochs", "patience", "epochs_per_call", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, found {getattr(self, name)}")
        if self.checkpoint_every % self.epochs_per_call:
            raise ConfigError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                f"epochs_per_call ({self.epochs_per_call})"
            )
        if self.pca_method not in PCA_METHODS:
            raise ConfigError(f"pca_method must be one of {PCA_METHODS}, found {self.pca_method!r}")
        if self.pca_n_iter < 0:
            raise ConfigError(f"pca_n_iter must be at least 0, found {self.pca_n_iter}")
        if self.n_components is not None and self.n_components < 1:
            raise ConfigError(f"n_components must be positive or None, found {self.n_components}")


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


@dataclass(frozen=True)
class ModelKey:
    """Which model of the stack: a subject, a fold index and a hyperparameter grid index."""

    subject: str
    fold: int
    grid: int


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
        (runs of the same structure share it): 1 when everything compiled once.
    config : TrainConfig
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
    _predict_fn: Callable | None = field(default=None, repr=False)

    def model(self, i: int) -> nnx.Module:
        """The ``i``-th model of the stack, at its best epoch, in evaluation mode."""
        return nnx.merge(self.graphdef, jax.tree.map(lambda a: a[i], self.best_state))

    def best_grid(self, subject: str) -> int:
        """The grid index whose folds reach the lowest mean validation loss for ``subject``."""
        losses = {}
        for i, k in enumerate(self.keys):
            if k.subject == subject:
                losses.setdefault(k.grid, []).append(self.best_val[i])
        if not losses:
            raise ConfigError(f"no model of subject {subject} in this fit", subject=subject)
        return min(losses, key=lambda g: float(np.mean(losses[g])))

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
        """
        subjects = _subjects_of(self.keys)
        missing = [s for s in subjects if s not in features]
        if missing:
            raise ConfigError(f"no features given for subjects {missing}")
        xs = [np.asarray(features[s], np.float32) for s in subjects]
        x = _pad_stack(xs)
        subj = jnp.asarray([subjects.index(k.subject) for k in self.keys], jnp.int32)
        if self._predict_fn is None:
            graphdef = self.graphdef

            def one(state, x_all, s):
                return nnx.merge(graphdef, state)(x_all[s], train=False)

            self._predict_fn = jax.jit(jax.vmap(one, in_axes=(0, None, 0)))
        return np.asarray(self._predict_fn(self.best_state, jnp.asarray(x), subj))

    def predict(self, features: Mapping[str, np.ndarray], *, grid: int | None = None) -> dict[str, np.ndarray]:
        """Voxel predictions per subject: the average of its fold models' predictions.

        Each fold's PCA inverse-projects its own model's components before the average.

        Parameters
        ----------
        features : mapping of str to array of shape (n_trs, n_features)
            Per subject, the delayed features of the stories to predict (e.g. the test story).
        grid : int, optional
            Grid index to use; by default each subject's :meth:`best_grid`.

        Returns
        -------
        dict of str to ndarray of shape (n_trs, n_voxels)
        """
        z = self.predict_components(features)
        out = {}
        for subject in _subjects_of(self.keys):
            g = self.best_grid(subject) if grid is None else grid
            n = np.asarray(features[subject]).shape[0]
            preds = [
                np.asarray(z[i, :n]) if self.pcas[i] is None else np.asarray(self.pcas[i].inverse_transform(z[i, :n]))
                for i, k in enumerate(self.keys)
                if k.subject == subject and k.grid == g
            ]
            if not preds:
                raise ConfigError(f"no model with grid index {g}", subject=subject)
            out[subject] = np.mean(preds, axis=0)
        return out


def _subjects_of(keys) -> list[str]:
    return list(dict.fromkeys(k.subject for k in keys))


def _float32(a):
    """``a`` as float32, without a copy when it already is (e.g. a view of a stacked array)."""
    return a if isinstance(a, np.ndarray) and a.dtype == np.float32 else np.asarray(a, np.float32)


def _pad_stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack arrays of shape (n_i, ...) into (len, max n_i, ...), zero padded along rows."""
    n = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), n) + arrays[0].shape[1:], np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def _check_subject(subject: str, data: SubjectData) -> list[str]:
    """Validate one subject's stories; return them sorted."""
    f_stories, r_stories = set(data.features), set(data.responses)
    if f_stories != r_stories:
        story = sorted(f_stories ^ r_stories)[0]
        where = "features" if story in f_stories else "responses"
        raise AlignmentError(f"story has {where} but no {'responses' if where == 'features' else 'features'}",
                             subject=subject, story=story)
    for story in sorted(f_stories):
        nf, nr = np.shape(data.features[story])[0], np.shape(data.responses[story])[0]
        if nf != nr:
            raise AlignmentError(
                f"features have {nf} rows (TRs) but responses have {nr}; they must be on the same TR grid",
                subject=subject, story=story,
            )
        if np.ndim(data.features[story]) != 2 or np.ndim(data.responses[story]) != 2:
            raise AlignmentError("features and responses must be 2-D (n_trs, columns)", subject=subject, story=story)
    return sorted(f_stories)


def _model_key_data(seed: int, key: ModelKey, stream: int = 0) -> jax.Array:
    """Per-model PRNG key from (seed, subject, fold): independent of the other models in a run.

    Grid points of one (subject, fold) share it, so they differ only by their hyperparameters.
    """
    k = jax.random.fold_in(jax.random.key(seed), zlib.crc32(key.subject.encode()) & 0x7FFFFFFF)
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(k, key.fold), stream))


def _select(pred, new, old):
    """``new`` where ``pred`` else ``old``, leaf by leaf (pytrees of the same structure)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _masked_loss_sum(pred, y, mask, loss: str):
    """Sum over real rows and outputs of the elementwise loss; padded rows contribute 0."""
    diff = pred - y
    per = jnp.abs(diff) if loss == "mae" else jnp.square(diff)
    return jnp.sum(jnp.where(mask[:, None], per, 0.0))


@dataclass(frozen=True)
class _ProgramSpec:
    """The settings a compiled program depends on (the rest are data)."""

    batch_size: int
    val_batch_size: int
    loss: str
    max_epochs: int
    patience: int
    min_delta: float


@functools.lru_cache(maxsize=8)
def _program(gm, go, spec: _ProgramSpec, n_train_max: int, n_val_max: int, vectorize: bool,
             mesh: Mesh | None = None, axis: str | None = None):
    """The jitted chunk program and its trace counter, shared by runs of equal structure.

    With a mesh, each device runs the vmapped program on its own slots of the model axis
    (the carry and the per-model data split ``P(axis)``, ``X`` and ``Y`` replicated).
    """
    counter = [0]
    chunk = _build_program(gm, go, spec, n_train_max, n_val_max, counter)
    if vectorize:
        data_axes = {name: (None if name in ("X", "Y") else 0) for name in _DATA_FIELDS}
        stacked = jax.vmap(chunk, in_axes=(0, data_axes, None))
        if mesh is None:
            return jax.jit(stacked), counter
        data_specs = {name: (P() if name in ("X", "Y") else P(axis)) for name in _DATA_FIELDS}
        sharded = jax.shard_map(stacked, mesh=mesh, in_specs=(P(axis), data_specs, P()), out_specs=P(axis),
                                check_vma=False)
        return jax.jit(sharded), counter
    return jax.jit(chunk), counter


# X [subject, tr, feature] and Y [target, tr, output] are shared; the rest is per model.
_DATA_FIELDS = ("X", "Y", "subj", "tgt", "train_idx", "n_train", "val_idx", "n_val", "key")


def _build_program(gm, go, cfg: _ProgramSpec, n_train_max: int, n_val_max: int, counter: list):
    """The one-model chunk function ``(carry, data, epochs) -> carry``; vmap it for the stack."""
    bsz, vbsz = cfg.batch_size, cfg.val_batch_size
    n_batches, n_vchunks = n_train_max // bsz, n_val_max // vbsz

    def train_epoch(ms, os, data, epoch):
        # Per-position uniform draws (fold_in by position) are unchanged by extra padding, so a
        # padded subject shuffles its real rows exactly as an unpadded one.
        key = jax.random.fold_in(jax.random.wrap_key_data(data["key"]), epoch)
        pos = jnp.arange(n_train_max)
        u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(pos)
        order = jnp.argsort(jnp.where(pos < data["n_train"], u, 2.0), stable=True)
        rows = data["train_idx"][order].reshape(n_batches, bsz)  # [batch, row]
        masks = (pos < data["n_train"]).reshape(n_batches, bsz)

        def step(c, batch):
            ms, os, loss_sum, bad = c
            idx, mask = batch
            x = data["X"][data["subj"], idx]  # [batch, feature]
            y = data["Y"][data["tgt"], idx]  # [batch, output]
            # copy=True: merge would otherwise alias the carry's Variables, and the update below
            # would overwrite the old state the no-op select falls back to.
            model, opt = nnx.merge(gm, ms, copy=True), nnx.merge(go, os, copy=True)
            n = jnp.sum(mask)

            def loss_fn(model):
                pred = model(x, train=True, mask=mask)
                return _masked_loss_sum(pred, y, mask, cfg.loss) / (jnp.maximum(n, 1) * y.shape[-1])

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            # An all-padding batch (models with fewer rows than the longest) is a no-op: no
            # update, no optimizer count, no dropout key, no BatchNorm statistics.
            has = n > 0
            ms = _select(has, nnx.state(model), ms)
            os = _select(has, nnx.state(opt), os)
            finite = jnp.all(jnp.where(mask[:, None], jnp.isfinite(x), True)) & jnp.all(
                jnp.where(mask[:, None], jnp.isfinite(y), True)
            )
            return (ms, os, loss_sum + jnp.where(has, loss * n, 0.0), bad | (has & ~finite)), None

        init = (ms, os, jnp.zeros((), jnp.float32), jnp.zeros((), bool))
        (ms, os, loss_sum, bad_batch), _ = jax.lax.scan(step, init, (rows, masks))
        return ms, os, loss_sum / data["n_train"], bad_batch

    def val_loss(ms, data):
        pos = jnp.arange(n_val_max)
        rows = data["val_idx"].reshape(n_vchunks, vbsz)
        masks = (pos < data["n_val"]).reshape(n_vchunks, vbsz)

        def body(acc, chunk):
            idx, mask = chunk
            pred = nnx.merge(gm, ms, copy=True)(data["X"][data["subj"], idx], train=False)
            y = data["Y"][data["tgt"], idx]
            return acc + _masked_loss_sum(pred, y, mask, cfg.loss), None

        total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (rows, masks))
        return total / (data["n_val"] * data["Y"].shape[-1])

    def chunk(carry, data, epochs):
        counter[0] += 1  # runs at trace time only: counts compilations of the program

        def epoch_fn(c, epoch):
            active = ~c["stopped"] & (epoch < cfg.max_epochs)
            ms, os, train_loss, bad_batch = train_epoch(c["model"], c["opt"], data, epoch)
            val = val_loss(ms, data)
            nonfinite = bad_batch | ~jnp.isfinite(train_loss) | ~jnp.isfinite(val)
            ok = active & ~nonfinite
            improved = ok & (val < c["best_val"] - cfg.min_delta)
            bad = jnp.where(ok, jnp.where(improved, 0, c["bad"] + 1), c["bad"])
            patience_out = ok & (bad >= cfg.patience)
            new_nan = active & nonfinite
            row = jnp.minimum(epoch, cfg.max_epochs - 1)
            return {
                # A stopped model (patience, NaN or past max_epochs) no longer changes.
                "model": _select(ok, ms, c["model"]),
                "opt": _select(ok, os, c["opt"]),
                "best": _select(improved, ms, c["best"]),
                "best_val": jnp.where(improved, val, c["best_val"]),
                "best_epoch": jnp.where(improved, epoch, c["best_epoch"]),
                "bad": bad,
                "stopped": c["stopped"] | patience_out | new_nan,
                "stop_epoch": jnp.where(patience_out, epoch, c["stop_epoch"]),
                "nan_code": jnp.where(new_nan, jnp.where(bad_batch, 1, 2), c["nan_code"]),
                "nan_epoch": jnp.where(new_nan, epoch, c["nan_epoch"]),
                "history": c["history"].at[row].set(
                    jnp.where(active, jnp.stack([train_loss, val]), c["history"][row])
                ),
            }, None

        carry, _ = jax.lax.scan(epoch_fn, carry, epochs)
        return carry

    return chunk


def _initial_carry(ms, n_models: int | None, max_epochs: int) -> dict:
    shape = () if n_models is None else (n_models,)
    return {
        "model": ms,
        "opt": None,
        "best": ms,
        "best_val": jnp.full(shape, jnp.inf, jnp.float32),
        "best_epoch": jnp.full(shape, -1, jnp.int32),
        "bad": jnp.zeros(shape, jnp.int32),
        "stopped": jnp.zeros(shape, bool),
        "stop_epoch": jnp.full(shape, -1, jnp.int32),
        "nan_code": jnp.zeros(shape, jnp.int32),
        "nan_epoch": jnp.full(shape, -1, jnp.int32),
        "history": jnp.full(shape + (max_epochs, 2), jnp.nan, jnp.float32),
    }


def _raise_nonfinite(nan_code: np.ndarray, nan_epoch: np.ndarray, keys) -> None:
    codes = nan_code.reshape(-1)[: len(keys)]
    bad = np.flatnonzero(codes)
    if bad.size:
        i = int(bad[0])
        epoch = int(nan_epoch.reshape(-1)[i])
        what = "a training batch (features or responses)" if codes[i] == 1 else "the training or validation loss"
        raise NonFiniteError(
            f"NaN or infinity in {what} at fold {keys[i].fold}, epoch {epoch} "
            f"(grid index {keys[i].grid}; {bad.size} model(s) affected)",
            subject=keys[i].subject,
        )


def _resolve_grid(grid, cfg: TrainConfig) -> tuple[dict, ...]:
    if grid is None:
        return ({"learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay},)
    points = []
    for point in grid:
        unknown = set(point) - set(_GRID_KEYS)
        if unknown:
            raise ConfigError(f"grid keys must be among {_GRID_KEYS}, found {sorted(unknown)}")
        points.append({"learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay, **point})
    if not points:
        raise ConfigError("the hyperparameter grid is empty")
    return tuple(points)


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
    each model's validation loss with ``patience``, keeping its best parameters.

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
        Spread the models along the mesh axis ``axis`` (see the module docstring): their
        states live on the devices of that axis, the data are replicated. The result equals
        the unsharded run up to float rounding and is returned on the default device.
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
        NaN or infinity in a batch or a loss, naming the subject, fold and epoch.
    CheckpointError
        A checkpoint in ``checkpoint_dir`` from a different run.
    """
    cfg = config
    cfg.validate()
    if not data:
        raise ConfigError("no subjects to train")
    if not vectorize and (checkpoint_dir is not None or callback is not None or mesh is not None):
        raise ConfigError("checkpoints, callbacks and a mesh need vectorize=True")
    if mesh is not None:
        axis_size(mesh, axis)
    points = _resolve_grid(grid, cfg)
    subjects = list(data)

    # -- data: one padded feature matrix per subject, one target matrix per (subject, fold)
    xs, targets, folds, pcas_by_target = [], [], {}, []
    per_target = []  # (subject index, train rows, val rows)
    n_features = None
    for si, subject in enumerate(subjects):
        sd = data[subject]
        stories = _check_subject(subject, sd)
        widths = {np.shape(sd.features[s])[1] for s in stories}
        if n_features is None:
            n_features = widths.pop() if len(widths) == 1 else None
        if len(widths) > 1 or n_features is None or any(np.shape(sd.features[s])[1] != n_features for s in stories):
            raise ConfigError("all stories of all subjects must have the same number of feature columns", subject=subject)
        folds[subject] = story_folds(stories, cfg.n_folds, seed=cfg.seed, subject=subject)
        starts = np.cumsum([0] + [np.shape(sd.responses[s])[0] for s in stories])
        rows_of = {s: np.arange(starts[i], starts[i + 1]) for i, s in enumerate(stories)}
        xs.append(np.concatenate([np.asarray(sd.features[s], np.float32) for s in stories]))
        n_voxels = np.shape(sd.responses[stories[0]])[1]
        for train, val in folds[subject]:
            tr = np.concatenate([rows_of[s] for s in train])
            va = np.concatenate([rows_of[s] for s in val])
            if cfg.n_components is None:
                pca = None
                z = np.concatenate([np.asarray(sd.responses[s], np.float32) for s in stories])
            else:
                if cfg.n_components > min(tr.size, n_voxels):
                    raise ConfigError(
                        f"n_components={cfg.n_components} exceeds min(training TRs {tr.size}, voxels "
                        f"{n_voxels}) of a fold",
                        subject=subject,
                    )
                key = (subject, tuple(stories), tuple(train), n_voxels, cfg.n_components, cfg.pca_method,
                       cfg.pca_n_iter)
                if pca_cache is not None and key in pca_cache:
                    pca, z = pca_cache[key]
                else:
                    pca = PCA(cfg.n_components, method=cfg.pca_method, n_iter=cfg.pca_n_iter)
                    pca.fit([_float32(sd.responses[s]) for s in train])
                    # Scores story by story: the responses are never concatenated into a copy.
                    z = np.concatenate([np.asarray(pca.transform(_float32(sd.responses[s]))) for s in stories])
                    if pca_cache is not None:
                        pca_cache[key] = (pca, z)
            pcas_by_target.append(pca)
            targets.append(z)
            per_target.append((si, tr, va))
    n_outputs = {t.shape[1] for t in targets}
    if len(n_outputs) != 1:
        raise ConfigError(
            "subjects have different voxel counts: set n_components so they share one output size"
        )
    n_outputs = n_outputs.pop()

    keys = tuple(
        ModelKey(subject, fold, g)
        for subject in subjects
        for fold in range(cfg.n_folds)
        for g in range(len(points))
    )
    n_models = len(keys)
    # Slots of the stacked axis: the models, then (on a mesh) copies of the last one up to a
    # multiple of the axis size, which start stopped and are dropped from the result.
    n_slots = n_models if mesh is None else padded_size(n_models, mesh, axis)
    slot_model = np.minimum(np.arange(n_slots), n_models - 1)
    target_of = [i // len(points) for i in range(n_models)]
    n_train_max = math.ceil(max(tr.size for _, tr, _ in per_target) / cfg.batch_size) * cfg.batch_size
    n_val_max = math.ceil(max(va.size for _, _, va in per_target) / cfg.val_batch_size) * cfg.val_batch_size
    train_idx = np.zeros((n_models, n_train_max), np.int32)
    val_idx = np.zeros((n_models, n_val_max), np.int32)
    for m, t in enumerate(target_of):
        _, tr, va = per_target[t]
        train_idx[m, : tr.size] = tr
        val_idx[m, : va.size] = va
    per_model = {
        "subj": np.asarray([per_target[t][0] for t in target_of], np.int32),
        "tgt": np.asarray(target_of, np.int32),
        "train_idx": train_idx,
        "n_train": np.asarray([per_target[t][1].size for t in target_of], np.int32),
        "val_idx": val_idx,
        "n_val": np.asarray([per_target[t][2].size for t in target_of], np.int32),
        # Shuffle keys, one per model, apart from the initialisation and dropout keys.
        "key": np.stack([np.asarray(_model_key_data(cfg.seed, k, stream=1)) for k in keys]),
    }
    shared = {"X": _pad_stack(xs), "Y": _pad_stack(targets)}  # [subject, tr, feature], [target, tr, output]
    del targets
    init_keys = np.stack([np.asarray(_model_key_data(cfg.seed, k, stream=0)) for k in keys])
    lrs = np.asarray([points[k.grid]["learning_rate"] for k in keys], np.float32)
    wds = np.asarray([points[k.grid]["weight_decay"] for k in keys], np.float32)

    # -- models and optimizers, created stacked: one initialisation key per model
    def create(key_data, lr, wd):
        @nnx.vmap(in_axes=(0, 0, 0), out_axes=0)
        def one(key_data, lr, wd):
            key = jax.random.wrap_key_data(key_data)
            rngs = nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 2))
            model = make_model(n_features, n_outputs, rngs=rngs)
            opt = nnx.Optimizer(model, _ADAMW, wrt=nnx.Param)
            # Per-model hyperparameters live in the optimizer state, so a grid is one more axis.
            opt.opt_state.hyperparams["learning_rate"][...] = lr
            opt.opt_state.hyperparams["weight_decay"][...] = wd
            return model, opt

        models, opts = one(key_data, lr, wd)
        return nnx.split(models), nnx.split(opts)

    if mesh is None:
        device_data = {name: jnp.asarray(v) for name, v in {**shared, **per_model}.items()}
        (gm, ms), (go, os) = create(jnp.asarray(init_keys), jnp.asarray(lrs), jnp.asarray(wds))
        carry = _initial_carry(ms, n_models, cfg.max_epochs)
        carry["opt"] = os
    else:
        device_data = {name: _replicated(v, mesh) for name, v in shared.items()}
        device_data.update({name: _on_slots(v[slot_model], mesh, axis) for name, v in per_model.items()})
        gm, go, carry = _create_sharded(
            create, cfg.max_epochs, mesh, axis,
            *(_on_slots(v[slot_model], mesh, axis) for v in (init_keys, lrs, wds)),
            _on_slots(np.arange(n_slots) >= n_models, mesh, axis),
        )
    del shared
    spec = _ProgramSpec(cfg.batch_size, cfg.val_batch_size, cfg.loss, cfg.max_epochs, cfg.patience, cfg.min_delta)
    program, counter = _program(gm, go, spec, n_train_max, n_val_max, vectorize, mesh, axis)
    e = cfg.epochs_per_call

    bar = tqdm(total=cfg.max_epochs, desc="epochs", unit="epoch", disable=not progress)
    if vectorize:
        manager = None if checkpoint_dir is None else _checkpoint.open_manager(checkpoint_dir)
        meta = _checkpoint.run_signature(keys, carry, cfg, points)
        epoch = 0
        if manager is not None:
            restored = _checkpoint.restore_latest(manager, carry, meta)
            if restored is not None:
                epoch, carry = restored
        bar.update(epoch)
        try:
            while epoch < cfg.max_epochs and not bool(np.all(to_host(carry["stopped"]))):
                carry = program(carry, device_data, jnp.arange(epoch, epoch + e, dtype=jnp.int32))
                epoch += e
                bar.update(min(e, cfg.max_epochs - bar.n))
                stopped = to_host(carry["stopped"])
                _raise_nonfinite(to_host(carry["nan_code"]), to_host(carry["nan_epoch"]), keys)
                done = epoch >= cfg.max_epochs or bool(np.all(stopped))
                if manager is not None and (epoch % cfg.checkpoint_every == 0 or done):
                    _checkpoint.save(manager, epoch, carry, meta)
                if callback is not None:
                    row = np.minimum(epoch - 1, cfg.max_epochs - 1)
                    callback(epoch, {
                        "val_loss": to_host(carry["history"])[:n_models, row, 1],
                        "stopped": stopped[:n_models],
                    })
        finally:
            bar.close()
            if manager is not None:
                manager.close()
    else:
        results = []
        bar.reset(total=n_models)
        bar.set_description("models")
        for m in range(n_models):
            c = jax.tree.map(lambda a: a[m], carry)
            d = {name: (v if name in ("X", "Y") else v[m]) for name, v in device_data.items()}
            epoch = 0
            while epoch < cfg.max_epochs and not bool(c["stopped"]):
                c = program(c, d, jnp.arange(epoch, epoch + e, dtype=jnp.int32))
                epoch += e
                _raise_nonfinite(np.asarray(c["nan_code"])[None], np.asarray(c["nan_epoch"])[None], keys[m : m + 1])
            results.append(c)
            bar.update(1)
        bar.close()
        carry = jax.tree.map(lambda *a: jnp.stack(a), *results)
    if mesh is not None:
        # The result lives on the default device, as an unsharded run's: padding dropped.
        carry = {name: carry[name] for name in ("best", "model", "best_val", "best_epoch", "stop_epoch", "history")}
        carry = jax.tree.map(lambda a: _to_local(a, n_models), carry)

    return EncoderFit(
        keys=keys,
        folds=folds,
        grid=points,
        pcas=[pcas_by_target[t] for t in target_of],
        graphdef=gm,
        best_state=carry["best"],
        best_val=np.asarray(carry["best_val"]),
        best_epoch=np.asarray(carry["best_epoch"]),
        stop_epoch=np.asarray(carry["stop_epoch"]),
        history=np.asarray(carry["history"]),
        final_state=carry["model"],
        n_traces=counter[0],
        config=dataclasses.replace(cfg),
    )


# ---------------------------------------------------------------------------------------------
# Placement on a mesh: every array is built from the shards this process addresses
# ---------------------------------------------------------------------------------------------


def _on_slots(a: np.ndarray, mesh: Mesh, axis: str) -> jax.Array:
    """Host array of shape (n_slots, ...) split along its leading (model) axis over ``axis``."""
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, P(axis)), lambda idx: a[idx])


def _replicated(a: np.ndarray, mesh: Mesh) -> jax.Array:
    """Host array copied to every device of the mesh."""
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, P()), lambda idx: a[idx])


def _create_sharded(create, max_epochs: int, mesh: Mesh, axis: str, key_data, lr, wd, padding):
    """Models, optimizers and the initial carry, each device creating its own slots' models.

    Returns the model and optimizer graph definitions and the carry, sharded ``P(axis)``.
    """
    graphs = []

    def local(key_data, lr, wd, padding):
        (gm, ms), (go, os) = create(key_data, lr, wd)
        graphs.append((gm, go))  # trace time: the structure is the same on every device
        carry = _initial_carry(ms, key_data.shape[0], max_epochs)
        carry["opt"] = os
        carry["stopped"] = padding
        return carry

    spec = P(axis)
    carry = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))(
        key_data, lr, wd, padding
    )
    gm, go = graphs[-1]
    return gm, go, carry


def _to_local(a, n: int):
    """The first ``n`` models of a stacked leaf, on the default device (PRNG keys kept typed)."""
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(to_host(jax.random.key_data(a))[:n]), impl=jax.random.key_impl(a))
    return jnp.asarray(to_host(a)[:n])
