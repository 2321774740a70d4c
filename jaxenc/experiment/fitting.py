"""The fit stage: every job of the table and the sweeps, run by the one job runner.

A job is one (feature set, encoder, target) for all subjects of the run; the sweeps are jobs
too (ridge on another layer or model of the semantic source). :class:`Designs` builds each
job's arrays with :mod:`jaxenc.pipeline.designs` (each source aligned once, stacked per
subject); :func:`jaxenc.pipeline.fit_predict` fits them; the run store keeps each job's
predictions under the digest of the settings and the input contents they depend on
(:mod:`jaxenc.provenance`), so a rerun skips what is done and redoes what changed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from jaxenc.analysis.sweeps import LAYER_SWEEP, MODEL_SWEEP
from jaxenc.errors import DataError
from jaxenc.experiment import scaling
from jaxenc.experiment.checks import check_folds, check_memory
from jaxenc.featuresets import JOINT, SEMANTIC, FeatureSource, modalities
from jaxenc.models.registry import encoder
from jaxenc.pipeline.designs import GRID_TRIM, align_stories, stack_design, training_responses
from jaxenc.pipeline.runner import SubjectArrays, fit_predict
from jaxenc.provenance import InputDigests, combined
from jaxenc.store import RunStore

__all__ = ["Job", "table_jobs", "job_name", "interactions_file", "Designs", "fit"]


@dataclass(frozen=True)
class Job:
    """One fit for every subject: feature sources (one per modality, in design order), an
    encoder and a target; a sweep's jobs say which sweep and where on it."""

    sources: tuple[FeatureSource, ...]
    model: str
    target: str
    sweep: str = ""
    x: float = 0.0
    x_label: str = ""

    @property
    def features(self) -> str:
        """The label of its features: a feature set of the table, or a source's name."""
        return JOINT if len(self.sources) > 1 else self.sources[0].name


def job_name(job: Job) -> str:
    """File stem of a job's predictions, e.g. ``audio+semantic__mlp__pca``."""
    return f"{job.features.replace('/', '-')}__{job.model}__{job.target}"


def table_jobs(config) -> list[Job]:
    """The jobs of the table and the sweeps of a config, in fitting order."""
    jobs = []
    for target in config.table.targets:
        for features in config.table.feature_sets:
            sources = tuple(FeatureSource(m) for m in modalities(features))
            for model in config.table.models:
                if encoder(model).min_modalities <= len(sources):
                    jobs.append(Job(sources, model, target))
    for layer in config.analyses.layer_sweep:
        jobs.append(Job((FeatureSource(SEMANTIC, layer=layer),), "ridge", "voxels", LAYER_SWEEP, float(layer),
                        f"L{layer}"))
    for spec in config.analyses.size_sweep:
        jobs.append(Job((FeatureSource(SEMANTIC, model=spec.label),), "ridge", "voxels", MODEL_SWEEP, 0.0,
                        spec.label))
    return jobs


class Designs:
    """Each job's :class:`~jaxenc.pipeline.SubjectArrays`, every source aligned once for all subjects.

    Parameters
    ----------
    align : jaxenc.pipeline.AlignOptions
    data : RunData
    features : FeatureReader
    """

    def __init__(self, align, data, features):
        self.align, self.data, self.features = align, data, features
        self._aligned: dict = {}
        self._responses: dict = {}
        # PCAs of the responses, shared by every job of the run (jaxenc.pipeline.fit_predict).
        self.cache: dict = {}

    def aligned(self, source: FeatureSource) -> dict:
        """Every story's features of ``source`` on its response rows (training stories trimmed
        by ``align.train_trim``, the test story by the protocol)."""
        if source not in self._aligned:
            features = self.features.read(source)
            test = self.data.test_story
            train = [s for s in self.data.stories if s != test]
            aligned = align_stories(features, self.data.respdict, train, trim=self.align.train_trim)
            aligned.update(align_stories(features, self.data.respdict, [test], trim=GRID_TRIM))
            self._aligned[source] = aligned
        return self._aligned[source]

    def responses(self, subject: str, slices: dict):
        """A subject's training responses on the rows of its designs (equal for every source)."""
        if subject not in self._responses:
            self._responses[subject] = training_responses(self.data.dataset, subject, self.data.train_stories(subject),
                                                          slices, self.align.train_trim)
        return self._responses[subject]

    def arrays(self, job: Job, subject: str) -> SubjectArrays:
        """A job's training and test arrays for one subject."""
        aligned = [self.aligned(source) for source in job.sources]
        design = stack_design(aligned, self.data.train_stories(subject), self.align)
        test = stack_design(aligned, [self.data.test_story], self.align)
        return SubjectArrays(design.X, self.responses(subject, design.slices), design.groups, test.X,
                             design.bands, design.n_delays)


