"""Data scaling: one encoder fitted on nested subsets of each subject's training stories.

Would a deeper network win with more data? :func:`fit_data_scaling` answers it for one encoder
on your own arrays: each subject's training stories are shuffled and cut into nested subsets
(:func:`nested_subsets`: every subset holds the smaller ones), once per draw (``draws``: each
draw its own shuffle, so a curve can average over which stories a subset holds); each subset
becomes an entry of its own in the data mapping of :func:`jaxenc.pipeline.fit_predict` (key
``"UTS01@3of12"``: subject UTS01 on 3 of its 12 training stories in the first draw,
``"UTS01@3of12d1"`` in the second, :func:`subset_key`), so a network's every (subset x draw x
fold x subject) model trains in one compiled program (:func:`jaxenc.train.fit_encoders` stacks
the entries as it stacks subjects). The test story is the same for every subset.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from jaxenc.errors import ConfigError, DataWarning
from jaxenc.models.registry import RidgeOptions, encoder
from jaxenc.pipeline.runner import JobResult, SubjectArrays, fit_predict
from jaxenc.train import TrainConfig

__all__ = ["nested_subsets", "subset_key", "parse_subset_key", "draw_seed", "n_subset_keys", "subset_arrays",
           "scaling_arrays", "ScalingFit", "fit_data_scaling"]

# "<subject>@<k>of<n>[d<draw>]": the subject on k of its n training stories, in draw `draw` (the
# first draw, 0, unmarked); a file-name-safe key: the networks' checkpoint folders are named
# after the keys of a program.
_KEY = re.compile(r"(?P<subject>.+)@(?P<k>\d+)of(?P<n>\d+)(?:d(?P<draw>[1-9]\d*))?")


def subset_key(subject: str, k: int, n: int, draw: int = 0) -> str:
    """The data-mapping key of ``subject`` on ``k`` of its ``n`` training stories in draw ``draw``."""
    return f"{subject}@{k}of{n}" + (f"d{draw}" if draw else "")


def parse_subset_key(key: str) -> tuple[str, int, int, int] | None:
    """``(subject, k, n, draw)`` of a :func:`subset_key`; None for a plain subject (all its stories)."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    return match["subject"], int(match["k"]), int(match["n"]), int(match["draw"] or 0)


def draw_seed(seed: int, draw: int) -> int | list[int]:
    """The story-shuffle seed of draw ``draw``: ``seed`` itself for the first, so one draw keeps
    the subsets of a run without draws."""
    return seed if draw == 0 else [seed, draw]


def nested_subsets(stories: Sequence[str], fractions: Sequence[float], *, seed: int | Sequence[int] = 0,
                   min_stories: int = 1, subject: str | None = None) -> dict[int, tuple[str, ...]]:
    """Nested subsets of the training stories, one per distinct size.

    The stories are sorted, shuffled once with ``seed`` and each subset is a prefix of that
    order, so every subset holds the smaller ones. Fraction ``f`` keeps
    ``max(min_stories, floor(f * n + 1/2))`` of the ``n`` stories (whole stories: folds never
    split one); fractions that keep the same number share one subset, with a warning.

    Parameters
    ----------
    stories : sequence of str
        Training story names (the test story excluded), without duplicates.
    fractions : sequence of float
        Shares of the stories, each in (0, 1].
    seed : int or sequence of int
        Seed of the shuffle (:func:`numpy.random.default_rng`; :func:`draw_seed` gives a draw's).
    min_stories : int
        Fewest stories of a subset: the cross-validation folds of the fits (ridge's and the
        networks') each need a validation story.
    subject : str, optional
        Named in errors and warnings.

    Returns
    -------
    dict of int to tuple of str
        Story count -> the subset's stories (sorted), in increasing count; the full set (``n``)
        is included only when a fraction asks for it.

    Raises
    ------
    ConfigError
        A fraction outside (0, 1], duplicate stories, or fewer stories than ``min_stories``.

    Warns
    -----
    DataWarning
        Fractions raised to ``min_stories`` or sharing one story count.
    """
    names = sorted(stories)
    n = len(names)
    if len(set(names)) != n:
        raise ConfigError(f"duplicate story names in {names}", subject=subject)
    bad = [f for f in fractions if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1]
    if bad or not fractions:
        raise ConfigError(f"data_fractions must be shares of the training stories in (0, 1], got {list(fractions)}",
                          subject=subject)
    if n < min_stories:
        raise ConfigError(f"{n} training stories, fewer than the {min_stories} folds of the fits need",
                          subject=subject)
    order = [names[i] for i in np.random.default_rng(seed).permutation(n)]
    counts = {f: _kept(f, n, min_stories) for f in fractions}
    raised = [f for f in fractions if math.floor(f * n + 0.5) < min_stories]
    if raised or len(set(counts.values())) < len(counts):
        warnings.warn(f"subject {subject}: data_fractions {list(fractions)} of {n} training stories keep "
                      f"{[counts[f] for f in fractions]} stories (at least {min_stories}, the folds of the fits): "
                      f"{len(set(counts.values()))} distinct subsets", DataWarning, stacklevel=2)
    return {k: tuple(sorted(order[:k])) for k in sorted(set(counts.values()))}


