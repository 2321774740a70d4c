"""A tensorstore (zarr v3) cache of extracted features, written once and read many times.

Layout
------
One entry per (model, revision, extractor, extraction parameters, story, layer)::

    <root>/<extractor>/<model>/<digest>/key.json            the key fields, for people
    <root>/<extractor>/<model>/<digest>/<story>/layer012/
        features/          zarr v3 array (n_rows, width), provenance in its attributes
        times/             zarr v3 array (n_rows,), float64 seconds from sound onset
        committed.json     shapes and SHA-256 of both arrays; written last

``digest`` hashes the model, its revision, the extractor and its parameters. Each layer of a
forward pass is its own entry, so a layer sweep reads only the layers it asks for; the layers of
one pass are computed together and stored side by side.

Atomic writes
-------------
An entry is written under a hidden temporary name in its story directory, closed with its
``committed.json``, then renamed into place; the rename is atomic on a POSIX file system. A
killed writer therefore leaves at most a temporary directory, which is never read and is removed
by the next writer on the same host once its process is gone. A zarr array with missing chunks
would read back as fill values without complaint, so an entry is trusted only with its marker
and only if the SHA-256 of what is read equals the one recorded; anything else is discarded with
a :class:`~jaxenc.errors.DataWarning` and recomputed.

(Over 450 lines: one class, :class:`FeatureCache`, whose write, commit, verify and clean-up
steps share its temporary names and SHA-256 markers; the key and the revision hash are short.)
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorstore as ts

from jaxenc import __version__
from jaxenc.ckpt.files import resolve_checkpoint
from jaxenc.errors import ConfigError, DataError, DataWarning
from jaxenc.provenance import combined, file_sha256
from jaxenc.store import named_os_errors, process_gone

__all__ = ["FeatureKey", "FeatureCache", "checkpoint_revision"]

_MARKER = "committed.json"
_TMP_PREFIX = ".tmp."
# Rows per zarr chunk: a 10-minute story at 0.1 s stride is 6000 rows, so about one chunk.
_CHUNK_ROWS = 8192
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _json_value(value, name: str):
    """Canonical JSON form of one extraction parameter (dtypes by name, tuples as lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_value(v, name) for v in value]
    try:
        return np.dtype(value).name
    except TypeError:
        raise ConfigError(
            f"extraction parameter {name}={value!r} is not a number, string, dtype or list of them"
        ) from None