def _digest(config, index: dict, job: Job, responses: str) -> str:
    """Hash of everything a job's predictions depend on: settings, the keys of its features
    (with their inputs' content digests) and ``responses``, the digest of the response files
    (:meth:`jaxenc.provenance.InputDigests.responses`). The dataset's location is left out: its
    content counts."""
    cfg = config.to_dict()
    fit = ({"ridge": cfg["ridge"]} if encoder(job.model).is_ridge else
           {"train": cfg["train"], "networks": cfg["networks"], "grid": cfg["fit"]["grid"]})
    payload = {
        "job": [[s.name for s in job.sources], job.model, job.target],
        "seed": cfg["seed"],
        "data": {k: v for k, v in cfg["data"].items() if k != "root"},
        "responses": responses,
        "align": cfg["align"],
        "pca": {k: cfg["table"][k] for k in ("n_components", "pca_method", "pca_n_iter", "pca_precision")}
        if job.target == "pca" else None,
        "fit": fit,
        "features": {s.extraction: {k: v for k, v in index[s.extraction].items() if k != "keys"} | {
            "keys": combined(index[s.extraction].get("keys"))}
            for s in job.sources},
    }
    if _attributes_interactions(config, job):
        # Only then: the digests of runs without the analysis stay what they were.
        payload["interactions"] = True
    if config.analyses.data_fractions:
        payload["data_fractions"] = list(config.analyses.data_fractions)
    return combined(payload)


def _attributes_interactions(config, job: Job) -> bool:
    """Whether a job's fit also decomposes its networks' interactions (analyses.interactions)."""
    return config.analyses.interactions and not encoder(job.model).is_ridge and len(job.sources) > 1


def interactions_file(name: str) -> str:
    """Run-relative path of a job's interaction shares, beside its predictions."""
    return f"{RunStore.PREDICTIONS}/{name}.interactions.npz"


def fit(config, data, store: RunStore, features, *, progress: bool = True, log: Callable = print,
        bar: Callable = lambda items, **kwargs: items) -> list[str]:
    """Fit every job of the config that is not stored yet; return all job names of the run.

    Parameters
    ----------
    config : ExperimentConfig
    data : RunData
    store : RunStore
        Where predictions and checkpoints go.
    features : FeatureReader
    progress : bool
        Progress bars of the networks' training.
    log : callable
        Receives one line per job.
    bar : callable
        Wraps the job list in a progress bar.
    """
    jobs = table_jobs(config)
    check_folds(config, data, jobs)
    check_memory(config, data, jobs)
    digests = InputDigests(store)
    responses = digests.responses(data)
    stale = digests.stale_features(features.index, data)
    digests.save()
    if stale:
        raise DataError(f"inputs changed since their features were extracted ({', '.join(stale[:8])}); "
                        "run `jaxenc extract` (or `jaxenc run`) first", path=store.path(RunStore.FEATURES_INDEX))
    designs = Designs(config.align, data, features)
    names = []
    for job in bar(jobs, desc="fits", unit="fit"):
        name = job_name(job)
        names.append(name)
        digest = _digest(config, features.index, job, responses)
        if store.reusable_prediction(name, digest):
            log(f"  {name}: stored, skipped")
            continue
        started = time.perf_counter()
        arrays = {subject: designs.arrays(job, subject) for subject in data.subjects}
        if config.analyses.data_fractions:
            arrays = scaling.expand(config, jobs, arrays)
        result = fit_predict(
            job.model, arrays, target=job.target,
            ridge=config.ridge, networks=config.networks, train=config.train, grid=config.fit.grid,
            checkpoint_dir=store.checkpoint_dir(f"{name}-{digest}"), cache=designs.cache, progress=progress,
            interactions=_attributes_interactions(config, job))
        seconds = time.perf_counter() - started
        meta = {"features": job.features, "model": job.model, "target": job.target, "digest": digest,
                "seconds": round(seconds, 2), **result.info}
        if job.sweep:
            meta.update(sweep=job.sweep, x=job.x, x_label=job.x_label)
        if job.sweep == MODEL_SWEEP:
            meta["x"] = float(features.entry(job.sources[0]).get("n_params", 0))
        if result.interactions:
            # Before the predictions' record, which marks the job complete.
            store.write_arrays(interactions_file(name), result.interactions)
        if config.analyses.data_fractions and result.fold_predictions:
            store.write_arrays(scaling.folds_file(name), result.fold_predictions)
        store.save_prediction(name, result.predictions, meta)
        # Only once the predictions are stored: a fit killed before that still resumes.
        if not config.fit.keep_checkpoints and result.checkpoints:
            shutil.rmtree(store.checkpoint_dir(f"{name}-{digest}"), ignore_errors=True)
        log(f"  {name}: {seconds:.1f} s")
    return names