def _kept(fraction: float, n: int, min_stories: int) -> int:
    """Stories a fraction of ``n`` keeps (:func:`nested_subsets`)."""
    return max(min_stories, min(n, math.floor(fraction * n + 0.5)))


def n_subset_keys(n: int, fractions: Sequence[float], *, min_stories: int = 1, draws: int = 1) -> int:
    """Entries :func:`scaling_arrays` makes of a subject of ``n`` training stories: the subject
    itself and each draw's distinct subsets smaller than ``n`` (valid settings assumed).

    Parameters
    ----------
    n : int
        The subject's training stories.
    fractions : sequence of float
    min_stories : int
    draws : int

    Returns
    -------
    int
    """
    return 1 + draws * len({_kept(f, n, min_stories) for f in fractions} - {n})


def subset_arrays(arrays: SubjectArrays, stories: Sequence[str]) -> SubjectArrays:
    """A subject's arrays on the rows of some of its training stories (the test design kept).

    Parameters
    ----------
    arrays : SubjectArrays
    stories : sequence of str
        Labels of ``arrays.groups``.

    Returns
    -------
    SubjectArrays

    Raises
    ------
    ConfigError
        A story that has no rows in ``arrays``.
    """
    groups = np.asarray(arrays.groups)
    missing = sorted(set(stories) - set(map(str, groups.tolist())))
    if missing:
        raise ConfigError(f"stories {missing} have no training rows; the arrays hold "
                          f"{sorted(set(map(str, groups.tolist())))}")
    rows = np.isin(groups.astype(str), list(stories))
    return replace(arrays, X=np.asarray(arrays.X)[rows], Y=np.asarray(arrays.Y)[rows], groups=groups[rows])


