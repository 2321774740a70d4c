"""How much of a multimodal encoder's prediction is an audio x semantic interaction, per voxel.

"Mind the Gap" finds that an MLP on audio and semantic features beats DIMLP, which is
nonlinear within each modality but additive across them; the gain says *that* cross-modal
interactions help, not *where* the network uses them. This module asks the fitted network
directly, with a functional-ANOVA (Friedman-Popescu H statistic) decomposition of its
prediction over a set of rows (the test story's): with ``f(a, s)`` the network's output for
audio block ``a`` and semantic block ``s``,

- ``PD_a(a_i) = mean_j f(a_i, s_j)``: the audio partial dependence, the semantic rows averaged
  out;
- ``PD_s(s_i) = mean_j f(a_j, s_i)``: the semantic partial dependence;
- ``E = mean_ij f(a_i, s_j)``;
- ``I_i = f(a_i, s_i) - PD_a(a_i) - PD_s(s_i) + E``: what is left when both main effects are
  removed, zero for every row when ``f`` is additive (``g(a) + h(s)``, e.g. DIMLP).

The **interaction share** of an output is ``Var_i(I_i) / Var_i(f(a_i, s_i))`` over the rows
(Friedman's H squared): 0 for an additive function, 1 for a pure product of centred parts.
The main-effect shares ``Var(PD_a) / Var(f)`` and ``Var(PD_s) / Var(f)`` come with it; the
three sum to 1 only when the parts are uncorrelated over the rows.

The partial dependences need ``f`` on all ``n_rows**2`` (audio row, semantic row) pairs,
evaluated ``chunk_size`` audio rows at a time, each chunk one ``jax.vmap`` over its audio rows
of the batched model. Every part is a linear function of ``f``, so for a model of principal
components the decomposition is done on the components and projected to voxels afterwards
(``project``), at the cost of the components rather than of the voxels.

:func:`interaction_shares` takes any function of the two blocks; :func:`fit_interaction_shares`
runs it for every fold model of a subject in a :class:`jaxenc.train.EncoderFit`, projecting
through each fold's PCA.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxenc.errors import AlignmentError, ConfigError

__all__ = ["InteractionShares", "interaction_shares", "fit_interaction_shares"]

# Bytes one chunk of audio rows may hold in its pairs' inputs and outputs,
# [chunk, n_rows, n_audio + n_semantic + n_outputs] float32, when chunk_size is not given (the
# model's hidden activations come on top).
_CHUNK_BYTES = 2**27


@dataclasses.dataclass(frozen=True)
class InteractionShares:
    """Shares of a prediction's variance over rows, per output (voxel or component).

    Arrays have shape ``(n_outputs,)``, or ``(n_models, n_outputs)`` from
    :func:`fit_interaction_shares` (one row per fold model). An output whose prediction is
    constant over the rows has NaN shares.

    Attributes
    ----------
    interaction : ndarray
        ``Var(I) / Var(f)``: the audio x semantic interaction share, in [0, 1] up to rounding
        when the parts are uncorrelated.
    audio, semantic : ndarray
        ``Var(PD_a) / Var(f)`` and ``Var(PD_s) / Var(f)``: the main-effect shares.
    variance : ndarray
        ``Var(f)``: the prediction's variance over the rows (population, ddof 0), in the
        outputs' units squared.
    """

    interaction: np.ndarray
    audio: np.ndarray
    semantic: np.ndarray
    variance: np.ndarray

    def mean_over_models(self) -> InteractionShares:
        """The shares averaged over the leading axis of fold models (NaN outputs skipped)."""
        if np.ndim(self.interaction) != 2:
            raise ConfigError("mean_over_models needs shares of shape (n_models, n_outputs)")
        with np.errstate(invalid="ignore"):
            return InteractionShares(*(_nanmean(getattr(self, f.name)) for f in dataclasses.fields(self)))


def _nanmean(x: np.ndarray) -> np.ndarray:
    # All-NaN columns (outputs constant in every model) stay NaN without numpy's warning.
    finite = np.isfinite(x)
    total = np.where(finite, x, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@functools.partial(jax.jit, static_argnums=0)
def _diagonal(apply, params, audio, semantic):
    # [n_rows, n_outputs]: f(a_i, s_i), the prediction itself.
    return apply(params, audio, semantic)


@functools.partial(jax.jit, static_argnums=0)
def _chunk_sums(apply, params, audio_chunk, valid, semantic):
    """For the chunk's audio rows i: mean_j f(a_i, s_j), and sum_i f(a_i, s_j) over valid i."""
    n_rows = semantic.shape[0]

    def one_audio_row(a_i):
        # Audio row i paired with every semantic row: [n_rows, n_outputs].
        return apply(params, jnp.broadcast_to(a_i, (n_rows, a_i.shape[0])), semantic)

    grid = jax.vmap(one_audio_row)(audio_chunk)  # [chunk, n_rows, n_outputs]
    return grid.mean(axis=1), jnp.einsum("c,cjo->jo", valid, grid)


