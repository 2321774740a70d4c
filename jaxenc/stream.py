"""Full-size subjects in bounded host memory: responses streamed story by story, scores by voxel chunk.

A full-size subject holds about 27,000 training TRs by 90,000 voxels, 9.7 GB in float32. It
fits in host memory once but not twice, so nothing here ever holds a second full copy:

- :func:`stack_story_rows` reads the stories one at a time into one preallocated array (on the
  host), or, given a mesh, builds a sharded :class:`jax.Array` shard by shard, each shard
  reading only the rows (or voxel columns) it holds of each story;
- :class:`VoxelShards` is such a voxel-sharded array with its real voxel count, the form in
  which :class:`jaxenc.models.ShardedRidgeCV` takes the responses without copying them;
- :func:`story_views` gives per-story row views of that array, the form
  :class:`jaxenc.train.SubjectData` and the block-wise :class:`jaxenc.decomp.PCA` take
  without copying;
- :func:`pca_chunk_predictor` / :func:`fit_chunk_predictor` make voxel predictions for a chunk
  of voxels only (the inverse PCA projection of the chunk's columns), which
  :func:`jaxenc.metrics.score` takes to score a full-size subject chunk by chunk.

A reader is any ``read_story(story) -> array-like of shape (n_trs, n_voxels)``; the array-like
is sliced as ``block[rows, columns]``, so an ``h5py.Dataset``, a ``numpy.memmap`` or a
tensorstore array reads only the slice a shard needs, while a reader returning a numpy array
(e.g. ``functools.partial(LeBelDataset.responses, dataset, subject)``) reads the whole story.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxenc.distributed import padded_size, to_host
from jaxenc.errors import AlignmentError, ConfigError, DataError

__all__ = [
    "VoxelShards",
    "stack_story_rows",
    "story_views",
    "pca_chunk_predictor",
    "fit_chunk_predictor",
]

SHARDINGS = ("rows", "voxels")


def _row_counts(stories: Sequence[str], rows_per_story) -> list[int]:
    if isinstance(rows_per_story, Mapping):
        missing = [s for s in stories if s not in rows_per_story]
        if missing:
            raise ConfigError(f"no row count given for stories {missing}")
        counts = [rows_per_story[s] for s in stories]
    else:
        counts = list(rows_per_story)
        if len(counts) != len(stories):
            raise ConfigError(f"{len(counts)} row counts given for {len(stories)} stories")
    if any(int(n) != n or n < 1 for n in counts):
        raise ConfigError(f"row counts must be positive integers, found {counts}")
    return [int(n) for n in counts]


def _open_story(read_story, story: str, n_rows: int, n_voxels: int, subject):
    """The story's array-like, checked against the expected (rows, voxels) before any read."""
    block = read_story(story)
    shape = tuple(getattr(block, "shape", np.shape(block)))
    if shape != (n_rows, n_voxels):
        raise DataError(f"responses have shape {shape}, expected ({n_rows}, {n_voxels}) "
                        "(TRs of the story, voxels of the subject)", subject=subject, story=story)
    return block


