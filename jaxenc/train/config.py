"""Settings of fold-parallel training, the names of the stacked models and the grid of points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jaxenc import precision as matmul
from jaxenc.decomp.pca import METHODS as PCA_METHODS
from jaxenc.errors import ConfigError, NonFiniteError

__all__ = ["TrainConfig", "ModelKey", "NonFiniteError", "resolve_grid"]

LOSSES = ("mae", "mse")
# Compute dtypes of the networks: parameters and AdamW state stay float32 with either.
COMPUTE_DTYPES = ("float32", "bfloat16")
# What a grid point may set: the AdamW hyperparameters, and "init", a restart index (a
# non-negative integer; 0 or absent: the run's own initialisation, dropout and shuffles).
GRID_KEYS = ("learning_rate", "weight_decay", "init")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`jaxenc.train.fit_encoders`."""

    # Story-grouped folds over the training stories (the paper uses 5).
    n_folds: int = 5
    # Seed of the fold split, the initialisation, dropout and the minibatch shuffles.
    seed: int = 0
    # PCA components of the responses the networks predict; None predicts voxels directly.
    n_components: int | None = 512
    # Rows per minibatch.
    batch_size: int = 128
    # Most rows per chunk of the validation pass (memory only; the loss does not depend on it).
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
    # Epochs per call of the compiled program; progress, NaN checks, callbacks and the
    # re-packing of the models still training into a smaller stack run between calls.
    epochs_per_call: int = 5
    # Epochs between orbax checkpoints, a multiple of epochs_per_call.
    checkpoint_every: int = 10
    # Solver of the per-fold PCAs (see jaxenc.decomp.pca_fit); "randomized" for full-size data.
    pca_method: str = "auto"
    # Power iterations of the randomized PCA solver.
    pca_n_iter: int = 7
    # Matrix-product precision of the training and prediction programs (jaxenc.precision:
    # "highest", "high"/"tf32", "default", "bf16"); "highest" reproduces a CPU's float32.
    precision: str = matmul.DEFAULTS["training"]
    # Precision of the per-fold PCAs (jaxenc.precision); "highest" matches scikit-learn.
    pca_precision: str = matmul.DEFAULTS["pca"]
    # "float32", or "bfloat16": mixed precision, the networks' products, activations and
    # gradients in bfloat16 (half the bytes of activations, the bfloat16 tensor-core rate),
    # parameters, AdamW moments, losses and BatchNorm statistics in float32. On the planted
    # twin within 0.015 of float32's test r (margin 0.05, tests/train/test_planted.py); no faster
    # on CPUs.
    compute_dtype: str = "float32"

    def validate(self) -> None:
        """Raise :class:`ConfigError` on settings the trainer cannot use."""
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, found {self.loss!r}")
        for name in ("batch_size", "val_batch_size", "max_epochs", "patience", "epochs_per_call", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, found {getattr(self, name)}")
        if self.checkpoint_every % self.epochs_per_call:
            raise ConfigError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                f"epochs_per_call ({self.epochs_per_call})"
            )
        matmul.check(self.precision, "precision")
        matmul.check(self.pca_precision, "pca_precision")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be one of {list(COMPUTE_DTYPES)}, found {self.compute_dtype!r}")
        if self.pca_method not in PCA_METHODS:
            raise ConfigError(f"pca_method must be one of {PCA_METHODS}, found {self.pca_method!r}")
        if self.pca_n_iter < 0:
            raise ConfigError(f"pca_n_iter must be at least 0, found {self.pca_n_iter}")
        if self.n_components is not None and self.n_components < 1:
            raise ConfigError(f"n_components must be positive or None, found {self.n_components}")


@dataclass(frozen=True)
class ModelKey:
    """Which model of the stack: a subject, a fold index and a hyperparameter grid index."""

    subject: str
    fold: int
    grid: int


def resolve_grid(grid: Sequence[Mapping[str, float]] | None, cfg: TrainConfig) -> tuple[dict, ...]:
    """The hyperparameter points of a run, each complete (``learning_rate``, ``weight_decay``).

    Parameters
    ----------
    grid : sequence of mapping, optional
        Points overriding ``learning_rate`` and/or ``weight_decay`` of ``cfg``, optionally with
        ``init``, a restart index: points that differ only there train the same hyperparameters
        from other initialisations, dropout masks and shuffles
        (:func:`jaxenc.train.stack.model_key_data`), and each fold uses its best on validation
        (:meth:`jaxenc.train.EncoderFit.chosen_models`). None is the single point of ``cfg``.
    cfg : TrainConfig

    Returns
    -------
    tuple of dict
    """
    if grid is None:
        return ({"learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay},)
    points = []
    for point in grid:
        unknown = set(point) - set(GRID_KEYS)
        if unknown:
            raise ConfigError(f"grid keys must be among {GRID_KEYS}, found {sorted(unknown)}")
        init = point.get("init", 0)
        if isinstance(init, bool) or not isinstance(init, int) or init < 0:
            raise ConfigError(f"grid init must be a non-negative integer (a restart index), found {init!r}")
        points.append({"learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay, **point})
    if not points:
        raise ConfigError("the hyperparameter grid is empty")
    return tuple(points)
