"""Checks of the arrays given to jaxenc's public functions, one policy for all of them.

Every function that takes features or responses as arrays (:func:`jaxenc.pipeline.fit_predict`,
:class:`jaxenc.models.RidgeCV`, :func:`jaxenc.train.fit_encoders`,
:meth:`jaxenc.train.EncoderFit.predict`) checks them here, so that one bad argument gets the
same error everywhere, naming the argument (``X_test``, not the ``X`` of a function it reaches):

- dtype: real numbers. Integers and booleans are numbers (a boolean is 0 or 1, e.g. an
  indicator feature) and are converted to floats; complex numbers, strings and objects are
  refused;
- shape: 2-D with at least one row and one column;
- values: finite. NaN or infinity raises :class:`~jaxenc.errors.NonFiniteError` naming the
  first row and column that holds one, checked a block of columns at a time (no full-size
  mask of a large design).

This module imports numpy and :mod:`jaxenc.errors` only.
"""

from __future__ import annotations

import numpy as np

from jaxenc.errors import AlignmentError, ConfigError, NonFiniteError

__all__ = ["check_dtype", "check_matrix", "check_finite", "finite_blocks"]

# Columns checked at a time for NaN and infinity.
_BLOCK_COLUMNS = 4096


def check_dtype(array: np.ndarray, name: str, *, subject=None, story=None) -> None:
    """Refuse an array whose values are not real numbers (booleans and integers are).

    Raises
    ------
    ConfigError
        Naming the argument and its dtype.
    """
    dtype = np.asarray(array).dtype
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(dtype, np.complexfloating):
        raise ConfigError(f"{name} must hold real numbers (floats, integers or booleans), got dtype {dtype}",
                          subject=subject, story=story)


def finite_blocks(array: np.ndarray, name: str, *, subject=None, story=None):
    """The blocks of columns of a 2-D array, each checked for NaN and infinity before it is given.

    For a caller that reads every column once anyway (the ridge's constant-column check): the
    check rides on the same pass, a block at a time, with no full-size mask.

    Parameters
    ----------
    array : ndarray of shape (n_rows, n_columns)
    name : str
        The argument's name in errors.
    subject, story : str, optional
        Named in errors.

    Yields
    ------
    (int, ndarray of shape (n_rows, block_columns))
        The block's first column and the block (a view).

    Raises
    ------
    NonFiniteError
        At the first block holding NaN or infinity, naming the argument, its first row and
        column and how many values of the block are not finite.
    """
    integral = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
    for start in range(0, array.shape[1], _BLOCK_COLUMNS):
        block = array[:, start:start + _BLOCK_COLUMNS]
        finite = True if integral else np.isfinite(block)
        if not np.all(finite):
            bad = ~finite
            col = int(np.argmax(bad.any(axis=0)))
            row = int(np.argmax(bad[:, col]))
            raise NonFiniteError(f"NaN or infinity in {name} at row {row}, column {start + col} "
                                 f"({int(bad.sum())} value(s) in columns {start}-{start + block.shape[1] - 1})",
                                 subject=subject, story=story)
        yield start, block


def check_finite(array: np.ndarray, name: str, *, subject=None, story=None) -> None:
    """Refuse NaN or infinity in a 2-D array, naming the argument, the first row and column.

    Raises
    ------
    NonFiniteError
    """
    for _ in finite_blocks(np.asarray(array), name, subject=subject, story=story):
        pass


def check_matrix(array, name: str, *, columns: int | None = None, what: str = "(n_rows, n_columns)",
                 finite: bool = True, subject=None, story=None) -> np.ndarray:
    """``array`` as a 2-D numpy array of real numbers, at least one row and one column.

    Parameters
    ----------
    array : array_like of shape (n_rows, n_columns)
    name : str
        The argument's name in errors, e.g. ``"X_test"``.
    columns : int, optional
        The number of columns expected (e.g. the features a model was fitted on).
    what : str
        The expected shape in words, e.g. ``"(n_trs, n_features)"``.
    finite : bool
        Also refuse NaN and infinity.
    subject, story : str, optional
        Named in errors.

    Returns
    -------
    ndarray
        The array as given (no copy; booleans and integers are converted by the caller's cast).

    Raises
    ------
    AlignmentError
        Not 2-D, no rows or columns, or another number of columns than ``columns``.
    ConfigError
        Not real numbers.
    NonFiniteError
        NaN or infinity (with ``finite``).
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise AlignmentError(f"{name} must be 2-D {what}, got shape {array.shape}", subject=subject, story=story)
    check_dtype(array, name, subject=subject, story=story)
    if columns is not None and array.shape[1] != columns:
        raise AlignmentError(f"{name} has {array.shape[1]} columns, expected {columns} {what}", subject=subject,
                             story=story)
    if 0 in array.shape:
        raise AlignmentError(f"{name} has shape {array.shape}: at least one row and one column are needed {what}",
                             subject=subject, story=story)
    if finite:
        check_finite(array, name, subject=subject, story=story)
    return array