def stack_story_rows(read_story: Callable[[str], object], stories: Sequence[str], rows_per_story,
                     n_voxels: int, *, mesh: Mesh | None = None, axis: str = "data",
                     shard: str = "rows", dtype=np.float32, subject: str | None = None):
    """Stack the stories' responses along rows, reading one story at a time.

    Parameters
    ----------
    read_story : callable
        ``read_story(story)`` returns an array-like of shape (rows_per_story[story], n_voxels)
        supporting ``block[rows, columns]`` (see the module docstring).
    stories : sequence of str
        Stories in stacking order.
    rows_per_story : mapping of str to int, or sequence of int
        Rows (TRs) each story must have, e.g. ``respdict[story] - 20``.
    n_voxels : int
        Voxels every story must have.
    mesh : jax.sharding.Mesh, optional
        Build a sharded jax.Array on this mesh instead of a host array; each process reads
        only the slices its devices hold.
    axis : str
        Mesh axis the rows or voxels are split along (replicated over the other axes).
    shard : {"rows", "voxels"}
        Split the TRs (rows, padded with zero rows to a multiple of the axis size) or the
        voxels (columns, padded with zero columns); as :func:`jaxenc.distributed.shard_rows`
        and :func:`~jaxenc.distributed.shard_columns`.
    dtype : dtype
        Dtype of the result; each story is converted as it is copied in.
    subject : str, optional
        Named in errors.

    Returns
    -------
    Y : ndarray of shape (n_rows, n_voxels), or jax.Array
        ``n_rows = sum(rows_per_story)``. With a mesh: shape (padded n_rows, n_voxels) sharded
        ``P(axis, None)``, or (n_rows, padded n_voxels) sharded ``P(None, axis)``.
    slices : dict of str to slice
        Rows of each story in ``Y``.

    Raises
    ------
    DataError
        A story whose array does not have the expected (rows, voxels), naming it.
    ConfigError
        Row counts that do not match the stories, or an unknown ``shard``.
    """
    stories = list(stories)
    if not stories:
        raise ConfigError("no stories to stack", subject=subject)
    if len(set(stories)) != len(stories):
        raise ConfigError(f"duplicate stories in {stories}", subject=subject)
    if shard not in SHARDINGS:
        raise ConfigError(f"shard must be one of {SHARDINGS}, found {shard!r}")
    counts = _row_counts(stories, rows_per_story)
    starts = np.cumsum([0] + counts)
    slices = {s: slice(int(starts[i]), int(starts[i + 1])) for i, s in enumerate(stories)}
    n_rows = int(starts[-1])
    if mesh is None:
        out = np.empty((n_rows, n_voxels), dtype)
        for story, n in zip(stories, counts, strict=True):
            block = _open_story(read_story, story, n, n_voxels, subject)
            out[slices[story]] = np.asarray(block[:, :])
        return out, slices

    if shard == "rows":
        shape, spec = (padded_size(n_rows, mesh, axis), n_voxels), P(axis, None)
    else:
        shape, spec = (n_rows, padded_size(n_voxels, mesh, axis)), P(None, axis)

    def read(idx):
        r0, r1 = idx[0].start or 0, shape[0] if idx[0].stop is None else idx[0].stop
        c0, c1 = idx[1].start or 0, shape[1] if idx[1].stop is None else idx[1].stop
        buf = np.zeros((r1 - r0, c1 - c0), dtype)
        cols = slice(min(c0, n_voxels), min(c1, n_voxels))
        for story, n in zip(stories, counts, strict=True):
            s0, s1 = slices[story].start, slices[story].stop
            lo, hi = max(s0, r0), min(s1, r1)
            if lo >= hi or cols.start >= cols.stop:
                continue
            block = _open_story(read_story, story, n, n_voxels, subject)
            buf[lo - r0 : hi - r0, : cols.stop - cols.start] = np.asarray(block[lo - s0 : hi - s0, cols])
        return buf

    # One shard at a time, each on its device before the next is read: at most one shard's
    # rows are on the host at once (make_array_from_callback would read every local shard
    # before placing any: a full host copy on accelerators).
    sharding = NamedSharding(mesh, spec)
    shards = [jax.device_put(read(index), device).block_until_ready()
              for device, index in sharding.addressable_devices_indices_map(shape).items()]
    return jax.make_array_from_single_device_arrays(shape, sharding, shards), slices


@dataclass(frozen=True)
class VoxelShards:
    """Responses whose voxels are split along a mesh axis, padded past the real voxels.

    What :func:`stack_story_rows` builds with ``shard="voxels"``, with the count of real voxels
    (the zero columns past it are padding); shaped like the responses it holds, so it stands
    where a host array of responses would (e.g. :attr:`jaxenc.pipeline.SubjectArrays.Y`).

    Attributes
    ----------
    array : jax.Array of shape (n_rows, n_voxels_padded)
        Sharded ``P(None, axis)``; ``n_voxels_padded`` a multiple of the axis size.
    n_voxels : int
        Real voxels, columns ``:n_voxels`` of ``array``.
    """

    array: jax.Array
    n_voxels: int

    @property
    def shape(self) -> tuple[int, int]:
        """(n_rows, n_voxels): the shape of the responses held."""
        return (self.array.shape[0], self.n_voxels)

    @property
    def ndim(self) -> int:
        return 2

    def to_host(self) -> np.ndarray:
        """The responses as one host array (n_rows, n_voxels), gathered from every process."""
        return to_host(self.array)[:, :self.n_voxels]