def scaling_arrays(data: Mapping[str, SubjectArrays], fractions: Sequence[float], *, seed: int = 0,
                   min_stories: int = 1, draws: int = 1) -> dict[str, SubjectArrays]:
    """The data mapping of a data-scaling fit: every subject on all its stories (its own key)
    and on each smaller nested subset of each draw (key :func:`subset_key`).

    Parameters
    ----------
    data : mapping of str to SubjectArrays
        Per subject.
    fractions : sequence of float
        Shares of each subject's training stories, in (0, 1] (see :func:`nested_subsets`).
    seed : int
        Seed of the story order.
    min_stories : int
        Fewest stories of a subset (the folds of the fits).
    draws : int
        Independent draws of the nested subsets, each its own shuffle (:func:`draw_seed`); the
        full set is one entry whatever the draws.

    Returns
    -------
    dict of str to SubjectArrays
        The subjects first, as given, then their subsets in increasing size, draw after draw.

    Raises
    ------
    ConfigError
        ``draws`` not a positive integer, and what :func:`nested_subsets` raises.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"draws must be a positive integer, got {draws!r}")
    out = dict(data)
    for subject, arrays in data.items():
        stories = list(arrays.stories())
        for draw in range(draws):
            for k, subset in nested_subsets(stories, fractions, seed=draw_seed(seed, draw), min_stories=min_stories,
                                            subject=subject).items():
                if k < len(stories):
                    out[subset_key(subject, k, len(stories), draw)] = subset_arrays(arrays, subset)
    return out


@dataclass
class ScalingFit:
    """What :func:`fit_data_scaling` returns.

    Attributes
    ----------
    subsets : dict of (str, int, int) to tuple of str
        (subject, story count, draw) -> the stories fitted on; all the stories are draw 0.
    n_stories : dict of str to int
        Per subject, its training stories.
    predictions : dict of (str, int, int) to ndarray of shape (n_test, n_voxels)
        (subject, story count, draw) -> the test-story prediction (networks: the fold models'
        mean).
    fold_predictions : dict of (str, int, int) to ndarray of shape (n_folds, n_test, n_voxels)
        The same per fold model; empty for ridge.
    job : JobResult
        The one fit, keyed as :func:`scaling_arrays` keys its data.
    """

    subsets: dict
    n_stories: dict
    predictions: dict
    fold_predictions: dict
    job: JobResult


def _split_key(key: str, n_stories: Mapping[str, int]) -> tuple[str, int, int]:
    parsed = parse_subset_key(key)
    return (key, n_stories[key], 0) if parsed is None else (parsed[0], parsed[1], parsed[3])


def fit_data_scaling(model, data: Mapping[str, SubjectArrays], fractions: Sequence[float], *, seed: int = 0,
                     min_stories: int | None = None, draws: int = 1, **fit_options) -> ScalingFit:
    """Fit one encoder on nested subsets of each subject's training stories, in one job.

    Parameters
    ----------
    model : str or EncoderSpec
        An encoder of :data:`jaxenc.models.ENCODERS`.
    data : mapping of str to SubjectArrays
        Per subject (plain subject names, without ``@``).
    fractions : sequence of float
        Shares of the training stories in (0, 1]; the full set is always fitted.
    seed : int
        Seed of the story order (and, unless ``train`` says otherwise, nothing else).
    min_stories : int, optional
        Fewest stories of a subset; default the folds of the fit (``ridge.folds`` for ridge,
        ``train.n_folds`` for networks).
    draws : int
        Independent draws of the nested subsets (:func:`scaling_arrays`).
    **fit_options
        Passed to :func:`jaxenc.pipeline.fit_predict` (``target``, ``ridge``, ``networks``,
        ``train``, ``grid``, ...).

    Returns
    -------
    ScalingFit
    """
    spec = encoder(model) if isinstance(model, str) else model
    if any(parse_subset_key(s) is not None for s in data):
        raise ConfigError(f"subject names must not look like subset keys (<subject>@<k>of<n>), got {list(data)}")
    if min_stories is None:
        min_stories = (fit_options.get("ridge", RidgeOptions()).folds if spec.is_ridge
                       else fit_options.get("train", TrainConfig()).n_folds)
    arrays = scaling_arrays(data, fractions, seed=seed, min_stories=min_stories, draws=draws)
    n_stories = {s: len(a.stories()) for s, a in data.items()}
    job = fit_predict(spec, arrays, **fit_options)
    keys = {key: _split_key(key, n_stories) for key in arrays}
    return ScalingFit(subsets={keys[key]: tuple(a.stories()) for key, a in arrays.items()}, n_stories=n_stories,
                      predictions={keys[key]: p for key, p in job.predictions.items()},
                      fold_predictions={keys[key]: p for key, p in job.fold_predictions.items()}, job=job)
