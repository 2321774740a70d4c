"""The fit stage: every job of the table and the sweeps, run by the one job runner.

A job is one (feature set, encoder, target) for all subjects of the run; the sweeps are jobs
too (ridge on another layer or model of the semantic source, or on another audio window).
:class:`jaxenc.pipeline.Designs` builds each job's arrays (each source aligned once, each
subject's responses read once), as it does for :func:`jaxenc.pipeline.fit_linear_baseline`;
:func:`jaxenc.pipeline.fit_predict` fits them; the run store keeps each job's predictions under
the digest of the settings and the input contents they depend on (:mod:`jaxenc.provenance`), so
a rerun skips what is done and redoes what changed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from jaxenc.analysis.sweeps import LAYER_SWEEP, MODEL_SWEEP, WINDOW_SWEEP
from jaxenc.errors import DataError
from jaxenc.experiment import scaling
from jaxenc.experiment.checks import check_folds, check_memory
from jaxenc.featuresets import AUDIO, FEATURE_SETS, JOINT, SEMANTIC, FeatureSource, modalities
from jaxenc.models.registry import EncoderSpec, encoder
from jaxenc.pipeline.designs import Designs
from jaxenc.pipeline.runner import fit_predict, response_mesh
from jaxenc.provenance import InputDigests, combined
from jaxenc.store import RunStore

__all__ = ["Job", "table_jobs", "job_name", "record_name", "interactions_file", "clusters_folds", "run_designs",
           "fit"]


@dataclass(frozen=True)
class Job:
    """One fit for every subject: feature sources (one per modality, in design order), an
    encoder (its name parsed once, :attr:`TableConfig.encoders`) and a target; a sweep's jobs
    say which sweep and where on it."""

    sources: tuple[FeatureSource, ...]
    spec: EncoderSpec
    target: str
    sweep: str = ""
    x: float = 0.0
    x_label: str = ""

    @property
    def model(self) -> str:
        """The encoder's name, e.g. ``"deepmlp-3"``."""
        return self.spec.name

    @property
    def features(self) -> str:
        """The label of its features: a feature set of the table, or a source's name."""
        return JOINT if len(self.sources) > 1 else self.sources[0].name


def job_name(job: Job) -> str:
    """File stem of a job's predictions, e.g. ``audio+semantic__mlp__pca``."""
    return record_name(job.features, job.model, job.target)


def record_name(features: str, model: str, target: str) -> str:
    """File stem of the predictions of ``model`` on ``features`` for ``target`` (:func:`job_name`)."""
    return f"{features.replace('/', '-')}__{model}__{target}"


def table_jobs(config) -> list[Job]:
    """The jobs of the table and the sweeps of a config, in fitting order."""
    jobs = []
    for target in config.table.targets:
        for features in config.table.feature_sets:
            sources = tuple(FeatureSource(m) for m in modalities(features))
            for spec in config.table.encoders:
                if spec.min_modalities <= len(sources):
                    jobs.append(Job(sources, spec, target))
    ridge = encoder("ridge")
    for layer in config.analyses.layer_sweep:
        jobs.append(Job((FeatureSource(SEMANTIC, layer=layer),), ridge, "voxels", LAYER_SWEEP, float(layer),
                        f"L{layer}"))
    for spec in config.analyses.size_sweep:
        jobs.append(Job((FeatureSource(SEMANTIC, model=spec.label),), ridge, "voxels", MODEL_SWEEP, 0.0,
                        spec.label))
    for window in config.analyses.window_sweep:
        jobs.append(Job((FeatureSource(AUDIO, window=window),), ridge, "voxels", WINDOW_SWEEP, float(window),
                        f"{window:g} s"))
    return jobs


def run_designs(config, data, features) -> Designs:
    """The run's :class:`~jaxenc.pipeline.Designs`: its subjects' training stories, the features
    of the run's cache (a :class:`~jaxenc.experiment.extract.FeatureReader`), ``[align]``."""
    return Designs(data.dataset, features.read, {s: data.train_stories(s) for s in data.subjects}, config.align)