def story_views(Y: np.ndarray, slices: Mapping[str, slice]) -> dict[str, np.ndarray]:
    """Per-story row views of a stacked host array (no copy).

    Parameters
    ----------
    Y : ndarray of shape (n_rows, n_voxels)
        From :func:`stack_story_rows`.
    slices : mapping of str to slice

    Returns
    -------
    dict of str to ndarray of shape (n_trs, n_voxels)
        Views sharing ``Y``'s memory, e.g. the ``responses`` of a
        :class:`jaxenc.train.SubjectData`.
    """
    return {story: Y[rows] for story, rows in slices.items()}


def _pca_parts(pca):
    """(mean (n_voxels,), components (k, n_voxels), explained variance, whiten) of a PCA."""
    state = getattr(pca, "state_", pca)
    if state is None:
        raise ConfigError("the PCA is not fitted")
    return state.mean, state.components, state.explained_variance, bool(getattr(pca, "whiten", False))


@jax.jit
def _inverse_columns(z, mean, components, scale):
    # [n, k] * [k] @ [k, width] + [width]
    return jnp.matmul(z * scale, components, precision=jax.lax.Precision.HIGHEST) + mean


def pca_chunk_predictor(pcas: Sequence, scores: Sequence) -> Callable[[int, int], np.ndarray]:
    """Voxel predictions of voxels ``c0:c1`` from PCA scores: the mean of each PCA's inverse.

    Parameters
    ----------
    pcas : sequence of jaxenc.decomp.PCA or PCAState
        One fitted PCA per model (e.g. per fold), over the same voxels.
    scores : sequence of array of shape (n_trs, n_components)
        Each model's predicted scores in its PCA's space.

    Returns
    -------
    callable
        ``predict(c0, c1)`` -> ndarray of shape (n_trs, c1 - c0): the average over models of
        ``scores @ components[:, c0:c1] + mean[c0:c1]`` (whitened PCAs rescaled), computed
        from those columns only.
    """
    if len(pcas) != len(scores) or not pcas:
        raise ConfigError(f"{len(pcas)} PCAs for {len(scores)} score arrays; need one each, at least one")
    parts = [_pca_parts(p) for p in pcas]
    z = [jnp.asarray(s, jnp.float32) for s in scores]
    for (_, comps, _, _), zi in zip(parts, z, strict=True):
        if zi.ndim != 2 or zi.shape[1] != comps.shape[0]:
            raise AlignmentError(f"scores of shape {zi.shape} for a PCA of {comps.shape[0]} components")

    def predict(c0: int, c1: int) -> np.ndarray:
        total = 0.0
        for (mean, comps, var, whiten), zi in zip(parts, z, strict=True):
            scale = jnp.sqrt(var) if whiten else jnp.ones_like(var)
            total = total + _inverse_columns(zi, mean[c0:c1], comps[:, c0:c1], scale)
        return np.asarray(total / len(parts))

    return predict


def fit_chunk_predictor(fit, features: Mapping[str, np.ndarray], subject: str, *,
                        grid: int | None = None) -> Callable[[int, int], np.ndarray]:
    """Chunked voxel predictions of a trained stack: the fold average of :meth:`EncoderFit.predict`.

    Parameters
    ----------
    fit : jaxenc.train.EncoderFit
        Trained with PCA targets (``n_components`` set).
    features : mapping of str to array of shape (n_trs, n_features)
        Per subject, e.g. the delayed test-story features.
    subject : str
    grid : int, optional
        Grid index; the subject's best on validation by default.

    Returns
    -------
    callable
        ``predict(c0, c1)`` as :func:`pca_chunk_predictor`; equal to
        ``fit.predict(features)[subject][:, c0:c1]``.
    """
    chosen = fit.chosen_models(subject, grid)
    if any(fit.pcas[i] is None for i in chosen):
        raise ConfigError("the fit predicts voxels directly (no PCA): use fit.predict", subject=subject)
    n = np.shape(features[subject])[0]
    z = fit.predict_components(features)
    return pca_chunk_predictor([fit.pcas[i] for i in chosen], [z[i, :n] for i in chosen])
