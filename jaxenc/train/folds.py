"""Story-grouped K-fold splits: no story is ever in both the training and the validation set.

TRs of one story are autocorrelated (the BOLD response is slow and stories have themes), so a
random TR split would leak validation data into training. Folds group whole stories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxenc.errors import ConfigError

__all__ = ["story_folds"]


def story_folds(
    stories: Sequence[str], n_folds: int = 5, *, seed: int = 0, subject: str | None = None
) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Split stories into ``n_folds`` (training, validation) pairs, grouped by story.

    The stories are sorted, shuffled with ``seed`` and dealt into ``n_folds`` groups of sizes
    differing by at most one; fold ``k`` validates on group ``k`` and trains on the rest. The
    result depends only on the set of stories and the seed, not on their order.

    Parameters
    ----------
    stories : sequence of str
        Training story names (the test story excluded), without duplicates.
    n_folds : int
        Number of folds, at least 2.
    seed : int
        Seed of the shuffle.
    subject : str, optional
        Named in errors.

    Returns
    -------
    list of (tuple of str, tuple of str)
        ``n_folds`` pairs ``(train_stories, val_stories)``, each sorted; every story is a
        validation story in exactly one fold.

    Raises
    ------
    ConfigError
        Fewer than two folds, duplicate stories, or a fold left without validation stories
        (more folds than stories).
    """
    names = sorted(stories)
    if n_folds < 2:
        raise ConfigError(f"story-grouped K-fold needs at least 2 folds, found n_folds={n_folds}", subject=subject)
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate story names in {names}", subject=subject)
    order = np.random.default_rng(seed).permutation(len(names))
    groups = np.array_split(order, n_folds)
    folds = []
    for k, group in enumerate(groups):
        if len(group) == 0:
            raise ConfigError(
                f"fold {k} of {n_folds} has no validation stories: only {len(names)} training "
                f"stories; use at most {len(names)} folds",
                subject=subject,
            )
        val = tuple(sorted(names[i] for i in group))
        train = tuple(s for s in names if s not in set(val))
        folds.append((train, val))
    return folds
