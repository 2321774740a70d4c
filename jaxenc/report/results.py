"""The results of one run: per-voxel scores of every fitted model and what is derived from them.

A run folder holds everything a report or a later analysis needs, with no recomputation::

    <folder>/metrics.json                        scalars, summaries, config, index of the arrays
    <folder>/scores/<subject>/<slug>.npz         r, r2, r2_cod, cc_norm, p, significant of one model
    <folder>/scores/<subject>/cc_max.npy         the subject's noise ceiling per voxel
    <folder>/clustering/<subject>/<key>.npy      array entries of the clustering (labels, ...)
    <folder>/interactions/<subject>/<key>.npy    interaction share per voxel of a network

Each model's scores are the :class:`jaxenc.metrics.Scores` that :func:`jaxenc.metrics.score`
returned, stored as they are. ``metrics.json`` keeps NaN as the literal ``NaN`` (as Python,
pandas and jq read it) so that a round trip is exact; every file is written and read through
:class:`jaxenc.store.RunStore`. This module imports numpy and jaxenc's metrics, store and
errors only, so the experiment runner can build results without loading matplotlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError, DataError
from jaxenc.metrics.protocol import SCORE_ARRAYS, Scores
from jaxenc.store import RunStore

__all__ = ["ModelResult", "RunResults", "slug", "check_subject_name", "FORMAT_VERSION"]

# Version of the on-disk layout; load refuses other versions rather than misreading them.
# Version 2: "r2" is the paper's r·|r| and "r2_cod" the coefficient of determination (version
# 1 stored the coefficient of determination as "r2").
FORMAT_VERSION = 2
# Name of the file that indexes a run folder.
METRICS_FILE = "metrics.json"
FORMAT_NAME = "jaxenc-run-results"


def slug(text: str) -> str:
    """A file-name-safe form of a label.

    Parameters
    ----------
    text : str
        A label such as ``"semantic/L3 | ridge | voxels"``.

    Returns
    -------
    str
        Lowercase letters, digits, ``.``, ``+`` and ``_``, with every other run of characters
        replaced by one ``-``, e.g. ``"semantic-l3-ridge-voxels"``; ``"x"`` if nothing is left.
    """
    text = re.sub(r"[^a-z0-9.+_]+", "-", text.lower()).strip("-.")
    return text or "x"


@dataclass
class ModelResult:
    """The held-out scores of one encoding model for one subject.

    Parameters
    ----------
    subject : str
        Subject identifier, e.g. ``"UTS01"``.
    features : str
        Feature set: ``"audio"``, ``"semantic"``, ``"audio+semantic"``, or the label of a
        source (:attr:`jaxenc.pipeline.FeatureSource.name`, e.g. ``"semantic/L3"``).
    model : str
        Encoder name (:data:`jaxenc.models.ENCODERS`): ``"ridge"``, ``"mlp"``, ``"deepmlp-3"``, ...
    target : str
        What the encoder was fitted to: ``"voxels"`` or ``"pca"`` (scores are still per voxel).
    scores : jaxenc.metrics.Scores
        Its per-voxel test-story scores.
    info : dict, optional
        JSON-able extras (layer, fit seconds, best epochs, ...). Numpy scalars are stored as
        Python numbers and numpy arrays as lists.
    """

    subject: str
    features: str
    model: str
    target: str
    scores: Scores
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The row label ``"<features> | <model> | <target>"``."""
        return f"{self.features} | {self.model} | {self.target}"


