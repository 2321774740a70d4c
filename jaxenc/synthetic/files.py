"""Files of the synthetic twin: atomic writes, and truth reads that fail naming the file.

Every file of a twin is written under a temporary name and renamed when complete, so an
interrupted run leaves no truncated file and the next run resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import soundfile

from jaxenc.errors import DataError
from jaxenc.store import named_os_errors

__all__ = ["atomic_path", "write_json", "write_npz", "read_json", "read_npz"]

_MISSING = "synthetic truth file missing: write the dataset again"


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary name beside ``path``, renamed to ``path`` once the block completes.

    The folder is created if needed. An interrupted write leaves ``<name>.partial`` (replaced
    by the next attempt), never a truncated ``path``. A write the system refuses (a full disk)
    raises an :class:`OSError` naming ``path``, also where the writer named no file (libsndfile's
    "System error.", ``write`` on a full disk).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with named_os_errors(path, (soundfile.SoundFileRuntimeError,)):
        yield partial
    os.replace(partial, path)


def write_json(path: Path, content) -> None:
    """Write ``content`` as indented JSON, atomically."""
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def write_npz(path: Path, **arrays) -> None:
    """Write ``arrays`` as an uncompressed .npz, in argument order, atomically."""
    with atomic_path(path) as partial, open(partial, "wb") as file:
        np.savez(file, **arrays)


def read_json(path: Path):
    """The JSON content of a truth file.

    Raises
    ------
    DataError
        The file is missing or not readable JSON (the message names it).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(_MISSING, path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"synthetic truth file is not readable JSON ({exc})", path=path) from exc


def read_npz(path: Path, keys) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a truth .npz file, as a dict in memory.

    Raises
    ------
    DataError
        The file is missing, unreadable (truncated, not an .npz) or lacks one of ``keys`` (the
        message names it).
    """
    try:
        with np.load(path) as saved:
            arrays = {key: saved[key] for key in keys if key in saved.files}
    except FileNotFoundError:
        raise DataError(_MISSING, path=path) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"synthetic truth file is unreadable ({exc})", path=path) from exc
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise DataError(
            f"synthetic truth file lacks {missing} (written by another jaxenc?); write the "
            "dataset again",
            path=path,
        )
    return arrays
