"""Experiments from config files: the stages behind the ``jaxenc`` command line.

:func:`load_config` reads a TOML experiment (strictly: unknown keys, wrong types and values are
:class:`jaxenc.errors.ConfigError`) into an :class:`ExperimentConfig`, which holds the
library's own settings dataclasses (:mod:`jaxenc.experiment.config`) and the experiment's
sections (:mod:`jaxenc.experiment.sections`). :class:`Experiment` runs its stages into one run
folder (:class:`jaxenc.store.RunStore`): ``extract`` (features into a tensorstore cache,
:mod:`~jaxenc.experiment.extract`), ``fit`` (every job of the table and the sweeps through
:func:`jaxenc.pipeline.fit_predict`, :mod:`~jaxenc.experiment.fitting`), ``evaluate``
(:func:`jaxenc.metrics.score`, the analyses and the planted checks,
:mod:`~jaxenc.experiment.scoring`, :mod:`~jaxenc.experiment.planted`) and ``report``. This is a
glue layer like :mod:`jaxenc.pipeline`: it may import every subpackage.
"""

from jaxenc.experiment.config import ExperimentConfig, apply_overrides, load_config
from jaxenc.experiment.stages import Experiment

__all__ = ["ExperimentConfig", "load_config", "apply_overrides", "Experiment"]
