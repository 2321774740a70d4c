"""Encoding performance across feature sets: one encoder per LLaMA layer or per language model.

The layer sweep and the model-size sweep of "Mind the Gap" fit the same encoder to many
feature sets of the same stories and compare their test-story scores. :func:`ridge_sweep` fits
one :class:`~jaxenc.models.RidgeCV` per label, scored as the pipeline scores its baselines;
:func:`encoder_sweep` trains the nonlinear encoders of every label in as few compiled programs
as the feature widths allow, by treating each (label, subject) pair as a pseudo-subject of
:func:`jaxenc.train.fit_encoders`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxenc.errors import AlignmentError, ConfigError
from jaxenc.metrics import VOXEL_SCORES, score_repeats
from jaxenc.metrics.scores import CC_MAX_FLOOR
from jaxenc.models import RidgeCV
from jaxenc.train import EncoderFit, SubjectData, TrainConfig, evaluate, fit_encoders

__all__ = ["score_prediction", "ridge_sweep", "pseudo_subject", "encoder_sweep"]


def score_prediction(
    prediction,
    repeats,
    *,
    trim: int | None = None,
    floor: float = CC_MAX_FLOOR,
    n_permutations: int = 200,
    block_size: int = 10,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-voxel test-story scores of one prediction against the repeated presentations.

    :func:`jaxenc.metrics.score_repeats`, the scores of :func:`jaxenc.pipeline.score_test_story`:
    Pearson r, the paper's r2 (r·|r|) and the coefficient of determination r2_cod against the
    mean of the repeats, ``cc_norm`` with the noise ceiling floored at ``floor``, the
    block-permutation p-value of r and Benjamini-Hochberg significance over all voxels, on
    the rows kept after the test-story trim.

    Parameters
    ----------
    prediction : array of shape (n_trs, n_voxels)
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        Responses to each presentation of the test story.
    trim : int, optional
        Rows dropped from the start of the prediction and every repeat; None: the protocol's
        share (:func:`jaxenc.metrics.protocol_trim`).
    floor : float
        Lower bound on cc_max in cc_norm.
    n_permutations, block_size, seed
        Block permutation test (blocks of ``block_size`` TRs).
    alpha : float
        False discovery rate.

    Returns
    -------
    dict
        ``r``, ``r2``, ``r2_cod``, ``cc_norm``, ``p`` (float arrays) and ``significant``
        (bool), each of shape (n_voxels,).
    """
    return score_repeats(prediction, repeats, trim=trim, floor=floor, n_permutations=n_permutations,
                         block_size=block_size, alpha=alpha, seed=seed)


def _summary_row(label, scores: Mapping[str, np.ndarray]) -> dict:
    return {
        "label": label,
        "mean_r": float(np.nanmean(scores["r"])),
        "mean_r2": float(np.nanmean(scores["r2"])),
        "mean_r2_cod": float(np.nanmean(scores["r2_cod"])),
        "mean_cc_norm": float(np.nanmean(scores["cc_norm"])),
        "n_significant": int(np.sum(scores["significant"])),
    }


