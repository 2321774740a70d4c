"""The run folder: where each file of a run lives, and the one place files are written and read.

Everything a run writes lives under one folder::

    OUT/config.json             the resolved experiment config (every stage rewrites it)
    OUT/timings.json            seconds per stage
    OUT/data/                   the synthetic twin, when the config names no dataset
    OUT/models/                 the embedded default extractors
    OUT/features/               tensorstore feature cache + index.json (what extraction produced)
    OUT/predictions/NAME.npz    test-story voxel predictions of a fitted encoder, per subject,
    OUT/predictions/NAME.json   and their record (written last: it marks the pair complete)
    OUT/checkpoints/            orbax checkpoints of the networks (resume)
    OUT/metrics.json, scores/   per-voxel scores and analyses (:class:`jaxenc.report.RunResults`)
    OUT/report.html, report.md, figures/
    OUT/nonlinearity/           a run of its own (the demo's nonlinearity step)

:class:`RunStore` owns these paths and every read and write of the run's records. Each write
goes to a temporary file beside its target and is moved into place (:func:`atomic_write`), so
an interrupted run never leaves a half-written file under its final name; each read that fails
raises a :class:`~jaxenc.errors.DataError` naming the file. Locking, content digests and the
recovery of damaged files belong here too, so that every record gets them at once.

This module imports numpy and :mod:`jaxenc.errors` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError, DataError

__all__ = ["RunStore", "atomic_write"]


def atomic_write(path: Path, write: Callable) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then move it there.

    Parameters
    ----------
    path : Path
        The final name; its folder is created.
    write : callable
        Writes the content to the binary file object it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        # mkstemp creates the file private (0600); run files are meant to be shared and read.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _reading(path: Path, subject):
    """Turn the failures of reading an array file into a :class:`DataError` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError("missing array file", path=path, subject=subject) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"unreadable array file ({err})", path=path, subject=subject) from None


class RunStore:
    """The files of one run folder (see the module docstring for the layout).

    Parameters
    ----------
    root : str or Path
        The run folder (created on the first write).
    """

    CONFIG = "config.json"
    TIMINGS = "timings.json"
    FEATURES = "features"
    FEATURES_INDEX = "features/index.json"
    PREDICTIONS = "predictions"
    CHECKPOINTS = "checkpoints"

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def path(self, rel: str) -> Path:
        """The path of ``rel`` in the run folder."""
        return self.root / rel

    def folder(self, rel: str) -> Path:
        """The folder ``rel`` of the run, created if needed."""
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def child(self, rel: str) -> RunStore:
        """The store of a run nested in this one (e.g. ``"nonlinearity"``)."""
        return RunStore(self.root / rel)

    # -- atomic writes and checked reads ---------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically."""
        atomic_write(self.root / rel, lambda fh: fh.write(data))

    def write_text(self, rel: str, text: str) -> None:
        """Write UTF-8 ``text`` to ``rel`` atomically."""
        self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, data, *, indent: int = 2) -> None:
        """Write ``data`` as JSON (NaN kept as the literal ``NaN``, which a round trip keeps)."""
        self.write_text(rel, json.dumps(data, indent=indent, allow_nan=True) + "\n")

    def write_arrays(self, rel: str, arrays: dict) -> None:
        """Write named arrays to the ``.npz`` file ``rel`` atomically."""
        atomic_write(self.root / rel, lambda fh: np.savez(fh, **arrays))

    def write_array(self, rel: str, array) -> None:
        """Write one array to the ``.npy`` file ``rel`` atomically (no pickles)."""
        atomic_write(self.root / rel, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))

    def read_json(self, rel: str, what: str = "run file"):
        """The JSON content of ``rel``.

        Raises
        ------
        DataError
            Naming the file, if it is missing or unreadable.
        """
        path = self.root / rel
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"no {what}", path=path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"unreadable {what} ({err})", path=path) from None

    def read_arrays(self, rel: str, names: Sequence[str] | None = None, *, subject=None) -> dict:
        """The arrays of the ``.npz`` file ``rel`` (those of ``names``, which must all be there).

        Raises
        ------
        DataError
            Naming the file (and the subject), if it is missing, unreadable or lacks a name.
        """
        path = self.root / rel
        with _reading(path, subject):
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in (data.files if names is None else names) if key in data.files}
        missing = [key for key in names or () if key not in arrays]
        if missing:
            raise DataError(f"array file lacks {missing}, expected {list(names)}", path=path, subject=subject)
        return arrays

    def read_array(self, rel: str, *, subject=None) -> np.ndarray:
        """The array of the ``.npy`` file ``rel``.

        Raises
        ------
        DataError
            Naming the file, if it is missing or unreadable.
        """
        path = self.root / rel
        with _reading(path, subject):
            return np.load(path, allow_pickle=False)

    # -- the run's records -------------------------------------------------------------------------
    def save_config(self, config: dict) -> None:
        """Write the resolved config (a JSON-able dict) to ``config.json``."""
        self.write_json(self.CONFIG, config)

    def save_features_index(self, index: dict) -> None:
        """Write what extraction produced to ``features/index.json``."""
        self.write_json(self.FEATURES_INDEX, index)

    def features_index(self) -> dict:
        """``features/index.json``.

        Raises
        ------
        ConfigError
            When nothing was extracted into this run yet.
        """
        if not self.path(self.FEATURES_INDEX).is_file():
            raise ConfigError(f"no extracted features in {self.root}: run `jaxenc extract` first",
                              path=self.path(self.FEATURES_INDEX))
        return self.read_json(self.FEATURES_INDEX, "feature index")

    def prediction_names(self) -> list[str]:
        """Names of the complete prediction records, sorted."""
        folder = self.root / self.PREDICTIONS
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if p.with_suffix(".npz").is_file())

    def save_prediction(self, name: str, predictions: dict, meta: dict) -> None:
        """Store a fit's predictions per subject; the JSON record, written last, marks them complete.

        Parameters
        ----------
        name : str
            File stem, e.g. ``"audio+semantic__mlp__pca"``.
        predictions : dict of str to array of shape (n_test, n_voxels)
        meta : dict
            JSON-able record of the fit (what it is, its settings' digest, its timings).
        """
        self.write_arrays(f"{self.PREDICTIONS}/{name}.npz",
                          {k: np.asarray(v, np.float32) for k, v in predictions.items()})
        self.write_json(f"{self.PREDICTIONS}/{name}.json", meta)

    def load_prediction(self, name: str) -> tuple[dict, dict] | None:
        """``(predictions per subject, meta)`` of a stored fit, or None if it is not complete."""
        if not self.path(f"{self.PREDICTIONS}/{name}.json").is_file():
            return None
        meta = self.read_json(f"{self.PREDICTIONS}/{name}.json", "prediction record")
        return self.read_arrays(f"{self.PREDICTIONS}/{name}.npz"), meta

    def checkpoint_dir(self, name: str) -> Path:
        """Folder of a fit's network checkpoints (not created)."""
        return self.root / self.CHECKPOINTS / name

    def merge_timings(self, timings: dict) -> dict:
        """Add ``{stage: seconds}`` to ``timings.json``; return all the run's timings."""
        merged = self.read_json(self.TIMINGS, "timings") if self.path(self.TIMINGS).is_file() else {}
        merged.update({k: round(v, 1) for k, v in timings.items()})
        self.write_json(self.TIMINGS, merged)
        return merged
