"""The fit stage: every encoder of the table and the sweeps, to test-story voxel predictions.

A job is one (feature set, model, target) for all subjects of the run. Ridge fits subject by
subject (:class:`jaxenc.models.RidgeCV`, one penalty per voxel, as the paper's linear model;
with ``ridge.banded``, :class:`~jaxenc.models.BandedRidgeCV` with a penalty per modality on
audio+semantic). Nonlinear encoders train every subject and fold in one
compiled program (:func:`jaxenc.train.fit_encoders`; on voxel targets, subjects with equal
voxel counts share a program). Each job's predictions are stored under OUT/predictions with the
digest of the settings they depend on, so a rerun skips what is done.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass

import numpy as np

from jaxenc.errors import ConfigError

__all__ = ["Job", "fit_all", "make_encoder", "job_name", "train_config"]

_JOINT = "audio+semantic"


@dataclass(frozen=True)
class Job:
    """One fit: ``features`` (a feature set of the table or a sweep source), ``model``, ``target``."""

    features: str
    model: str
    target: str
    sweep: str = ""
    x: float = 0.0
    x_label: str = ""

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("audio", "semantic") if self.features == _JOINT else (self.features,)


def job_name(job: Job) -> str:
    """File stem of a job's predictions, e.g. ``audio+semantic__mlp__pca``."""
    return f"{job.features.replace('/', '-')}__{job.model}__{job.target}"


def table_jobs(config) -> list[Job]:
    """The jobs of the table and the sweeps of a config, in fitting order."""
    jobs = []
    for target in config.table.targets:
        for features in config.table.feature_sets:
            for model in config.table.models:
                if model == "dimlp" and features != _JOINT:
                    continue
                jobs.append(Job(features, model, target))
    for layer in config.analyses.layer_sweep:
        jobs.append(Job(f"semantic/L{layer}", "ridge", "voxels", "semantic layer", float(layer), f"L{layer}"))
    for spec in config.analyses.size_sweep:
        jobs.append(Job(f"semantic/{spec.label}", "ridge", "voxels", "semantic model", 0.0, spec.label))
    return jobs


def make_encoder(name: str, train, *, n_audio: int | None = None, n_delays: int = 4):
    """A ``make_model(n_features, n_outputs, rngs=...)`` factory for :func:`fit_encoders`.

    Parameters
    ----------
    name : str
        "mllinear", "mlp", "dimlp", "gru" or "deepmlp-N".
    train : TrainSection
        Hidden size, dropout, activation and BatchNorm.
    n_audio : int, optional
        Columns of the audio block at the start of an audio+semantic design (DIMLP only).
    n_delays : int
        Delay blocks of the design (GRU only).
    """
    import jax
    import jax.numpy as jnp

    from jaxenc.models import DIMLP, MLP, DeepMLP, DelayGRU, MLLinear

    layer = {"dropout": train.dropout, "batch_norm": train.batch_norm,
             "activation": {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}[train.activation]}
    if name == "mllinear":
        return functools.partial(MLLinear, hidden=train.hidden)
    if name == "mlp":
        return functools.partial(MLP, hidden=train.hidden, **layer)
    if name == "gru":
        return functools.partial(DelayGRU, n_delays=n_delays, hidden=train.hidden, dropout=train.dropout)
    if name.startswith("deepmlp-"):
        return functools.partial(DeepMLP, depth=int(name[8:]), hidden=train.hidden, **layer)
    if name == "dimlp":
        if n_audio is None:
            raise ConfigError("dimlp needs the audio+semantic feature set")

        def dimlp(n_features, n_outputs, *, rngs):
            return DIMLP([(0, n_audio), (n_audio, n_features)], n_outputs, hidden=train.hidden, rngs=rngs,
                         **layer)

        return dimlp
    raise ConfigError(f"unknown encoder {name!r}")


