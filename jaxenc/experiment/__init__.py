"""Experiments from config files: the stages behind the ``jaxenc`` command line.

:func:`load_config` reads a TOML experiment (strictly: unknown keys, wrong types and values are
:class:`jaxenc.errors.ConfigError`) into an :class:`ExperimentConfig`, which holds the
library's own settings dataclasses (:mod:`jaxenc.experiment.config`) and the experiment's
sections (:mod:`jaxenc.experiment.sections`). :class:`Experiment` runs its stages
(:data:`~jaxenc.experiment.stagelist.STAGES`) into one run folder
(:class:`jaxenc.store.RunStore`): ``extract`` (features into a tensorstore cache,
:mod:`~jaxenc.experiment.extract`), ``fit`` (every job of the table and the sweeps through
:func:`jaxenc.pipeline.fit_predict`, :mod:`~jaxenc.experiment.fitting`), ``evaluate``
(:func:`jaxenc.metrics.score`, the analyses and the planted checks,
:func:`~jaxenc.experiment.scoring.score_run`, :mod:`~jaxenc.experiment.planted`) and
``report``; the nonlinearity step (:mod:`~jaxenc.experiment.nonlinearity`) is a run attached
to it. This is a glue layer like :mod:`jaxenc.pipeline`: it may import every subpackage.

The names are loaded on first use, so that the command line reads the stage list
(:mod:`~jaxenc.experiment.stagelist`) without loading JAX.
"""

from jaxenc._lazy import lazy_names

# Public name -> the submodule defining it.
_WHERE = {
    "ExperimentConfig": "config",
    "load_config": "config",
    "apply_overrides": "config",
    "Experiment": "stages",
}

__all__ = list(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
