"""Story-level alignment: the TR grid of a story, trimming, z-scoring and stacking stories.

Defaults follow the Huth-lab convention for ds003020 (see :mod:`jaxenc.conventions`): a story
with ``respdict[story] = n_acquired`` TRs has ``n_acquired - PAD`` simulated TRs whose centres
are ``TR * i - SOUND_START + TR / 2`` seconds from sound onset; features are Lanczos-downsampled
to those centres, rows ``[TRIM_START : -TRIM_END]`` are kept (``n_acquired - 20`` rows, the
row count of the story's response file) and z-scored per story. Every default can be
overridden, e.g. for another dataset or the synthetic twin.

:func:`story_features` runs the downsampling, trimming and z-scoring of a story as one compiled
program on bucket-padded shapes (:func:`~jaxenc.align.lanczos.bucket_length`), the kept rows
masked, so stories of different lengths reuse a few programs; :func:`stack_stories` delays all
stories in one program over the stacked rows.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxenc.align import lanczos
from jaxenc.align._arrays import is_concrete, on_device
from jaxenc.align.delays import make_delayed
from jaxenc.conventions import (
    DELAYS,
    LANCZOS_WINDOW,
    PAD,
    SOUND_START,
    TR,
    TRIM_END,
    TRIM_START,
)
from jaxenc.errors import AlignmentError, ConfigError

__all__ = ["tr_times", "trim", "zscore", "story_features", "stack_stories", "stack_responses"]

_BOUNDARIES = ("story", "concatenate")


def tr_times(n_acquired, tr=TR, sound_start=SOUND_START, pad=PAD, *, story=None):
    """Centres of a story's simulated TRs, in seconds from sound onset.

    Parameters
    ----------
    n_acquired : int
        TRs acquired for the story (its ``respdict`` entry).
    tr : float, optional
        Repetition time in seconds, by default ``TR`` (2.0).
    sound_start : float, optional
        Sound onset after the first simulated trigger, in seconds, by default
        ``SOUND_START`` (10.0).
    pad : int, optional
        TRs counted in ``n_acquired`` beyond the simulated triggers, by default ``PAD`` (5).
    story : str, optional
        Story named in error messages.

    Returns
    -------
    jax.Array of shape (n_acquired - pad,)
        ``tr * i - sound_start + tr / 2`` for ``i = 0 .. n_acquired - pad - 1``, in seconds,
        in the default float dtype.

    Raises
    ------
    AlignmentError
        If ``n_acquired - pad`` is not positive.
    """
    return on_device(_tr_grid(n_acquired, tr, sound_start, pad, story), jnp.result_type(float))


def _tr_grid(n_acquired, tr, sound_start, pad, story) -> np.ndarray:
    """:func:`tr_times` as a float64 host array."""
    n = operator.index(n_acquired) - operator.index(pad)
    if n <= 0:
        raise AlignmentError(
            f"n_acquired = {n_acquired} leaves no TRs after removing pad = {pad}", story=story
        )
    # Built in float64 and cast once, so float32 grids carry no accumulated rounding.
    return tr * np.arange(n, dtype=np.float64) - sound_start + tr / 2


def trim(x, start=TRIM_START, end=TRIM_END, *, story=None):
    """Drop rows at both ends of a story's TR grid.

    Parameters
    ----------
    x : array_like of shape (n, ...)
        Rows on the TR grid.
    start : int, optional
        Rows dropped at the start, by default ``TRIM_START`` (10).
    end : int, optional
        Rows dropped at the end, by default ``TRIM_END`` (5).
    story : str, optional
        Story named in error messages.

    Returns
    -------
    jax.Array of shape (n - start - end, ...)
        ``x[start : n - end]``.

    Raises
    ------
    AlignmentError
        If ``start`` or ``end`` is negative or no rows would remain.
    """
    x = jnp.asarray(x)
    start, stop = _kept_rows(x.shape[0] if x.ndim else 0, start, end, story)
    return x[start:stop]


def _kept_rows(n, start, end, story) -> tuple[int, int]:
    """``(start, n - end)``, the rows :func:`trim` keeps of ``n``, after checking them."""
    start, end = operator.index(start), operator.index(end)
    if start < 0 or end < 0:
        raise AlignmentError(
            f"trim counts must be >= 0, found start={start}, end={end}", story=story
        )
    if n - start - end <= 0:
        raise AlignmentError(
            f"trimming {start} + {end} rows from {n} leaves none; expected more than "
            f"{start + end} rows",
            story=story,
        )
    return start, n - end


def zscore(x, axis=0, ddof=0):
    """Standardise each column to mean 0 and standard deviation 1.

    Parameters
    ----------
    x : array_like
        Data, e.g. of shape (n_trs, n_features) for one story.
    axis : int, optional
        Axis along which mean and standard deviation are taken, by default 0 (over TRs).
    ddof : int, optional
        Delta degrees of freedom of the standard deviation, by default 0 (divide by ``n``,
        as ``scipy.stats.zscore`` and the Huth-lab code do).

    Returns
    -------
    jax.Array of the shape of ``x``
        ``(x - mean) / std``, in the floating dtype of ``x``. Columns whose values are all
        equal (max == min) become zeros rather than NaN; columns that vary at all, however
        little, are scaled as usual.

    Raises
    ------
    ConfigError
        If ``ddof`` is not smaller than the number of samples along ``axis``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    n = x.shape[axis]
    if ddof >= n:
        raise ConfigError(
            f"ddof = {ddof} needs more than {ddof} samples along axis {axis}, found {n}"
        )
    return _zscore(x, axis=axis, ddof=ddof)


