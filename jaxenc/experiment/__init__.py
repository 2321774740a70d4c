"""Experiments from config files: the stages behind the ``jaxenc`` command line.

:func:`load_config` reads a TOML experiment (strictly: unknown keys, wrong types and values are
:class:`jaxenc.errors.ConfigError`), :class:`Experiment` runs its stages into one output
folder: ``extract`` (features into a tensorstore cache), ``fit`` (every encoder of the table
and the sweeps, to test-story predictions), ``evaluate`` (per-voxel scores, variance partition,
clustering, planted checks) and ``report`` (HTML and Markdown). This is a glue layer like
:mod:`jaxenc.pipeline`: it may import every subpackage.
"""

from jaxenc.experiment.config import ExperimentConfig, apply_overrides, load_config
from jaxenc.experiment.stages import Experiment

__all__ = ["ExperimentConfig", "load_config", "apply_overrides", "Experiment"]