@dataclasses.dataclass(frozen=True)
class FeatureKey:
    """What identifies a cached feature array.

    Parameters
    ----------
    model : str
        Hub id (``"openai/whisper-large"``) or a name for a local checkpoint.
    revision : str
        Hub commit, or a content hash of a local checkpoint (see :func:`checkpoint_revision`).
    extractor : str
        The extraction function and its convention version, e.g. ``"whisper_features/1"``.
    params : mapping of str to JSON-able value
        Every extraction parameter that changes the values (window lengths, dtypes, ...);
        stored as a sorted tuple of pairs. Batch sizes, which do not, are left out.
    story : str
        The story, e.g. ``"adollshouse"``.
    layers : tuple of int
        Hidden-state layers, each cached as its own entry.
    """

    model: str
    revision: str
    extractor: str
    params: tuple
    story: str
    layers: tuple

    def __post_init__(self):
        items = dict(self.params)
        params = tuple(sorted((str(k), _json_value(v, k)) for k, v in items.items()))
        object.__setattr__(
            self, "params", tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in params)
        )
        layers = tuple(int(layer) for layer in self.layers)
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise ConfigError(f"layers={self.layers}, expected distinct non-negative ints", story=self.story)
        object.__setattr__(self, "layers", layers)
        if not _SAFE_NAME.match(self.story):
            raise ConfigError("expected a story name of letters, digits, '.', '_' and '-'", story=self.story)
        if not self.model or not self.revision or not self.extractor:
            raise ConfigError("model, revision and extractor must be non-empty", story=self.story)

    def describe(self) -> dict:
        """The key fields other than story and layers, as a JSON-able dict."""
        return {
            "model": self.model,
            "revision": self.revision,
            "extractor": self.extractor,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params},
        }

    @property
    def digest(self) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`describe` in canonical JSON."""
        return combined(self.describe())

    def with_layers(self, layers: Sequence[int]) -> FeatureKey:
        """The same key for other layers."""
        return dataclasses.replace(self, layers=tuple(layers))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip("-.") or "model"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class FeatureCache:
    """Features on disk under ``root``, computed on first request and read afterwards.

    Parameters
    ----------
    root : str or os.PathLike
        Cache directory; created if missing.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._context = ts.Context()

    def __repr__(self) -> str:
        return f"FeatureCache({os.fspath(self.root)!r})"

    def key_dir(self, key: FeatureKey) -> Path:
        """Directory of every story and layer sharing ``key``'s model, extractor and parameters."""
        return self.root / _safe(key.extractor) / _safe(key.model) / key.digest

    def entry_path(self, key: FeatureKey, layer: int) -> Path:
        """Directory of the entry of one layer of ``key``'s story."""
        return self.key_dir(key) / key.story / f"layer{int(layer):03d}"

    def contains(self, key: FeatureKey) -> bool:
        """Whether every layer of ``key`` has a committed entry (checksums are checked on read)."""
        return all((self.entry_path(key, layer) / _MARKER).is_file() for layer in key.layers)

    def missing_layers(self, key: FeatureKey) -> tuple[int, ...]:
        """Layers of ``key`` with no committed entry."""
        return tuple(layer for layer in key.layers if not (self.entry_path(key, layer) / _MARKER).is_file())

    def provenance(self, key: FeatureKey, layer: int) -> dict:
        """The attributes stored with one layer's features: key fields, versions, time, shapes."""
        return (
            self._open(self.entry_path(key, layer) / "features", open=True)
            .result()
            .spec()
            .to_json()["metadata"]["attributes"]
        )

    def open_features(self, key: FeatureKey, layer: int) -> ts.TensorStore:
        """The committed features of one layer, opened lazily (slice, then ``.read().result()``).

        Checksums are not verified on this path; :meth:`read` verifies them.

        Raises
        ------
        DataError
            The entry is not committed.
        """
        path = self.entry_path(key, layer)
        if not (path / _MARKER).is_file():
            raise DataError(f"no committed features for layer {layer} of {key.describe()}", story=key.story)
        return self._open(path / "features", open=True).result()

    def read(self, key: FeatureKey) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Read every layer of ``key``.

        Returns
        -------
        times : ndarray of shape (n_rows,), float64
            Seconds from sound onset.
        features : dict of int to ndarray of shape (n_rows, width)

        Raises
        ------
        DataError
            A layer is missing or fails its checksum (it is then removed).
        """
        times, features = None, {}
        for layer in key.layers:
            loaded = self._load(key, layer)
            if loaded is None:
                raise DataError(
                    f"no valid cached features for layer {layer} of {key.describe()}", story=key.story
                )
            times, features[layer] = loaded
        return times, features

    def put(self, key: FeatureKey, times: np.ndarray, features: Mapping[int, np.ndarray]) -> None:
        """Store the given layers of ``key`` (each committed atomically, see the module docstring).

        Parameters
        ----------
        key : FeatureKey
        times : ndarray of shape (n_rows,)
            Seconds from sound onset.
        features : mapping of int to ndarray of shape (n_rows, width)
            Arrays of some or all layers of ``key``.

        Raises
        ------
        DataError
            Shapes that disagree with ``times`` or a layer not in ``key``.
        """
        times = np.asarray(times, np.float64)
        arrays = {int(layer): np.asarray(array) for layer, array in features.items()}
        # Everything is checked before anything is written, so a bad layer commits none.
        for layer, array in arrays.items():
            if layer not in key.layers:
                raise DataError(f"layer {layer} is not among the key's layers {key.layers}", story=key.story)
            if times.ndim != 1 or array.ndim != 2 or array.shape[0] != times.shape[0]:
                raise DataError(
                    f"layer {layer} has shape {array.shape} and times {times.shape}, expected "
                    "(n_rows, width) and (n_rows,)",
                    story=key.story,
                )
        for layer, array in arrays.items():
            self._commit(key, layer, times, array)

    def get_or_compute(
        self,
        key: FeatureKey,
        compute_fn: Callable[[tuple[int, ...]], tuple[np.ndarray, Mapping[int, np.ndarray]]],
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Read ``key``'s layers from the cache, computing and storing those that are missing.

        Parameters
        ----------
        key : FeatureKey
        compute_fn : callable
            ``compute_fn(layers) -> (times, {layer: array})``, called at most once, with the
            missing layers only, so one forward pass fills them all.

        Returns
        -------
        times : ndarray of shape (n_rows,), float64
        features : dict of int to ndarray of shape (n_rows, width)
        """
        loaded = {layer: self._load(key, layer) for layer in key.layers}
        missing = tuple(layer for layer, value in loaded.items() if value is None)
        if missing:
            times, computed = compute_fn(missing)
            absent = [layer for layer in missing if layer not in computed]
            if absent:
                raise DataError(f"compute_fn returned no features for layers {absent}", story=key.story)
            self.put(key, times, {layer: computed[layer] for layer in missing})
            for layer in missing:
                loaded[layer] = (np.asarray(times, np.float64), np.asarray(computed[layer]))
        times = loaded[key.layers[0]][0]
        for layer in key.layers[1:]:
            if not np.array_equal(loaded[layer][0], times):
                raise DataError(
                    f"layer {layer} was cached with other times than layer {key.layers[0]}; expected "
                    "the layers of one key to share their times",
                    story=key.story,
                )
        return times, {layer: loaded[layer][1] for layer in key.layers}

    # ---------------------------------------------------------------------------------------

    def _open(self, path: Path, **spec):
        return ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": os.fspath(path) + "/"}, **spec},
            context=self._context,
        )

    def _create(self, path: Path, array: np.ndarray, attributes: dict):
        chunks = [min(max(array.shape[0], 1), _CHUNK_ROWS), *array.shape[1:]]
        store = self._open(
            path,
            create=True,
            metadata={
                "shape": list(array.shape),
                "data_type": array.dtype.name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                "attributes": attributes,
            },
        ).result()
        store.write(array).result()

    def _commit(self, key: FeatureKey, layer: int, times: np.ndarray, array: np.ndarray) -> None:
        final = self.entry_path(key, layer)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._write_key_json(key)
        self._remove_stale_temporaries(final)
        host, pid = socket.gethostname(), os.getpid()
        tmp = final.parent / f"{_TMP_PREFIX}{final.name}.{host}.{pid}.{uuid.uuid4().hex[:8]}"
        created = datetime.datetime.now(datetime.UTC).isoformat()
        attributes = {
            **key.describe(),
            "story": key.story,
            "layer": layer,
            "jaxenc_version": __version__,
            "created": created,
            "shape": list(array.shape),
            "dtype": array.dtype.name,
        }
        try:
            # tensorstore reports a refused write (a full disk) as a ValueError.
            with named_os_errors(final, (ValueError,)):
                self._create(tmp / "features", array, attributes)
                self._create(tmp / "times", times, {"units": "seconds from sound onset"})
            marker = {
                "features_sha256": _sha256(array),
                "times_sha256": _sha256(times),
                "shape": list(array.shape),
                "dtype": array.dtype.name,
                "n_times": int(times.shape[0]),
                "created": created,
            }
            with named_os_errors(tmp / _MARKER), open(tmp / _MARKER, "w") as f:
                json.dump(marker, f)
                f.flush()
                os.fsync(f.fileno())
            if final.exists() and not (final / _MARKER).is_file():
                # An entry without its marker was never committed (or was damaged): replace it.
                shutil.rmtree(final)
            try:
                os.rename(tmp, final)
            except OSError:
                # Another writer committed the same entry first; its copy is as good as ours.
                if not (final / _MARKER).is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _load(self, key: FeatureKey, layer: int):
        """(times, features) of a trusted entry, or None after discarding an untrustworthy one."""
        path = self.entry_path(key, layer)
        if not path.exists():
            return None
        problem = None
        marker_path = path / _MARKER
        if not marker_path.is_file():
            problem = "has no commit marker"
        else:
            try:
                marker = json.loads(marker_path.read_text())
                features = self._open(path / "features", open=True).result().read().result()
                times = self._open(path / "times", open=True).result().read().result()
            except (ValueError, OSError) as err:
                problem = f"is unreadable ({err})"
            else:
                if (
                    list(features.shape) != marker["shape"]
                    or _sha256(features) != marker["features_sha256"]
                    or _sha256(times) != marker["times_sha256"]
                ):
                    problem = "does not match its recorded checksum"
        if problem is None:
            return times, features
        warnings.warn(
            f"story {key.story!r}: discarding cache entry {path} that {problem}; it will be recomputed",
            DataWarning,
            stacklevel=3,
        )
        shutil.rmtree(path, ignore_errors=True)
        return None

    def _write_key_json(self, key: FeatureKey) -> None:
        path = self.key_dir(key) / "key.json"
        if path.is_file():
            return
        tmp = path.with_name(f"{_TMP_PREFIX}key.{os.getpid()}.{uuid.uuid4().hex[:8]}.json")
        tmp.write_text(json.dumps(key.describe(), indent=2, sort_keys=True))
        os.replace(tmp, path)

    def _remove_stale_temporaries(self, final: Path) -> None:
        """Remove temporary entries of ``final`` left by dead processes on this host."""
        for tmp in final.parent.glob(f"{_TMP_PREFIX}{final.name}.*"):
            parts = tmp.name[len(_TMP_PREFIX) + len(final.name) + 1 :].rsplit(".", 2)
            if len(parts) == 3 and parts[1].isdigit() and process_gone(parts[0], int(parts[1])):
                shutil.rmtree(tmp, ignore_errors=True)