def ridge_sweep(
    designs: Mapping,
    Y,
    groups,
    test_designs: Mapping,
    test_repeats,
    *,
    alphas=np.logspace(-1, 5, 13),
    cv=5,
    n_permutations: int = 200,
    seed: int = 0,
    pca=None,
    trim: int | None = None,
    floor: float = CC_MAX_FLOOR,
    block_size: int = 10,
    fdr_alpha: float = 0.05,
    ridge_options: Mapping | None = None,
) -> list[dict]:
    """Fit and score one ridge encoder per feature set (LLaMA layer, language model, ...).

    Per label, :class:`~jaxenc.models.RidgeCV` (a penalty per target chosen by story-grouped
    cross-validation) is fitted on ``designs[label]``, predicts ``test_designs[label]``
    (mapped back to voxels by ``pca`` when given) and is scored with
    :func:`score_prediction`. Labels are fitted one after another and each design is read
    from the mapping only when its turn comes, so a lazy mapping (e.g. one that loads a
    layer's features from the cache on access) holds one design in memory at a time.

    Parameters
    ----------
    designs : mapping of label to array of shape (n_rows, n_features_label)
        Delayed training features of one subject per label (widths may differ).
    Y : array of shape (n_rows, n_targets)
        Training responses, or their PCA scores when ``pca`` is given.
    groups : array of shape (n_rows,)
        Story of each row, for the cross-validation folds.
    test_designs : mapping of label to array of shape (n_test, n_features_label)
        Delayed features of the test story; same labels as ``designs``.
    test_repeats : array of shape (n_repeats, n_test, n_voxels)
        Responses to each presentation of the test story.
    alphas : array-like
        Ridge penalties searched.
    cv : int, splitter or iterable
        Cross-validation folds (see :class:`~jaxenc.models.RidgeCV`).
    n_permutations : int
        Block permutations per voxel significance test.
    seed : int
        Seed of the permutations.
    pca : jaxenc.decomp.PCA, optional
        Fitted PCA whose ``inverse_transform`` maps predicted scores back to voxels.
    trim : int, optional
        Test-story rows dropped before scoring (see :func:`score_prediction`).
    floor : float
        Lower bound on the noise ceiling in ``cc_norm``.
    block_size : int
        TRs per permuted block.
    fdr_alpha : float
        False discovery rate of the significance masks.
    ridge_options : mapping, optional
        Further :class:`~jaxenc.models.RidgeCV` arguments (``voxel_batch``,
        ``lapack_threads``, ``dtype``, ...).

    Returns
    -------
    list of dict
        One row per label, in the order of ``designs``: ``label``, ``n_features``,
        ``mean_r``, ``mean_r2``, ``mean_r2_cod``, ``mean_cc_norm``, ``n_significant``, and the
        per-voxel arrays ``r``, ``r2``, ``r2_cod``, ``cc_norm``, ``p``, ``significant`` (n_voxels,),
        ``best_alphas`` (n_targets,) and the test-story ``prediction`` (n_test, n_voxels), e.g.
        as the profiles of :func:`jaxenc.analysis.best_model_clusters`.

    Raises
    ------
    ConfigError
        No labels, or labels of ``designs`` and ``test_designs`` that differ.
    AlignmentError
        A design whose rows do not match ``Y`` or the test repeats, a test design of another
        width than its training design, or predictions of another voxel count than the
        repeats.
    """
    if not designs:
        raise ConfigError("ridge_sweep: no designs given")
    if set(designs) != set(test_designs):
        raise ConfigError(
            f"ridge_sweep: labels of designs {sorted(map(str, designs))} and test_designs "
            f"{sorted(map(str, test_designs))} differ"
        )
    n_rows = np.shape(Y)[0]
    if np.shape(groups) != (n_rows,):
        raise AlignmentError(f"ridge_sweep: groups have shape {np.shape(groups)}; Y has {n_rows} rows")
    if np.ndim(test_repeats) != 3:
        raise AlignmentError(
            f"ridge_sweep: test_repeats have shape {np.shape(test_repeats)}; expected "
            "(n_repeats, n_test, n_voxels)"
        )
    _, n_test, n_voxels = np.shape(test_repeats)
    rows = []
    for label in designs:
        X, X_test = designs[label], test_designs[label]
        if np.shape(X)[0] != n_rows:
            raise AlignmentError(
                f"ridge_sweep: design of label {label!r} has {np.shape(X)[0]} rows, Y has {n_rows}"
            )
        if np.ndim(X_test) != 2 or np.shape(X_test) != (n_test, np.shape(X)[1]):
            raise AlignmentError(
                f"ridge_sweep: test design of label {label!r} has shape {np.shape(X_test)}; "
                f"expected ({n_test}, {np.shape(X)[1]}): the test repeats' TRs and the training width"
            )
        model = RidgeCV(alphas=alphas, cv=cv, **dict(ridge_options or {}))
        model.fit(X, Y, groups=groups)
        prediction = model.predict(X_test)
        if pca is not None:
            prediction = pca.inverse_transform(prediction)
        if np.shape(prediction)[1] != n_voxels:
            raise AlignmentError(
                f"ridge_sweep: label {label!r} predicts {np.shape(prediction)[1]} voxels, the "
                f"test repeats have {n_voxels}"
                + ("" if pca is not None else "; pass the PCA if Y holds scores")
            )
        scores = score_prediction(prediction, test_repeats, trim=trim, floor=floor, n_permutations=n_permutations,
                                  block_size=block_size, alpha=fdr_alpha, seed=seed)
        rows.append({**_summary_row(label, scores), "n_features": int(np.shape(X)[1]), **scores,
                     "best_alphas": np.asarray(model.best_alphas_),
                     "prediction": np.asarray(prediction)})
    return rows