def _jsonable(value, where: str):
    """Plain JSON types from numpy scalars, arrays, tuples and nested containers."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: JSON keys must be strings, got {key!r}")
            out[key] = _jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, where) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"{where}: {type(value).__name__} is not JSON-able ({value!r})")


def check_subject_name(subject: str, *, path=None) -> str:
    """Refuse a subject name that is not file-name safe; return it.

    Subjects become folder names of the run's scores: a name that :func:`slug` would change is
    refused rather than silently renamed onto another.

    Parameters
    ----------
    subject : str
    path : str or Path, optional
        Where the name comes from (e.g. the subject's folder), named in the error.

    Raises
    ------
    ConfigError
        Naming the subject and the characters allowed.
    """
    if slug(subject) != subject.lower():
        raise ConfigError(
            f"subject names must be file-name safe (letters, digits, '.', '+', '_'), "
            f"got {subject!r}",
            subject=subject, path=path,
        )
    return subject


@dataclass
class RunResults:
    """Everything one run produced, savable to and loadable from a folder.

    Parameters
    ----------
    name : str
        Run name, e.g. ``"table1"``.
    config : dict
        The resolved settings (JSON-able).
    cc_max : dict of str to array of shape (n_voxels,)
        Subject -> noise ceiling per voxel on the rows scored (a correlation; NaN where
        undefined).
    models : list of ModelResult
        One entry per subject x features x model x target.
    partition : list of dict, optional
        Variance partition rows (:func:`jaxenc.analysis.partition_rows`): ``subject``,
        ``target``, ``features_a``, ``features_b``, ``model``, ``n_significant``,
        ``unique_a``, ``unique_b``, ``shared`` (means over significant voxels of the parts of
        the paper's r2, r·|r|; fractions), ``share_best_unique_a``, ``share_best_unique_b``,
        ``share_best_shared`` (fractions of significant voxels) and ``best_model_share`` (dict
        of feature set -> fraction).
    sweeps : list of dict, optional
        ``{"name", "x_label", "rows": [{"subject", "model", "x", "label", **summary}]}``
        (:func:`jaxenc.analysis.sweep_curves`), the summary that of :meth:`Scores.summary`.
    clustering : dict, optional
        Subject -> ``{"labels": int array (n_voxels,) with -1 for non-significant voxels,
        "label_names": [...], "modularity", "null_mean", "null_std"}``. Array values are stored
        as ``.npy`` files, the rest in ``metrics.json``.
    interactions : dict, optional
        Subject -> ``"<model>/<target>"`` -> float array (n_voxels,): the audio x semantic
        interaction share of each voxel's test-story prediction
        (:func:`jaxenc.analysis.fit_interaction_shares`, averaged over the fold models).
    planted : dict, optional
        Synthetic runs only: subject -> check -> ``{"value", "margin", "passed", "what"}``;
        the nonlinearity step's subjects as ``"nonlinearity/<subject>"``.
    nonlinearity : dict, optional
        Synthetic runs with the nonlinearity step only: ``{"folder", "subjects", "models",
        "rows": [{"subject", "model", "voxels", "n_voxels", "mean_r", "mean_r2"}]}``, mean
        scores per model and planted voxel class.
    timings : dict, optional
        Stage -> wall-clock seconds.
    """

    name: str
    config: dict
    cc_max: dict[str, np.ndarray]
    models: list[ModelResult]
    partition: list[dict] = field(default_factory=list)
    sweeps: list[dict] = field(default_factory=list)
    clustering: dict = field(default_factory=dict)
    interactions: dict = field(default_factory=dict)
    planted: dict = field(default_factory=dict)
    nonlinearity: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        """Subjects with scores or a noise ceiling, in order of first appearance."""
        seen = dict.fromkeys(self.cc_max)
        seen.update(dict.fromkeys(m.subject for m in self.models))
        return list(seen)

    def validate(self) -> None:
        """Check that every subject's arrays agree in voxel count and names are unique.

        Raises
        ------
        DataError
            If a model's scores and the subject's ``cc_max`` (or the clustering labels) differ
            in length, or two models of one subject share a label.
        """
        n_voxels = {}
        for subject, ceiling in self.cc_max.items():
            ceiling = np.asarray(ceiling)
            if ceiling.ndim != 1:
                raise DataError(f"cc_max must have shape (n_voxels,), got {ceiling.shape}", subject=subject)
            n_voxels[subject] = ceiling.shape[0]
        seen = set()
        for m in self.models:
            key = (m.subject, m.name)
            if key in seen:
                raise DataError(f"two models labelled {m.name!r}", subject=m.subject)
            seen.add(key)
            expected = n_voxels.setdefault(m.subject, m.scores.n_voxels)
            if m.scores.n_voxels != expected:
                raise DataError(f"{m.name}: {m.scores.n_voxels} voxels, expected {expected} like the "
                                "subject's other arrays", subject=m.subject)
        for subject, entry in self.clustering.items():
            labels = entry.get("labels")
            if labels is not None and subject in n_voxels and np.shape(labels) != (n_voxels[subject],):
                raise DataError(f"clustering labels have shape {np.shape(labels)}, expected "
                                f"({n_voxels[subject]},)", subject=subject)
        for subject, entry in self.interactions.items():
            for key, share in entry.items():
                if subject in n_voxels and np.shape(share) != (n_voxels[subject],):
                    raise DataError(f"interaction shares {key} have shape {np.shape(share)}, expected "
                                    f"({n_voxels[subject]},)", subject=subject)

    def table(self, top_k: int = 1000) -> list[dict]:
        """One row per model: its labels and :meth:`jaxenc.metrics.Scores.summary`.

        Parameters
        ----------
        top_k : int, default 1000
            Passed to :meth:`~jaxenc.metrics.Scores.summary`.

        Returns
        -------
        list of dict
            ``subject``, ``features``, ``model``, ``target``, ``name`` and the summary keys, in
            the order of ``models``.
        """
        return [{"subject": m.subject, "features": m.features, "model": m.model, "target": m.target,
                 "name": m.name, **m.scores.summary(top_k)} for m in self.models]

    def find(self, *, subject=None, features=None, model=None, target=None) -> list[ModelResult]:
        """The models matching every criterion given (``None`` matches anything).

        Parameters
        ----------
        subject, features, model, target : str, optional
            Exact values to match.

        Returns
        -------
        list of ModelResult
            In the order of ``models``.
        """
        wanted = {"subject": subject, "features": features, "model": model, "target": target}
        return [m for m in self.models if all(v is None or getattr(m, k) == v for k, v in wanted.items())]

    def planted_outcomes(self) -> dict[str, list[tuple[str, str, dict]]]:
        """The planted checks by outcome.

        Returns
        -------
        dict
            ``"passed"``, ``"failed"`` and ``"skipped"`` (checks the config's ``planted.skip``
            names: computed, neither passed nor failed), each a list of ``(subject, check,
            entry)`` in the order of ``planted``.
        """
        out = {"passed": [], "failed": [], "skipped": []}
        for subject, checks in self.planted.items():
            for name, c in checks.items():
                outcome = "skipped" if c.get("skipped") else "passed" if c["passed"] else "failed"
                out[outcome].append((subject, name, c))
        return out

    def save(self, folder) -> None:
        """Write the run to ``folder`` (created if needed), each file atomically.

        Parameters
        ----------
        folder : str or os.PathLike
            Run folder; ``metrics.json`` is written last, so a reader never sees an index that
            points at arrays not yet written.

        Raises
        ------
        DataError
            If :meth:`validate` fails.
        ConfigError
            If a subject name is not file-name safe or an extra is not JSON-able.
        """
        self.validate()
        store = RunStore(folder)
        index_scores, used = [], set()
        for m in self.models:
            subject_dir = check_subject_name(m.subject)
            stem = slug(m.name)
            # Distinct labels can share a slug ("a/b" and "a-b"): number the later ones.
            candidate, n = stem, 2
            while (subject_dir, candidate) in used or candidate == "cc_max":
                candidate, n = f"{stem}-{n}", n + 1
            used.add((subject_dir, candidate))
            rel = f"scores/{subject_dir}/{candidate}.npz"
            store.write_arrays(rel, m.scores.arrays())
            index_scores.append({"subject": m.subject, "features": m.features, "model": m.model,
                                 "target": m.target, "file": rel, "n_voxels": m.scores.n_voxels,
                                 "info": _jsonable(m.info, f"{m.name}.info")})
        index_cc_max = {}
        for subject, ceiling in self.cc_max.items():
            rel = f"scores/{check_subject_name(subject)}/cc_max.npy"
            store.write_array(rel, ceiling)
            index_cc_max[subject] = {"file": rel, "n_voxels": int(np.shape(ceiling)[0])}
        index_clustering = _save_entries(store, "clustering", self.clustering)
        index_interactions = _save_entries(store, "interactions", self.interactions)
        store.write_json(METRICS_FILE, {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "config": _jsonable(self.config, "config"),
            "timings": _jsonable(self.timings, "timings"),
            "summary": _jsonable(self.table(), "summary"),
            "cc_max": index_cc_max,
            "scores": index_scores,
            "partition": _jsonable(self.partition, "partition"),
            "sweeps": _jsonable(self.sweeps, "sweeps"),
            "clustering": index_clustering,
            "interactions": index_interactions,
            "planted": _jsonable(self.planted, "planted"),
            "nonlinearity": _jsonable(self.nonlinearity, "nonlinearity"),
        }, indent=1)

    @classmethod
    def load(cls, folder) -> RunResults:
        """Read a run folder written by :meth:`save`.

        Parameters
        ----------
        folder : str or os.PathLike
            Run folder.

        Returns
        -------
        RunResults
            Equal to the saved one: arrays keep their dtype and values (NaN included).

        Raises
        ------
        DataError
            Naming the file, if ``metrics.json`` or an array file is missing, unreadable, of
            another format version, or of a shape other than the index records.
        """
        store = RunStore(folder)
        path = store.path(METRICS_FILE)
        if not path.is_file():
            raise DataError("no metrics.json: not a saved jaxenc run folder", path=path)
        metrics = store.read_json(METRICS_FILE, "run index")
        if not isinstance(metrics, dict) or metrics.get("format") != FORMAT_NAME:
            raise DataError(f"not a jaxenc run index (expected format {FORMAT_NAME!r})", path=path)
        if metrics.get("version") != FORMAT_VERSION:
            raise DataError(f"format version {metrics.get('version')!r}, this jaxenc reads {FORMAT_VERSION}",
                            path=path)
        try:
            cc_max = {subject: _checked(store, store.read_array(entry["file"], subject=subject),
                                        entry["file"], entry["n_voxels"], subject)
                      for subject, entry in metrics["cc_max"].items()}
            models = []
            for entry in metrics["scores"]:
                arrays = store.read_arrays(entry["file"], SCORE_ARRAYS, subject=entry["subject"])
                for array in arrays.values():
                    _checked(store, array, entry["file"], entry["n_voxels"], entry["subject"])
                models.append(ModelResult(subject=entry["subject"], features=entry["features"],
                                          model=entry["model"], target=entry["target"],
                                          scores=Scores(**arrays), info=entry["info"]))
            results = cls(name=metrics["name"], config=metrics["config"], cc_max=cc_max, models=models,
                          partition=metrics["partition"], sweeps=metrics["sweeps"],
                          clustering=_load_entries(store, metrics["clustering"]),
                          # Run folders written before the interaction analysis have no entry.
                          interactions=_load_entries(store, metrics.get("interactions", {})),
                          planted=metrics["planted"], nonlinearity=metrics["nonlinearity"],
                          timings=metrics["timings"])
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"run index lacks or mangles an entry ({err!r})", path=path) from None
        results.validate()
        return results


def _save_entries(store: RunStore, folder: str, entries: dict) -> dict:
    """Write per-subject entries: arrays as ``<folder>/<subject>/<key>.npy``, the rest as JSON
    values; return their index for ``metrics.json``."""
    index = {}
    for subject, entry in entries.items():
        stored = {"arrays": {}, "values": {}}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                rel = f"{folder}/{check_subject_name(subject)}/{slug(key)}.npy"
                store.write_array(rel, value)
                stored["arrays"][key] = rel
            else:
                stored["values"][key] = _jsonable(value, f"{folder}.{subject}.{key}")
        index[subject] = stored
    return index


def _load_entries(store: RunStore, index: dict) -> dict:
    """The per-subject entries :func:`_save_entries` wrote."""
    entries = {}
    for subject, stored in index.items():
        entry = dict(stored["values"])
        for key, rel in stored["arrays"].items():
            entry[key] = store.read_array(rel, subject=subject)
        entries[subject] = entry
    return entries


def _checked(store: RunStore, array: np.ndarray, rel: str, n_voxels, subject: str) -> np.ndarray:
    if array.shape != (n_voxels,):
        raise DataError(f"array of shape {array.shape}, metrics.json records ({n_voxels},)",
                        path=store.path(rel), subject=subject)
    return array
