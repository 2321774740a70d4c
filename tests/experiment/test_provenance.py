"""Provenance by content: a changed input recomputes exactly what depends on it.

On a copy of the tiny twin with the default extractors' features (the session's prepared
folder), ridge is fitted on audio, semantic and audio+semantic. Then, one at a time: nothing
changes (everything reused), one training story's wav changes (the fit stage alone refuses
the features of the old wav; extraction recomputes that story's audio features and the two
fits using audio), one response file changes (every fit again, no
features), one story's TextGrid changes (its semantic features and the fits using them). What
was recomputed is read from the cache's commit markers and the fit stage's log.
"""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
import soundfile

from jaxenc.errors import DataError
from jaxenc.experiment import Experiment, load_config
from jaxenc.provenance import InputDigests
from jaxenc.store import RunStore
from tests.experiment._runs import TINY, run_folder

OVERRIDES = TINY + ['table.models=["ridge"]', 'table.targets=["voxels"]', "analyses.clustering=false"]
JOBS = ("audio__ridge__voxels", "semantic__ridge__voxels", "audio+semantic__ridge__voxels")


def _markers(out) -> set:
    return {p.relative_to(out) for p in (out / "features").rglob("committed.json")}


def _run(out):
    """Extract and fit; return (cache entries added, fits done, fits skipped)."""
    lines = []
    exp = Experiment(load_config(None, OVERRIDES), out, progress=False, log=lines.append)
    before = _markers(out)
    exp.extract()
    added = _markers(out) - before
    exp.fit()
    fitted = {line.split(":")[0].strip() for line in lines if line.endswith(" s") and "__" in line}
    skipped = {line.split(":")[0].strip() for line in lines if line.endswith("stored, skipped")}
    return added, fitted, skipped, exp


@pytest.mark.slow
def test_a_changed_input_recomputes_what_depends_on_it_and_nothing_else(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    added, fitted, skipped, exp = _run(out)
    assert added == set() and fitted == set(JOBS) and skipped == set()

    added, fitted, skipped, _ = _run(out)
    assert (added, fitted, skipped) == (set(), set(), set(JOBS))

    story = exp.data.train_stories("UTS01")[0]
    wav = exp.data.dataset.wav_path(story)
    samples, rate = soundfile.read(wav, dtype="int16")
    samples[rate:2 * rate] = samples[rate:2 * rate] // 2  # one second half as loud
    soundfile.write(wav, samples, rate, subtype="PCM_16")
    # The fit stage alone does not read features extracted from the old wav.
    with pytest.raises(DataError, match=f"inputs changed since their features were extracted \\(audio/{story}\\)"):
        Experiment(load_config(None, OVERRIDES), out, progress=False, log=lambda line: None).fit()
    added, fitted, skipped, _ = _run(out)
    assert {p.parts[-3] for p in added} == {story} and len(added) == 1
    assert "whisper" in str(next(iter(added)))
    assert fitted == {"audio__ridge__voxels", "audio+semantic__ridge__voxels"}
    assert skipped == {"semantic__ridge__voxels"}

    hf5 = exp.data.dataset.hf5_path("UTS01", story)
    with h5py.File(hf5, "r+") as f:
        f["data"][0] = np.asarray(f["data"][0]) + 1.0
    added, fitted, skipped, _ = _run(out)
    assert (added, fitted, skipped) == (set(), set(JOBS), set())

    textgrid = exp.data.dataset.textgrid_path(story)
    textgrid.write_text(textgrid.read_text() + "\n")
    added, fitted, skipped, _ = _run(out)
    assert {p.parts[-3] for p in added} == {story} and all("llama" in str(p) for p in added)
    assert fitted == {"semantic__ridge__voxels", "audio+semantic__ridge__voxels"}
    assert skipped == {"audio__ridge__voxels"}


def test_digests_are_hashed_once_and_renewed_when_a_file_changes(tmp_path):
    store = RunStore(tmp_path / "run")
    data = tmp_path / "input.bin"
    data.write_bytes(b"a" * 1000)
    digests = InputDigests(store)
    first = digests.file(data)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    digests.save()
    # Remembered by size and mtime: a record that says otherwise is believed while both match.
    record = store.read_json(InputDigests.FILE)
    record[str(data.resolve())][2] = "remembered"
    store.write_json(InputDigests.FILE, record)
    assert InputDigests(store).file(data) == "remembered"
    data.write_bytes(b"b" * 1001)
    assert InputDigests(store).file(data) == hashlib.sha256(b"b" * 1001).hexdigest()


def test_a_changed_planted_stimulus_refits_the_jobs_that_read_it(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    overrides = OVERRIDES + ["audio.source=planted", "semantic.source=planted", 'table.feature_sets=["audio"]']
    quiet = dict(progress=False, log=lambda line: None)
    exp = Experiment(load_config(None, overrides), out, **quiet)
    exp.extract()
    exp.fit()
    story = exp.data.train_stories("UTS01")[0]
    path = out / "data" / "synthetic_truth" / "stimulus" / f"{story}.npz"
    with np.load(path) as stored:
        arrays = dict(stored)
    arrays["audio"] = arrays["audio"] * 1.5
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=f"extracted \\(audio/{story}, semantic/{story}\\)"):
        Experiment(load_config(None, overrides), out, **quiet).fit()
    lines = []
    again = Experiment(load_config(None, overrides), out, progress=False, log=lines.append)
    again.extract()
    again.fit()
    assert "  audio__ridge__voxels: stored, skipped" not in lines
    assert any(line.startswith("  audio__ridge__voxels: ") for line in lines)