def _digest(config, index: dict, job: Job, responses: str) -> str:
    """Hash of everything a job's predictions depend on: settings, the keys of its features
    (with their inputs' content digests) and ``responses``, the digest of the response files
    (:meth:`jaxenc.provenance.InputDigests.responses`). The dataset's location is left out: its
    content counts."""
    cfg = config.to_dict()
    fit = ({"ridge": cfg["ridge"]} if job.spec.is_ridge else
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
        if config.analyses.data_draws > 1:
            # Only then: the digests of one-draw runs stay what they were.
            payload["data_draws"] = config.analyses.data_draws
    if clusters_folds(config, job.spec, job.features, job.target):
        # Only then (the job then also stores its fold models' predictions): the digests of
        # runs without the clustering, and of its ridge jobs, stay what they were.
        payload["cluster_folds"] = True
    return combined(payload)


def _attributes_interactions(config, job: Job) -> bool:
    """Whether a job's fit also decomposes its networks' interactions (analyses.interactions)."""
    return config.analyses.interactions and not job.spec.is_ridge and len(job.sources) > 1


def clusters_folds(config, spec: EncoderSpec, features: str, target: str) -> bool:
    """Whether the clustering's fold stability uses the fold models of ``spec`` on ``features``
    for ``target`` (analyses.clustering): a network fitted on each of the three feature sets
    (as every job of the table is, sweeps being ridge), on the table's first target (the one
    the clustering labels), for a table that has the three sets. Ridge refits one model on all
    the training stories, so it has no fold models to compare."""
    return (config.analyses.clustering and not spec.is_ridge and spec.min_modalities == 1
            and features in FEATURE_SETS and set(FEATURE_SETS) <= set(config.table.feature_sets)
            and target == config.table.targets[0])


def _stores_folds(config, job: Job) -> bool:
    """Whether a job's fold models' test predictions are stored (:func:`scaling.folds_file`):
    for the data-scaling curves, and for the clustering's fold stability."""
    return bool(config.analyses.data_fractions) or clusters_folds(config, job.spec, job.features, job.target)


def interactions_file(name: str) -> str:
    """Run-relative path of a job's interaction shares, beside its predictions."""
    return f"{RunStore.PREDICTIONS}/{name}.interactions.npz"


def fit(config, data, store: RunStore, features, *, progress: bool = True, log: Callable = print,
        bar: Callable = lambda items, **kwargs: items, mesh=None) -> list[str]:
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
    mesh : jax.sharding.Mesh, optional
        The run's mesh (:attr:`jaxenc.experiment.Experiment.mesh`), handed to every job.
    """
    jobs = table_jobs(config)
    check_folds(config, data, jobs)
    check_memory(config, data, jobs, mesh=mesh)
    digests = InputDigests(store)
    responses = digests.responses(data)
    stale = digests.stale_features(features.index, data)
    digests.save()
    if stale:
        raise DataError(f"inputs changed since their features were extracted ({', '.join(stale[:8])}); "
                        "run `jaxenc extract` (or `jaxenc run`) first", path=store.path(RunStore.FEATURES_INDEX))
    designs = run_designs(config, data, features)
    # Orbax saves the arrays of a job of several processes only when they span its processes
    # (a mesh over all of them); a fit each process makes whole on its own is not checkpointed.
    checkpoints = mesh is not None or store.processes is None or store.processes.count == 1
    names = []
    for job in bar(jobs, desc="fits", unit="fit"):
        name = job_name(job)
        names.append(name)
        digest = _digest(config, features.index, job, responses)
        if store.reusable_prediction(name, digest):
            log(f"  {name}: stored, skipped")
            continue
        started = time.perf_counter()
        # Ridge on voxels on a mesh takes the responses read straight into their voxel shards;
        # the data-scaling subsets slice rows of host responses.
        shards = None if config.analyses.data_fractions else response_mesh(job.spec, job.target, mesh)
        arrays = {subject: designs.arrays(job.sources, subject, mesh=shards) for subject in data.subjects}
        if config.analyses.data_fractions:
            arrays = scaling.expand(config, jobs, arrays)
        result = fit_predict(
            job.spec, arrays, target=job.target,
            ridge=config.ridge, networks=config.networks, train=config.train, grid=config.fit.grid,
            checkpoint_dir=store.checkpoint_dir(f"{name}-{digest}") if checkpoints else None, cache=designs.cache,
            progress=progress, interactions=_attributes_interactions(config, job), mesh=mesh)
        seconds = time.perf_counter() - started
        meta = {"features": job.features, "model": job.model, "target": job.target, "digest": digest,
                "seconds": round(seconds, 2), **result.info}
        if job.sweep:
            meta.update(sweep=job.sweep, x=job.x, x_label=job.x_label, source=features.entry(job.sources[0])["kind"])
        if job.sweep == MODEL_SWEEP:
            meta["x"] = float(features.entry(job.sources[0]).get("n_params", 0))
        if result.interactions:
            # Before the predictions' record, which marks the job complete.
            store.write_arrays(interactions_file(name), result.interactions)
        if _stores_folds(config, job) and result.fold_predictions:
            store.write_arrays(scaling.folds_file(name), result.fold_predictions)
        store.save_prediction(name, result.predictions, meta)
        # Only once the predictions are stored: a fit killed before that still resumes.
        if not config.fit.keep_checkpoints and result.checkpoints and store.writer:
            shutil.rmtree(store.checkpoint_dir(f"{name}-{digest}"), ignore_errors=True)
        log(f"  {name}: {seconds:.1f} s")
        # Released before the next job's responses are read: a subject's are held once.
        del arrays
    return names