def _decompose(apply, params, audio, semantic, chunk_size, project) -> InteractionShares:
    n_rows = audio.shape[0]
    f = np.asarray(_diagonal(apply, params, audio, semantic), np.float64)
    if f.shape[:1] != (n_rows,) or f.ndim != 2:
        raise AlignmentError(f"the model returned shape {f.shape} for {n_rows} rows; expected "
                             f"({n_rows}, n_outputs)")
    if chunk_size is None:
        width = audio.shape[1] + semantic.shape[1] + f.shape[1]
        chunk_size = max(1, min(n_rows, _CHUNK_BYTES // (4 * n_rows * width)))
    pd_audio = np.empty_like(f)
    semantic_sum = np.zeros_like(f)
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        # The last chunk is padded to chunk_size (one compiled shape), its padding weighted 0.
        rows = np.minimum(np.arange(start, start + chunk_size), n_rows - 1)
        valid = (np.arange(start, start + chunk_size) < n_rows).astype(np.float32)
        mean_j, sum_i = _chunk_sums(apply, params, audio[rows], jnp.asarray(valid), semantic)
        pd_audio[start:stop] = np.asarray(mean_j, np.float64)[:stop - start]
        semantic_sum += np.asarray(sum_i, np.float64)
    pd_semantic = semantic_sum / n_rows
    grand = pd_audio.mean(axis=0)
    parts = {"f": f, "audio": pd_audio - grand, "semantic": pd_semantic - grand,
             "interaction": f - pd_audio - pd_semantic + grand}
    if project is not None:
        # The affine projection's offset is a constant over rows: only its linear part moves
        # the variances, and it maps each part on its own.
        offset = np.asarray(project(np.zeros((1, f.shape[1]), np.float32)), np.float64)
        parts = {k: np.asarray(project(v.astype(np.float32)), np.float64) - offset for k, v in parts.items()}
    variance = parts["f"].var(axis=0)
    safe = np.where(variance > 0, variance, 1.0)

    def share(part):
        return np.where(variance > 0, parts[part].var(axis=0) / safe, np.nan)

    return InteractionShares(share("interaction"), share("audio"), share("semantic"), variance)


def _check_blocks(audio, semantic) -> tuple[np.ndarray, np.ndarray]:
    audio = np.asarray(audio, np.float32)
    semantic = np.asarray(semantic, np.float32)
    if audio.ndim != 2 or semantic.ndim != 2 or audio.shape[0] != semantic.shape[0]:
        raise AlignmentError(f"audio {audio.shape} and semantic {semantic.shape} must be (n_rows, n_audio) "
                             "and (n_rows, n_semantic) with the same rows")
    if audio.shape[0] < 2:
        raise ConfigError(f"the decomposition needs at least 2 rows, found {audio.shape[0]}")
    if not (np.isfinite(audio).all() and np.isfinite(semantic).all()):
        raise ConfigError("audio or semantic features hold NaN or inf")
    return audio, semantic


def _check_chunk(chunk_size):
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")


@dataclasses.dataclass(frozen=True)
class _Plain:
    """``f(audio, semantic)`` as the decomposition calls it, hashed by the function's identity."""

    f: Callable

    def __call__(self, params, audio, semantic):
        return self.f(audio, semantic)


def interaction_shares(f: Callable, audio, semantic, *, chunk_size: int | None = None,
                       project: Callable | None = None) -> InteractionShares:
    """Functional-ANOVA shares of ``f``'s variance over rows: audio, semantic, interaction.

    Parameters
    ----------
    f : callable
        ``f(audio, semantic)`` maps arrays of shape (m, n_audio) and (m, n_semantic), row ``k``
        of one paired with row ``k`` of the other, to predictions of shape (m, n_outputs).
        It must be traceable by JAX (it is jit-compiled and vmapped); for a Flax module in
        evaluation mode, e.g. ``lambda a, s: model(jnp.concatenate([a, s], 1))``.
    audio : array of shape (n_rows, n_audio)
        The audio block of each row (e.g. the test story's delayed audio columns).
    semantic : array of shape (n_rows, n_semantic)
        The semantic block of the same rows.
    chunk_size : int, optional
        Audio rows whose ``n_rows`` pairings are evaluated at once; memory
        ``4 * chunk_size * n_rows * (n_audio + n_semantic + n_outputs)`` bytes of inputs and
        outputs plus the model's activations. By default the largest within 128 MiB (e.g. 5
        audio rows of 291 test rows with 4 delays of 1280 audio and 4096 semantic features and
        512 components). The result does not depend on it beyond float rounding.
    project : callable, optional
        An affine map from outputs to voxels, e.g. a PCA's ``inverse_transform`` for a model
        of components: the parts are computed on the outputs and projected (their offset
        removed), so the shares are per voxel.

    Returns
    -------
    InteractionShares
        Arrays of shape (n_outputs,), or (n_voxels,) with ``project``.

    Raises
    ------
    AlignmentError
        Blocks of different rows, or a model output that is not (n_rows, n_outputs).
    ConfigError
        Fewer than 2 rows, NaN/inf features, or a bad ``chunk_size``.

    Examples
    --------
    An additive function has no interaction; a product of centred inputs is all interaction:

    >>> a = np.array([[-1.0], [1.0]] * 2); s = np.array([[-1.0], [-1.0], [1.0], [1.0]])
    >>> interaction_shares(lambda a, s: a + s ** 3, a, s).interaction
    array([0.])
    >>> interaction_shares(lambda a, s: a * s, a, s).interaction
    array([1.])
    """
    audio, semantic = _check_blocks(audio, semantic)
    _check_chunk(chunk_size)
    return _decompose(_Plain(f), None, jnp.asarray(audio), jnp.asarray(semantic), chunk_size, project)


def _as_columns(ranges, what: str) -> np.ndarray:
    """Column indices of ``(start, stop)`` ranges (the form of :func:`jaxenc.models.delayed_columns`)."""
    if len(ranges) == 2 and all(isinstance(c, (int, np.integer)) for c in ranges):
        ranges = [ranges]
    columns = []
    for start, stop in ranges:
        if not 0 <= start < stop:
            raise ConfigError(f"{what} columns must be ranges [start, stop), found ({start}, {stop})")
        columns.extend(range(int(start), int(stop)))
    return np.asarray(columns, np.int64)


@dataclasses.dataclass(frozen=True)
class _Network:
    """A fold model of a stack as ``apply(state, audio, semantic)``: the blocks put back into
    their columns of the design, the module rebuilt from its state, evaluation mode."""

    graphdef: object
    audio_columns: tuple
    semantic_columns: tuple

    def __call__(self, state, audio, semantic):
        n_features = len(self.audio_columns) + len(self.semantic_columns)
        x = jnp.zeros((audio.shape[0], n_features), audio.dtype)
        x = x.at[:, np.asarray(self.audio_columns)].set(audio)
        x = x.at[:, np.asarray(self.semantic_columns)].set(semantic)
        return nnx.merge(self.graphdef, state)(x, train=False)


def _index(i, leaf):
    return leaf[i]


def fit_interaction_shares(fit, subject: str, X, audio: Sequence, semantic: Sequence, *,
                           grid: int | None = None, chunk_size: int | None = None) -> InteractionShares:
    """Interaction shares per voxel of every fold model of a subject in a trained stack.

    Each fold model is decomposed over the rows of ``X`` by :func:`interaction_shares`, its
    components projected to voxels through its own fold's PCA (when it has one).

    Parameters
    ----------
    fit : jaxenc.train.EncoderFit
        The trained stack (e.g. of :func:`jaxenc.train.fit_encoders` with an MLP).
    subject : str
        Whose fold models to decompose.
    X : array of shape (n_rows, n_features)
        The design as the models read it (e.g. the test story's delayed features).
    audio, semantic : sequence of (int, int)
        Column ranges of each modality in ``X`` (one range, or one per delay block as
        :func:`jaxenc.models.delayed_columns` gives); together they must cover every column
        exactly once.
    grid : int, optional
        Grid index of the models; by default the subject's best (:meth:`EncoderFit.chosen_models`).
    chunk_size : int, optional
        As in :func:`interaction_shares`.

    Returns
    -------
    InteractionShares
        Arrays of shape (n_folds, n_voxels), one row per fold model in the stack's order;
        :meth:`InteractionShares.mean_over_models` averages them.

    Raises
    ------
    ConfigError
        Columns that overlap or miss some of ``X``, an unknown subject, or no model at
        ``grid``.
    AlignmentError
        ``X`` not 2-D.
    """
    X = np.asarray(X, np.float32)
    if X.ndim != 2:
        raise AlignmentError(f"X has shape {X.shape}; expected (n_rows, n_features)", subject=subject)
    a_cols, s_cols = _as_columns(audio, "audio"), _as_columns(semantic, "semantic")
    both = np.concatenate([a_cols, s_cols])
    if np.unique(both).size != both.size or both.size != X.shape[1] or both.max() >= X.shape[1]:
        raise ConfigError(f"the audio ({a_cols.size}) and semantic ({s_cols.size}) columns must cover the "
                          f"{X.shape[1]} columns of X once each", subject=subject)
    _check_chunk(chunk_size)
    models = fit.chosen_models(subject, grid)
    apply = _Network(fit.graphdef, tuple(a_cols.tolist()), tuple(s_cols.tolist()))
    a_block, s_block = _check_blocks(X[:, a_cols], X[:, s_cols])
    per_model = []
    for i in models:
        state = jax.tree.map(functools.partial(_index, i), fit.best_state)
        pca = fit.pcas[i]
        per_model.append(_decompose(apply, state, jnp.asarray(a_block), jnp.asarray(s_block), chunk_size,
                                    None if pca is None else pca.inverse_transform))
    return InteractionShares(*(np.stack([getattr(r, f.name) for r in per_model])
                               for f in dataclasses.fields(InteractionShares)))
