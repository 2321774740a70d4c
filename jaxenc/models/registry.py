"""Encoders by name: the one list of the models a config, the job runner and the analyses name.

As himalaya keys its solvers by name, jaxenc keys its encoders: :data:`ENCODERS` maps each name
to what builds it, and :func:`encoder` turns a name as written in a config (``"mlp"``,
``"deepmlp-3"``) into an :class:`EncoderSpec`, parsing it once. Two families:

- ``"ridge"``: closed form, fitted subject by subject (:class:`~jaxenc.models.RidgeCV`, or
  :class:`~jaxenc.models.BandedRidgeCV` with a penalty per modality), with the settings of
  :class:`RidgeOptions`;
- the networks, trained by :func:`jaxenc.train.fit_encoders` from a
  ``make_model(n_features, n_outputs, rngs=...)`` factory that :meth:`EncoderSpec.make_model`
  builds with the settings of :class:`NetworkOptions`.

The option dataclasses take their defaults from the estimators' and modules' own signatures,
so each default is stated once, where the model is defined.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc import precision as matmul
from jaxenc.errors import ConfigError
from jaxenc.models.nonlinear import DIMLP, MLP, DeepMLP, DelayGRU, DelayTransformer, MLLinear
from jaxenc.models.ridge import RidgeCV
from jaxenc.models.ridge_banded import BandedRidgeCV
from jaxenc.models.ridge_sharded import ShardedBandedRidgeCV, ShardedRidgeCV
from jaxenc.models.ridge_solvers import resolve_solver_dtype

__all__ = ["ENCODERS", "ACTIVATIONS", "EncoderSpec", "NetworkOptions", "RidgeOptions", "encoder"]

# Nonlinearities of the networks' hidden layers, by the name a config gives them.
ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}
# The family of names "<prefix>N" (N hidden layers), e.g. "deepmlp-3".
_DEEP_PREFIX = "deepmlp-"


def _default(cls, name: str):
    """The default of parameter ``name`` of ``cls``'s constructor."""
    return inspect.signature(cls.__init__).parameters[name].default


def _activation_name(function) -> str:
    return next(name for name, f in ACTIVATIONS.items() if f is function)


def _log10_grid(alphas) -> tuple[float, float, int]:
    alphas = np.asarray(alphas, np.float64)
    return float(np.log10(alphas[0])), float(np.log10(alphas[-1])), int(alphas.size)


