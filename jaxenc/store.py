"""The run folder: where each file of a run lives, and the one place files are written and read.

Everything a run writes lives under one folder::

    OUT/config.json             the resolved experiment config (rewritten by each stage that succeeds)
    OUT/run.lock                pid, host and start of the process using the folder (:meth:`RunStore.lock`)
    OUT/inputs.json             content digests of the input files (:mod:`jaxenc.provenance`)
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
raises a :class:`~jaxenc.errors.DataError` naming the file. One process at a time uses a run
folder (:meth:`RunStore.lock`); a stored prediction that cannot be read is removed with a
warning naming it and computed again (:meth:`RunStore.reusable_prediction`).

In a job of several processes (``jaxenc run --num-processes N``, :mod:`jaxenc.multihost`) every
process opens the same folder, on a file system they all share, with the job's
:class:`~jaxenc.multihost.Processes`: process 0 alone takes the lock and writes; the writes of
the others do nothing, :meth:`RunStore.barrier` makes them wait for what process 0 wrote, and
:meth:`RunStore.agree` gives every process process 0's decision (whether a fit is stored), so
that all run the same computations in the same order.

This module imports numpy and :mod:`jaxenc.errors` only (orbax when checking checkpoints).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
import socket
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxenc.errors import ConfigError, DataError, DataWarning

__all__ = ["RunStore", "atomic_write", "named_os_errors", "process_gone"]


def process_gone(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` is known to have ended (only this host can tell)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


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
    with named_os_errors(path):
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
def named_os_errors(path, writer_errors: tuple = ()):
    """Name ``path`` in the write errors of the block, so that they can be reported in one line.

    An :class:`OSError` without a file name (``write`` on a full disk names none) gets
    ``path``'s; an error of ``writer_errors`` (libraries that report a refused write in their
    own type, e.g. safetensors' or libsndfile's) becomes an :class:`OSError` naming ``path``,
    the first line of its message and the free space left on the disk.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise type(err)(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path)) from err
    except writer_errors as err:
        folder = next(p for p in Path(path).absolute().parents if p.exists())
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise OSError(errno.EIO, f"cannot write the file ({lines[0]}; {shutil.disk_usage(folder).free} bytes free "
                                 "on its disk)", os.fspath(path)) from err


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
    processes : jaxenc.multihost.Processes, optional
        The processes of the job that share the folder (default: this one alone).
    """

    CONFIG = "config.json"
    TIMINGS = "timings.json"
    FEATURES = "features"
    FEATURES_INDEX = "features/index.json"
    PREDICTIONS = "predictions"
    CHECKPOINTS = "checkpoints"
    LOCK = "run.lock"

    def __init__(self, root, processes=None):
        self.root = Path(root)
        self.processes = processes
        self._lock_depth = 0

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
        return RunStore(self.root / rel, self.processes)

    # -- the processes sharing the folder --------------------------------------------------------
    @property
    def writer(self) -> bool:
        """Whether this process writes the folder: the only one, or process 0 of a job."""
        return self.processes is None or self.processes.writer

    def barrier(self, name: str) -> None:
        """Wait until every process of the job gets here (nothing for one process)."""
        if self.processes is not None:
            self.processes.barrier(name)

    def agree(self, value, name: str = "value"):
        """The writer's ``value`` (JSON-able) on every process of the job."""
        return value if self.processes is None else self.processes.agree(value, name)

    # -- atomic writes and checked reads ---------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically (on the writer; nothing on the other processes)."""
        if self.writer:
            atomic_write(self.root / rel, lambda fh: fh.write(data))

    def write_text(self, rel: str, text: str) -> None:
        """Write UTF-8 ``text`` to ``rel`` atomically."""
        self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, data, *, indent: int = 2) -> None:
        """Write ``data`` as JSON (NaN kept as the literal ``NaN``, which a round trip keeps)."""
        self.write_text(rel, json.dumps(data, indent=indent, allow_nan=True) + "\n")

    def write_arrays(self, rel: str, arrays: dict) -> None:
        """Write named arrays to the ``.npz`` file ``rel`` atomically (on the writer)."""
        if self.writer:
            atomic_write(self.root / rel, lambda fh: np.savez(fh, **arrays))

    def write_array(self, rel: str, array) -> None:
        """Write one array to the ``.npy`` file ``rel`` atomically, no pickles (on the writer)."""
        if self.writer:
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
            # The file is opened here so that it is closed when np.load fails on a damaged one.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as data:
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

    def reusable_prediction(self, name: str, digest: str) -> bool:
        """Whether a complete, readable record of ``name`` computed under ``digest`` is stored.

        A record that cannot be read (a truncated ``.npz``, a damaged ``.json``) is removed
        with a :class:`~jaxenc.errors.DataWarning` naming the file, so that it is recomputed.
        In a job of several processes the writer decides, for all.
        """
        if not self.writer:
            return self.agree(None, f"stored {name}")
        try:
            stored = self.load_prediction(name)
        except DataError as err:
            warnings.warn(f"{err}; removing it, the fit is computed again", DataWarning, stacklevel=2)
            for suffix in (".json", ".npz"):
                self.path(f"{self.PREDICTIONS}/{name}{suffix}").unlink(missing_ok=True)
            return self.agree(False, f"stored {name}")
        return self.agree(stored is not None and stored[1].get("digest") == digest, f"stored {name}")

    def checkpoint_dir(self, name: str) -> Path:
        """Folder of a fit's network checkpoints (not created)."""
        return self.root / self.CHECKPOINTS / name

    def merge_timings(self, timings: dict) -> dict:
        """Add ``{stage: seconds}`` to ``timings.json``; return all the run's timings."""
        merged = self.read_json(self.TIMINGS, "timings") if self.path(self.TIMINGS).is_file() else {}
        merged.update({k: round(v, 1) for k, v in timings.items()})
        self.write_json(self.TIMINGS, merged)
        return merged

    # -- one process at a time -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold ``run.lock`` while the block runs, so no second process writes into the folder.

        The lock file records the holder's pid, host and start time; it is created atomically
        (a complete temporary file hard-linked to its name, which fails if the name exists).
        Re-entrant within one store. A lock left by a process of this host that has ended is
        taken over with a :class:`~jaxenc.errors.DataWarning`; a lock of another host cannot be
        checked and is obeyed. In a job of several processes, the writer holds it for all.

        Raises
        ------
        ConfigError
            One line naming the holder (pid, host, start time) and the lock file, or a run
            folder that cannot be created or written.
        """
        if self._lock_depth == 0 and self.writer:
            self._acquire()
        self._lock_depth += 1
        try:
            yield self
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self.writer:
                self._release()

    def _acquire(self) -> None:
        path = self.path(self.LOCK)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{self.LOCK}.", suffix=".tmp")
        except OSError as err:
            raise ConfigError(f"cannot write into the run folder ({err.strerror})", path=self.root) from None
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            for _ in range(2):
                try:
                    os.link(tmp, path)
                    return
                except FileExistsError:
                    holder = self._holder()
                    if holder is None or not process_gone(holder["host"], holder["pid"]):
                        raise ConfigError(_in_use(holder), path=path) from None
                    warnings.warn(f"taking over the stale lock {path} of pid {holder['pid']} on {holder['host']} "
                                  f"(since {holder['started']}), which has ended", DataWarning, stacklevel=4)
                    path.unlink(missing_ok=True)
            raise ConfigError(_in_use(self._holder()), path=path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _holder(self) -> dict | None:
        """The lock's record, or None if it cannot be read."""
        try:
            holder = json.loads(self.path(self.LOCK).read_text())
            return holder if {"pid", "host", "started"} <= set(holder) else None
        except (OSError, ValueError, TypeError):
            return None

    def _release(self) -> None:
        holder = self._holder()
        if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
            self.path(self.LOCK).unlink(missing_ok=True)


def _in_use(holder: dict | None) -> str:
    if holder is None:
        return "run folder in use (its lock file is unreadable); remove the lock file if no jaxenc runs there"
    return (f"run folder in use by pid {holder['pid']} on {holder['host']} since {holder['started']}; "
            "wait for it to end, or use another --out")
