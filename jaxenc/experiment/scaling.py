"""The data-scaling curves in a run (``analyses.data_fractions``): the fit and evaluate stages' part.

With ``analyses.data_fractions`` set, every job of the table is fitted, in one call of
:func:`jaxenc.pipeline.fit_predict`, on each subject's training stories and on nested subsets
of them (:func:`jaxenc.pipeline.scaling.scaling_arrays`; key ``"UTS01@3of12"``), so a network's
every (subset x fold x subject) model is in one compiled program; the fold models' test
predictions are stored beside the job's (:func:`folds_file`). The evaluate stage scores each
subset as a model result of its own (features ``"audio+semantic@3of12"``, ``info``
``data_stories = [3, 12]`` and ``data_draw``, with ``analyses.data_draws``: ``"...@3of12d1"`` for
the second draw) and records each fold model's mean r (``info["fold_mean_r"]``), which
:func:`jaxenc.analysis.scaling.data_curves` lays out as curves.
"""

from __future__ import annotations

from jaxenc.analysis.scaling import DRAW_INFO, SUBSET_INFO, fold_mean_r
from jaxenc.metrics import score
from jaxenc.models.registry import encoder
from jaxenc.pipeline.scaling import n_subset_keys, parse_subset_key, scaling_arrays, subset_key
from jaxenc.report.results import ModelResult
from jaxenc.store import RunStore

__all__ = ["folds_file", "min_stories", "expand", "n_keys", "scored_subsets"]


def folds_file(name: str) -> str:
    """Run-relative path of a job's fold-model test predictions, beside its predictions (written
    by :func:`jaxenc.experiment.fitting.fit` for the data-scaling curves and for the
    clustering's fold stability)."""
    return f"{RunStore.PREDICTIONS}/{name}.folds.npz"


def min_stories(config, jobs) -> int:
    """The fewest stories of a subset: the most folds any fit of the run splits them into (one
    bound for every encoder, so that all of them see the same subsets)."""
    folds = [config.ridge.folds if encoder(job.model).is_ridge else config.train.n_folds for job in jobs]
    return max(folds, default=1)


def expand(config, jobs, arrays: dict) -> dict:
    """A job's data mapping (subject -> SubjectArrays) with each subject's nested subsets added."""
    return scaling_arrays(arrays, config.analyses.data_fractions, seed=config.seed,
                          min_stories=min_stories(config, jobs), draws=config.analyses.data_draws)


def n_keys(config, jobs, n_stories: int) -> int:
    """Entries :func:`expand` makes of a subject of ``n_stories`` training stories: 1 without
    ``analyses.data_fractions``, else the subject and each draw's smaller subsets."""
    if not config.analyses.data_fractions:
        return 1
    return n_subset_keys(n_stories, config.analyses.data_fractions, min_stories=min_stories(config, jobs),
                         draws=config.analyses.data_draws)


def scored_subsets(config, store: RunStore, name: str, predictions: dict, meta: dict, repeats: dict,
                   full: list) -> list:
    """The model results of a job's subsets, scored like the table's; adds each fold model's mean
    r to them and to ``full`` (the job's results on all the stories, one per subject).

    Parameters
    ----------
    config : ExperimentConfig
    store : RunStore
    name : str
        The job's stored predictions.
    predictions : dict of str to ndarray of shape (n_test, n_voxels)
        As stored: subjects and subset keys.
    meta : dict
        The prediction record.
    repeats : dict of str to ndarray of shape (n_repeats, n_test, n_voxels)
    full : list of jaxenc.report.ModelResult
        The job's results for the subjects, updated in place.

    Returns
    -------
    list of jaxenc.report.ModelResult
    """
    ev = config.evaluate
    rel = folds_file(name)
    folds = store.read_arrays(rel) if store.path(rel).is_file() else {}
    info = {k: v for k, v in meta.items() if k not in ("features", "model", "target")}

    def fold_scores(key, subject):
        if key not in folds:
            return {}
        target = repeats[subject].mean(axis=0)
        return {"fold_mean_r": fold_mean_r(folds[key], target, trim=ev.test_trim).tolist()}

    for m in full:
        # A dict of its own: the subjects' results of a job may share one info dict.
        m.info = {**m.info, **fold_scores(m.subject, m.subject)}
    out = []
    for key, prediction in predictions.items():
        parsed = parse_subset_key(key)
        if parsed is None or parsed[0] not in repeats:
            continue
        subject, k, n, draw = parsed
        scores = score(prediction, repeats[subject], ev, seed=config.seed, subject=subject)
        out.append(ModelResult(subject, subset_key(meta["features"], k, n, draw), meta["model"], meta["target"],
                               scores, {**info, SUBSET_INFO: [k, n], DRAW_INFO: draw, **fold_scores(key, subject)}))
    return out