_REVISIONS: dict = {}


def checkpoint_revision(path_or_hub_id, *, revision: str | None = None) -> str:
    """A revision string for a :class:`FeatureKey`: a Hub commit or a content hash.

    Parameters
    ----------
    path_or_hub_id : str or os.PathLike
        A local checkpoint directory, or a Hub id present in the local Hugging Face cache
        (nothing is downloaded).
    revision : str, optional
        Hub branch, tag or commit, for Hub ids.

    Returns
    -------
    str
        For a snapshot of the Hugging Face cache, its commit hash; otherwise ``"sha256:"`` and
        the SHA-256 over the names and contents of every file directly in the directory (config,
        weights, tokenizer and preprocessor files). Hashing reads every byte once (tens of
        seconds for a 13 GB checkpoint) and is remembered for the process while the files'
        sizes and modification times stay the same.

    Raises
    ------
    CheckpointError
        Neither a directory nor a Hub id found in the local cache.
    """
    directory = resolve_checkpoint(path_or_hub_id, revision=revision).resolve()
    if directory.parent.name == "snapshots":
        return directory.name
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    stamp = (os.fspath(directory), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _REVISIONS:
        digest = hashlib.sha256()
        for p in files:
            digest.update(f"{p.name}\0{file_sha256(p)}\0".encode())
        _REVISIONS[stamp] = "sha256:" + digest.hexdigest()
    return _REVISIONS[stamp]