class _Designs:
    """Delayed designs and training responses per subject, built once per source."""

    def __init__(self, exp):
        self.exp = exp
        self._train: dict = {}
        self._test: dict = {}
        self._responses: dict = {}
        self._pcas: dict = {}
        # Per-fold PCAs of the networks, shared by every network job of the run.
        self.fold_pcas: dict = {}

    @functools.cache
    def _aligned(self, source: str) -> dict:
        """Every story's features on its response rows, z-scored (aligned once per source)."""
        from jaxenc import conventions
        from jaxenc.align import story_features

        if source.startswith("semantic/L"):
            features = self.exp.feature_set("semantic", int(source[len("semantic/L"):]))
        else:
            features = self.exp.feature_set(source)
        respdict = self.exp.dataset.respdict
        out = {}
        for story, (times, values) in features.items():
            start, end = self._trim(story)
            extra = start - conventions.TRIM_START + end - conventions.TRIM_END
            out[story] = story_features(np.asarray(values), np.asarray(times), respdict[story], story=story,
                                        trim_start=start, trim_end=end,
                                        expected_rows=respdict[story] - conventions.RESPDICT_OFFSET - extra)
        return out

    def _trim(self, story: str) -> tuple[int, int]:
        """Rows dropped at the start and end of a story's TR grid (``align.train_trim`` for
        training stories, the protocol's for the test story)."""
        from jaxenc import conventions

        if story == self.exp.dataset.test_story:
            return conventions.TRIM_START, conventions.TRIM_END
        return tuple(self.exp.config.align.train_trim)

    def _stack(self, source: str, stories):
        from jaxenc.align import stack_stories

        cfg = self.exp.config.align
        X, groups, slices = stack_stories(self._aligned(source), stories, delays=cfg.delays,
                                          boundary=cfg.boundary)
        return np.asarray(X, np.float32), np.asarray(groups), slices

    def train(self, source: str, subject: str):
        """``(X (n_rows, n_features), groups (n_rows,), slices)`` of a subject's training stories."""
        key = (source, subject)
        if key not in self._train:
            self._train[key] = self._stack(source, self.exp.train_stories(subject))
        return self._train[key]

    def test(self, source: str):
        """Delayed design of the test story, (n_test, n_features)."""
        if source not in self._test:
            self._test[source] = self._stack(source, [self.exp.dataset.test_story])[0]
        return self._test[source]

    def slices(self, subject: str) -> dict:
        """Rows of each training story of a subject (equal for every feature source)."""
        source = "semantic" if "semantic" in self.exp.feature_index else "audio"
        return self.train(source, subject)[2]

    def responses(self, subject: str):
        """Training responses (n_rows, n_voxels), rows checked against the designs."""
        from jaxenc import pipeline

        if subject not in self._responses:
            from jaxenc import conventions

            start, end = self.exp.config.align.train_trim
            self._responses[subject] = pipeline.training_responses(
                self.exp.dataset, subject, self.exp.train_stories(subject), self.slices(subject),
                drop=(start - conventions.TRIM_START, end - conventions.TRIM_END))
        return self._responses[subject]

    def pca(self, subject: str, n_components: int):
        """PCA of a subject's training responses (ridge on PCA targets)."""
        from jaxenc.decomp import PCA

        if subject not in self._pcas:
            Y = self.responses(subject)
            k = min(n_components, Y.shape[0] - 1, Y.shape[1])
            table = self.exp.config.table
            self._pcas[subject] = PCA(n_components=k, method=table.pca_method, n_iter=table.pca_n_iter).fit(Y)
        return self._pcas[subject]

    def job_design(self, job: Job, subject: str):
        """``(X, groups, slices, X_test, n_audio)`` of a job for one subject."""
        parts = [self.train(m if job.features == _JOINT else job.features, subject) for m in job.modalities]
        tests = [self.test(m if job.features == _JOINT else job.features) for m in job.modalities]
        X = np.hstack([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        X_test = np.hstack(tests) if len(tests) > 1 else tests[0]
        n_audio = parts[0][0].shape[1] if len(parts) > 1 else None
        return X, parts[0][1], parts[0][2], X_test, n_audio


def _digest(exp, job: Job) -> str:
    """Hash of everything a job's predictions depend on."""
    cfg = exp.config.to_dict()
    index = exp.feature_index
    sources = [job.features] if job.features in index else list(job.modalities)
    if job.features.startswith("semantic/L"):
        sources = ["semantic"]
    payload = {
        "job": [job.features, job.model, job.target],
        "seed": cfg["seed"],
        "data": cfg["data"],
        "align": cfg["align"],
        "pca": {k: cfg["table"][k] for k in ("n_components", "pca_method", "pca_n_iter")}
        if job.target == "pca" else None,
        "fit": cfg["ridge"] if job.model == "ridge" else
        {k: v for k, v in cfg["train"].items() if k != "keep_checkpoints"},
        "features": {s: {k: v for k, v in index[s].items() if k != "keys"} | {
            "keys": hashlib.sha256(json.dumps(index[s].get("keys"), sort_keys=True).encode()).hexdigest()}
            for s in sources},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def fit_all(exp) -> list[str]:
    """Fit every job of the config that is not stored yet; return all job names of the run."""
    exp.feature_index  # fails early, before any progress bar, when nothing was extracted
    designs = _Designs(exp)
    jobs = table_jobs(exp.config)
    names = []
    for job in exp.bar(jobs, desc="fits", unit="fit"):
        name = job_name(job)
        names.append(name)
        digest = _digest(exp, job)
        stored = exp.load_prediction(name)
        if stored is not None and stored[1].get("digest") == digest:
            exp.log(f"  {name}: stored, skipped")
            continue
        started = time.perf_counter()
        checkpoints = []
        if job.model == "ridge":
            predictions, info = _fit_ridge(exp, designs, job)
        else:
            predictions, info, checkpoints = _fit_network(exp, designs, job, digest)
        seconds = time.perf_counter() - started
        meta = {"features": job.features, "model": job.model, "target": job.target, "digest": digest,
                "seconds": round(seconds, 2), **info}
        if job.sweep:
            meta.update(sweep=job.sweep, x=job.x, x_label=job.x_label)
        if job.sweep == "semantic model":
            meta["x"] = float(exp.feature_index[job.features].get("n_params", 0))
        exp.save_prediction(name, predictions, meta)
        # Only once the predictions are stored: a fit killed before that still resumes.
        if not exp.config.train.keep_checkpoints:
            for folder in checkpoints:
                shutil.rmtree(folder, ignore_errors=True)
        exp.log(f"  {name}: {seconds:.1f} s")
    return names


def _fit_ridge(exp, designs: _Designs, job: Job):
    from jaxenc.models import BandedRidgeCV, RidgeCV

    cfg = exp.config
    low, high, n = cfg.ridge.log10_alphas
    alphas = np.logspace(low, high, int(n))
    predictions, alphas_chosen = {}, {}
    for subject in exp.subjects:
        X, groups, _, X_test, n_audio = designs.job_design(job, subject)
        Y = designs.responses(subject)
        pca = designs.pca(subject, cfg.table.n_components) if job.target == "pca" else None
        if pca is not None:
            Y = np.asarray(pca.transform(Y))
        if n_audio is None or not cfg.ridge.banded:
            model = RidgeCV(alphas=alphas, cv=cfg.ridge.folds)
        else:
            model = BandedRidgeCV(bands=[slice(0, n_audio), slice(n_audio, None)], alphas=alphas,
                                  cv=cfg.ridge.folds, n_iter=cfg.ridge.band_candidates, random_state=cfg.seed)
        model.fit(X, Y, groups=groups)
        prediction = model.predict(X_test)
        if pca is not None:
            prediction = pca.inverse_transform(prediction)
        predictions[subject] = np.asarray(prediction, np.float32)
        alphas_chosen[subject] = float(np.median(np.asarray(model.best_alphas_)))
    return predictions, {"n_features": int(X.shape[1]), "median_alpha": alphas_chosen}


def _n_components_cap(exp, designs: _Designs, subjects, n_folds: int, wanted: int) -> int:
    """The largest component count every fold of every subject can fit (<= ``wanted``)."""
    from jaxenc.train import story_folds

    cap = wanted
    for subject in subjects:
        rows = {s: sl.stop - sl.start for s, sl in designs.slices(subject).items()}
        for train, _ in story_folds(list(rows), n_folds, seed=exp.config.seed, subject=subject):
            cap = min(cap, sum(rows[s] for s in train))
        cap = min(cap, designs.responses(subject).shape[1])
    return cap


def _fit_network(exp, designs: _Designs, job: Job, digest: str):
    from jaxenc.train import SubjectData, fit_encoders

    cfg = exp.config
    t = cfg.train
    groups: dict[int | None, list[str]] = {}
    for subject in exp.subjects:
        # PCA targets share one output size; voxel targets train together only when equal.
        width = None if job.target == "pca" else designs.responses(subject).shape[1]
        groups.setdefault(width, []).append(subject)
    predictions, info, folders = {}, {"best_epoch": {}, "stop_epoch": {}}, []
    for subjects in groups.values():
        data, tests, n_audio = {}, {}, None
        for subject in subjects:
            X, _, slices, X_test, n_audio = designs.job_design(job, subject)
            if job.model == "gru" and n_audio is not None:
                X, X_test = _per_delay_layout(X, n_audio, len(cfg.align.delays)), \
                    _per_delay_layout(X_test, n_audio, len(cfg.align.delays))
            Y = designs.responses(subject)
            data[subject] = SubjectData(
                features={s: X[sl] for s, sl in slices.items()},
                responses={s: Y[sl] for s, sl in slices.items()},
            )
            tests[subject] = X_test
        n_components = None
        if job.target == "pca":
            n_components = _n_components_cap(exp, designs, subjects, t.folds, cfg.table.n_components)
        config = train_config(cfg, n_components)
        make_model = make_encoder(job.model, t, n_audio=n_audio, n_delays=len(cfg.align.delays))
        folder = (exp.out / "checkpoints" / f"{job_name(job)}-{'-'.join(subjects)}-{digest}").resolve()
        folders.append(folder)
        fit = fit_encoders(make_model, data, config, grid=[dict(p) for p in t.grid] or None,
                           checkpoint_dir=folder, progress=exp.progress, pca_cache=designs.fold_pcas)
        predictions.update(fit.predict(tests))
        for i, key in enumerate(fit.keys):
            info["best_epoch"].setdefault(key.subject, []).append(int(fit.best_epoch[i]))
            info["stop_epoch"].setdefault(key.subject, []).append(int(fit.stop_epoch[i]))
        info["n_components"] = n_components
        info["n_features"] = int(next(iter(tests.values())).shape[1])
    return predictions, info, folders


def train_config(cfg, n_components: int | None):
    """The :class:`jaxenc.train.TrainConfig` of an experiment config's networks.

    Parameters
    ----------
    cfg : ExperimentConfig
    n_components : int or None
        PCA components of the targets (None: voxels).
    """
    from jaxenc.train import TrainConfig

    t = cfg.train
    return TrainConfig(
        n_folds=t.folds, seed=cfg.seed, n_components=n_components, batch_size=t.batch_size,
        val_batch_size=t.val_batch_size, max_epochs=t.max_epochs, patience=t.patience,
        min_delta=t.min_delta, learning_rate=t.learning_rate, weight_decay=t.weight_decay, loss=t.loss,
        epochs_per_call=t.epochs_per_call, checkpoint_every=t.checkpoint_every,
        pca_method=cfg.table.pca_method, pca_n_iter=cfg.table.pca_n_iter,
    )


def _per_delay_layout(X: np.ndarray, n_audio: int, n_delays: int) -> np.ndarray:
    """Reorder [audio d1..dk | semantic d1..dk] columns into [d1: audio, semantic | d2: ...]."""
    a = n_audio // n_delays
    s = (X.shape[1] - n_audio) // n_delays
    blocks = []
    for d in range(n_delays):
        blocks.append(X[:, d * a:(d + 1) * a])
        blocks.append(X[:, n_audio + d * s:n_audio + (d + 1) * s])
    return np.hstack(blocks)
