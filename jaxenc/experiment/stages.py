"""An experiment run: a config, a run folder and its stages, extract -> fit -> evaluate -> report.

:class:`Experiment` is what the command line and ``Experiment(config, out).run()`` use. It
holds the config, the run folder (:class:`jaxenc.store.RunStore`, which owns every path and
file of the run) and the dataset side of the run (:class:`~jaxenc.experiment.rundata.RunData`),
and hands each stage what it needs:

- :func:`~jaxenc.experiment.extract.extract` (config, data, store): features into the cache;
- :func:`~jaxenc.experiment.fitting.fit` (config, data, store, features): every job to
  test-story predictions through :func:`jaxenc.pipeline.fit_predict`;
- :func:`~jaxenc.experiment.scoring.score_run` (config, data, store): scores and analyses;
- :func:`jaxenc.report.write_report` (results, folder).

The stages and their order are :data:`~jaxenc.experiment.stagelist.STAGES`, which the command
line reads too. Runs attached to the experiment (:data:`ATTACHED`: the nonlinearity step, when
the config asks for it) run each stage right after the experiment's own, in
:meth:`Experiment._run_attached`, the one place they are wired.

Each stage resumes: extraction skips stories already cached, a fit whose predictions were
stored for the same settings and the same input contents is skipped (:mod:`jaxenc.provenance`),
a killed network fit resumes from its checkpoint. Damaged stored files are recomputed with a
warning naming them. Each stage holds the folder's lock (:meth:`RunStore.lock`), so a second
process stops at once, and only a stage that succeeds rewrites ``config.json``.

In a job of several processes (:mod:`jaxenc.multihost`, found from ``jax.distributed``) every
process runs every stage, the same computations in the same order; process 0 alone writes the
folder (:class:`RunStore` with the job's processes) and all wait for each other at the end of
each stage, so that the next one reads what process 0 wrote.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable

from tqdm.auto import tqdm

from jaxenc import multihost, report
from jaxenc import precision as matmul
from jaxenc.distributed import describe_mesh, run_mesh
from jaxenc.errors import DataError, DataWarning
from jaxenc.experiment import fitting, nonlinearity
from jaxenc.experiment.checks import check_folds, check_memory
from jaxenc.experiment.config import ExperimentConfig
from jaxenc.experiment.extract import FeatureReader, extract
from jaxenc.experiment.rundata import RunData
from jaxenc.experiment.scoring import score_run
from jaxenc.experiment.stagelist import STAGES, AttachedRun, Stage
from jaxenc.report import RunResults
from jaxenc.store import RunStore
from jaxenc.synthetic.cortex import parse_cortex

__all__ = ["Experiment", "ATTACHED"]

# The runs attached to an experiment, each run when its config asks for it.
ATTACHED: tuple[AttachedRun, ...] = (nonlinearity.STEP,)

# The matrix-product precision settings each stage runs at, by config key: checked against the
# backend before the stage starts, so a setting it lacks stops the stage in one line.
_PRECISIONS = {"extract": ("audio.precision", "semantic.precision"),
               "fit": ("train.precision", "table.pca_precision", "ridge.precision")}


def _check_precisions(config: ExperimentConfig, stage: str) -> None:
    for key in _PRECISIONS[stage]:
        section, name = key.split(".")
        matmul.check(getattr(getattr(config, section), name), key, auto=True, on=matmul.platform())


def _locked(stage: Callable) -> Callable:
    """Run a stage while holding the run folder's lock (:meth:`RunStore.lock`); then wait for
    every process of the job, so that all read what the writer wrote."""

    @functools.wraps(stage)
    def run(self, *args, **kwargs):
        with self.store.lock():
            result = stage(self, *args, **kwargs)
        self.store.barrier(stage.__name__)
        return result

    return run


class Experiment:
    """One experiment run: a config and the folder its stages read and write.

    Parameters
    ----------
    config : ExperimentConfig
    out : str or Path
        Output folder (created).
    progress : bool
        Show progress bars.
    log : callable
        Receives one line per step (``print`` on the command line).
    """

    def __init__(self, config: ExperimentConfig, out, *, progress: bool = True, log: Callable = print):
        self.config = config
        self.store = RunStore(out, multihost.processes())
        self.out = self.store.root
        self.progress = progress
        self.log = log
        self.timings: dict[str, float] = {}

    @functools.cached_property
    def mesh(self):
        """The one-axis mesh the fit and evaluate stages shard over (``run.devices``,
        :func:`jaxenc.distributed.run_mesh`); None on one device."""
        return run_mesh(self.config.run.devices)

    @functools.cached_property
    def data(self) -> RunData:
        """The dataset side of the run (the synthetic twin is written on first use)."""
        return RunData(self.config.data, self.store, progress=self.progress, log=self.log)

    def _bar(self, items, **kwargs):
        return tqdm(items, disable=not self.progress, **kwargs)

    def _start(self) -> float:
        # config.json is what a stage that succeeded ran with: a failed stage (a bad setting)
        # leaves it as it was, so the next plain stage on the folder still works. The first
        # stage writes it at once, so that a killed first run resumes from its folder.
        if not self.store.path(RunStore.CONFIG).is_file():
            self.store.save_config(self.config.to_dict())
        return time.perf_counter()

    def _done(self) -> None:
        self.store.save_config(self.config.to_dict())

    @functools.cached_property
    def attached(self) -> list[tuple[AttachedRun, Experiment]]:
        """The runs of :data:`ATTACHED` that this config asks for, each with its experiment in
        its sub-folder."""
        out = []
        for run in ATTACHED:
            config = run.config(self.config)
            if config is not None:
                out.append((run, Experiment(config, self.out / run.folder, progress=self.progress, log=self.log)))
        return out

    def _run_attached(self, stage: str, results: RunResults | None = None) -> None:
        """Run ``stage`` of every attached run, after this run's own; with this run's evaluated
        ``results``, merge each attached run's into them (:attr:`AttachedRun.merge`). Each takes
        the timing ``"<folder>/<stage>"``."""
        for run, exp in self.attached:
            started = time.perf_counter()
            self.log(f"{run.title}: {stage} in {exp.out}")
            out = getattr(exp, stage)()
            if results is not None:
                run.merge(results, exp, out)
            self.timings[f"{run.folder}/{stage}"] = time.perf_counter() - started

    @_locked
    def extract(self) -> dict:
        """Extract (or read from the cache) every feature source the config uses; return the index."""
        _check_precisions(self.config, "extract")
        started = self._start()
        index = extract(self.config, self.data, self.store, progress=self.progress, log=self.log)
        self.timings["extract"] = time.perf_counter() - started
        self._run_attached("extract")
        self._done()
        return index

    @_locked
    def fit(self) -> list[str]:
        """Fit every job of the table and the sweeps, then the attached runs'.

        Returns
        -------
        list of str
            The prediction records' names of this run (not the attached runs').
        """
        _check_precisions(self.config, "fit")
        started = self._start()
        self.log(f"fit on {describe_mesh(self.mesh)}")
        features = FeatureReader(self.store, self.data)
        names = fitting.fit(self.config, self.data, self.store, features, progress=self.progress, log=self.log,
                            bar=self._bar, mesh=self.mesh)
        self.timings["fit"] = time.perf_counter() - started
        self._run_attached("fit")
        self._done()
        return names

    @_locked
    def evaluate(self) -> RunResults:
        """Score every prediction on the test story, run the analyses, evaluate the attached runs
        and merge their results, save the results.

        Returns
        -------
        jaxenc.report.RunResults
        """
        # `jaxenc evaluate --set evaluate.permutations=...` is checked before the scoring too.
        check_memory(self.config, self.data, fitting.table_jobs(self.config), mesh=self.mesh)
        started = self._start()
        self.log(f"evaluate on {describe_mesh(self.mesh)}")
        results = score_run(self.config, self.data, self.store, bar=self._bar)
        self.timings["evaluate"] = time.perf_counter() - started
        self._run_attached("evaluate", results)
        results.timings.update(self.store.merge_timings(self.timings))
        if self.store.writer:
            results.save(self.out)
        self._done()
        return results

    @_locked
    def report(self) -> dict:
        """Write OUT/report.html and OUT/report.md from the saved results.

        Saved results that cannot be read (a damaged score file) are computed again from the
        stored predictions, with a warning naming the file.

        Returns
        -------
        dict of str to Path
            Empty on the processes of a job other than the writer.
        """
        try:
            results = RunResults.load(self.out)
        except DataError as err:
            warnings.warn(f"{err}; scoring the stored predictions again", DataWarning, stacklevel=3)
            results = self.evaluate()
        paths = {}
        if self.store.writer:
            paths = report.write_report(results, self.out, formats=tuple(self.config.report.formats),
                                        flatmaps=self._flatmaps(results.subjects))
        # Every process: the attached runs' stages wait for each other too.
        self._run_attached("report")
        return paths

    def _flatmaps(self, subjects) -> dict:
        """``report.flatmaps``; when empty, on a twin with cortical voxels, each subject drawn on
        the twin's pycortex subject and transform with its planted audio ROI outlined."""
        if self.config.report.flatmaps or self.config.data.root:
            return dict(self.config.report.flatmaps)
        twin = self.config.data.synthetic_config()
        if not twin.cortex:
            return {}
        pycortex_subject, xfm = parse_cortex(twin.cortex)
        return {s: {"pycortex_subject": pycortex_subject, "xfm": xfm, "rois": [twin.cortex_roi]} for s in subjects}

    @_locked
    def check(self) -> None:
        """Check the settings that depend on the data (fold counts against the stories, the
        memory of the compiled programs against the device's, subject names) before any stage
        runs, so that a run stops before minutes of extraction; the stages that read
        them check them too.

        Raises
        ------
        ConfigError
            Naming the setting to change.
        """
        jobs = fitting.table_jobs(self.config)
        check_folds(self.config, self.data, jobs)
        check_memory(self.config, self.data, jobs, mesh=self.mesh)

    @_locked
    def run(self, *, before: Callable[[Stage], None] | None = None) -> dict:
        """The checks, then every stage of :data:`~jaxenc.experiment.stagelist.STAGES` in order.

        Parameters
        ----------
        before : callable, optional
            Called with each :class:`~jaxenc.experiment.stagelist.Stage` as it starts (the
            command line prints its title).

        Returns
        -------
        dict of str to Path
            The report's paths (what the last stage, ``report``, returns).
        """
        self.check()
        for stage in STAGES:
            if before is not None:
                before(stage)
            out = getattr(self, stage.name)()
            self.store.merge_timings(self.timings)
        return out
