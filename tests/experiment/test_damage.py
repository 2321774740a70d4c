"""A run folder that survives damage, and the inputs checked at the start of a run.

Damaged stored files (a feature cache entry, a truncated prediction file, a truncated latest
checkpoint) are recomputed, or resumed from the previous checkpoint, with a warning naming the
file, and the results equal those of the undamaged run. A failed stage leaves config.json as
it was. The story report names a missing hf5 file and subject folder; a truncated wav stops
the run in one line naming the story, even with planted features that never read the audio.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import soundfile

from jaxenc.errors import ConfigError, DataError, DataWarning
from jaxenc.experiment import Experiment, load_config
from jaxenc.experiment.extract import FeatureReader
from jaxenc.featuresets import AUDIO, FeatureSource
from jaxenc.report import RunResults
from tests.experiment._runs import TINY, run_folder

PLANTED = TINY + ["audio.source=planted", "semantic.source=planted", 'table.feature_sets=["audio+semantic"]',
                  "analyses.partition=false", "analyses.clustering=false"]
# Every subject of the twin, ridge only.
EVERY_SUBJECT = [o for o in PLANTED if not o.startswith("data.subjects")] + ['table.models=["ridge"]']


def _experiment(out, overrides, lines=None):
    log = (lambda line: None) if lines is None else lines.append
    return Experiment(load_config(None, overrides), out, progress=False, log=log)


def test_a_damaged_feature_entry_is_recomputed_with_a_warning(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    exp = _experiment(out, TINY + ['table.models=["ridge"]'])
    exp.extract()
    reader = FeatureReader(exp.store, exp.data)
    before = reader.read(FeatureSource(AUDIO))
    story = exp.data.stories[0]
    (entry,) = [p for p in (out / "features").rglob(f"whisper*/**/{story}/layer*") if p.is_dir()]
    (chunk,) = [p for p in (entry / "features").rglob("*") if p.is_file() and p.name != "zarr.json"]
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    with pytest.warns(DataWarning, match=f"discarding cache entry {re.escape(str(entry))}"):
        exp.extract()
    after = FeatureReader(exp.store, exp.data).read(FeatureSource(AUDIO))
    for name in before:
        np.testing.assert_array_equal(after[name][1], before[name][1])


@pytest.mark.slow
def test_truncated_predictions_and_checkpoints_are_recomputed_and_a_failed_stage_keeps_the_config(tmp_path):
    out = tmp_path / "run"
    overrides = PLANTED + ['table.models=["mlp"]', 'table.targets=["pca"]', "fit.keep_checkpoints=true"]
    exp = _experiment(out, overrides)
    exp.extract()
    exp.fit()
    name = "audio+semantic__mlp__pca"
    reference, _ = exp.store.load_prediction(name)

    npz = exp.store.path(f"predictions/{name}.npz")
    npz.write_bytes(npz.read_bytes()[:200])
    with pytest.warns(DataWarning, match=f"{re.escape(str(npz))}.*computed again"):
        _experiment(out, overrides).fit()
    predictions, _ = exp.store.load_prediction(name)
    for subject in reference:
        np.testing.assert_array_equal(predictions[subject], reference[subject])

    # As if killed after its last checkpoint and before storing: the latest one is truncated.
    exp.store.path(f"predictions/{name}.json").unlink()
    steps = sorted((p for p in (out / "checkpoints").glob("*/*/*") if p.name.isdigit()), key=lambda p: int(p.name))
    assert [p.name for p in steps] == ["1", "2"]
    largest = max((p for p in steps[-1].rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 3])
    with pytest.warns(DataWarning, match=f"unreadable checkpoint {re.escape(str(steps[-1]))}"):
        _experiment(out, overrides).fit()
    predictions, _ = exp.store.load_prediction(name)
    for subject in reference:
        np.testing.assert_allclose(predictions[subject], reference[subject], rtol=1e-6, atol=1e-6)

    exp.evaluate()
    saved = (out / "config.json").read_bytes()
    with pytest.raises(ConfigError, match="^evaluate.block_size=1000 leaves fewer than 2 blocks"):
        _experiment(out, overrides + ["evaluate.block_size=1000"]).evaluate()
    assert (out / "config.json").read_bytes() == saved
    again = Experiment(load_config(out), out, progress=False, log=lambda line: None)
    scored = again.evaluate()

    (score_file,) = [p for p in (out / "scores").rglob("*.npz") if "mlp" in p.name]
    score_file.write_bytes(score_file.read_bytes()[:100])
    with pytest.warns(DataWarning, match=f"{re.escape(str(score_file))}.*scoring the stored predictions again"):
        again.report()
    (model,) = RunResults.load(out).models
    assert model.scores == scored.models[0].scores


def test_the_story_report_names_what_is_missing_and_a_cut_wav_stops_the_run(prepared, tmp_path):
    out = run_folder(tmp_path / "run", prepared)
    data = out / "data" / "derivative" / "preprocessed_data"
    exp = _experiment(out, EVERY_SUBJECT)
    story = exp.data.dataset.stories("UTS01")[0]
    (data / "UTS01" / f"{story}.hf5").unlink()
    shutil.rmtree(data / "UTS02")
    lines = []
    exp = _experiment(out, EVERY_SUBJECT, lines)
    exp.extract()
    report = [line for line in lines if line.startswith("stories: ")]
    assert len(report) == 2
    assert f"missing 1: {story} (no hf5)" in report[0] and report[0].startswith("stories: UTS01: ")
    assert report[1].startswith("stories: UTS02: 0 training stories, no test story; missing")
    assert "(no subject folder)" in report[1]

    wav = exp.data.dataset.wav_path(exp.data.test_story)
    samples, rate = soundfile.read(wav, dtype="int16")
    soundfile.write(wav, samples[: 30 * rate], rate, subtype="PCM_16")
    with pytest.raises(DataError, match=f"story {exp.data.test_story!r}.*the audio lasts 30.0 s"):
        _experiment(out, EVERY_SUBJECT).extract()
