"""The nonlinearity step: the paper's central claim where the synthetic twin plants it.

"Mind the Gap" argues that the brain's responses to speech need a nonlinear, multimodal
encoder. The synthetic twin plants such responses (interaction voxels driven by audio x
semantic products), but the demo's own extracted features and its 800 training rows per fold
do not let a network learn them (see :class:`jaxenc.experiment.sections.PlantedConfig`). This
step fits the encoders of :class:`~jaxenc.experiment.sections.NonlinearityConfig` on a
reshaped twin from its planted features, as a run of its own in ``OUT/nonlinearity``, and
hands its planted checks and its per-class scores to the main run's results and report.
"""

from __future__ import annotations

__all__ = ["STEP_FOLDER", "step_config", "step_experiment", "step_summary", "planted_key"]

# Sub-folder of a run that holds the step's own run.
STEP_FOLDER = "nonlinearity"


def step_config(cfg):
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
    from jaxenc.experiment import sections as s
    from jaxenc.experiment.config import ExperimentConfig
    from jaxenc.featuresets import JOINT
    from jaxenc.models.registry import RidgeOptions

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


def step_experiment(exp):
    """The step's :class:`~jaxenc.experiment.Experiment` in ``exp.out / "nonlinearity"``.

    Parameters
    ----------
    exp : Experiment

    Returns
    -------
    Experiment or None
        None when ``nonlinearity.run`` is false or the run is on real data (nothing planted).
    """
    from jaxenc.experiment.stages import Experiment

    cfg = exp.config
    if not cfg.nonlinearity.run or cfg.data.root:
        return None
    return Experiment(step_config(cfg), exp.out / STEP_FOLDER, progress=exp.progress, log=exp.log)


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
    from jaxenc.experiment.planted import class_means

    return {"folder": STEP_FOLDER, "subjects": list(step.data.subjects),
            "models": list(dict.fromkeys(m.model for m in results.models)),
            "rows": class_means(step.data.truth, results)}
