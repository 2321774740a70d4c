"""The stages of an experiment run, in order, and the runs attached to one.

:data:`STAGES` is the one list of stages: :meth:`jaxenc.experiment.Experiment.run` runs them in
this order, ``jaxenc run`` prints their titles as it goes, and each is a ``jaxenc`` subcommand
of its own. This module imports nothing of jaxenc (nor JAX), so ``jaxenc --help`` lists the
stage commands without loading the experiment stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Stage", "STAGES", "CHECK_DOING", "AttachedRun"]


@dataclass(frozen=True)
class Stage:
    """One stage of an experiment run."""

    # The Experiment method that runs it and the jaxenc subcommand that runs it alone.
    name: str
    # What `jaxenc run` prints as the stage starts ("[2/4] encoders").
    title: str
    # What was under way when an interruption (Ctrl-C, SIGTERM) names the stage.
    doing: str
    # The subcommand's one-line help.
    help: str


STAGES = (
    Stage("extract", "features", "feature extraction",
          "extract the features the config uses into OUT/features (resumes per story)"),
    Stage("fit", "encoders", "the fits",
          "fit every encoder of the table and the sweeps; store test-story predictions (skips fits already "
          "stored with the same settings and input contents; nonlinear fits resume from their checkpoints)"),
    Stage("evaluate", "test-story scores and analyses", "the scoring",
          "score every stored prediction on the test story (r, r2 = r·|r|, r2_cod, cc_norm, permutation "
          "significance), run the analyses, write OUT/metrics.json and OUT/scores/"),
    Stage("report", "report", "the report", "write OUT/report.html and OUT/report.md from the saved scores"),
)
# What an interruption names while the checks before the stages run (Experiment.check).
CHECK_DOING = "the checks before the stages"


@dataclass(frozen=True)
class AttachedRun:
    """A run of its own, in a sub-folder, whose stages run right after its parent's.

    :class:`~jaxenc.experiment.Experiment` runs each stage of an attached run after the same
    stage of its own, and hands the attached run's evaluated results to :attr:`merge`: the one
    place where they join the parent's.
    """

    # Sub-folder of the parent run holding the attached run.
    folder: str
    # What the log names it by.
    title: str
    # The attached run's ExperimentConfig given the parent's; None: not attached to this one.
    config: Callable
    # merge(parent_results, attached_experiment, attached_results): adds the attached run's
    # evaluated results to the parent's RunResults before they are saved.
    merge: Callable
