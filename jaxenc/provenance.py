"""Provenance by content: what each stored result of a run was computed from.

A run reuses what it stored (cached features, fitted predictions) only when the inputs they
were computed from are the same, by content, not by name:

- a story's Whisper features are keyed by the SHA-256 of its wav, its LLaMA features by that
  of its TextGrid, planted features by that of the twin's ``stimulus/<story>.npz``
  (:meth:`InputDigests.story_input`), besides the extractor checkpoint's own content hash and
  every extraction setting (:class:`jaxenc.features.FeatureKey`);
- a fit is keyed by its settings, the keys of the features it reads (so the digests above) and
  :meth:`InputDigests.responses`, the SHA-256 of every hf5 file of the run's subjects and of
  ``respdict.json``.

So changed responses refit every job without extracting anything again, a changed wav of one
story re-extracts that story's audio features and refits the jobs that use audio, and unchanged
inputs reuse everything.

Hashing reads every byte once: seconds for the synthetic twin, minutes for the whole of
ds003020 (~80 GB of hf5 files, disk-bound). Each file's digest is therefore remembered in the
run folder, ``OUT/inputs.json``, with the file's size and modification time, and hashed again
only when one of them changed. An edit that keeps both (``touch -r``, or a copy with its
times preserved onto a same-sized file) is not noticed; deleting ``OUT/inputs.json`` makes the
next run hash everything again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path

from jaxenc.errors import DataError, DataWarning
from jaxenc.store import RunStore

__all__ = ["InputDigests", "file_sha256", "combined"]

# Kinds of feature sources and the input file each story's features are computed from.
_STORY_INPUTS = ("whisper", "llama", "planted")


def file_sha256(path: Path, block: int = 1 << 24) -> str:
    """Hex SHA-256 of a file's content, read in blocks of ``block`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def combined(value) -> str:
    """First 16 hex digits of the SHA-256 of a JSON-able value in canonical form (sorted keys,
    no spaces): the one digest of settings and records that the cache and the run folder key by."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class InputDigests:
    """Content digests of a run's input files, remembered in ``OUT/inputs.json``.

    Parameters
    ----------
    store : RunStore
        The run folder that remembers the digests.

    Notes
    -----
    The record maps each file's absolute path to ``[size, mtime_ns, sha256]``. An unreadable
    record is dropped with a :class:`~jaxenc.errors.DataWarning` naming it (everything is
    hashed again). Call :meth:`save` after use.
    """

    FILE = "inputs.json"

    def __init__(self, store: RunStore):
        self.store = store
        self._known: dict = {}
        self._changed = False
        if store.path(self.FILE).is_file():
            try:
                known = store.read_json(self.FILE, "input digest record")
                if not isinstance(known, dict):
                    raise DataError("input digest record is not a JSON object", path=store.path(self.FILE))
                self._known = known
            except DataError as err:
                warnings.warn(f"{err}; hashing the inputs again", DataWarning, stacklevel=2)

    def file(self, path) -> str:
        """Hex SHA-256 of one file, from the record while its size and mtime are unchanged.

        Raises
        ------
        DataError
            Naming the file, if it is missing or unreadable.
        """
        path = Path(path).resolve()
        try:
            stat = path.stat()
            stamp = [stat.st_size, stat.st_mtime_ns]
            entry = self._known.get(str(path))
            if entry is not None and entry[:2] == stamp:
                return entry[2]
            sha = file_sha256(path)
        except FileNotFoundError:
            raise DataError("missing input file", path=path) from None
        except OSError as err:
            raise DataError(f"unreadable input file ({err})", path=path) from None
        self._known[str(path)] = [*stamp, sha]
        self._changed = True
        return sha

    def story_input(self, kind: str, data, story: str) -> str:
        """Digest of the file a story's features of ``kind`` are computed from.

        Parameters
        ----------
        kind : {"whisper", "llama", "planted"}
        data : RunData
        story : str
        """
        if kind == "whisper":
            return self.file(data.dataset.wav_path(story))
        if kind == "llama":
            return self.file(data.dataset.textgrid_path(story))
        if kind == "planted":
            # Deferred: jaxenc.synthetic loads scipy (about 0.8 s); the feature cache needs it only here.
            from jaxenc.synthetic.truth import TRUTH_DIR

            return self.file(data.root / TRUTH_DIR / "stimulus" / f"{story}.npz")
        raise ValueError(f"kind must be one of {_STORY_INPUTS}, got {kind!r}")

    def stories(self, kind: str, data, stories: Iterable[str]) -> dict:
        """``{story: digest}`` of :meth:`story_input` for each story."""
        return {story: self.story_input(kind, data, story) for story in stories}

    def responses(self, data) -> str:
        """One digest of every response file a fit of the run reads.

        The hf5 files of each subject's training stories and of the test story, and
        ``respdict.json`` (the TRs of each story, which place the feature rows).
        """
        files = {"respdict": self.file(data.root / "derivative" / "respdict.json")}
        for subject in data.subjects:
            for story in [*data.train_stories(subject), data.test_story]:
                files[f"{subject}/{story}"] = self.file(data.dataset.hf5_path(subject, story))
        return combined(files)

    def stale_features(self, index: dict, data) -> list[str]:
        """Extractions of a feature index whose input files changed since they were extracted.

        Parameters
        ----------
        index : dict
            ``features/index.json`` (:func:`jaxenc.experiment.extract.extract`).
        data : RunData

        Returns
        -------
        list of str
            ``"extraction/story"`` for each story whose current input digest differs from the
            one its features were keyed by (a fit stage run without extracting again).
        """
        stale = []
        for extraction, entry in index.items():
            if "keys" in entry:
                recorded = {story: key["params"].get("input_sha256") for story, key in entry["keys"].items()}
            else:
                recorded = entry.get("inputs", {})
            for story, digest in recorded.items():
                if digest is not None and digest != self.story_input(entry["kind"], data, story):
                    stale.append(f"{extraction}/{story}")
        return stale

    def save(self) -> None:
        """Write the record if a digest was added or renewed."""
        if self._changed:
            self.store.write_json(self.FILE, self._known, indent=None)
            self._changed = False
