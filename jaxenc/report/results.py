"""The results of one experiment run: per-voxel scores and everything derived from them.

A run folder holds everything a report or a later analysis needs, with no recomputation::

    <folder>/metrics.json                        scalars, summaries, config, index of the arrays
    <folder>/scores/<subject>/<slug>.npz         r, r2, r2_cod, cc_norm, p, significant of one model
    <folder>/scores/<subject>/cc_max.npy         the subject's noise ceiling per voxel
    <folder>/clustering/<subject>/<key>.npy      array entries of the clustering (labels, ...)

``metrics.json`` is written with Python's :mod:`json` and keeps NaN as the literal ``NaN`` (as
Python, pandas and jq read it) so that a round trip is exact; every file is written to a
temporary name and moved into place, so an interrupted save never leaves a half-written file
under its final name. This module imports numpy and :mod:`jaxenc.errors` only, so the
experiment runner can build results without loading matplotlib or JAX.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError, DataError

__all__ = ["ModelScores", "RunResults", "slug", "SCORE_ARRAYS", "FORMAT_VERSION"]

# Version of the on-disk layout; load refuses other versions rather than misreading them.
# Version 2: "r2" is the paper's r·|r| and "r2_cod" the coefficient of determination (version
# 1 stored the coefficient of determination as "r2").
FORMAT_VERSION = 2
# The per-voxel arrays of a ModelScores, in the order they are stored.
SCORE_ARRAYS = ("r", "r2", "r2_cod", "cc_norm", "p", "significant")
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


def _mean(values: np.ndarray) -> float:
    # nanmean warns on all-NaN input; an absent statistic is simply NaN here.
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _median(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else math.nan


@dataclass
class ModelScores:
    """Held-out scores of one encoding model for one subject, one value per voxel.

    Parameters
    ----------
    subject : str
        Subject identifier, e.g. ``"UTS01"``.
    features : str
        Feature space: ``"audio"``, ``"semantic"``, ``"audio+semantic"``, or a variant such as
        ``"semantic/L3"`` (a layer) or ``"semantic/tiny-llama-2"`` (a model).
    model : str
        Encoder: ``"ridge"``, ``"mllinear"``, ``"dimlp"``, ``"mlp"``, ``"deepmlp-3"``, ...
    target : str
        What the encoder was fitted to: ``"voxels"`` or ``"pca"`` (scores are still per voxel).
    r : array of shape (n_voxels,)
        Pearson correlation between prediction and response on the test story.
    r2 : array of shape (n_voxels,)
        The paper's r², ``r * |r|`` (see :mod:`jaxenc.metrics.scores`).
    r2_cod : array of shape (n_voxels,)
        Coefficient of determination on the test story, ``1 - SS_res / SS_tot``.
    cc_norm : array of shape (n_voxels,)
        ``r`` divided by the voxel's noise ceiling; NaN where the ceiling is undefined.
    p : array of shape (n_voxels,)
        Permutation p-value of ``r``.
    significant : array of shape (n_voxels,), bool
        Significance after false-discovery-rate correction.
    info : dict, optional
        JSON-able extras (layer, model id, fit seconds, best epochs, ...). Numpy scalars are
        stored as Python numbers and numpy arrays as lists.

    Raises
    ------
    DataError
        If the arrays are not 1-D, differ in length, or ``significant`` is not boolean.
    """

    subject: str
    features: str
    model: str
    target: str
    r: np.ndarray
    r2: np.ndarray
    r2_cod: np.ndarray
    cc_norm: np.ndarray
    p: np.ndarray
    significant: np.ndarray
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in SCORE_ARRAYS:
            setattr(self, key, np.asarray(getattr(self, key)))
        shapes = {key: getattr(self, key).shape for key in SCORE_ARRAYS}
        if self.r.ndim != 1 or any(shape != self.r.shape for shape in shapes.values()):
            raise DataError(
                f"{self.name}: expected {', '.join(SCORE_ARRAYS)} of one shape "
                f"(n_voxels,), got {shapes}",
                subject=self.subject,
            )
        if self.significant.dtype != np.bool_:
            if not np.isin(self.significant, (0, 1)).all():
                raise DataError(
                    f"{self.name}: significant must be boolean, got values other than 0 and 1 "
                    f"(dtype {self.significant.dtype})",
                    subject=self.subject,
                )
            self.significant = self.significant.astype(bool)
        for key in (k for k in SCORE_ARRAYS if k != "significant"):
            if not np.issubdtype(getattr(self, key).dtype, np.floating):
                setattr(self, key, getattr(self, key).astype(np.float64))

    @property
    def name(self) -> str:
        """The row label ``"<features> | <model> | <target>"``."""
        return f"{self.features} | {self.model} | {self.target}"

    @property
    def n_voxels(self) -> int:
        """Number of voxels scored."""
        return int(self.r.shape[0])

    def summary(self, top_k: int = 1000) -> dict:
        """Scalar summaries over voxels, NaN ignored.

        Parameters
        ----------
        top_k : int, default 1000
            Number of best-predicted voxels (by ``r``) averaged in ``top_k_mean_r``; all finite
            voxels when there are fewer.

        Returns
        -------
        dict
            ``mean_r``, ``median_r``, ``mean_r2``, ``median_r2`` (the paper's r·|r|),
            ``mean_r2_cod``, ``median_r2_cod`` (coefficient of determination),
            ``mean_cc_norm``, ``median_cc_norm``, ``top_k``, ``top_k_mean_r`` (floats, NaN
            when no finite value), ``n_significant`` and ``n_voxels`` (ints). r2, r2_cod and
            cc_norm are fractions, not %.
        """
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        finite_r = np.sort(self.r[~np.isnan(self.r)])
        return {
            "mean_r": _mean(self.r),
            "median_r": _median(self.r),
            "mean_r2": _mean(self.r2),
            "median_r2": _median(self.r2),
            "mean_r2_cod": _mean(self.r2_cod),
            "median_r2_cod": _median(self.r2_cod),
            "mean_cc_norm": _mean(self.cc_norm),
            "median_cc_norm": _median(self.cc_norm),
            "top_k": int(top_k),
            "top_k_mean_r": _mean(finite_r[-top_k:]),
            "n_significant": int(self.significant.sum()),
            "n_voxels": self.n_voxels,
        }


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


def _write_atomic(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then move it there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        # mkstemp creates the file private (0600); results are meant to be shared and read.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_dirname(subject: str) -> str:
    name = slug(subject)
    if name != subject.lower():
        # Subjects become folder names; refuse rather than silently rename one onto another.
        raise ConfigError(
            f"subject names must be file-name safe (letters, digits, '.', '+', '_'), "
            f"got {subject!r}",
            subject=subject,
        )
    return subject


@dataclass
class RunResults:
    """Everything one experiment run produced, savable to and loadable from a folder.

    Parameters
    ----------
    name : str
        Run name, e.g. ``"table1"``.
    config : dict
        The resolved experiment config (JSON-able).
    cc_max : dict of str to array of shape (n_voxels,)
        Subject -> noise ceiling per voxel (a correlation; NaN where undefined).
    scores : list of ModelScores
        One entry per subject x features x model x target.
    partition : list of dict, optional
        Variance partition rows: ``subject``, ``target``, ``features_a``, ``features_b``,
        ``model``, ``n_significant``, ``unique_a``, ``unique_b``, ``shared`` (means over
        significant voxels of the parts of the paper's r2, r·|r|; fractions),
        ``share_best_unique_a``, ``share_best_unique_b``, ``share_best_shared`` (fractions of
        significant voxels) and ``best_model_share`` (dict of model label -> fraction).
    sweeps : list of dict, optional
        ``{"name", "x_label", "rows": [{"subject", "model", "x", "mean_r", "mean_cc_norm",
        "n_significant"}]}``.
    clustering : dict, optional
        Subject -> ``{"labels": int array (n_voxels,) with -1 for non-significant voxels,
        "label_names": [...], "modularity", "null_mean", "null_std"}``. Array values are stored
        as ``.npy`` files, the rest in ``metrics.json``.
    planted : dict, optional
        Synthetic runs only: subject -> check -> ``{"value", "margin", "passed", "what"}``;
        the nonlinearity step's subjects as ``"nonlinearity/<subject>"``.
    nonlinearity : dict, optional
        Synthetic runs with the nonlinearity step only: ``{"folder", "subjects", "models",
        "rows": [{"subject", "model", "voxels", "n_voxels", "mean_r", "mean_r2"}]}``, mean
        scores per model and planted voxel class (see
        :func:`jaxenc.experiment.nonlinearity.step_summary`).
    timings : dict, optional
        Stage -> wall-clock seconds.
    """

    name: str
    config: dict
    cc_max: dict[str, np.ndarray]
    scores: list[ModelScores]
    partition: list[dict] = field(default_factory=list)
    sweeps: list[dict] = field(default_factory=list)
    clustering: dict = field(default_factory=dict)
    planted: dict = field(default_factory=dict)
    nonlinearity: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        """Subjects with scores or a noise ceiling, in order of first appearance."""
        seen = dict.fromkeys(self.cc_max)
        seen.update(dict.fromkeys(s.subject for s in self.scores))
        return list(seen)

    def validate(self) -> None:
        """Check that every subject's arrays agree in voxel count and names are unique.

        Raises
        ------
        DataError
            If a model's scores and the subject's ``cc_max`` (or the clustering labels) differ
            in length, or two scores of one subject share a label.
        """
        n_voxels = {}
        for subject, ceiling in self.cc_max.items():
            ceiling = np.asarray(ceiling)
            if ceiling.ndim != 1:
                raise DataError(
                    f"cc_max must have shape (n_voxels,), got {ceiling.shape}", subject=subject
                )
            n_voxels[subject] = ceiling.shape[0]
        seen = set()
        for scores in self.scores:
            key = (scores.subject, scores.name)
            if key in seen:
                raise DataError(f"two scores labelled {scores.name!r}", subject=scores.subject)
            seen.add(key)
            expected = n_voxels.setdefault(scores.subject, scores.n_voxels)
            if scores.n_voxels != expected:
                raise DataError(
                    f"{scores.name}: {scores.n_voxels} voxels, expected {expected} like the "
                    f"subject's other arrays",
                    subject=scores.subject,
                )
        for subject, entry in self.clustering.items():
            labels = entry.get("labels")
            if labels is not None and subject in n_voxels:
                if np.shape(labels) != (n_voxels[subject],):
                    raise DataError(
                        f"clustering labels have shape {np.shape(labels)}, expected "
                        f"({n_voxels[subject]},)",
                        subject=subject,
                    )

    def table(self, top_k: int = 1000) -> list[dict]:
        """One summary row per ModelScores, in the order of ``scores``.

        Parameters
        ----------
        top_k : int, default 1000
            Passed to :meth:`ModelScores.summary`.

        Returns
        -------
        list of dict
            ``subject``, ``features``, ``model``, ``target``, ``name`` and the summary keys.
        """
        return [
            {
                "subject": s.subject,
                "features": s.features,
                "model": s.model,
                "target": s.target,
                "name": s.name,
                **s.summary(top_k),
            }
            for s in self.scores
        ]

    def find(self, *, subject=None, features=None, model=None, target=None) -> list[ModelScores]:
        """The scores matching every criterion given (``None`` matches anything).

        Parameters
        ----------
        subject, features, model, target : str, optional
            Exact values to match.

        Returns
        -------
        list of ModelScores
            In the order of ``scores``.
        """
        wanted = {"subject": subject, "features": features, "model": model, "target": target}
        return [
            s
            for s in self.scores
            if all(v is None or getattr(s, k) == v for k, v in wanted.items())
        ]

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
        folder = Path(folder)
        index_scores = []
        used = set()
        for scores in self.scores:
            subject_dir = _safe_dirname(scores.subject)
            stem = slug(scores.name)
            # Distinct labels can share a slug ("a/b" and "a-b"): number the later ones.
            candidate, n = stem, 2
            while (subject_dir, candidate) in used or candidate == "cc_max":
                candidate, n = f"{stem}-{n}", n + 1
            used.add((subject_dir, candidate))
            rel = f"scores/{subject_dir}/{candidate}.npz"
            arrays = {key: getattr(scores, key) for key in SCORE_ARRAYS}
            _write_atomic(folder / rel, lambda fh, a=arrays: np.savez(fh, **a))
            index_scores.append(
                {
                    "subject": scores.subject,
                    "features": scores.features,
                    "model": scores.model,
                    "target": scores.target,
                    "file": rel,
                    "n_voxels": scores.n_voxels,
                    "info": _jsonable(scores.info, f"{scores.name}.info"),
                }
            )
        index_cc_max = {}
        for subject, ceiling in self.cc_max.items():
            rel = f"scores/{_safe_dirname(subject)}/cc_max.npy"
            ceiling = np.asarray(ceiling)
            _write_atomic(folder / rel, lambda fh, a=ceiling: np.save(fh, a, allow_pickle=False))
            index_cc_max[subject] = {"file": rel, "n_voxels": int(ceiling.shape[0])}
        index_clustering = {}
        for subject, entry in self.clustering.items():
            stored = {"arrays": {}, "values": {}}
            for key, value in entry.items():
                if isinstance(value, np.ndarray):
                    rel = f"clustering/{_safe_dirname(subject)}/{slug(key)}.npy"
                    _write_atomic(
                        folder / rel, lambda fh, a=value: np.save(fh, a, allow_pickle=False)
                    )
                    stored["arrays"][key] = rel
                else:
                    stored["values"][key] = _jsonable(value, f"clustering.{subject}.{key}")
            index_clustering[subject] = stored
        metrics = {
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
            "planted": _jsonable(self.planted, "planted"),
            "nonlinearity": _jsonable(self.nonlinearity, "nonlinearity"),
        }
        text = json.dumps(metrics, indent=1, allow_nan=True)
        _write_atomic(folder / METRICS_FILE, lambda fh: fh.write(text.encode("utf-8")))

    @classmethod
    def load(cls, folder) -> "RunResults":
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
        folder = Path(folder)
        path = folder / METRICS_FILE
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("no metrics.json: not a saved jaxenc run folder", path=path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"unreadable run index ({err})", path=path) from None
        if not isinstance(metrics, dict) or metrics.get("format") != FORMAT_NAME:
            raise DataError(f"not a jaxenc run index (expected format {FORMAT_NAME!r})", path=path)
        if metrics.get("version") != FORMAT_VERSION:
            raise DataError(
                f"format version {metrics.get('version')!r}, this jaxenc reads "
                f"{FORMAT_VERSION}",
                path=path,
            )
        try:
            cc_max = {
                subject: _load_npy(folder, entry["file"], entry["n_voxels"], subject)
                for subject, entry in metrics["cc_max"].items()
            }
            scores = []
            for entry in metrics["scores"]:
                arrays = _load_npz(folder, entry["file"], entry["n_voxels"], entry["subject"])
                scores.append(
                    ModelScores(
                        subject=entry["subject"],
                        features=entry["features"],
                        model=entry["model"],
                        target=entry["target"],
                        info=entry["info"],
                        **arrays,
                    )
                )
            clustering = {}
            for subject, stored in metrics["clustering"].items():
                entry = dict(stored["values"])
                for key, rel in stored["arrays"].items():
                    entry[key] = _load_npy(folder, rel, None, subject)
                clustering[subject] = entry
            results = cls(
                name=metrics["name"],
                config=metrics["config"],
                cc_max=cc_max,
                scores=scores,
                partition=metrics["partition"],
                sweeps=metrics["sweeps"],
                clustering=clustering,
                planted=metrics["planted"],
                nonlinearity=metrics["nonlinearity"],
                timings=metrics["timings"],
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"run index lacks or mangles an entry ({err!r})", path=path) from None
        results.validate()
        return results


def _check_length(array: np.ndarray, n_voxels, path: Path, subject: str) -> None:
    if n_voxels is not None and array.shape != (n_voxels,):
        raise DataError(
            f"array of shape {array.shape}, metrics.json records ({n_voxels},)",
            path=path,
            subject=subject,
        )


def _load_npy(folder: Path, rel: str, n_voxels, subject: str) -> np.ndarray:
    path = folder / rel
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(
            "missing array file listed in metrics.json", path=path, subject=subject
        ) from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"unreadable array file ({err})", path=path, subject=subject) from None
    _check_length(array, n_voxels, path, subject)
    return array


def _load_npz(folder: Path, rel: str, n_voxels, subject: str) -> dict:
    path = folder / rel
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in SCORE_ARRAYS if key in data.files}
    except FileNotFoundError:
        raise DataError(
            "missing score file listed in metrics.json", path=path, subject=subject
        ) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"unreadable score file ({err})", path=path, subject=subject) from None
    missing = [key for key in SCORE_ARRAYS if key not in arrays]
    if missing:
        raise DataError(
            f"score file lacks {missing}, expected {list(SCORE_ARRAYS)}",
            path=path,
            subject=subject,
        )
    for array in arrays.values():
        _check_length(array, n_voxels, path, subject)
    return arrays
