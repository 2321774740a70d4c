"""The nonlinearity step: the paper's central claim where the synthetic twin plants it.

"Mind the Gap" argues that the brain's responses to speech need a nonlinear, multimodal
encoder. The synthetic twin plants such responses (interaction voxels driven by audio x
semantic products), but the demo's own extracted features and its 800 training rows per fold
do not let a network learn them (see :class:`jaxenc.experiment.sections.PlantedConfig`). This
step fits the encoders of :class:`~jaxenc.experiment.sections.NonlinearityConfig` on a
reshaped twin from its planted features, as a run of its own in ``OUT/nonlinearity`` attached
to the main run (:data:`STEP`, an :class:`~jaxenc.experiment.stagelist.AttachedRun`: each of
its stages runs after the main run's), and hands its planted checks and its per-class scores
to the main run's results and report (:func:`merge_results`).
"""

from __future__ import annotations

from jaxenc.experiment import sections as s
from jaxenc.experiment.config import ExperimentConfig
from jaxenc.experiment.planted import class_means
from jaxenc.experiment.stagelist import AttachedRun
from jaxenc.featuresets import JOINT
from jaxenc.models.registry import RidgeOptions

__all__ = ["STEP", "STEP_FOLDER", "step_config", "attached_config", "merge_results", "step_summary", "planted_key"]

# Sub-folder of a run that holds the step's own run.
STEP_FOLDER = "nonlinearity"


def step_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The experiment config of the step of ``cfg`` (``cfg.nonlinearity``'s settings).

    Parameters
    ----------
    cfg : ExperimentConfig

    Returns
    -------
    ExperimentConfig
        The reshaped tiny twin (seed ``cfg.data.seed``), planted audio and semantic features,
        ``cfg.nonlinearity.models`` on audio+semantic voxel targets, the main run's alignment,
        evaluation, ridge solver dtype and device (``run``) settings, no partition or clustering, the
        ``interaction_nonlinearity`` check on, and no step of its own.
    """
    step = cfg.nonlinearity
    subjects = tuple(step.synthetic.get("subjects", ()))
    return ExperimentConfig(
        name=f"{cfg.name}-{STEP_FOLDER}",
        seed=cfg.seed,
        data=s.DataConfig(preset="tiny", seed=cfg.data.seed, subjects=subjects, synthetic=dict(step.synthetic)),
        audio=s.AudioConfig(source="planted"),
        semantic=s.SemanticConfig(source="planted"),
        align=cfg.align,
        table=s.TableConfig(feature_sets=(JOINT,), models=step.models, targets=("voxels",)),
        ridge=RidgeOptions(log10_alphas=cfg.ridge.log10_alphas, folds=step.ridge_folds,
                           solver_dtype=cfg.ridge.solver_dtype),
        networks=step.networks,
        train=step.train,
        fit=step.fit,
        evaluate=cfg.evaluate,
        analyses=s.AnalysesConfig(partition=False, clustering=False),
        planted=s.PlantedConfig(interaction_nonlinearity=step.margin),
        nonlinearity=s.NonlinearityConfig(run=False),
        report=cfg.report,
        run=cfg.run,
    ).validate()


def attached_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The step's config when ``cfg`` runs the step (:attr:`AttachedRun.config`).

    Parameters
    ----------
    cfg : ExperimentConfig

    Returns
    -------
    ExperimentConfig or None
        :func:`step_config`; None when ``nonlinearity.run`` is false or the run is on real data
        (nothing planted).
    """
    if not cfg.nonlinearity.run or cfg.data.root:
        return None
    return step_config(cfg)


def merge_results(results, step, step_results) -> None:
    """Add the step's evaluated results to the main run's (:attr:`AttachedRun.merge`).

    Parameters
    ----------
    results : RunResults
        The main run's, not yet saved: gains ``nonlinearity`` (:func:`step_summary`) and the
        step's planted checks under :func:`planted_key`.
    step : Experiment
        The step's run.
    step_results : RunResults
        The step's evaluated results.
    """
    results.nonlinearity = step_summary(step, step_results)
    for subject, checks in step_results.planted.items():
        results.planted[planted_key(subject)] = checks


def planted_key(subject: str) -> str:
    """Key of a step subject's planted checks among the main run's (``"nonlinearity/UTS01"``)."""
    return f"{STEP_FOLDER}/{subject}"


def step_summary(step, results) -> dict:
    """What the main run keeps of the step: mean r per model and planted voxel class.

    Parameters
    ----------
    step : Experiment
        The step's run (its twin's truth gives the voxel classes).
    results : RunResults
        The step's evaluated results.

    Returns
    -------
    dict
        ``folder`` (relative to the main run), ``subjects``, ``models`` and ``rows``: one per
        subject, model and voxel class present, ``{"subject", "model", "voxels", "n_voxels",
        "mean_r", "mean_r2"}`` (r2 the paper's r·|r|).
    """
    return {"folder": STEP_FOLDER, "subjects": list(step.data.subjects),
            "models": list(dict.fromkeys(m.model for m in results.models)),
            "rows": class_means(step.data.truth, results)}


# The step, attached to every run whose config asks for it (jaxenc.experiment.stages).
STEP = AttachedRun(folder=STEP_FOLDER, title="nonlinearity step (planted features on a reshaped twin)",
                   config=attached_config, merge=merge_results)