def pseudo_subject(label, subject: str) -> str:
    """Name of the (label, subject) pseudo-subject in :func:`encoder_sweep`'s fits."""
    return f"{label}::{subject}"


def _label_width(label, by_subject: Mapping[str, SubjectData]) -> int:
    widths = {}
    for subject, data in by_subject.items():
        for story, x in data.features.items():
            if np.ndim(x) != 2:
                raise AlignmentError(
                    f"features of label {label!r} are not 2-D (n_trs, n_features)",
                    subject=subject, story=story,
                )
            widths.setdefault(np.shape(x)[1], (subject, story))
    if len(widths) != 1:
        found = ", ".join(f"{w} ({s}, {t})" for w, (s, t) in widths.items())
        raise ConfigError(
            f"label {label!r}: stories and subjects must share one feature width, found {found}"
        )
    return next(iter(widths))


def encoder_sweep(
    make_model: Callable,
    data_by_label: Mapping,
    config: TrainConfig,
    *,
    test_features_by_label: Mapping,
    test_responses: Mapping[str, np.ndarray],
    test_repeats: Mapping[str, np.ndarray] | None = None,
    grid: Sequence[Mapping[str, float]] | None = None,
    progress: bool = False,
    trim: int | None = None,
    floor: float | None = CC_MAX_FLOOR,
    top_k: int = 1000,
    checkpoint_dir: str | Path | None = None,
    mesh=None,
    axis: str = "models",
) -> tuple[dict[int, EncoderFit], list[dict]]:
    """Train and score one nonlinear encoder per feature set, in one program per feature width.

    Every (label, subject) pair becomes a pseudo-subject named
    ``pseudo_subject(label, subject)`` (``"label::subject"``); all labels of one feature width
    are trained by a single :func:`jaxenc.train.fit_encoders` call, so their folds, subjects
    and labels run in one compiled, vmapped program (subjects padded to the longest). A
    pseudo-subject's folds are its subject's (they depend on the stories and the seed only),
    but its initialisation and minibatch keys are derived from the pseudo-subject name, so a
    label trained here equals a separate ``fit_encoders`` call on the same pseudo-subject
    name, not one on the bare subject name.

    Parameters
    ----------
    make_model : callable
        ``make_model(n_features, n_outputs, rngs=...)`` as for :func:`fit_encoders`.
    data_by_label : mapping of label to mapping of str to SubjectData
        Training stories per label and subject.
    config : TrainConfig
        Shared by every label.
    test_features_by_label : mapping of label to mapping of str to array
        Per label and subject, the delayed test-story features, shape (n_test, n_features).
    test_responses : mapping of str to array of shape (n_test, n_voxels)
        Per subject, the measured test responses (e.g. the mean over repeats).
    test_repeats : mapping of str to array of shape (n_repeats, n_test, n_voxels), optional
        Per subject, every repeat; adds ``cc_norm``.
    grid : sequence of mapping, optional
        Hyperparameter points, as for :func:`fit_encoders`; each pseudo-subject is scored
        with its best point on validation.
    progress : bool
        Progress bars of the training runs.
    trim : int, optional
        Test-story rows dropped before scoring (see :func:`jaxenc.train.evaluate`).
    floor : float, optional
        Lower bound on the noise ceiling in ``cc_norm`` (0.25, as :func:`ridge_sweep`).
    top_k : int
        Voxels of :func:`jaxenc.train.evaluate`'s top-k summaries.
    checkpoint_dir : str or Path, optional
        Orbax checkpoints of each width group's run in ``checkpoint_dir / f"width{n}"``; a
        rerun resumes each group (see :func:`fit_encoders`).
    mesh : jax.sharding.Mesh, optional
        Spread each run's models along the mesh axis ``axis`` (see :func:`fit_encoders`).
    axis : str
        Name of that mesh axis.

    Returns
    -------
    fits : dict of int to EncoderFit
        One fit per feature width; its model keys name pseudo-subjects.
    rows : list of dict
        One per (label, subject), labels in the order of ``data_by_label``: ``label``,
        ``subject``, ``n_features``, ``mean_r``, ``mean_r2``, ``mean_r2_cod`` (and
        ``mean_cc_norm`` with repeats), the per-voxel arrays ``r``, ``r2``, ``r2_cod`` (and
        ``cc_norm``), each (n_voxels,), and ``summary`` (:func:`jaxenc.train.summarize` of
        each score).

    Raises
    ------
    ConfigError
        No labels, a label without subjects, labels whose pseudo-subject names collide, a
        label whose widths disagree, or missing test features or responses.
    AlignmentError
        Test features of another width than the label's training features.
    """
    if not data_by_label:
        raise ConfigError("encoder_sweep: no labels given")
    names: dict[str, tuple] = {}
    by_width: dict[int, dict[str, SubjectData]] = {}
    width_of = {}
    for label, by_subject in data_by_label.items():
        if not by_subject:
            raise ConfigError(f"encoder_sweep: label {label!r} has no subjects")
        width = width_of[label] = _label_width(label, by_subject)
        if label not in test_features_by_label:
            raise ConfigError(f"encoder_sweep: no test features for label {label!r}")
        for subject, data in by_subject.items():
            name = pseudo_subject(label, subject)
            if name in names:
                raise ConfigError(
                    f"encoder_sweep: labels {names[name][0]!r} and {label!r} both name "
                    f"pseudo-subject {name!r}; give labels distinct string forms"
                )
            names[name] = (label, subject)
            if subject not in test_responses:
                raise ConfigError("encoder_sweep: no test responses", subject=subject)
            if subject not in test_features_by_label[label]:
                raise ConfigError(f"encoder_sweep: no test features for label {label!r}", subject=subject)
            test_width = np.shape(test_features_by_label[label][subject])[-1]
            if test_width != width:
                raise AlignmentError(
                    f"encoder_sweep: test features of label {label!r} have {test_width} columns, "
                    f"its training features {width}",
                    subject=subject,
                )
            by_width.setdefault(width, {})[name] = data

    fits, scored = {}, {}
    for width, data in by_width.items():
        directory = None if checkpoint_dir is None else Path(checkpoint_dir) / f"width{width}"
        fit = fit_encoders(make_model, data, config, grid=grid, progress=progress,
                           checkpoint_dir=directory, mesh=mesh, axis=axis)
        fits[width] = fit
        features = {name: test_features_by_label[names[name][0]][names[name][1]] for name in data}
        responses = {name: test_responses[names[name][1]] for name in data}
        repeats = None if test_repeats is None else {
            name: test_repeats[names[name][1]] for name in data if names[name][1] in test_repeats
        }
        scored.update(evaluate(fit, features, responses, repeats=repeats, trim=trim, floor=floor,
                               top_k=top_k))

    rows = []
    for label, by_subject in data_by_label.items():
        for subject in by_subject:
            result = scored[pseudo_subject(label, subject)]
            metrics = [m for m in VOXEL_SCORES if m in result]
            row = {"label": label, "subject": subject, "n_features": width_of[label]}
            row.update({f"mean_{m}": result["summary"][m]["mean"] for m in metrics})
            row.update({m: result[m] for m in metrics})
            row["summary"] = result["summary"]
            rows.append(row)
    return fits, rows
