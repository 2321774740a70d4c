"""Cross-validation splits for the ridge estimators: K folds over stories, or Huth-lab bootstraps.

A split is a pair ``(train, val)`` of integer row indices. :func:`resolve_splits` turns the
``cv`` argument of :class:`~jaxenc.models.RidgeCV` into a checked list of such pairs;
:class:`BootstrapChunks` draws the held-out chunks of the Huth lab's ``bootstrap_ridge``.
"""

from __future__ import annotations

import numbers

import numpy as np

from jaxenc.errors import ConfigError

__all__ = ["BootstrapChunks", "resolve_splits"]


class BootstrapChunks:
    """Random held-out chunks of consecutive TRs, as the Huth lab's ``bootstrap_ridge``.

    The rows are cut into ``n_samples // chunk_len`` consecutive, non-overlapping chunks of
    ``chunk_len`` TRs, starting at row 0 (a remainder shorter than a chunk is never held out).
    Each of the ``n_boots`` draws holds out ``n_chunks`` chunks chosen uniformly without
    replacement and trains on every other row, the remainder included. This is the
    distribution of ``bootstrap_ridge`` (``zip(*[iter(rows)] * chunklen)``, shuffled, first
    ``nchunks`` held out, training on the set difference); the draws themselves differ because
    numpy's generator replaces Python's ``random``. Holding out whole chunks rather than single
    TRs keeps most validation rows away from training rows, so the slow autocorrelation of the
    BOLD signal inflates validation scores less; the lab uses 40-TR chunks.

    With :class:`~jaxenc.models.RidgeCV` the per-voxel alpha is the one with the best mean
    validation correlation over the draws (``scoring=None`` picks ``"correlation"`` for this
    splitter), as in ``bootstrap_ridge``. The object follows scikit-learn's splitter protocol,
    so himalaya and scikit-learn accept it too.

    Parameters
    ----------
    n_boots : int
        Number of random draws (``nboots``).
    chunk_len : int
        TRs per chunk (``chunklen``).
    n_chunks : int
        Chunks held out in each draw (``nchunks``); must leave at least one chunk for training.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same draws.
    """

    def __init__(self, n_boots: int, chunk_len: int, n_chunks: int, seed: int = 0):
        for name, value in (("n_boots", n_boots), ("chunk_len", chunk_len), ("n_chunks", n_chunks)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"BootstrapChunks: {name} must be a positive integer, got {value!r}")
        self.n_boots = int(n_boots)
        self.chunk_len = int(chunk_len)
        self.n_chunks = int(n_chunks)
        self.seed = seed

    def __repr__(self) -> str:
        return (f"BootstrapChunks(n_boots={self.n_boots}, chunk_len={self.chunk_len}, "
                f"n_chunks={self.n_chunks}, seed={self.seed!r})")

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Number of draws, ``n_boots`` (scikit-learn splitter protocol)."""
        return self.n_boots

    def split(self, X, y=None, groups=None):
        """Yield ``n_boots`` pairs of (train, val) row indices.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) or int
            The data (only its length is used) or the number of rows itself.
        y, groups : ignored
            Present for the scikit-learn splitter protocol.

        Yields
        ------
        train : ndarray of shape (n_samples - n_chunks * chunk_len,), int
            Sorted training rows: every row not held out.
        val : ndarray of shape (n_chunks * chunk_len,), int
            Sorted held-out rows, ``n_chunks`` whole chunks.

        Raises
        ------
        ConfigError
            Fewer than ``n_chunks + 1`` whole chunks fit in the rows.
        """
        n_samples = int(X) if isinstance(X, numbers.Integral) else len(X)
        n_available = n_samples // self.chunk_len
        if self.n_chunks >= n_available:
            raise ConfigError(
                f"BootstrapChunks: {n_samples} rows make {n_available} chunks of "
                f"{self.chunk_len} TRs; holding out n_chunks={self.n_chunks} needs at least "
                f"{self.n_chunks + 1}")
        rng = np.random.default_rng(self.seed)
        rows = np.arange(n_samples)
        offsets = np.arange(self.chunk_len)
        for _ in range(self.n_boots):
            chunks = np.sort(rng.choice(n_available, size=self.n_chunks, replace=False))
            val = (chunks[:, None] * self.chunk_len + offsets[None, :]).ravel()
            held = np.zeros(n_samples, dtype=bool)
            held[val] = True
            yield rows[~held], val


def _group_folds(groups, n_folds: int, n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
    groups = np.asarray(groups)
    if groups.shape != (n_samples,):
        raise ConfigError(
            f"groups has shape {groups.shape}; expected one label per row, ({n_samples},)")
    # Unique labels in order of first appearance: stories stay in the order they were
    # concatenated, so each fold is a run of neighbouring stories.
    _, first = np.unique(groups, return_index=True)
    labels = groups[np.sort(first)]
    if len(labels) < n_folds:
        raise ConfigError(
            f"cv={n_folds} folds over groups needs at least {n_folds} distinct groups, "
            f"got {len(labels)}")
    splits = []
    for fold_labels in np.array_split(labels, n_folds):
        held = np.isin(groups, fold_labels)
        splits.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return splits


def _as_indices(idx, n_samples: int, what: str) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.dtype == bool:
        if idx.shape != (n_samples,):
            raise ConfigError(f"{what}: boolean mask of shape {idx.shape}, expected ({n_samples},)")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ConfigError(f"{what}: expected a non-empty 1-D array of row indices, got "
                          f"shape {idx.shape} dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n_samples:
        raise ConfigError(f"{what}: row indices must lie in [0, {n_samples}), got "
                          f"[{idx.min()}, {idx.max()}]")
    if np.unique(idx).size != idx.size:
        raise ConfigError(f"{what}: row indices repeat")
    return np.sort(idx).astype(np.int64)


def resolve_splits(cv, n_samples: int, groups=None, X=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Turn a ``cv`` argument into a checked list of (train, val) row indices.

    Parameters
    ----------
    cv : int, splitter or iterable
        ``int`` K >= 2: K folds. With ``groups``, the distinct group labels (stories), in order
        of first appearance, are cut into K contiguous runs of near-equal length
        (``numpy.array_split``) and fold k holds out the rows of the k-th run: no story is split
        across train and validation. Without ``groups``, K contiguous blocks of rows
        (scikit-learn's ``KFold`` without shuffling). An object with a ``split`` method
        (:class:`BootstrapChunks`, any scikit-learn splitter) is called as
        ``cv.split(X, None, groups)``. Any other iterable yields ``(train, val)`` pairs of
        integer indices or boolean masks.
    n_samples : int
        Number of rows.
    groups : array-like of shape (n_samples,), optional
        Group (story) label of each row.
    X : array of shape (n_samples, n_features), optional
        Passed to a splitter's ``split``; a row count stands in when omitted.

    Returns
    -------
    list of (ndarray, ndarray)
        Sorted int64 train and val indices of each split.

    Raises
    ------
    ConfigError
        K < 2, fewer groups or rows than folds, no split, or an empty, out-of-range or
        repeating index array.
    """
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        n_folds = int(cv)
        if n_folds < 2:
            raise ConfigError(f"cv={n_folds}: cross-validation needs at least 2 folds")
        if groups is not None:
            return _group_folds(groups, n_folds, n_samples)
        if n_samples < n_folds:
            raise ConfigError(f"cv={n_folds} folds need at least {n_folds} rows, got {n_samples}")
        rows = np.arange(n_samples)
        return [(np.setdiff1d(rows, val), val) for val in np.array_split(rows, n_folds)]
    if hasattr(cv, "split"):
        raw = list(cv.split(X if X is not None else np.empty((n_samples, 0)), None, groups))
    else:
        try:
            raw = list(cv)
        except TypeError:
            raise ConfigError(
                f"cv must be an int, a splitter with a split method or an iterable of "
                f"(train, val) pairs, got {type(cv).__name__}") from None
    if not raw:
        raise ConfigError("cv produced no split")
    splits = []
    for k, pair in enumerate(raw):
        if len(pair) != 2:
            raise ConfigError(f"cv split {k}: expected a (train, val) pair")
        splits.append((_as_indices(pair[0], n_samples, f"cv split {k} train"),
                       _as_indices(pair[1], n_samples, f"cv split {k} val")))
    return splits