def _standardize(x, axis, ddof, kept=None):
    """The z-score of ``x`` along ``axis`` over the entries where ``kept`` (all if None)."""
    if kept is None:
        n = x.shape[axis]

        def inside(a, _):
            return a

    else:
        n = kept.sum(axis=axis, keepdims=True)

        def inside(a, fill):
            return jnp.where(kept, a, fill)

    centred = x - inside(x, 0).sum(axis=axis, keepdims=True) / n
    std = jnp.sqrt(inside(centred**2, 0).sum(axis=axis, keepdims=True) / (n - ddof))
    # An exact test: a constant column's computed mean can differ from its value by rounding,
    # which would leave a tiny std and turn rounding noise into unit-variance garbage.
    high = inside(x, -jnp.inf).max(axis=axis, keepdims=True)
    constant = high == inside(x, jnp.inf).min(axis=axis, keepdims=True)
    safe_std = jnp.where(constant, jnp.ones_like(std), std)
    return jnp.where(constant, jnp.zeros_like(centred), centred / safe_std)


_zscore = jax.jit(_standardize, static_argnames=("axis", "ddof"))


def story_features(
    values,
    times,
    n_acquired,
    *,
    story=None,
    expected_rows=None,
    tr=TR,
    sound_start=SOUND_START,
    pad=PAD,
    trim_start=TRIM_START,
    trim_end=TRIM_END,
    window=LANCZOS_WINDOW,
    cutoff_mult=1.0,
    standardize=True,
    chunk_size=None,
):
    """Put one story's time-stamped features on its response rows.

    Lanczos-downsamples ``values`` to the story's TR centres (:func:`tr_times`), keeps rows
    ``[trim_start : -trim_end]`` (:func:`trim`) and z-scores each column (:func:`zscore`).
    With the defaults this gives ``n_acquired - 20`` rows, those of the story's response
    file.

    Parameters
    ----------
    values : array_like of shape (n_samples,) or (n_samples, n_features)
        Features at ``times`` (word midpoints, audio frame times, ...).
    times : array_like of shape (n_samples,)
        Time of each row of ``values``, in seconds from sound onset, non-decreasing.
    n_acquired : int
        TRs acquired for the story (its ``respdict`` entry).
    story : str, optional
        Story named in error messages.
    expected_rows : int, optional
        Row count the result must have (that of the story's responses); checked if given.
    tr, sound_start, pad : optional
        TR grid, see :func:`tr_times` (2.0 s, 10.0 s, 5 TRs).
    trim_start, trim_end : int, optional
        Rows dropped, see :func:`trim` (10 and 5).
    window, cutoff_mult : optional
        Lanczos kernel, see :func:`~jaxenc.align.lanczos.lanczos_interp` (3 lobes, 1.0).
    standardize : bool, optional
        Z-score the columns (ddof 0), by default True.
    chunk_size : int, optional
        Chunking of the downsampling, see :func:`~jaxenc.align.lanczos.lanczos_interp`.

    Returns
    -------
    jax.Array of shape (n_acquired - pad - trim_start - trim_end, n_features)
        Features per response row (a 1-D ``values`` gives one column).

    Raises
    ------
    AlignmentError
        On invalid times or values (see ``lanczos_interp``), when the grid is too short to
        trim, or when the row count differs from ``expected_rows``.
    """
    grid = _tr_grid(n_acquired, tr, sound_start, pad, story)
    traced = not is_concrete(values, times)
    values = jnp.asarray(values) if traced else np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if traced:
        on_grid = lanczos.lanczos_interp(values, times, on_device(grid, jnp.result_type(float)),
                                         window, cutoff_mult, chunk_size=chunk_size)
        out = trim(on_grid, trim_start, trim_end, story=story)
        _check_rows(out.shape[0], expected_rows, n_acquired, story)
        return zscore(out) if standardize else out
    dtype = jnp.result_type(values, times, jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    values, times, grid = (np.asarray(a, dtype) for a in (values, times, grid))
    lanczos.validate(values, times, grid, story)
    start, stop = _kept_rows(grid.shape[0], trim_start, trim_end, story)
    _check_rows(stop - start, expected_rows, n_acquired, story)
    args, static = lanczos.padded_inputs(values, times, grid, window, cutoff_mult, chunk_size)
    out = _story_rows(*args, np.int32(start), np.int32(stop), standardize=standardize, **static)
    return on_device(np.asarray(out)[start:stop])


def _check_rows(n_rows, expected_rows, n_acquired, story):
    if expected_rows is not None and n_rows != expected_rows:
        raise AlignmentError(
            f"features have {n_rows} rows after trimming (n_acquired = {n_acquired}), "
            f"expected {expected_rows}",
            story=story,
        )


@partial(jax.jit, static_argnames=("standardize", "window", "chunk_size"))
def _story_rows(data, old_times, new_times, cutoff, start, stop, *, standardize, window,
                chunk_size):
    """One story on its padded TR grid: downsampled, then z-scored over rows [start, stop)."""
    on_grid = lanczos.rows(data, old_times, new_times, cutoff, window=window,
                           chunk_size=chunk_size)
    if not standardize:
        return on_grid
    row = jnp.arange(on_grid.shape[0])[:, None]
    return _standardize(on_grid, 0, 0, kept=(row >= start) & (row < stop))


def _check_stories(stories) -> tuple[str, ...]:
    if isinstance(stories, str):
        raise ConfigError(
            f"stories must be a sequence of story names, found the string {stories!r}"
        )
    stories = tuple(stories)
    if not stories:
        raise ConfigError("stories must name at least one story")
    seen = set()
    for story in stories:
        if story in seen:
            raise ConfigError("stories must be unique, found it twice", story=story)
        seen.add(story)
    return stories


def _get(mapping: Mapping, story, what):
    if story not in mapping:
        raise AlignmentError(f"no {what} for this story; expected a key {story!r}", story=story)
    return mapping[story]


def _per_story(mapping, stories, what):
    arrays = []
    for story in stories:
        array = on_device(_get(mapping, story, what))
        if array.ndim != 2 or array.shape[0] == 0:
            raise AlignmentError(
                f"{what} must be 2-D (n_trs > 0, n_columns), found shape {array.shape}",
                story=story,
            )
        if arrays and array.shape[1] != arrays[0].shape[1]:
            raise AlignmentError(
                f"{what} have {array.shape[1]} columns, expected {arrays[0].shape[1]} as in "
                f"story {stories[0]!r}",
                story=story,
            )
        arrays.append(array)
    return arrays


def _groups(rows):
    return on_device(np.repeat(np.arange(len(rows), dtype=np.int32), rows))


def stack_stories(features: Mapping, stories: Sequence[str], delays=DELAYS, boundary="story"):
    """Stack stories' features into one design matrix with FIR delays.

    Parameters
    ----------
    features : Mapping[str, array_like of shape (n_trs_story, n_features)]
        Per-story features on response rows (e.g. from :func:`story_features`).
    stories : Sequence[str]
        Stories to stack, in this order; each must be a key of ``features``, once.
    delays : sequence of int, optional
        Delays in TRs, by default ``DELAYS`` (1, 2, 3, 4); see
        :func:`~jaxenc.align.delays.make_delayed`.
    boundary : {"story", "concatenate"}, optional
        ``"story"`` (the jaxenc default) delays each story on its own, zero padded at its
        start and end, so no row sees features of the neighbouring story. ``"concatenate"``
        stacks the stories first and delays the result, as the Huth-lab reference code does,
        so the first rows of a story see the end of the previous one; use it to reproduce
        their numbers.

    Returns
    -------
    X : jax.Array of shape (n_rows, n_features * len(delays))
        Delayed features, stories one after another; ``n_rows`` is the sum of the stories'
        rows.
    groups : jax.Array of shape (n_rows,), int32
        Position in ``stories`` of the story each row belongs to.
    slices : dict[str, slice]
        Rows of each story in ``X``.

    Raises
    ------
    AlignmentError
        If a story is missing from ``features`` or its array is not 2-D with rows, or the
        stories differ in ``n_features``.
    ConfigError
        If ``stories`` is empty or repeats a story, or ``boundary`` is unknown.
    """
    if boundary not in _BOUNDARIES:
        raise ConfigError(f"boundary must be one of {_BOUNDARIES}, found {boundary!r}")
    stories = _check_stories(stories)
    arrays = _per_story(features, stories, "features")
    rows = [a.shape[0] for a in arrays]
    groups = _groups(rows)
    stacked = jnp.concatenate(arrays, axis=0)
    x = make_delayed(stacked, delays, groups if boundary == "story" else None)
    stops = np.cumsum(rows)
    slices = {s: slice(int(stop - n), int(stop)) for s, n, stop in zip(stories, rows, stops, strict=True)}
    return x, groups, slices


def stack_responses(responses: Mapping, stories: Sequence[str], *, feature_rows=None):
    """Stack stories' responses in the row order of :func:`stack_stories`.

    Parameters
    ----------
    responses : Mapping[str, array_like of shape (n_trs_story, n_voxels)]
        Per-story responses (one row per TR kept in the story's response file).
    stories : Sequence[str]
        Stories to stack, in this order; each must be a key of ``responses``, once.
    feature_rows : Mapping[str, int or slice], optional
        Row count of each story's features, or the ``slices`` returned by
        :func:`stack_stories`; if given, every story's response rows must match it.

    Returns
    -------
    Y : jax.Array of shape (n_rows, n_voxels)
        Responses, stories one after another.
    groups : jax.Array of shape (n_rows,), int32
        Position in ``stories`` of the story each row belongs to.

    Raises
    ------
    AlignmentError
        If a story is missing from ``responses`` (or ``feature_rows``), its array is not 2-D
        with rows, the stories differ in ``n_voxels``, or a story's row count differs from
        that of its features (both counts are named).
    ConfigError
        If ``stories`` is empty or repeats a story.
    """
    stories = _check_stories(stories)
    arrays = _per_story(responses, stories, "responses")
    rows = [a.shape[0] for a in arrays]
    if feature_rows is not None:
        for story, n in zip(stories, rows, strict=True):
            expected = _get(feature_rows, story, "feature row count")
            if isinstance(expected, slice):
                expected = expected.stop - expected.start
            if n != expected:
                raise AlignmentError(
                    f"responses have {n} rows but features have {expected}", story=story
                )
    return jnp.concatenate(arrays, axis=0), _groups(rows)