@dataclass(frozen=True)
class NetworkOptions:
    """How the networks are built (the experiment config's ``[networks]``)."""

    # Hidden units of MLLinear, MLP, DIMLP (per modality), DeepMLP and the GRU; the width of the
    # transformer's tokens.
    hidden: int = _default(MLP, "hidden")
    # Dropout after each hidden layer (the paper: 0.1-0.3).
    dropout: float = _default(MLP, "dropout")
    # Nonlinearity of the MLP, DIMLP and DeepMLP hidden layers, a key of ACTIVATIONS (the
    # paper's tanh).
    activation: str = _activation_name(_default(MLP, "activation"))
    # BatchNorm before the activation of the MLP, DIMLP and DeepMLP (the paper's).
    batch_norm: bool = _default(MLP, "batch_norm")

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot be used."""
        if not self.hidden >= 1:
            raise ConfigError(f"hidden must be positive, got {self.hidden!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")

    def layer(self) -> dict:
        """Keyword arguments of a hidden layer of the MLP family."""
        return {"dropout": self.dropout, "batch_norm": self.batch_norm,
                "activation": ACTIVATIONS[self.activation]}


@dataclass(frozen=True)
class RidgeOptions:
    """How ridge is fitted (the experiment config's ``[ridge]``)."""

    # Penalties searched: 10**linspace(low, high, n) (RidgeCV's default grid).
    log10_alphas: tuple[float, float, int] = _log10_grid(_default(RidgeCV, "alphas"))
    # Cross-validation folds over training stories.
    folds: int = _default(RidgeCV, "cv")
    # Several modalities (audio+semantic): false fits one penalty per voxel on the concatenated
    # features (the paper's linear model); true fits banded ridge, a penalty per modality and
    # voxel.
    banded: bool = False
    # Band-weight candidates of the banded model (equal weights, each band alone, then random
    # points of the simplex); with two bands the simplex is one segment, which 8 points cover,
    # and each candidate costs an eigendecomposition per fold.
    band_candidates: int = 8
    # Dtype of the decompositions of the features: "float64" (eigendecompositions), "float32"
    # (SVDs, no float64 op: for TPUs) or "auto" (float64 on CPU and GPU, float32 on TPU).
    solver_dtype: str = _default(RidgeCV, "solver_dtype")
    # Matrix-product precision of the fits and predictions (jaxenc.precision: "highest",
    # "high"/"tf32", "default", "bf16"); "highest" is full float32 on every backend.
    precision: str = matmul.DEFAULTS["ridge"]

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that cannot be used."""
        resolve_solver_dtype(self.solver_dtype)
        low, high, n = self.log10_alphas
        if not low <= high or n < 1:
            raise ConfigError(f"log10_alphas must be [low, high, n], got {list(self.log10_alphas)}")
        if self.folds < 2:
            raise ConfigError(f"folds must be at least 2, got {self.folds}")
        if self.band_candidates < 1:
            raise ConfigError(f"band_candidates must be positive, got {self.band_candidates}")
        matmul.check(self.precision, "precision", stage="ridge")

    def alphas(self) -> np.ndarray:
        """The penalties searched, shape (n,)."""
        low, high, n = self.log10_alphas
        return np.logspace(low, high, int(n))

    def estimator(self, bands: Sequence[tuple[int, int]] = (), *, seed: int = 0, mesh=None, axis: str = "data"):
        """An unfitted :class:`RidgeCV`, or :class:`BandedRidgeCV` over ``bands`` when banded;
        their voxel-sharded forms on a mesh.

        Parameters
        ----------
        bands : sequence of (int, int)
            Column range of each modality; banded ridge needs at least two.
        seed : int
            Seed of the banded model's random band-weight candidates.
        mesh : jax.sharding.Mesh, optional
            Split the voxels along its ``axis``: :class:`~jaxenc.models.ShardedRidgeCV` or
            :class:`~jaxenc.models.ShardedBandedRidgeCV` (their arrays stay sharded and padded).
        axis : str
        """
        common = dict(alphas=self.alphas(), cv=self.folds, solver_dtype=self.solver_dtype, precision=self.precision)
        if self.banded and len(bands) > 1:
            banded = dict(bands=[slice(a, b) for a, b in bands], n_iter=self.band_candidates, random_state=seed,
                          **common)
            return BandedRidgeCV(**banded) if mesh is None else ShardedBandedRidgeCV(mesh, axis=axis, **banded)
        return RidgeCV(**common) if mesh is None else ShardedRidgeCV(mesh, axis, **common)


def _mllinear(spec, options: NetworkOptions, bands, n_delays):
    return functools.partial(MLLinear, hidden=options.hidden)


def _mlp(spec, options: NetworkOptions, bands, n_delays):
    return functools.partial(MLP, hidden=options.hidden, **options.layer())


def _deepmlp(spec, options: NetworkOptions, bands, n_delays):
    return functools.partial(DeepMLP, depth=spec.depth, hidden=options.hidden, **options.layer())


def _gru(spec, options: NetworkOptions, bands, n_delays):
    return functools.partial(DelayGRU, n_delays=n_delays, hidden=options.hidden, dropout=options.dropout)


def _transformer(spec, options: NetworkOptions, bands, n_delays):
    return functools.partial(DelayTransformer, n_delays=n_delays, hidden=options.hidden, dropout=options.dropout)


def _dimlp(spec, options: NetworkOptions, bands, n_delays):
    if len(bands) < 2:
        raise ConfigError("dimlp needs several modalities (the audio+semantic feature set)")

    def dimlp(n_features, n_outputs, *, rngs, **kwargs):
        # kwargs: the trainer's compute dtype (``dtype``), as for the other networks.
        return DIMLP(list(bands), n_outputs, hidden=options.hidden, rngs=rngs, **options.layer(), **kwargs)

    return dimlp


@dataclass(frozen=True)
class _Entry:
    # Builds the make_model factory of a network (None: ridge, fitted in closed form).
    build: Callable | None
    # What the encoder is, for listings and errors.
    description: str
    # Modalities it needs at least (DIMLP gives each its own hidden layer).
    min_modalities: int = 1
    # Reads the design as a sequence of delay blocks, each holding every modality's columns of
    # that delay (see EncoderSpec.prepare).
    delay_sequence: bool = False


# Every encoder by name; "deepmlp-N" stands for the family deepmlp-1, deepmlp-2, ...
ENCODERS: dict[str, _Entry] = {
    "ridge": _Entry(None, "ridge regression, a penalty per voxel (banded: per modality and voxel)"),
    "mllinear": _Entry(_mllinear, "the MLP without activation, BatchNorm or dropout (reduced-rank linear)"),
    "mlp": _Entry(_mlp, "one hidden layer: Linear, BatchNorm, activation, dropout"),
    "dimlp": _Entry(_dimlp, "a hidden layer per modality, fused linearly", min_modalities=2),
    "gru": _Entry(_gru, "a GRU over the delay blocks", delay_sequence=True),
    "transformer": _Entry(_transformer, "a small transformer encoder over the delay blocks (one token each)",
                          delay_sequence=True),
    f"{_DEEP_PREFIX}N": _Entry(_deepmlp, "the MLP with N hidden layers"),
}


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder of :data:`ENCODERS`, parsed from its name by :func:`encoder`.

    Attributes
    ----------
    name : str
        As written in configs and results, e.g. ``"deepmlp-3"``.
    family : str
        Its key in :data:`ENCODERS`, e.g. ``"deepmlp-N"``.
    depth : int or None
        Hidden layers of the MLP family (``"mlp"``: 1, ``"deepmlp-N"``: N); None otherwise.
    """

    name: str
    family: str
    depth: int | None = None

    @property
    def is_ridge(self) -> bool:
        """Fitted in closed form, subject by subject, rather than trained."""
        return ENCODERS[self.family].build is None

    @property
    def min_modalities(self) -> int:
        """Modalities (feature blocks) the encoder needs at least."""
        return ENCODERS[self.family].min_modalities

    def make_model(self, options: NetworkOptions = NetworkOptions(), *,
                   bands: Sequence[tuple[int, int]] = (), n_delays: int = 4) -> Callable:
        """The ``make_model(n_features, n_outputs, rngs=...)`` factory of a network.

        Parameters
        ----------
        options : NetworkOptions
        bands : sequence of (int, int)
            Column range of each modality in the design (DIMLP's branches).
        n_delays : int
            Delay blocks of the design (the GRU's steps, the transformer's tokens).
        """
        build = ENCODERS[self.family].build
        if build is None:
            raise ConfigError(f"{self.name} is fitted in closed form, not built as a network")
        return build(self, options, tuple(bands), n_delays)

    def prepare(self, X: np.ndarray, bands: Sequence[tuple[int, int]], n_delays: int) -> np.ndarray:
        """The design as this encoder reads it (the GRU and the transformer read one delay block
        per step or token).

        A design of several modalities holds each modality's delays side by side
        (``[audio d1..dk | semantic d1..dk]``); the GRU and the transformer need each delay's
        columns together (``[d1: audio, semantic | d2: ...]``). Other encoders read the design
        as it is.

        Parameters
        ----------
        X : ndarray of shape (n_rows, n_features)
        bands : sequence of (int, int)
            Column range of each modality, each ``n_delays`` equal blocks.
        n_delays : int

        Returns
        -------
        ndarray of shape (n_rows, n_features)
        """
        if not ENCODERS[self.family].delay_sequence or len(bands) < 2:
            return X
        blocks = []
        for d in range(n_delays):
            for start, stop in bands:
                width = (stop - start) // n_delays
                blocks.append(X[:, start + d * width:start + (d + 1) * width])
        return np.hstack(blocks)


def encoder(name: str) -> EncoderSpec:
    """Parse an encoder name (``"ridge"``, ``"mlp"``, ``"deepmlp-3"``, ...).

    Parameters
    ----------
    name : str

    Returns
    -------
    EncoderSpec

    Raises
    ------
    ConfigError
        A name that is not in :data:`ENCODERS` (nor ``deepmlp-N`` with N >= 1).
    """
    if name in ENCODERS and not name.endswith("-N"):
        return EncoderSpec(name, name, 1 if name == "mlp" else None)
    depth = name[len(_DEEP_PREFIX):] if isinstance(name, str) and name.startswith(_DEEP_PREFIX) else ""
    if depth.isdigit() and int(depth) >= 1:
        return EncoderSpec(name, f"{_DEEP_PREFIX}N", int(depth))
    raise ConfigError(f"unknown model {name!r}; expected one of {list(ENCODERS)}")
